"""`export(RUN)`: a trained run as one deployable file, ONNX or a torch.export program (pt2).

The model is frozen (`attnlab.freeze`) on a batch of the run's saved test split, each attention
call pinned to a backend that traces with a free sequence length: sdpa, or reference where sdpa
cannot compute the program (sparsemax, entmax, …; its memory grows with N×M). Flex, linear and
tiled are never pinned (flex does not export; tiled plans its tiles per shape). The forward is
exported with a dynamic batch and sequence length (what the task says, `Task.export_axes`),
with the experiment, metrics, model config and the task's encoder files inside the file. The
check runs the whole test split through the model and the export and compares them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import track

import attnlab
from attnlab.deploy.exported import EXTRA_FILE, FORMATS, KEY, MARK, rebuild
from attnlab.errors import ExportError, InputError
from attnlab.exec.frozen import freeze
from attnlab.models.base import MODEL_FILE, load_model
from attnlab.tasks import task_of
from attnlab.train.folder import read_run
from attnlab.train.loaders import loader

EXPORTABLE = ("sdpa", "reference")  # backends that trace with a dynamic sequence length
TOLERANCE = 1e-4  # the largest |export - model| the check accepts


def export(run: str | Path, format: str = "onnx", out: str | Path | None = None,
           check: bool = True, *, progress: bool = True) -> dict[str, Any]:
    """Export the model of run folder RUN to `out` (default RUN/model.onnx or RUN/model.pt2) and,
    with `check`, compare it with the model over the whole saved test split (ExportError beyond
    1e-4). Returns (and with `progress` prints) the summary."""
    run = Path(run)
    if format not in FORMATS:
        raise ExportError(f"unknown export format '{format}': choose {' or '.join(FORMATS)}")
    out = Path(out) if out is not None else run / f"model{FORMATS[format]}"
    if out.suffix.lower() != FORMATS[format]:
        raise ExportError(f"--out {out}: a {format} export is a {FORMATS[format]} file")
    _check_writable(out)
    exp = read_run(run)
    task = task_of(exp.task)
    prepared = task.load_test(run, exp)
    if prepared is None:
        raise ExportError(f"{run} has no saved test split to export and check with; train it again")
    model = load_model(run)
    # contiguous: a trimmed batch is a view whose strides would tie the traced length to the
    # padded one (torch.export guards on them)
    batches = [tuple(t.contiguous() for t in task.export_inputs(b)) for b in
               loader(task, prepared.test, exp.train.batch_size, False, exp.train.seed)]
    example = batches[0]
    with torch.no_grad():
        try:
            freeze(model, *example, backends=EXPORTABLE)
        except InputError as err:
            raise ExportError(f"cannot export {run}: {err}") from None
    pinned = sorted({b for m in model.modules() for b in (getattr(m, "frozen", None) or ())})
    saved = _metadata(run, exp, task, prepared.encoders, pinned)
    say = _say(progress)
    say(f"exporting {run} ({', '.join(model.programs())} on {', '.join(pinned)}) to {out}")
    started = time.perf_counter()
    _write(model, example, task.export_axes(model), format, out, saved, run)
    summary: dict[str, Any] = {
        "run": str(run), "file": str(out), "format": format, "bytes": out.stat().st_size,
        "backends": pinned, "export_seconds": round(time.perf_counter() - started, 2)}
    if check:
        summary["check"] = check_export(model, out, batches, task, prepared, exp, progress)
    return summary


def check_export(model, out: Path, batches: list, task, prepared, exp, progress: bool = False
                 ) -> dict[str, Any]:
    """Run every batch, and the first one cut shorter (another length, another batch size),
    through `model` and the export in `out`: the largest |difference|, the share of equal
    predictions (argmax), and what the task compares besides (translations)."""
    started = time.perf_counter()
    predictor, exported, _ = rebuild(out)
    axes = task.export_axes(model)
    shorter = _shortened(batches[0], axes)
    worst, same, total = 0.0, 0, 0
    shapes = sorted({", ".join("×".join(map(str, t.shape)) for t in inputs)
                     for inputs in [*batches, shorter]})
    console = Console(stderr=True)
    with torch.no_grad():
        for inputs in track([*batches, shorter], description="checking the export",
                            disable=not progress, console=console, transient=True):
            want, got = model(*inputs), exported(*inputs)
            if want.shape != got.shape:
                raise ExportError(f"the export of {exp.name} gives {tuple(got.shape)} where the model "
                                  f"gives {tuple(want.shape)}")
            worst = max(worst, _largest_difference(want, got))
            agree = want.argmax(-1) == got.argmax(-1)
            same, total = same + int(agree.sum()), total + agree.numel()
    examples = len(prepared.test)
    eager = task.predictor(model, prepared.encoders, exp).eval()
    found = {"examples": examples, "max_abs_diff": worst, "prediction_agreement": same / total,
             "predictions_compared": total, "input_shapes": shapes,
             **task.compare_exported(eager, predictor, prepared, exp)}
    found["seconds"] = round(time.perf_counter() - started, 2)
    if not worst <= TOLERANCE:
        raise ExportError(f"the export {out} differs from the model by up to {worst:.3g} (more than "
                          f"{TOLERANCE:g}) over {examples} test examples; predictions agree on "
                          f"{same / total:.1%} of {total}")
    return found


def _largest_difference(want: torch.Tensor, got: torch.Tensor) -> float:
    """max |want - got|; equal infinities (a recommender's padding item) differ by 0, and a NaN
    on one side only by infinity."""
    diff = torch.where(want == got, 0.0, (want.float() - got.float()).abs())
    return float(diff.nan_to_num(nan=float("inf")).max()) if diff.numel() else 0.0


def _shortened(inputs: tuple[torch.Tensor, ...], axes) -> tuple[torch.Tensor, ...]:
    """`inputs` with each free dimension cut to two thirds (at least 1): a shape the export was
    not traced with."""
    cut = []
    for t, free in zip(inputs, axes, strict=True):
        for dim in free:
            t = t.narrow(dim, 0, max(1, 2 * t.shape[dim] // 3))
        cut.append(t)
    return tuple(cut)


def _metadata(run: Path, exp, task, encoders, pinned: list[str]) -> dict[str, Any]:
    """What travels with the file: the experiment, metrics, model config, the task's encoder
    files (tokenizer, labels, pixel statistics, item index) as text, and versions."""
    with tempfile.TemporaryDirectory(prefix="attnlab-export-") as tmp:
        task.save_encoders(encoders, Path(tmp))
        files = {p.name: p.read_text() for p in sorted(Path(tmp).iterdir()) if p.is_file()}
    metrics = run / "metrics.json"
    return {"format": MARK, "version": 1, "attnlab": attnlab.__version__,
            "torch": torch.__version__, "run": exp.name, "task": task.kind,
            "experiment": (run / "experiment.yaml").read_text(),
            "metrics": json.loads(metrics.read_text()) if metrics.exists() else None,
            "model": json.loads((run / MODEL_FILE).read_text()),
            "labels": list(getattr(encoders, "label_names", None) or []) or None,
            "encoders": files, "backends": pinned}


def _dynamic_shapes(axes) -> tuple[dict[int, Any], ...]:
    """torch.export Dims for the task's free axes; an axis named twice is one Dim (a seq2seq's
    batch)."""
    dims: dict[str, Any] = {}

    def dim(axis) -> Any:
        if axis.name not in dims:
            dims[axis.name] = torch.export.Dim(axis.name, min=1, max=axis.max)
        return dims[axis.name]

    return tuple({d: dim(axis) for d, axis in free.items()} for free in axes)


def _write(model, example, axes, format: str, out: Path, saved: dict, run: Path) -> None:
    """Export and write `out` atomically (a temporary file renamed over it)."""
    shapes, text = _dynamic_shapes(axes), json.dumps(saved)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with _quiet(), torch.no_grad():
            if format == "pt2":
                program = torch.export.export(model, example, dynamic_shapes=shapes)
                torch.export.save(program, tmp, extra_files={EXTRA_FILE: text})
            else:
                onnx = torch.onnx.export(model, example, dynamic_shapes=shapes, dynamo=True,
                                         external_data=False, verbose=False,
                                         output_names=["logits"])
                onnx.model.metadata_props[KEY] = text
                onnx.save(tmp)
        os.replace(tmp, out)
    except Exception as err:  # torch's exporters raise many kinds; each is one line here
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError):
            raise ExportError(f"cannot write {out}: {err.strerror or err}") from None
        while err.__cause__ is not None:  # the ONNX exporter wraps what torch.export said
            err = err.__cause__
        first = re.sub(r"\x1b\[[0-9;]*m", "", (str(err).strip().splitlines() or [""])[0])[:300]
        raise ExportError(f"torch cannot export {run}'s model ({', '.join(model.programs())}) to "
                          f"{format} with a free {', '.join(a.name for f in axes for a in f.values())}"
                          f": {type(err).__name__}: {first}") from None


@contextlib.contextmanager
def _quiet():
    """The exporters' chatter (progress lines, warnings about optional packages) kept off
    stdout, where the CLI prints its JSON."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _check_writable(out: Path) -> None:
    folder = out.parent
    if not folder.is_dir():
        raise ExportError(f"cannot write {out}: no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {out}: the folder {folder} is not writable")
    if out.is_dir():
        raise ExportError(f"cannot write {out}: it is a folder")


def _say(progress: bool):
    console = Console(stderr=True, highlight=False)
    return (lambda text: console.print(text, markup=False)) if progress else (lambda text: None)
