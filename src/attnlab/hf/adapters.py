"""peft adapters for fine-tuning a pretrained model cheaply: LoRA, DoRA, IA3 and AdaLoRA.

`attach(model, settings, steps)` injects the adapter into the model in place (its module names do
not change, so a state dict stays readable) and freezes everything but the adapter and the
attnlab programs' own parameters, which train with it and are saved with it. `ADAPTERS` maps an
experiment's `adapter.method` to its `Adapter` class: the peft config it builds, and what
training must do besides (AdaLoRA reallocates ranks after every optimiser step, adds an
orthogonality penalty to the loss and keeps running statistics a checkpoint must carry).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError

NAME = "default"  # peft's adapter name: one adapter per model here


class Adapter:
    """The peft tuner that injected an adapter into a model (kept out of the model's modules, so
    its parameters are not counted or saved twice), and the adapter's part in training."""

    def __init__(self, tuner: Any) -> None:
        self.tuner = tuner  # peft's BaseTuner (LoraModel, IA3Model, AdaLoraModel)

    @staticmethod
    def config(s: dict[str, Any], steps: int) -> Any:
        """The peft config of the experiment's adapter settings `s` for a run of `steps`."""
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Called after each optimiser step, while its gradients are there."""

    def penalty(self) -> Tensor | float:
        """What the adapter adds to the training loss."""
        return 0.0

    def state(self) -> dict[str, Any]:
        """What training keeps besides the weights, for a checkpoint."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Put back what `state` gave."""


class LoRA(Adapter):
    """Low-rank updates BA of the target projections (Hu et al. 2021)."""

    @staticmethod
    def config(s: dict[str, Any], steps: int, **extra: Any) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=s["r"], lora_alpha=s.get("alpha") or 2 * s["r"], lora_dropout=s["dropout"],
                          target_modules=s.get("targets"), **extra)


class DoRA(LoRA):
    """LoRA with a learned magnitude per output (Liu et al. 2024)."""

    @staticmethod
    def config(s: dict[str, Any], steps: int) -> Any:
        return LoRA.config(s, steps, use_dora=True)


class IA3(Adapter):
    """One learned scale per channel of keys, values and feed-forward inputs (Liu et al. 2022)."""

    @staticmethod
    def config(s: dict[str, Any], steps: int) -> Any:
        from peft import IA3Config

        targets = s.get("targets")
        # IA3 scales the inputs of feed-forward layers and the outputs of the others; with the
        # user's own targets, none of them is taken for feed-forward
        return IA3Config(target_modules=targets, feedforward_modules=[] if targets else None)


class AdaLoRA(Adapter):
    """LoRA whose ranks are reallocated between layers while training (Zhang et al. 2023)."""

    @staticmethod
    def config(s: dict[str, Any], steps: int) -> Any:
        from peft import AdaLoraConfig

        if steps < 10:
            raise ConfigError(f"adapter.method adalora reallocates ranks during training: it needs at "
                              f"least 10 optimiser steps (this run has {steps})")
        # three phases: warm up at the initial rank, prune towards r, then fine-tune at it
        return AdaLoraConfig(init_r=int(1.5 * s["r"]), target_r=s["r"],
                             lora_alpha=s.get("alpha") or 2 * s["r"], lora_dropout=s["dropout"],
                             target_modules=s.get("targets"), total_step=steps,
                             tinit=steps // 10, tfinal=steps // 5, deltaT=max(1, steps // 50))

    def after_step(self, step: int) -> None:
        self.tuner.update_and_allocate(step)

    def penalty(self) -> Tensor | float:
        """The orthogonality penalty on P and Q (the paper's R(P, Q), weighted as peft weights it;
        peft adds it only when its own forward is given labels)."""
        weight = self.tuner.peft_config[NAME].orth_reg_weight
        terms = []
        for name, p in self.tuner.model.named_parameters():
            if p.requires_grad and ("lora_A" in name or "lora_B" in name):
                gram = p @ p.T if "lora_A" in name else p.T @ p
                eye = torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype)
                terms.append(torch.linalg.matrix_norm(gram - eye))
        return weight * torch.stack(terms).mean() if terms else 0.0

    def state(self) -> dict[str, Any]:
        """The importance averages and the rank pattern: without them a resumed run would
        allocate ranks differently."""
        ranks, pattern = self.tuner.rankallocator, self.tuner.peft_config[NAME].rank_pattern
        return {"ipt": dict(ranks.ipt), "exp_avg_ipt": dict(ranks.exp_avg_ipt),
                "exp_avg_unc": dict(ranks.exp_avg_unc),
                "rank_pattern": None if pattern is None else {k: torch.tensor(v) for k, v in pattern.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        ranks = self.tuner.rankallocator
        ranks.ipt, ranks.exp_avg_ipt, ranks.exp_avg_unc = (dict(state[k]) for k in (
            "ipt", "exp_avg_ipt", "exp_avg_unc"))
        pattern = state["rank_pattern"]
        self.tuner.peft_config[NAME].rank_pattern = (None if pattern is None else
                                                     {k: v.tolist() for k, v in pattern.items()})


ADAPTERS: dict[str, type[Adapter]] = {"lora": LoRA, "dora": DoRA, "ia3": IA3, "adalora": AdaLoRA}


def attach(model: nn.Module, settings: dict[str, Any], steps: int) -> Adapter:
    """Inject the adapter `settings` (method, r, alpha, dropout, targets) into `model` in place;
    only the adapter and the programs' parameters stay trainable."""
    import peft

    method = settings["method"]
    if method not in ADAPTERS:
        raise ConfigError(f"adapter.method '{method}' is not one of {', '.join(ADAPTERS)}")
    adapter = ADAPTERS[method]
    config = adapter.config(settings, steps)
    try:
        tuner = peft.PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type](model, config, NAME)
    except ValueError as e:  # peft says which target modules it could not find
        raise ConfigError(f"adapter: {str(e).splitlines()[0]}; adapter.targets names modules of "
                          f"{type(model).__name__} (e.g. {', '.join(_linear_names(model)[:6])})") from None
    for name, p in model.named_parameters():
        if "program_params" in name:
            p.requires_grad_(True)  # the program is what is being programmed: it trains with the adapter
    return adapter(tuner)


def _linear_names(model: nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers: what adapter.targets may name."""
    return list(dict.fromkeys(n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                              if isinstance(m, nn.Linear)))


__all__ = ["ADAPTERS", "IA3", "AdaLoRA", "Adapter", "DoRA", "LoRA", "attach"]
