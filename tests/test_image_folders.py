"""A folder of class folders as an image task: reading, splits, every bad folder's message, a
tiny training, and `attnlab predict` / `inspect --image` on new image files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import attnlab
import attnlab.train
from attnlab import tasks
from attnlab.cli.app import app
from attnlab.data.files.images import read_image
from attnlab.errors import DataError, InputError
from attnlab.tasks.image import PixelEncoder
from attnlab.train.config import load_experiment

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 50, 230)}


def shape(colour: tuple[int, int, int], seed: int, side: int = 16) -> Image.Image:
    """A coloured square at a place drawn from `seed`, on a dark grey ground."""
    rng = np.random.default_rng(seed)
    pixels = np.full((side, side, 3), 40, np.uint8)
    r, c = rng.integers(0, side // 2, size=2)
    pixels[r:r + side // 2, c:c + side // 2] = colour
    return Image.fromarray(pixels)


def make_folder(root, classes=COLOURS, per_class: int = 20, grey: bool = False):
    for k, (name, colour) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = shape(colour, 100 * k + i)
            (image.convert("L") if grey else image).save(root / name / f"{i:02d}.png")
    return root


def load(root, **options):
    return attnlab.data.load("image-folder", path=root, seed=0, **options)


def test_class_folders_become_labelled_images_in_sorted_order_cut_per_class(tmp_path) -> None:
    root = make_folder(tmp_path / "shapes", grey=True)
    examples = attnlab.data.files.FORMATS["image-folder"].read(root)
    assert [ex["file"] for ex in examples[:2]] == ["blue/00.png", "blue/01.png"]
    assert [ex["label"] for ex in examples] == ["blue"] * 20 + ["green"] * 20 + ["red"] * 20
    assert examples[0]["image"].shape == (16, 16) and examples[0]["image"].dtype == np.uint8
    assert np.array_equal(examples[0]["image"], np.asarray(Image.open(root / "blue/00.png")))
    splits = load(root)
    for name, each in (("train", 16), ("validation", 2), ("test", 2)):  # 80/10/10 of every class
        labels = [ex["label"] for ex in splits[name]]
        assert {label: labels.count(label) for label in COLOURS} == dict.fromkeys(COLOURS, each)
    small = load(make_folder(tmp_path / "small", per_class=5))  # at least one of each class held out
    assert [sorted(ex["label"] for ex in small[s]) for s in ("validation", "test")] == [sorted(COLOURS)] * 2
    files = sorted(ex["file"] for split in splits.values() for ex in split)
    assert files == sorted(ex["file"] for ex in examples)
    assert [ex["file"] for ex in load(root)["test"]] == [ex["file"] for ex in splits["test"]]
    other = attnlab.data.load("image-folder", path=root, seed=1)["test"]
    assert {ex["file"] for ex in other} != {ex["file"] for ex in splits["test"]}


def test_a_folder_with_its_own_splits_keeps_them(tmp_path) -> None:
    for split, count in (("train", 10), ("val", 3), ("test", 4)):
        make_folder(tmp_path / "shapes" / split, per_class=count)
    splits = load(tmp_path / "shapes")
    assert {s: len(v) for s, v in splits.items()} == {"train": 30, "validation": 9, "test": 12}
    assert all(ex["file"].startswith("val/") for ex in splits["validation"])
    (tmp_path / "shapes/val").rename(tmp_path / "val-aside")  # no validation/: cut from train
    splits = load(tmp_path / "shapes")
    assert {s: len(v) for s, v in splits.items()} == {"train": 27, "validation": 3, "test": 12}
    assert all(ex["file"].startswith("train/") for ex in splits["validation"])


def test_sizes_and_colours_are_made_one(tmp_path) -> None:
    root = make_folder(tmp_path / "shapes", per_class=3, grey=True)
    shape(COLOURS["red"], 7, side=24).save(root / "red" / "big.png")
    with pytest.raises(DataError, match=r"^image-folder: images differ in size \('blue/00.png' is 16×16, "
                                         r"'red/big.png' is 24×24\); give size: N"):
        load(root)
    examples = attnlab.data.files.FORMATS["image-folder"].read(root, size=8)
    assert {ex["image"].shape for ex in examples} == {(8, 8, 3)}  # auto: one image has colour
    assert {ex["image"].shape for ex in attnlab.data.files.FORMATS["image-folder"].read(
        root, size=8, colour="grey")} == {(8, 8)}
    # transparency is laid on white; JPEG and upper-case suffixes are images too
    clear = np.zeros((16, 16, 4), np.uint8)
    clear[4:12, 4:12] = (0, 0, 0, 255)
    Image.fromarray(clear).save(tmp_path / "clear.PNG")
    grey = read_image(tmp_path / "clear.PNG", None, "grey")
    assert grey[0, 0] == 255 and grey[8, 8] == 0
    shape(COLOURS["blue"], 1).save(tmp_path / "photo.JPG")
    assert read_image(tmp_path / "photo.JPG", 8, "rgb").shape == (8, 8, 3)


def test_hidden_and_other_files_are_left_out_with_a_warning(tmp_path) -> None:
    root = make_folder(tmp_path / "shapes", per_class=3)
    (root / "red" / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0")
    with pytest.warns(UserWarning, match=r"left out 1 not named \.png/\.jpg/\.jpeg \(e\.g\. "
                                         r"'red/notes\.txt'\) and 1 hidden \(e\.g\. '\.DS_Store'\)"):
        assert len(attnlab.data.files.FORMATS["image-folder"].read(root)) == 9


def bad_folder(tmp_path, case: str):
    root = tmp_path / "shapes"
    if case == "a file":
        make_folder(root, per_class=2)
        return root / "red" / "00.png"
    if case == "no class folders":
        root.mkdir()
        shape(COLOURS["red"], 0).save(root / "a.png")
        return root
    make_folder(root, per_class=2)
    if case == "empty class":
        (root / "yellow").mkdir()
        (root / "yellow" / "readme.txt").write_text("soon")
    elif case == "does not decode":
        (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif case == "one image":
        (root / "yellow").mkdir()
        shape((230, 230, 0), 0).save(root / "yellow" / "only.png")
    elif case == "one class":
        for name in ("green", "blue"):
            for file in (root / name).iterdir():
                file.unlink()
            (root / name).rmdir()
    return root


@pytest.mark.parametrize(("case", "options", "message"), [
    ("a file", {}, r"image-folder: '.*/shapes/red/00\.png' is a file; path= takes a folder holding "
                   r"one folder of images per class"),
    ("no class folders", {}, r"image-folder: '.*/shapes' holds no class folders \(its 1 image\(s\) lie "
                             r"in it directly\); put each class's images in a folder named after"),
    ("empty class", {}, r"image-folder: class folder '.*/shapes/yellow' holds no images \(\.png, \.jpg, "
                        r"\.jpeg\); add some or remove the folder"),
    ("does not decode", {}, r"image-folder: '.*/shapes/red/broken\.png' is not an image Pillow can read "
                            r"\(a PNG or JPEG\); fix or remove it"),
    ("one image", {}, r"image-folder: class 'yellow' has one image \(yellow/only\.png\); each class "
                      r"needs at least 2"),
    ("one class", {}, r"image-folder: '.*/shapes' has one class \(red\); a classifier needs at least 2"),
    ("fine", {}, r"image-folder: 6 images are too few to hold some out: the validation split would be "
                 r"empty; give a class at least 3 images"),
    ("fine", {"colour": "sepia"}, r"image-folder: colour is one of auto, grey, rgb; got 'sepia'"),
    ("fine", {"size": 0}, r"image-folder: size is the side in pixels .* from 1 to 4096; got 0"),
])
def test_each_bad_folder_says_what_is_wrong_in_one_line(tmp_path, case, options, message) -> None:
    with pytest.raises(DataError, match=f"^{message}") as caught:
        load(bad_folder(tmp_path, case), **options)
    assert "\n" not in str(caught.value)


def test_pixel_statistics_round_trip_and_old_runs_still_read(tmp_path) -> None:
    task = tasks.kind("image-classification")
    new = PixelEncoder((10.0, 20.0, 30.0), (1.0, 2.0, 4.0), ("a", "b"), 16, "rgb", 255.0)
    task.save_encoders(new, tmp_path)
    assert json.loads((tmp_path / "pixels.json").read_text())["mean"] == [10.0, 20.0, 30.0]
    assert task.load_encoders(tmp_path, None) == new
    (tmp_path / "pixels.json").write_text(json.dumps({"mean": 4.9, "std": 6.0, "labels": ["0", "1"]}))
    old = task.load_encoders(tmp_path, None)
    assert (old.mean, old.std, old.channels, old.colour, old.size, old.white) == (
        (4.9,), (6.0,), 1, "grey", None, None)
    assert old([np.full((8, 8), 10.9)]).flatten().tolist() == pytest.approx([1.0] * 64)
    shape(COLOURS["red"], 0).save(tmp_path / "new.png")
    with pytest.raises(InputError, match="saved before image runs recorded their pixel scale"):
        old.fitted(8)([str(tmp_path / "new.png")])


def test_a_png_is_put_on_the_data_sets_own_scale() -> None:
    digits = tasks.kind("image-classification").prepare(load_experiment({
        "name": "d", "task": {"name": "digits"}, "train": {"epochs": 1}})).encoders
    assert (digits.size, digits.colour, digits.white) == (8, "grey", 16.0)  # digits count 0–16


def test_a_png_is_read_at_the_runs_size_and_scale(tmp_path) -> None:
    ink = np.zeros((32, 32), np.uint8)
    ink[:, 16:] = 255
    Image.fromarray(ink).save(tmp_path / "half.png")
    encoder = PixelEncoder(0.0, 1.0, ("a", "b"), 8, "grey", 16.0)
    # shrunk by averaging 4×4 blocks, then 0–255 put on 0–16: digits' own counts
    assert encoder.read(tmp_path / "half.png").tolist() == [[[0.0] * 4 + [16.0] * 4] * 8]
    ink[:2, :2] = 255  # a quarter of the top-left 4×4 block: 4 of 16 pixels
    Image.fromarray(ink).save(tmp_path / "corner.png")
    assert encoder.read(tmp_path / "corner.png")[0, 0, 0] == pytest.approx(4.0, abs=0.05)  # 63.75 → 64


EXPERIMENT = {"name": "tiny-shapes", "model": {"d_model": 16, "layers": 1, "heads": 2, "patch_size": 4},
              "train": {"epochs": 4, "batch_size": 15, "lr": 0.005}}


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """A ViT trained for a few seconds on 3 classes of coloured squares, 20 images each."""
    root = tmp_path_factory.mktemp("images")
    folder = make_folder(root / "shapes")
    exp = load_experiment({**EXPERIMENT, "task": {"name": "image-folder", "params": {"path": str(folder)}}})
    metrics = attnlab.train.train(exp, root / "run", progress=False,
                                  tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    return root, metrics


def test_a_folder_run_predicts_new_image_files(shapes_run) -> None:
    root, metrics = shapes_run
    run = root / "run"
    assert metrics["test_accuracy"] >= metrics["test_majority_rate"]
    saved = json.loads((run / "pixels.json").read_text())
    assert (saved["labels"], saved["size"], saved["colour"], saved["white"]) == (
        ["blue", "green", "red"], 16, "rgb", 255.0)
    assert len(saved["mean"]) == 3 and len(saved["std"]) == 3
    for name, colour in COLOURS.items():
        shape(colour, 999).resize((48, 48)).save(root / f"new-{name}.png")  # another size: resized
    files = [str(root / f"new-{name}.png") for name in COLOURS]
    result = CliRunner().invoke(app, ["predict", str(run), *files])
    assert result.exit_code == 0, result.output
    # label, probability, file: the console lays the tabs out as columns
    lines = [line.split(maxsplit=2) for line in result.output.strip().splitlines()]
    assert [line[2] for line in lines] == files
    assert all(line[0] in COLOURS and 0 < float(line[1]) <= 1 for line in lines)
    model = attnlab.load(run)
    assert model.predict(files) == [line[0] for line in lines]
    arrays = [np.asarray(Image.open(f).resize((16, 16), Image.Resampling.BOX)) for f in files]
    assert model.predict(arrays) == model.predict(files)  # an array of raw pixels is read the same
    (root / "notes.txt").write_text("hello")
    for bad, said in ((root / "missing.png", "no image file '.*missing.png'; tiny-shapes classifies images"),
                      (root / "notes.txt", "'.*notes.txt' is not an image Pillow can read")):
        result = CliRunner().invoke(app, ["predict", str(run), files[0], str(bad)])
        assert result.exit_code == 2 and re.search(said, result.output), result.output
        assert len(result.output.strip().splitlines()) == 1


def test_inspect_reads_an_image_file_as_predict_does(shapes_run) -> None:
    root, _ = shapes_run
    shape(COLOURS["green"], 5).save(root / "look.png")
    result = CliRunner().invoke(app, ["inspect", str(root / "run"), "--image", str(root / "look.png"),
                                      "--out", str(root / "look.html")])
    assert result.exit_code == 0, result.output
    assert "tiny-shapes: a 16×16 image → " in result.output and (root / "look.html").stat().st_size > 1000
    from attnlab.inspect.views import inspect_run

    view = inspect_run(root / "run", image=root / "look.png")
    assert view.inspection.picture.pixels.shape == (16, 16)  # shown in grey
    assert any("shown in grey" in note for note in view.inspection.notes)
