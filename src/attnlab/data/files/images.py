"""A folder of class folders as an image classification set (``image-folder``): each class's PNG
or JPEG files in a folder named after the class, read through Pillow, made one size and one
colour. ``read_image`` makes any later image file the same way, for predicting."""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from attnlab.data.datasets.base import HELD_OUT, Example, check_seed
from attnlab.errors import AttnlabError, DataError

SUFFIXES = (".png", ".jpg", ".jpeg")  # compared lower-cased
COLOURS = ("auto", "grey", "rgb")
SPLIT_FOLDERS = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
NAME = "image-folder"


def image_folder(path: Path, size: int | None = None, colour: str = "auto") -> list[Example]:
    """``{"image", "label", "file"}`` for every image under ``path``/CLASS/, sorted by class then
    file; ``"subset"`` too where ``path`` holds train/, validation/ (or val/) and test/ folders,
    each of class folders. ``image`` is uint8 (size, size) for grey, (size, size, 3) for rgb.

    ``size``: the side every image is resized to (stretched to a square). Without it the images
    must all be one square size: a resize changes what the model sees and how long it trains, so
    the user chooses it. ``colour``: grey, rgb, or auto (rgb if any image has colour). Hidden and
    non-image files are skipped with a warning that counts them; a file named as an image that
    does not decode is an error, as is a class with fewer than 2 images or fewer than 2 classes.
    """
    _check_options(size, colour)
    if not path.is_dir():
        raise DataError(f"{NAME}: '{path}' is a file; path= takes a folder holding one folder of "
                        "images per class (e.g. pictures/ holding pictures/cat/1.png, pictures/dog/2.png)")
    files = _class_files(path)
    _check_sizes(path, files, size)
    pixels = [read_image(path / file, size, "rgb", error=_folder_error) for file, _, _ in files]
    if colour == "auto":
        colour = "rgb" if any(_has_colour(p) for p in pixels) else "grey"
    examples = []
    for (file, label, subset), rgb in zip(files, pixels, strict=True):
        example = {"image": rgb if colour == "rgb" else _grey(rgb), "label": label, "file": file}
        examples.append(example if subset is None else {**example, "subset": subset})
    return examples


