"""`attnlab export RUN`: a trained run as one deployable file (ONNX or pt2), checked against the
model on the run's test split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def export_command(
    run: Annotated[Path, typer.Argument(help="A run's output folder.")],
    format: Annotated[str, typer.Option("--format", help="onnx (ONNX Runtime) or pt2 "
                                        "(torch.export).")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="The file to write (default RUN/model.onnx "
                                             "or RUN/model.pt2).")] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Compare the export with the "
                                        "model over the whole saved test split.")] = True,
) -> None:
    """Export a trained model with a dynamic batch and sequence length; the tokenizer, labels,
    experiment and metrics travel inside the file. Prints the check's summary as JSON."""
    from attnlab.deploy import export

    summary = export(run, format, out, check=check)
    Console(highlight=False).print_json(json.dumps(summary))
