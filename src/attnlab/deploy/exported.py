"""An exported model brought back from its file alone: the task's own predictor (TextClassifier,
Translator, …) whose `.model` runs the export, with ONNX Runtime or as a torch.export program.

The file carries what the predictor needs (`attnlab` metadata: the experiment, the task's encoder
files as text, the model's kind and config, its metrics). Nothing is unpickled: ONNX files are
protobuf, pt2 files are read by torch.export.load only, and the metadata is JSON.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from attnlab.errors import AttnlabError, ExportError

MARK = "attnlab-export"  # the metadata's "format": what says a file is one of ours
KEY = "attnlab"  # ONNX metadata_props key of the metadata
EXTRA_FILE = "attnlab.json"  # the pt2 extra file holding it
FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}


class Exported(nn.Module):
    """A model's forward as exported: called on the tensors the model took, it gives what the
    model gave. Its `config` is the model's (as saved), and its fields read as attributes
    (`image_size`, `pad_id`), as predictors read them of the model."""

    def __init__(self, run: Callable[..., Tensor], saved: dict[str, Any], runtime: str) -> None:
        super().__init__()
        self._run, self.runtime = run, runtime
        self.kind = saved["model"]["model"]
        self.config = SimpleNamespace(**saved["model"]["config"])

    def forward(self, *inputs: Tensor) -> Tensor:
        return self._run(*inputs)

    def __getattr__(self, name: str) -> Any:
        config = self.__dict__.get("config")
        if config is not None and hasattr(config, name):
            return getattr(config, name)
        return super().__getattr__(name)


class ExportedSeq2Seq(Exported):
    """An exported Seq2Seq decodes with its whole forward over the growing target (no caches:
    the export is the forward alone), by the model's own greedy and beam search."""

    @torch.no_grad()
    def greedy(self, src: Tensor, max_len: int = 64) -> Tensor:
        from attnlab.models.seq2seq import greedy_search

        return greedy_search(lambda tokens: self(src, tokens)[:, -1], src.shape[0], self.config,
                             max_len, src.device)

    @torch.no_grad()
    def beam(self, src: Tensor, beam_size: int = 4, max_len: int = 64,
             length_penalty: float = 1.0) -> Tensor:
        from attnlab.models.seq2seq import beam_search

        rows = src.repeat_interleave(beam_size, dim=0)  # a row's beams share its source: no
        return beam_search(lambda tokens: self(rows, tokens)[:, -1],  # state to reorder
                           lambda beam: None, src.shape[0], beam_size, self.config, max_len,
                           length_penalty, src.device)


WRAPPERS: dict[str, type[Exported]] = {"seq2seq": ExportedSeq2Seq}  # model kind -> its wrapper


def load_exported(path: str | Path) -> nn.Module:
    """The predictor `attnlab.train.run.load(RUN)` would give, rebuilt from an export made by
    `attnlab.deploy.export` (FILE.onnx or FILE.pt2) alone, in eval mode; its `.model` runs the
    export. ExportError for a file that is missing, not loadable, or not an attnlab export."""
    return rebuild(path)[0]


def rebuild(path: str | Path) -> tuple[nn.Module, Exported, dict[str, Any]]:
    """(predictor, the exported model, the metadata) of an export file."""
    from attnlab.tasks import kind
    from attnlab.train.config import load_experiment

    path = Path(path)
    runtime = next((f for f, suffix in FORMATS.items() if path.suffix.lower() == suffix), None)
    if runtime is None:
        raise ExportError(f"{path}: an attnlab export is a .onnx or .pt2 file")
    if not path.is_file():
        raise ExportError(f"no export file '{path}'")
    run, text = RUNTIMES[runtime](path)
    saved = _metadata(text, path)
    try:
        exp = load_experiment(yaml.safe_load(saved["experiment"]))
        task = kind(saved["task"])
        model = WRAPPERS.get(saved["model"]["model"], Exported)(run, saved, runtime)
        encoders = _encoders(task, saved["encoders"], exp)
        return task.predictor(model, encoders, exp).eval(), model, saved
    except AttnlabError as err:
        raise ExportError(f"{path}: its attnlab metadata does not rebuild a predictor ({err})") from None
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as err:
        raise ExportError(f"{path}: its attnlab metadata is damaged ({type(err).__name__}: {err})") from None


def _metadata(text: str | None, path: Path) -> dict[str, Any]:
    if not text:
        raise ExportError(f"{path} is not an attnlab export: it carries no attnlab metadata (export "
                          "runs with `attnlab export RUN`)")
    try:
        saved = json.loads(text)
    except ValueError:
        saved = None
    if not isinstance(saved, dict) or saved.get("format") != MARK:
        raise ExportError(f"{path} is not an attnlab export: its attnlab metadata is not ours")
    return saved


def _encoders(task, files: dict[str, str], exp) -> Any:
    """The task's encoders, read by the task from its own files written out again."""
    with tempfile.TemporaryDirectory(prefix="attnlab-export-") as tmp:
        for name, text in files.items():
            if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
                raise ExportError(f"an encoder file named {name!r:.60} is not a plain file name")
            (Path(tmp) / name).write_text(text)
        return task.load_encoders(Path(tmp), exp)


def _onnx(path: Path) -> tuple[Callable[..., Tensor], str | None]:
    """ONNX Runtime on the CPU, with torch's thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings are about graph rewrites
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime raises its own types: a bad protobuf, a bad graph
        raise ExportError(f"{path} is not an ONNX model ONNX Runtime can load "
                          f"({_first_line(err)})") from None
    names = [i.name for i in session.get_inputs()]

    def run(*inputs: Tensor) -> Tensor:
        fed = {name: t.detach().cpu().numpy() for name, t in zip(names, inputs, strict=True)}
        return torch.from_numpy(session.run(None, fed)[0])

    return run, session.get_modelmeta().custom_metadata_map.get(KEY)


def _pt2(path: Path) -> tuple[Callable[..., Tensor], str | None]:
    """The torch.export program, read by torch.export.load (and nothing else)."""
    extra = {EXTRA_FILE: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as err:  # a zip that is not a program, or no zip at all
        raise ExportError(f"{path} is not a torch.export program torch can load "
                          f"({_first_line(err)})") from None
    module = program.module()

    def run(*inputs: Tensor) -> Tensor:
        with torch.no_grad():
            return module(*inputs)

    return run, extra[EXTRA_FILE] or None


RUNTIMES = {"onnx": _onnx, "pt2": _pt2}


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