def read_image(file: Path | BinaryIO, size: int | None, colour: str,
               error: Callable[[str], AttnlabError] = DataError) -> np.ndarray:
    """One image file as uint8 pixels, made as ``image_folder`` makes its images: turned as its EXIF
    says, transparency laid on white, resized to size × size (area average when shrinking, else
    bilinear; None: as it is), then grey (H, W) or rgb (H, W, 3). If it does not decode, ``error``
    (DataError unless given) is raised with a message naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    # a stream (bytes a server received) may carry a name; a path is shown whole
    named = file if isinstance(file, str | Path) else getattr(file, "name", "the image")
    try:
        with Image.open(file) as opened:
            image = _eight_bit_rgb(ImageOps.exif_transpose(opened))
    except UnidentifiedImageError:
        raise error(f"'{named}' is not an image Pillow can read (a PNG or JPEG)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise error(f"'{named}' does not decode as an image ({e})") from None
    if size is not None and image.size != (size, size):
        # shrinking averages the pixels each new one covers (so 8×8 digits, counts over 4×4 blocks,
        # come back exactly from a 32×32 drawing); enlarging interpolates
        shrinks = image.width >= size and image.height >= size
        image = image.resize((size, size), Image.Resampling.BOX if shrinks else Image.Resampling.BILINEAR)
    rgb = np.asarray(image, dtype=np.uint8)
    return rgb if colour == "rgb" else _grey(rgb)


def split_folder(examples: list[Example], seed: int) -> dict[str, list[Example]]:
    """The folder's own train/validation/test split if it has one (validation cut from train when
    it has none), else each class cut 80/10/10 alone (so every class is in train), shuffled with
    ``seed``; each split is shuffled too, so its first examples hold every class."""
    check_seed(seed)
    rng = np.random.default_rng(seed)
    if examples and "subset" in examples[0]:
        splits = {name: [ex for ex in examples if ex["subset"] == name] for name in SPLIT_FOLDERS.values()}
        if not splits["validation"]:
            cut = _stratified(splits["train"], rng, with_test=False)
            splits = {**splits, "train": cut["train"], "validation": cut["validation"]}
    else:
        splits = _stratified(examples, rng)
    empty = [name for name, split in splits.items() if not split]
    if empty:
        raise DataError(f"{NAME}: {len(examples)} images are too few to hold some out: the {empty[0]} "
                        "split would be empty; give a class at least 3 images (one each to train, "
                        "validate and test)")
    return {name: _shuffled(split, rng) for name, split in splits.items()}


def _stratified(examples: list[Example], rng: np.random.Generator, with_test: bool = True,
                ) -> dict[str, list[Example]]:
    """Each label's examples shuffled and cut: round(10%) to validation (and as many to test, if
    `with_test`), at least one each where a label keeps one for train too, the rest to train."""
    by_label: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_label[ex["label"]].append(ex)
    splits: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    for label in sorted(by_label):
        group = [by_label[label][i] for i in rng.permutation(len(by_label[label]))]
        cuts = 2 if with_test else 1
        held = max(round(HELD_OUT * len(group)), int(len(group) > cuts))
        splits["validation"] += group[:held]
        splits["test"] += group[held:cuts * held]
        splits["train"] += group[cuts * held:]
    return splits


def _shuffled(examples: list[Example], rng: np.random.Generator) -> list[Example]:
    return [examples[i] for i in rng.permutation(len(examples))]


def _folder_error(message: str) -> DataError:
    return DataError(f"{NAME}: {message}; fix or remove it")


def _check_options(size: object, colour: object) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 4096):
        raise DataError(f"{NAME}: size is the side in pixels every image is resized to, a whole "
                        f"number from 1 to 4096; got {size!r:.40}")
    if colour not in COLOURS:
        raise DataError(f"{NAME}: colour is one of {', '.join(COLOURS)}; got {colour!r:.40}")


def _loose(images: list[str]) -> str:
    return f" (its {len(images)} image(s) lie in it directly)" if images else ""


def _visible(entry: Path) -> bool:
    return not entry.name.startswith(".")


def _class_files(path: Path) -> list[tuple[str, str, str | None]]:
    """(file relative to ``path``, label, split or None) for every image, sorted; DataError if the
    layout is not class folders (or split folders of class folders) with 2+ images each."""
    folders = sorted(e for e in path.iterdir() if e.is_dir() and _visible(e))
    loose = sorted(e.name for e in path.iterdir() if e.is_file() and e.suffix.lower() in SUFFIXES)
    if not folders:
        raise DataError(f"{NAME}: '{path}' holds no class folders{_loose(loose)}; put each class's "
                        "images in a folder named after the class (e.g. cat/1.png, dog/2.png)")
    if loose:
        raise DataError(f"{NAME}: '{path / loose[0]}' is not in a class folder; put each image in "
                        "the folder of its class (e.g. cat/1.png), or move it out of the folder")
    skipped: dict[str, list[str]] = {"other": [], "hidden": []}
    for entry in sorted(path.iterdir()):
        if entry.is_file():
            skipped["other" if _visible(entry) else "hidden"].append(entry.name)
    names = {f.name for f in folders}
    if "train" in names and names <= set(SPLIT_FOLDERS):
        files = _split_layout(path, folders, skipped)
    else:
        files = [(file, folder.name, None) for folder in folders
                 for file in _images_in(path, folder, skipped)]
    _check_counts(path, files)
    _report(path, skipped)
    return files


def _split_layout(path: Path, folders: list[Path], skipped: dict[str, list[str]],
                  ) -> list[tuple[str, str, str | None]]:
    names = {f.name for f in folders}
    if {"val", "validation"} <= names:
        raise DataError(f"{NAME}: '{path}' holds both val/ and validation/; keep one")
    if "test" not in names:
        raise DataError(f"{NAME}: '{path}' holds train/ but no test/; add test/ (class folders "
                        "like train's), or put the class folders directly in the folder to have "
                        "it cut 80/10/10")
    files = []
    for split in folders:
        classes = sorted(e for e in split.iterdir() if e.is_dir() and _visible(e))
        if not classes:
            raise DataError(f"{NAME}: split folder '{split}' holds no class folders; put its "
                            "images in folders named after their classes (e.g. "
                            f"{split.name}/cat/1.png)")
        loose = sorted(e.name for e in split.iterdir() if e.is_file() and e.suffix.lower() in SUFFIXES)
        for entry in sorted(split.iterdir()):
            if entry.is_file() and entry.name not in loose:
                skipped["other" if _visible(entry) else "hidden"].append(f"{split.name}/{entry.name}")
        if loose:
            raise DataError(f"{NAME}: '{split / loose[0]}' is not in a class folder; put it in "
                            f"{split.name}/CLASS/")
        files += [(file, folder.name, SPLIT_FOLDERS[split.name]) for folder in classes
                  for file in _images_in(path, folder, skipped)]
    unseen = sorted({label for _, label, s in files if s != "train"}
                    - {label for _, label, s in files if s == "train"})
    if unseen:
        raise DataError(f"{NAME}: class '{unseen[0]}' has images outside train/ but none in "
                        f"'{path / 'train'}'; add its training images to train/{unseen[0]}/")
    return files


def _images_in(root: Path, folder: Path, skipped: dict[str, list[str]]) -> list[str]:
    """The image files under ``folder`` (in subfolders too), relative to ``root``, sorted; others
    are counted in ``skipped``. DataError if it holds none."""
    found = []
    for file in sorted(folder.rglob("*")):
        if not file.is_file():
            continue
        name = file.relative_to(root).as_posix()
        if any(part.startswith(".") for part in file.relative_to(folder).parts):
            skipped["hidden"].append(name)
        elif file.suffix.lower() in SUFFIXES:
            found.append(name)
        else:
            skipped["other"].append(name)
    if not found:
        raise DataError(f"{NAME}: class folder '{folder}' holds no images ({', '.join(SUFFIXES)}); "
                        "add some or remove the folder")
    return found


def _check_counts(path: Path, files: list[tuple[str, str, str | None]]) -> None:
    counts = Counter(label for _, label, _ in files)
    if len(counts) < 2:
        raise DataError(f"{NAME}: '{path}' has one class ({next(iter(counts))}); a classifier needs "
                        "at least 2 class folders")
    lonely = sorted(label for label, n in counts.items() if n == 1)
    if lonely:
        file = next(f for f, label, _ in files if label == lonely[0])
        raise DataError(f"{NAME}: class '{lonely[0]}' has one image ({file}); each class needs at "
                        "least 2, to train on and to test: add images or remove the folder")


def _check_sizes(path: Path, files: list[tuple[str, str, str | None]], size: int | None) -> None:
    """Without ``size``, DataError unless every image is one square size (read from headers only)."""
    if size is not None:
        return
    from PIL import Image

    first: tuple[str, tuple[int, int]] | None = None
    for file, _, _ in files:
        try:
            with Image.open(path / file) as image:
                shape = image.size
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue  # read_image says what is wrong with it, naming the file
        if first is None:
            first = file, shape
            if shape[0] != shape[1]:
                raise DataError(f"{NAME}: '{file}' is {shape[0]}×{shape[1]}, not square; give "
                                f"size: N (task.params.size) to resize every image to N×N")
        elif shape != first[1]:
            raise DataError(f"{NAME}: images differ in size ('{first[0]}' is {_shown(first[1])}, "
                            f"'{file}' is {_shown(shape)}); give size: N (task.params.size) to "
                            "resize every image to N×N")


def _shown(shape: tuple[int, int]) -> str:
    return f"{shape[0]}×{shape[1]}"


def _report(path: Path, skipped: dict[str, list[str]]) -> None:
    """One warning counting the files left out, so that none goes unsaid."""
    parts = []
    if skipped["other"]:
        parts.append(f"{len(skipped['other'])} not named .png/.jpg/.jpeg (e.g. '{skipped['other'][0]}')")
    if skipped["hidden"]:
        parts.append(f"{len(skipped['hidden'])} hidden (e.g. '{skipped['hidden'][0]}')")
    if parts:
        warnings.warn(f"{NAME}: left out {' and '.join(parts)} in '{path}'", stacklevel=2)


def _eight_bit_rgb(image):
    """An RGB image of 8-bit levels: 16-bit grey scaled down (not clipped), transparency laid on
    white (so a dark shape on a clear background stays visible)."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        levels = np.asarray(image, dtype=np.float64) * (255 / 65535)
        image = Image.fromarray(levels.round().clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return image.convert("RGB")


def _grey(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 luminance of (H, W, 3), as Pillow's convert("L") weighs the channels."""
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)


def _has_colour(rgb: np.ndarray) -> bool:
    return bool(np.any(rgb[..., 0] != rgb[..., 1]) or np.any(rgb[..., 1] != rgb[..., 2]))
