"""PNG pictures of attention masks and attention weights, drawn with matplotlib.

Figures are built with ``matplotlib.figure.Figure`` (rendered by Agg), never pyplot, so drawing
needs no display and leaves the caller's pyplot state and backend alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

VISIBLE = "#1d3557"
HIDDEN = "#eef0f2"
MASKED_GREY = "#c4c4c4"
MARK = "#e63946"
MAX_COLUMNS = 8
_GRID_LIMIT = 48  # up to this many cells a side, cell borders are drawn and still readable
_DPI = 120


def _as_array(x, *, dtype=None) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _as_mask(visible) -> np.ndarray:
    mask = _as_array(visible, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (N, M), got shape {mask.shape}")
    return mask


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path


def _image_box(n: int, m: int, side: float) -> tuple[float, float, str]:
    """Width, height in inches of an (n, m) image, and the imshow aspect to use."""
    ratio = m / max(n, 1)
    if not 0.25 <= ratio <= 4:
        # Keep very long, thin masks legible instead of drawing them as a hairline.
        ratio = min(max(ratio, 0.25), 4)
        aspect = "auto"
    else:
        aspect = "equal"
    return side * min(1.0, ratio), side * min(1.0, 1 / ratio), aspect


def _grid(n_panels: int, n: int, m: int, side: float, extra_w: float):
    cols = min(max(n_panels, 1), MAX_COLUMNS)
    rows = math.ceil(max(n_panels, 1) / cols)
    width, height, aspect = _image_box(n, m, side)
    fig = Figure(
        figsize=(cols * (width + 0.6) + extra_w, rows * (height + 0.8) + 0.6), layout="compressed"
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_axis_off()
    return fig, axes, aspect


def _style_axes(ax, n: int, m: int, *, xlabel: bool = True, ylabel: bool = True) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    ax.tick_params(labelsize=8)
    if xlabel:
        ax.set_xlabel("key position")
    if ylabel:
        ax.set_ylabel("query position")
    if max(n, m) <= _GRID_LIMIT:
        ax.set_xticks(np.arange(-0.5, m, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.3, alpha=0.8)
        ax.tick_params(which="minor", length=0)


def _label_positions(ax, labels: Sequence[str], n: int, m: int) -> None:
    if not len(labels) == n == m:
        raise ValueError(f"labels name the positions of a self-attention: got {len(labels)} for "
                         f"({n}, {m}) panels")
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels, rotation=90, fontsize=6)
    ax.set_yticks(ticks, labels, fontsize=6)


def _density_title(visible: np.ndarray, title: str | None) -> str:
    count = int(visible.sum())
    density = count / max(visible.size, 1)
    line = f"density {density:.3f} ({count}/{visible.size})"
    return f"{title}\n{line}" if title else line


def _mask_panel(ax, visible: np.ndarray, title: str | None, aspect: str, **labels) -> None:
    cmap = ListedColormap([HIDDEN, VISIBLE])
    ax.imshow(visible, cmap=cmap, vmin=0, vmax=1, interpolation="nearest", aspect=aspect)
    ax.set_title(_density_title(visible, title), fontsize=9)
    _style_axes(ax, *visible.shape, **labels)


def _mask_legend(fig: Figure) -> None:
    handles = [
        Patch(color=VISIBLE, label="visible"),
        Patch(facecolor=HIDDEN, edgecolor="#888888", label="hidden"),
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=2,
        fontsize=8,
        frameon=False,
        borderaxespad=0.2,
        borderpad=0.6,
    )


def draw_mask(visible, path, *, title: str | None = None) -> Path:
    """Draw a boolean (N, M) mask (visible cells dark) as a PNG at ``path``."""
    return draw_masks([(title, visible)], path)


def draw_masks(
    named: Sequence[tuple[str | None, object]], path, *, suptitle: str | None = None
) -> Path:
    """Draw several (title, visible (N, M)) masks side by side in one PNG."""
    masks = [(title, _as_mask(visible)) for title, visible in named]
    if not masks:
        raise ValueError("draw_masks needs at least one (title, mask) pair")
    n = max(v.shape[0] for _, v in masks)
    m = max(v.shape[1] for _, v in masks)
    fig, axes, aspect = _grid(len(masks), n, m, side=4.5 if len(masks) == 1 else 2.6, extra_w=0)
    cols = axes.shape[1]
    for i, (title, visible) in enumerate(masks):
        row, col = divmod(i, cols)
        _mask_panel(
            axes[row, col],
            visible,
            title,
            aspect,
            xlabel=row == axes.shape[0] - 1 or i + cols >= len(masks),
            ylabel=col == 0,
        )
    _mask_legend(fig)
    if suptitle:
        fig.suptitle(suptitle)
    return _save(fig, path)


def draw_weights(
    panels,
    path,
    *,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
    mask=None,
    marks: Sequence[tuple[int, int]] = (),
    labels: Sequence[str] | None = None,
) -> Path:
    """Draw (G, N, M) attention weights, one panel each, on one shared colour scale.

    Cells where ``mask`` (N, M) is False are grey, so "masked" reads differently from a weight
    that is merely zero; non-finite weights are grey too. ``marks`` are (query, key) cells ringed
    in red on every panel (where a reader should look); ``labels`` name the N = M positions of a
    self-attention on both axes (every position gets its tick).
    """
    weights = _as_array(panels, dtype=float)
    if weights.ndim == 2:
        weights = weights[None]
    if weights.ndim != 3:
        raise ValueError(f"panels must be (G, N, M) or (N, M), got shape {weights.shape}")
    g, n, m = weights.shape
    if titles is not None and len(titles) != g:
        raise ValueError(f"got {len(titles)} titles for {g} panels")
    hidden = ~np.isfinite(weights)
    if mask is not None:
        visible = _as_mask(mask)
        if visible.shape != (n, m):
            raise ValueError(f"mask shape {visible.shape} does not match panels ({n}, {m})")
        hidden |= ~visible[None]
    shown = np.ma.masked_array(weights, mask=hidden)
    # One scale for all panels so that colours compare across heads; at least a tiny range so an
    # all-zero picture still renders.
    vmax = max(float(shown.max()) if shown.count() else 0.0, 1e-12)

    cmap = colormaps["viridis"].with_extremes(bad=MASKED_GREY)
    fig, axes, aspect = _grid(g, n, m, side=2.4 if g > 1 else 4.0, extra_w=1.0)
    cols = axes.shape[1]
    image = None
    for i in range(g):
        row, col = divmod(i, cols)
        ax = axes[row, col]
        image = ax.imshow(
            shown[i], cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest", aspect=aspect
        )
        ax.set_title(titles[i] if titles is not None else f"panel {i}", fontsize=9)
        _style_axes(ax, n, m, xlabel=row == axes.shape[0] - 1 or i + cols >= g, ylabel=col == 0)
        if marks:
            rows_, cols_ = zip(*marks, strict=True)
            ax.scatter(cols_, rows_, s=28, facecolors="none", edgecolors=MARK, linewidths=1.1)
        if labels is not None:
            _label_positions(ax, labels, n, m)
    label = "attention weight" + ("  (grey: masked)" if mask is not None else "")
    # fraction and pad are shares of the whole panel grid; fix them in inches instead, or a wide
    # grid pushes the colour bar far away from the panels.
    grid_width = fig.get_figwidth()
    fig.colorbar(
        image,
        ax=axes.ravel().tolist(),
        shrink=0.9,
        label=label,
        fraction=min(0.15, 0.4 / grid_width),
        pad=min(0.05, 0.12 / grid_width),
    )
    if suptitle or marks:
        fig.suptitle("\n".join(filter(None, [suptitle, "red rings: where to look" if marks else ""])))
    return _save(fig, path)
