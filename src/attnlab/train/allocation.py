"""The allocation over training: what each gate chose at each validation, as one picture.

Training writes `allocation.json` (a list of {epoch, step, alloc_<gate>/<layer>/<part>: value})
into the run folder of a model with gates (`mix`, `diff`, `output_gate`, `route`), and draws
it as `allocation.png`: one panel per layer, a line per component, head or λ.
"""

from __future__ import annotations

import json
from pathlib import Path

from attnlab.errors import RunFolderError

ALLOCATION_FILE = "allocation.json"
PICTURE_FILE = "allocation.png"
_PART_NAMES = {"c": "component", "h": "head"}


def read_history(run: Path) -> list[dict]:
    """The run's allocation history; RunFolderError when the run has no gates."""
    path = Path(run) / ALLOCATION_FILE
    if not path.is_file():
        raise RunFolderError(f"{run} has no {ALLOCATION_FILE}: its model has no gates (mix, diff, "
                             "output_gate or route), or it never validated")
    history = json.loads(path.read_text())
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise RunFolderError(f"{path} is not a list of validations")
    return history


def panels(history: list[dict]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{'<gate> · <layer>': {line label: [(step, value), ...]}} from the history."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for point in history:
        for key, value in point.items():
            if not key.startswith("alloc_"):
                continue
            gate, layer, part = key.removeprefix("alloc_").split("/", 2)
            label = "λ" if part == "lambda" else f"{_PART_NAMES.get(part[0], part[0])} {part[1:]}"
            out.setdefault(f"{gate} · {layer}", {}).setdefault(label, []).append(
                (int(point.get("step", 0)), float(value)))
    return out


def draw_allocation(history: list[dict], path: Path, *, title: str = "") -> Path:
    """A PNG with one panel per gated layer: each component's (mix), λ (diff), or each head's
    (output_gate, route) mean allocation at each validation."""
    from matplotlib.figure import Figure

    found = panels(history)
    if not found:
        raise RunFolderError("the allocation history holds no gate's figures")
    cols = min(2, len(found))
    rows = -(-len(found) // cols)
    fig = Figure(figsize=(5.5 * cols, 3.2 * rows), layout="constrained")
    for i, (name, lines) in enumerate(sorted(found.items())):
        ax = fig.add_subplot(rows, cols, i + 1)
        for label, points in lines.items():
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="o", markersize=3, label=label)
        gate = name.split(" · ")[0]
        ax.set_ylabel({"mix": "gate weight", "diff": "λ", "output_gate": "mean gate σ",
                       "route": "router weight"}.get(gate, "allocation"))
        if gate == "mix":
            ax.set_ylim(0, 1)
        ax.set_xlabel("training step")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7, ncols=2)
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
