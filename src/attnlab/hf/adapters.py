"""peft adapters for fine-tuning a pretrained model cheaply: LoRA, DoRA, IA3 and AdaLoRA.

`attach(model, settings, steps)` injects the adapter into the model in place (its module names do
not change, so a state dict stays readable) and freezes everything but the adapter and the
attnlab programs' own parameters, which train with it and are saved with it. `ADAPTERS` maps an
experiment's `adapter.method` to the peft config it builds; AdaLoRA also needs its
`update_and_allocate` after every optimiser step and its orthogonality penalty in the loss,
which `Adapter` gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError

NAME = "default"  # peft's adapter name: one adapter per model here


def _lora(s: dict[str, Any], steps: int, **extra: Any):
    from peft import LoraConfig

    return LoraConfig(r=s["r"], lora_alpha=s.get("alpha") or 2 * s["r"], lora_dropout=s["dropout"],
                      target_modules=s.get("targets"), **extra)


def _dora(s: dict[str, Any], steps: int):
    return _lora(s, steps, use_dora=True)


def _ia3(s: dict[str, Any], steps: int):
    from peft import IA3Config

    targets = s.get("targets")
    # IA3 scales the inputs of feed-forward layers and the outputs of the others; with the user's
    # own targets, none of them is taken for feed-forward unless peft's defaults say so
    return IA3Config(target_modules=targets, feedforward_modules=[] if targets else None)


def _adalora(s: dict[str, Any], steps: int):
    from peft import AdaLoraConfig

    if steps < 10:
        raise ConfigError(f"adapter.method adalora reallocates ranks during training: it needs at "
                          f"least 10 optimiser steps (this run has {steps})")
    # AdaLoRA's three phases: warm up at the initial rank, prune towards r, then fine-tune at it
    return AdaLoraConfig(init_r=s.get("init_r") or int(1.5 * s["r"]), target_r=s["r"],
                         lora_alpha=s.get("alpha") or 2 * s["r"], lora_dropout=s["dropout"],
                         target_modules=s.get("targets"), total_step=steps,
                         tinit=steps // 10, tfinal=steps // 5, deltaT=max(1, steps // 50))


ADAPTERS: dict[str, Callable[[dict[str, Any], int], Any]] = {
    "lora": _lora, "dora": _dora, "ia3": _ia3, "adalora": _adalora}


@dataclass(eq=False)
class Adapter:
    """The peft tuner that injected an adapter into a model (kept out of the model's modules, so
    its parameters are not counted or saved twice)."""

    tuner: Any  # peft's BaseTuner (LoraModel, IA3Model, AdaLoraModel)
    method: str

    def after_step(self, step: int) -> None:
        if self.method == "adalora":
            self.tuner.update_and_allocate(step)

    def state(self) -> dict[str, Any]:
        """What training keeps besides the weights, for a checkpoint: AdaLoRA's importance
        averages and its rank pattern (without them a resumed run would allocate differently)."""
        if self.method != "adalora":
            return {}
        ranks, pattern = self.tuner.rankallocator, self.tuner.peft_config[NAME].rank_pattern
        return {"ipt": dict(ranks.ipt), "exp_avg_ipt": dict(ranks.exp_avg_ipt),
                "exp_avg_unc": dict(ranks.exp_avg_unc),
                "rank_pattern": None if pattern is None else {k: torch.tensor(v) for k, v in pattern.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        if self.method != "adalora" or not state:
            return
        ranks = self.tuner.rankallocator
        ranks.ipt, ranks.exp_avg_ipt, ranks.exp_avg_unc = (dict(state[k]) for k in (
            "ipt", "exp_avg_ipt", "exp_avg_unc"))
        pattern = state["rank_pattern"]
        self.tuner.peft_config[NAME].rank_pattern = (None if pattern is None else
                                                     {k: v.tolist() for k, v in pattern.items()})

    def penalty(self) -> Tensor | float:
        """AdaLoRA's orthogonality penalty on P and Q (its paper's R(P, Q), weighted as peft
        weights it); 0 for the others."""
        if self.method != "adalora":
            return 0.0
        weight = self.tuner.peft_config[NAME].orth_reg_weight
        terms = []
        for name, p in self.tuner.model.named_parameters():
            if p.requires_grad and ("lora_A" in name or "lora_B" in name):
                gram = p @ p.T if "lora_A" in name else p.T @ p
                eye = torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype)
                terms.append(torch.linalg.matrix_norm(gram - eye))
        return weight * torch.stack(terms).mean() if terms else 0.0


def attach(model: nn.Module, settings: dict[str, Any], steps: int) -> Adapter:
    """Inject the adapter `settings` (method, r, alpha, dropout, targets) into `model` in place;
    only the adapter and the programs' parameters stay trainable."""
    import peft

    method = settings["method"]
    if method not in ADAPTERS:
        raise ConfigError(f"adapter.method '{method}' is not one of {', '.join(ADAPTERS)}")
    config = ADAPTERS[method](settings, steps)
    tuner_class = peft.PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type]
    try:
        tuner = tuner_class(model, config, NAME)
    except ValueError as e:  # peft says which target modules it could not find
        raise ConfigError(f"adapter: {str(e).splitlines()[0]}; adapter.targets names modules of "
                          f"{type(model).__name__} (e.g. {', '.join(_linear_names(model)[:6])})") from None
    for name, p in model.named_parameters():
        if "program_params" in name:
            p.requires_grad_(True)  # the program is what is being programmed: it trains with the adapter
    return Adapter(tuner, method)


def _linear_names(model: nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers: what adapter.targets may name."""
    return list(dict.fromkeys(n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                              if isinstance(m, nn.Linear)))


__all__ = ["ADAPTERS", "Adapter", "attach"]
