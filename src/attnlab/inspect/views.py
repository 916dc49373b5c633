"""Views of what a trained model attends to, for one input: one self-contained HTML file (a head
view and a model view in the manner of BertViz, scripts, styles and data inlined, no network) and
PNGs of the same maps for papers.

Weights come from `attnlab.record` around the model's ordinary forward (the fast path), recomputed
a block of query rows at a time; each row keeps only its top `top` weights and the share of the
row's mass they hold, so a 4,096-token input still makes a file of a few MB.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attnlab.errors import InputError
from attnlab.inspect.analyses import rollout
from attnlab.inspect.view_page import PAGE_TEMPLATE
from attnlab.nn.recorder import record
from attnlab.tasks.base import Inspection

TOP = 24  # weights kept per query row
EVERY = 64  # a row over at most this many keys keeps every weight (exact maps for short inputs)
PAGE = 256  # query rows the page shows at once
BLOCK = 2**24  # weights recomputed at once (64 MB of float32): rows per block = BLOCK // (heads · keys);
# the recorder computes only the rows asked, so smaller blocks bound memory and cost nothing more
MAX_BYTES = 16 * 2**20  # the data of a view stays under this: fewer weights per row beyond it
ROLLOUT = "rollout"


@dataclass
class Map:
    """One layer's weights (or the rollout) over the shown positions, kept sparse: for each head
    and query row, the K largest weights and their key positions, largest first (K = `top`, or
    every key when a row has at most EVERY)."""

    label: str
    query: str  # the sequence queries come from
    key: str
    index: np.ndarray  # (H, N, K) key positions, among the shown keys
    value: np.ndarray  # (H, N, K) weights
    mass: np.ndarray  # (H, N) share of each row's weight the kept ones hold
    keys: int  # shown key positions
    allocation: dict | None = None  # what the layer's gates chose (see `gate_allocation`)

    @property
    def heads(self) -> int:
        return self.index.shape[0]

    @property
    def whole(self) -> bool:
        """Whether every weight is kept."""
        return self.index.shape[-1] == self.keys

    def dense(self, head: int) -> np.ndarray:
        """(N, M) weights of one head, NaN where a weight was not kept."""
        n, m = self.index.shape[1], self.keys
        out = np.full((n, m), np.nan, dtype=np.float32)
        np.put_along_axis(out, self.index[head].astype(np.int64), self.value[head], axis=1)
        return out


@dataclass
class View:
    """What a view shows: labels of the shown positions, one Map per layer (and the rollout), and
    how the input was made ready (`inspection`: title, picture, notes)."""

    inspection: Inspection
    labels: dict[str, list[str]]
    maps: list[Map]
    top: int
    seconds: float = 0.0
    layers: list[str] = field(default_factory=list)  # recorded layer names, in model order

    def start(self) -> int:
        """The map a view opens on: the last cross-attention layer (a translation's alignment),
        else the last layer."""
        layers = [i for i, m in enumerate(self.maps) if m.label != ROLLOUT]
        cross = [i for i in layers if self.maps[i].query != self.maps[i].key]
        return (cross or layers)[-1]

    def pick(self, layer: int | None, head: int | None) -> tuple[int, int | None]:
        """(map index, head) for --layer/--head, checked against what the model has."""
        count = len(self.layers)
        if layer is not None and not 0 <= layer < count:
            raise InputError(f"--layer {layer} is out of range: the model has {count} attention "
                             f"layer(s), 0..{count - 1}")
        chosen = self.start() if layer is None else layer
        heads = self.maps[chosen].heads
        if head is not None and not 0 <= head < heads:
            raise InputError(f"--head {head} is out of range: layer {chosen} has {heads} head(s), "
                             f"0..{heads - 1}")
        return chosen, head


def build(model: nn.Module, inspection: Inspection, top: int = TOP,
          max_bytes: int = MAX_BYTES) -> View:
    """Run `inspection.forward` once under the recorder and keep each layer's top weights per row
    (fewer than `top` when the view's data would pass `max_bytes`), plus the rollout."""
    if top < 1:
        raise InputError(f"top={top}: keep at least one weight per row")
    started, training = time.perf_counter(), model.training
    model.eval()  # no dropout: the weights the model uses when it predicts
    try:
        with torch.no_grad(), record(model) as rec:
            inspection.forward()
    finally:
        model.train(training)
    shown = {name: inspection.shown.get(name, list(range(len(labels))))
             for name, labels in inspection.sequences.items()}
    sides = [inspection.layers[name] for name in rec.layers]
    heads = [_heads(rec, name) for name in rec.layers]
    top = _fitting(top, [(h, len(shown[q])) for h, (q, _) in zip(heads, sides, strict=True)],
                   len(shown.get(inspection.rollout, [])), max_bytes)
    maps, flow = [], None
    for i, (name, (query, key)) in enumerate(zip(rec.layers, sides, strict=True)):
        through = inspection.rollout is not None and query == key == inspection.rollout
        index, value, mass, mean = _sparse(rec, name, inspection.row, shown[query], shown[key], top,
                                           through)
        maps.append(Map(f"layer {i} · {name}", query, key, index, value, mass, len(shown[key]),
                        gate_allocation(rec, name, inspection.row, shown[query])))
        if through:  # rollout, first layer rightmost, one layer at a time (Abnar & Zuidema 2020)
            step = rollout([mean[None, None]])[0]
            flow = step if flow is None else step @ flow
    if flow is not None:
        n = len(shown[inspection.rollout])
        values, index = flow.topk(n if n <= EVERY else min(top, n), dim=-1)
        maps.append(Map(ROLLOUT, inspection.rollout, inspection.rollout,
                        index[None].numpy().astype(np.int32), values[None].numpy(),
                        (values.sum(-1) / flow.sum(-1).clamp(min=1e-12))[None].numpy(), n))
    labels = {name: [inspection.sequences[name][p] for p in positions]
              for name, positions in shown.items()}
    return View(inspection, labels, maps, top, time.perf_counter() - started, list(rec.layers))


def inspect_run(run: str | Path, *, text: str | None = None, example: int | None = None,
                image: str | Path | None = None, top: int = TOP, max_bytes: int = MAX_BYTES) -> View:
    """The view of one input to a trained run: `text` (as its task reads it), test `example` N,
    or an `image` file (PNG or JPEG, read as the run's training images were; or .npy raw pixels)."""
    from attnlab.models.base import load_model
    from attnlab.tasks import task_of
    from attnlab.train.folder import read_run

    given = [name for name, value in (("text", text), ("--example", example), ("--image", image))
             if value is not None]
    if len(given) != 1:
        raise InputError("give one input to look at: text, --example N or --image FILE"
                         + (f" (got {' and '.join(given)})" if given else ""))
    run = Path(run)
    exp = read_run(run)
    task, model = task_of(exp.task), load_model(run)
    row = None
    if example is not None:
        test = task.load_test(run, exp)
        count = 0 if test is None else len(test.test)
        if not 0 <= example < count:
            raise InputError(f"--example {example} is out of range: {run} holds {count} test "
                             f"example(s){f', 0..{count - 1}' if count else ''}")
        row = test.test.inputs[example:example + 1]
    # an image file is the task's to read: an image run makes it as its training images were
    inspection = task.inspection(model, task.load_encoders(run, exp), exp, text=text,
                                 image=None if image is None else Path(image), example=row)
    return build(model, inspection, top, max_bytes)


def _fitting(top: int, layers: list[tuple[int, int]], rollout_rows: int, max_bytes: int) -> int:
    """The most weights per row (≤ top) whose view stays under max_bytes: each kept weight costs
    4 bytes of base64 (a 2-byte position, a 1-byte level), each row 7 more (scale and mass)."""
    rows = sum(h * n for h, n in layers) + rollout_rows
    return max(1, min(top, (max_bytes // max(rows, 1) - 7) // 4))


def _heads(rec, name: str) -> int:
    return rec.passes[name][-1].heads  # head groups side by side, or a combined layer's


def _sparse(rec, name: str, example: int, queries: list[int], keys: list[int], top: int,
            keep_mean: bool):
    """(index, value, mass) of the top weights of each shown query row of layer `name` for one
    `example` of the batch, recomputed about BLOCK weights at a time (on the model's device);
    with keep_mean, also the (N, M) head average among the shown positions (what rollout reads),
    else None."""
    heads, key_count = _heads(rec, name), len(keys)
    k = key_count if key_count <= EVERY else min(top, key_count)
    step = max(1, BLOCK // max(1, heads * rec.passes[name][-1].calls[0].k.shape[-2]))
    columns = torch.tensor(keys)
    index = np.zeros((heads, len(queries), k), dtype=np.int32)
    value = np.zeros((heads, len(queries), k), dtype=np.float32)
    mass = np.zeros((heads, len(queries)), dtype=np.float32)
    mean = torch.zeros(len(queries), key_count) if keep_mean else None
    for start in range(0, len(queries), step):
        rows = queries[start:start + step]
        w = rec.weights(name, rows=rows)[example]
        w = w[:, :, columns.to(w.device)].float()  # (H, rows, keys)
        values, where = w.topk(k, dim=-1)
        stop = start + len(rows)
        index[:, start:stop], value[:, start:stop] = where.cpu().numpy(), values.cpu().numpy()
        mass[:, start:stop] = (values.sum(-1) / w.sum(-1).clamp(min=1e-12)).cpu().numpy()
        if mean is not None:
            mean[start:stop] = w.mean(0).cpu()
    return index, value, mass, mean


# -- HTML ---------------------------------------------------------------------------------------


def gate_allocation(rec, name: str, example: int, queries: list[int]) -> dict | None:
    """What the gates of layer `name` chose for one example, over its shown queries: per gate
    `head_mean` (per head; a mix's per head and component) and `per_token` (shown query × head),
    a route's `share` of tokens per head, a diff's `lambda`; None for a layer without gates."""
    gates = rec.allocation(name)
    if not gates:
        return None
    rows = torch.tensor(queries)
    out: dict = {}
    for gate, values in gates.items():
        v = values.float()
        v = v[min(example, v.shape[0] - 1)]  # (N or 1, …)
        v = v[rows] if v.shape[0] > 1 else v.expand(len(queries), *v.shape[1:])
        if gate == "diff":
            out[gate] = {"lambda": round(float(v.mean()), 4)}
            continue
        entry = {"head_mean": _rounded(v.mean(0)),
                 "per_token": _rounded(v) if values.shape[1] > 1 else None}
        if gate == "mix":
            program = next(m.program for m, n in rec.names.items() if n == name)
            entry["components"] = [str(c) for c in program.components]
        if gate == "route":
            entry["share"] = _rounded((v > 0).float().mean(0))
        out[gate] = entry
    return out


def _rounded(t: torch.Tensor) -> list:
    """Nested lists of 4-decimal floats: short in the page's JSON."""
    return np.round(t.double().numpy(), 4).tolist()


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _payload(view: View, layer: int, head: int | None) -> dict:
    """The view as JSON: sparse weights as base64 little-endian arrays (positions uint16 or uint32,
    levels uint8 of each row's largest weight, that largest weight float32, mass uint8 of 255)."""
    maps = []
    for m in view.maps:
        wide = m.keys > 65535
        scale = m.value[..., 0] if m.value.shape[-1] else np.zeros(m.mass.shape, np.float32)
        level = np.rint(255 * m.value / np.maximum(scale, 1e-30)[..., None]).clip(0, 255)
        label = f"{m.label} · {m.query}" if m.label == ROLLOUT and len(view.labels) > 1 else m.label
        maps.append({"label": label, "query": m.query, "key": m.key, "heads": m.heads,
                     "rows": int(m.index.shape[1]), "k": int(m.index.shape[2]), "wide": wide,
                     "index": _b64(m.index.astype("<u4" if wide else "<u2")),
                     "level": _b64(level.astype(np.uint8)), "scale": _b64(scale.astype("<f4")),
                     "mass": _b64(np.rint(255 * m.mass).clip(0, 255).astype(np.uint8)),
                     "allocation": m.allocation})
    picture = view.inspection.picture
    return {"title": view.inspection.title, "notes": view.inspection.notes, "top": view.top,
            "page": PAGE, "sequences": view.labels, "maps": maps, "start": {"map": layer, "head": head or 0},
            "picture": None if picture is None else {
                "pixels": np.asarray(picture.pixels, dtype=float).round(3).ravel().tolist(),
                "height": int(np.shape(picture.pixels)[0]), "width": int(np.shape(picture.pixels)[1]),
                "grid": picture.grid, "first": picture.first}}


def summary(view: View, size: int) -> str:
    """'1.8 MB, top 24 weights per row, 4,096 tokens × 8 heads × 4 layers'."""
    layers = [m for m in view.maps if m.label != ROLLOUT]
    tokens = " + ".join(f"{len(v):,} {k}" for k, v in view.labels.items())
    heads = sorted({m.heads for m in layers})
    return (f"{_size(size)}, {_kept(view)}, {tokens} × "
            f"{'/'.join(map(str, heads))} heads × {len(layers)} layers"
            + (" + rollout" if len(layers) < len(view.maps) else ""))


def _kept(view: View) -> str:
    return "every weight" if all(m.whole for m in view.maps) else f"top {view.top} weights per row"


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.0f} kB"


def write_html(view: View, path: str | Path, layer: int | None = None,
               head: int | None = None) -> tuple[Path, str]:
    """Write the view as one HTML file (no network: everything inlined); returns the path and a
    summary of what it holds, its size first."""
    path = _writable(path)
    path.write_text(page(view, layer, head), encoding="utf-8")
    return path, summary(view, path.stat().st_size)


def page(view: View, layer: int | None = None, head: int | None = None) -> str:
    """The view as one self-contained HTML page (everything inlined, no network)."""
    chosen, head = view.pick(layer, head)
    data = json.dumps(_payload(view, chosen, head), separators=(",", ":"), ensure_ascii=False)
    data = data.replace("<", "\\u003c")  # no "</script>" or "<!--" in the data can end the script
    template = PAGE_TEMPLATE.replace("/*DATA*/null", data)
    said, html = "", template
    for _ in range(3):  # the page states its own size, which the statement changes a little
        stated = summary(view, len(html.encode()))
        if stated == said:
            break
        said, html = stated, template.replace("<!--SUMMARY-->", _escape(stated))
    return html


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _writable(path: str | Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot make the folder {path.parent}: {e.strerror}") from None
    if path.is_dir():
        raise InputError(f"{path} is a folder: give a file name for --out")
    return path


# -- PNG ----------------------------------------------------------------------------------------


LABELLED = 48  # up to this many positions a side, the axes name each token


def write_png(view: View, path: str | Path, layer: int | None = None,
              head: int | None = None) -> Path:
    """The chosen layer's map through matplotlib (every head, or `head`): for an image, a heatmap
    over the image per head and for the rollout; otherwise query × key maps labelled by token
    (a translation's cross-attention is its source × target alignment)."""
    from matplotlib.figure import Figure

    chosen, head = view.pick(layer, head)
    m = view.maps[chosen]
    heads = list(range(m.heads)) if head is None else [head]
    picture = view.inspection.picture
    panels = [(f"head {h}", m, h) for h in heads]
    flow = [x for x in view.maps if x.label == ROLLOUT]
    if picture is not None and flow:
        panels.append(("rollout", flow[0], 0))
    first = int(picture is not None)  # an image panel comes first, to compare the heat with
    cols = min(len(panels) + first, 4)
    rows = -(-(len(panels) + first) // cols)
    n, k = len(view.labels[m.query]), len(view.labels[m.key])
    side = 2.6 if picture is not None else min(9.0 if len(panels) == 1 else 4.5, max(3.0, 0.16 * max(n, k)))
    fig = Figure(figsize=(cols * side + 1.2, rows * side + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(panels) + first:]:
        ax.set_axis_off()
    if picture is not None:
        _picture_panel(axes.flat[0], picture, None, 0)
        axes.flat[0].set_title("image", fontsize=9)
    # a long row keeps only its top weights: the rest are drawn as 0 (the title says so)
    dense = [np.nan_to_num(shown.dense(h)) for _, shown, h in panels]
    if picture is not None:
        dense = [_looked_at(d, picture) for d in dense]
    top = max(max(float(d.max()) for d in dense), 1e-12)  # one scale: colours compare across heads
    image = None
    for ax, (title, shown, _), weights in zip(axes.flat[first:], panels, dense, strict=False):
        if picture is not None:
            image = _picture_panel(ax, picture, weights, top)
        else:
            image = _map_panel(ax, weights, view.labels[shown.query], view.labels[shown.key], top)
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8,
                 label="weight on each patch" if picture is not None else "attention weight")
    fig.suptitle(f"{view.inspection.title}\n{m.label} · {_kept(view)}"
                 + ("" if m.whole else " (the rest drawn as 0)"), fontsize=9)
    path = _writable(path)
    fig.savefig(path, dpi=120)
    return path


def _looked_at(weights: np.ndarray, picture) -> np.ndarray:
    """(grid, grid) weight on each patch from the [CLS] row, or the mean over patch rows."""
    rows = weights[:1] if picture.first else weights[picture.first:]
    patches = rows.mean(0)[picture.first:picture.first + picture.grid ** 2]
    return patches.reshape(picture.grid, picture.grid)


def _picture_panel(ax, picture, heat: np.ndarray | None, top: float):
    """The image in grey, under the heat (0..top) if given."""
    height, width = np.shape(picture.pixels)
    ax.imshow(picture.pixels, cmap="gray", extent=(0, width, height, 0))
    ax.set_axis_off()
    if heat is None:
        return None
    return ax.imshow(heat, cmap="inferno", alpha=0.6, vmin=0, vmax=top, extent=(0, width, height, 0),
                     interpolation="nearest")


def _map_panel(ax, weights: np.ndarray, queries: list[str], keys: list[str], top: float):
    # a map bigger than its pixels is averaged down, so a few strong weights do not vanish
    image = ax.imshow(weights, cmap="viridis", vmin=0, vmax=top, aspect="auto",
                      interpolation="nearest" if max(weights.shape) <= 256 else "antialiased")
    if len(keys) <= LABELLED:
        ax.set_xticks(range(len(keys)), keys, rotation=90, fontsize=7)
    else:
        ax.set_xlabel("key position")
    if len(queries) <= LABELLED:
        ax.set_yticks(range(len(queries)), queries, fontsize=7)
    else:
        ax.set_ylabel("query position")
    return image
