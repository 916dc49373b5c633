"""Your own files as tasks: text tables (CSV, TSV, JSON Lines, Parquet), translation pairs and
interactions read into splits, each bad file as one line, caches keyed by content, and a run from a
CSV that predicts after the CSV is gone."""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

import attnlab
import attnlab.cli.app
import attnlab.train
from attnlab.data import load
from attnlab.data.datasets import dataset
from attnlab.errors import ConfigError, DataError
from attnlab.tasks import task_of
from attnlab.train.config import TaskConfig, load_experiment

INTENTS = {"refund": ["I want my money back for order {n}", "please refund the charge of {n} euros",
                      "refund request for item {n}"],
           "lost_card": ["my card {n} was stolen", "I lost my bank card near gate {n}",
                         "block card ending {n} please"],
           "Opening-Hours": ["are you open on day {n}", "what time do you close on the {n}th",
                             "opening hours for shop {n}?"]}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for the module's runs: making one costs seconds of migrations."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def messages(n_per_label: int = 20) -> list[tuple[str, str]]:
    """(text, label) rows, labels interleaved, texts distinct."""
    return [(INTENTS[label][i % 3].format(n=i), label) for i in range(n_per_label) for label in INTENTS]


def write_csv(path: Path, rows, header=("message", "intent"), delimiter=",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# -- text tables ----------------------------------------------------------------------------------


def test_a_csv_becomes_splits_with_its_own_labels_cut_80_10_10_per_label(tmp_path) -> None:
    rows = messages(20)
    rows[0] = ('I paid twice, "really", for order 7\nand want one back', "refund")  # quotes, comma, newline
    path = write_csv(tmp_path / "service.csv", rows)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a BOM, as Excel writes
    splits = load("csv", path=path, text="message", label="intent", seed=0)
    # 20 per label: 2 to validation, 2 to test, 16 to train, every label in every split
    for name, size in (("train", 16), ("validation", 2), ("test", 2)):
        assert Counter(ex["label"] for ex in splits[name]) == dict.fromkeys(INTENTS, size)
    everything = [ex for examples in splits.values() for ex in examples]
    assert sorted((ex["text"], ex["label"]) for ex in everything) == sorted(rows)  # nothing lost
    assert all(set(ex) == {"text", "label"} for ex in everything)
    assert splits == load("csv", path=path, text="message", label="intent", seed=0)
    assert splits != load("csv", path=path, text="message", label="intent", seed=1)


def test_tsv_jsonl_and_csv_of_the_same_rows_give_the_same_splits(tmp_path) -> None:
    rows = messages(10)
    as_csv = load("csv", path=write_csv(tmp_path / "a.csv", rows, ("text", "label")))
    as_tsv = load("tsv", path=write_csv(tmp_path / "a.tsv", rows, ("text", "label"), "\t"))
    as_jsonl = load("jsonl", path=write_jsonl(tmp_path / "a.jsonl", [{"text": t, "label": lab}
                                                                      for t, lab in rows]))
    assert as_csv == as_tsv == as_jsonl


def test_parquet_of_the_same_rows_gives_the_same_splits_and_a_damaged_one_is_one_line(tmp_path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")  # the test extra installs it
    import pyarrow as pa

    rows = messages(10)
    table = pa.table({"text": [t for t, _ in rows], "label": [lab for _, lab in rows]})
    pq.write_table(table, tmp_path / "a.parquet")
    as_csv = load("csv", path=write_csv(tmp_path / "a.csv", rows, ("text", "label")))
    assert load("parquet", path=tmp_path / "a.parquet") == as_csv
    pq.write_table(pa.table({"message": ["x"], "intent": ["y"]}), tmp_path / "cols.parquet")
    with pytest.raises(DataError, match=r"cols.parquet: no column 'text'.*message, intent"):
        load("parquet", path=tmp_path / "cols.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"bad.parquet: not a Parquet file pyarrow can read"):
        load("parquet", path=tmp_path / "bad.parquet")


def test_json_numbers_become_their_text_and_labels_keep_their_case(tmp_path) -> None:
    rows = [{"text": f"rating {i}", "label": i % 2, "extra": [1]} for i in range(10)]
    rows += [{"text": 404, "label": "Not-Found"}, {"text": "gone", "label": "Not-Found"}]
    splits = load("jsonl", path=write_jsonl(tmp_path / "n.jsonl", rows))
    examples = [ex for s in splits.values() for ex in s]
    assert Counter(ex["label"] for ex in examples) == {"0": 5, "1": 5, "Not-Found": 2}
    assert {"text": "404", "label": "Not-Found"} in examples


def test_a_split_column_is_honoured_and_a_missing_one_is_cut_from_train(tmp_path, capsys) -> None:
    rows = [(t, lab, "train") for t, lab in messages(10)]
    rows += [(f"hours on holiday {i}", "Opening-Hours", "dev") for i in range(3)]
    rows += [(f"refund for parcel {i}", "refund", "Test") for i in range(2)]
    path = write_csv(tmp_path / "s.csv", rows, ("text", "label", "split"))
    splits = load("csv", path=path)
    assert [ex["label"] for ex in splits["validation"]] == ["Opening-Hours"] * 3
    assert sorted(ex["text"] for ex in splits["test"]) == ["refund for parcel 0", "refund for parcel 1"]
    assert len(splits["train"]) == 30
    assert capsys.readouterr().err == ""
    only_train = write_csv(tmp_path / "t.csv", rows[:30], ("text", "label", "split"))
    splits = load("csv", path=only_train)
    assert {name: len(examples) for name, examples in splits.items()} == {"train": 24, "validation": 3,
                                                                         "test": 3}
    err = capsys.readouterr().err
    assert (f"attnlab: csv: no row of {only_train} is marked validation in column 'split'; validation "
            "is cut from the train rows (10% of each label)") in err
    assert "is marked test" in err
    # split=null reads the column as data: the rows are cut 80/10/10 as if it were not there
    assert len(load("csv", path=path, split=None)["train"]) == 10 + 8 + 11  # 12, 10, 13 per label


def test_duplicates_are_kept_or_dropped_and_reported(tmp_path, capsys) -> None:
    rows = messages(10)
    rows.insert(5, rows[1])
    rows.insert(9, rows[1])
    rows.append((rows[2][0], "refund"))  # the same text with another label is no repeat
    path = write_csv(tmp_path / "d.csv", rows, ("text", "label"))
    kept = load("csv", path=path)
    assert sum(len(s) for s in kept.values()) == 33 and capsys.readouterr().err == ""
    dropped = load("csv", path=path, duplicates="drop")
    assert sum(len(s) for s in dropped.values()) == 31
    assert capsys.readouterr().err == (
        f"attnlab: csv: dropped 2 repeated (text, label) rows of 33 in {path} (duplicates=drop), 31 "
        "left; the first is line 7, a repeat of line 3\n")


BAD_TEXT_FILES = {
    "missing column": ("csv", b"message,intent\nhello,greet\n", {},
                       "{path}: no column 'text'; the columns are message, intent: say which one holds "
                       "the text with text=COLUMN"),
    "empty file": ("csv", b"", {}, "{path}: no rows (the file is empty)"),
    "only a header": ("csv", b"text,label\n\n", {}, "{path}: no rows (only the header: text, label)"),
    "empty text": ("csv", b"text,label\nhi,a\n  ,a\n", {},
                   "{path}, line 3: empty 'text'; give every row one, or remove the row"),
    "empty label": ("tsv", b"text\tlabel\nhi\ta\nho\t\n", {},
                    "{path}, line 3: empty 'label'; give every row one, or remove the row"),
    "a label seen once": ("csv", b"text,label\nhi,a\nho,a\nhey,b\n", {},
                          "{path}, line 4: the label 'b' is on this row only; give each label at least "
                          "two rows, or remove it"),
    "not UTF-8": ("csv", b"text,label\nhi,a\ncaf\xe9,a\n", {},
                  "{path}, line 3: bytes that are not UTF-8 (b'\\xe9,a\\n'); save the file as UTF-8"),
    "wrong number of fields": ("csv", b"text,label\nhi,a\nho, hum,a\n", {},
                               "{path}, line 3: 3 fields, but the header has 2 (text, label); quote a "
                               "field that holds a comma"),
    "a JSON line that is no object": ("jsonl", b'{"text": "hi", "label": "a"}\n["ho", "a"]\n', {},
                                      "{path}, line 2: a JSON list, not an object; each line holds one "
                                      'object, {"text": ..., "label": ...}'),
    "a line that is no JSON": ("jsonl", b'{"text": "hi", "label": "a"}\n{"text": "ho", label}\n', {},
                               "{path}, line 2: not JSON (Expecting property name enclosed in double "
                               'quotes, column 16); each line holds one object, {"text": ..., "label": ...}'),
    "a JSON line without the label": ("jsonl", b'{"text": "hi", "label": "a"}\n{"text": "ho"}\n', {},
                                      "{path}, line 2: no 'label' (it has text); every row needs one"),
    "an unknown split": ("csv", b"text,label,split\nhi,a,train\nho,a,holdout\n", {},
                         "{path}, line 3: split 'holdout' is not train, validation (or val, valid, dev) "
                         "or test; fix it, or read the file without its split column (split=null)"),
    "no train rows": ("csv", b"text,label,split\nhi,a,test\nho,a,dev\n", {},
                      "{path}: no row of column 'split' says train; mark the rows to train on, or read "
                      "the file without its split column (split=null)"),
    "a label only held out": ("csv", b"text,label,split\nhi,a,train\nho,a,train\nhey,b,test\nyo,b,dev\n", {},
                              "{path}, line 4: the label 'b' is in the test split only; mark some of its "
                              "rows train"),
    "a bad duplicates option": ("csv", b"text,label\nhi,a\n", {"duplicates": "remove"},
                                "csv: duplicates='remove'; it is keep (the default) or drop"),
}


@pytest.mark.parametrize("case", BAD_TEXT_FILES)
def test_each_bad_text_file_is_one_line_naming_file_and_line(tmp_path, case) -> None:
    kind, content, options, message = BAD_TEXT_FILES[case]
    path = tmp_path / f"bad.{kind}"
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        load(kind, path=path, **options)
    assert str(caught.value) == message.replace("{path}", str(path))


def test_parquet_without_pyarrow_says_how_to_get_it(tmp_path, monkeypatch) -> None:
    path = tmp_path / "texts.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    with pytest.raises(DataError, match=r"^.*texts.parquet: reading Parquet needs pyarrow, which is not "
                                        r"installed: pip install pyarrow$"):
        load("parquet", path=path)


def test_a_folder_or_a_missing_file_is_one_line(tmp_path) -> None:
    with pytest.raises(DataError, match=r"^csv: cannot read '.*' \(Is a directory\); path= takes a file$"):
        load("csv", path=tmp_path)
    with pytest.raises(DataError, match=r"^csv: no file or folder at '.*nope.csv'$"):
        load("csv", path=tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"^csv reads your own file: give its path"):
        load("csv")
    with pytest.raises(DataError, match=r"csv has no option 'labl' — did you mean 'label'\?"):
        load("csv", path=tmp_path, labl="x")


# -- pairs and interactions ------------------------------------------------------------------------


def test_pairs_from_tsv_and_jsonl_train_a_translator(tmp_path, store) -> None:
    words = ["house", "cat", "dog", "tree", "water", "sun", "moon", "book"]
    spanish = ["casa", "gato", "perro", "árbol", "agua", "sol", "luna", "libro"]
    rows = [(f"the {a} and the {b}", f"el {x} y el {y}") for a, x in zip(words, spanish, strict=True)
            for b, y in zip(words, spanish, strict=True)]
    tsv = write_csv(tmp_path / "pairs.tsv", rows, ("en", "es"), "\t")
    jsonl = write_jsonl(tmp_path / "pairs.jsonl", [{"en": s, "es": t} for s, t in rows])
    from_tsv = load("pairs", path=tsv, source="en", target="es")
    assert from_tsv == load("pairs", path=jsonl, source="en", target="es")
    assert {name: len(s) for name, s in from_tsv.items()} == {"train": 52, "validation": 6, "test": 6}
    assert from_tsv["train"][0].keys() == {"source", "target"}
    with pytest.raises(DataError, match=r"pairs: cannot tell the format of .*pairs.txt2 from its extension "
                                        r"'.txt2'; give format= one of tsv, jsonl, csv"):
        load("pairs", path=tsv.rename(tmp_path / "pairs.txt2"))
    exp = {"name": "tiny-pairs",
           "task": {"name": "pairs", "params": {"path": str(jsonl), "source": "en", "target": "es",
                                                "vocab_size": 120, "max_len": 12}},
           "model": {"d_model": 16, "layers": 1, "heads": 2},
           "decode": {"beam_size": 1},
           "train": {"epochs": 1, "batch_size": 16}}
    out = tmp_path / "run"
    metrics = attnlab.train.train(load_experiment(exp), out, progress=False,
                                  tracking_uri=store)
    assert {"test_bleu", "test_copy_bleu"} <= set(metrics)
    assert len(attnlab.load(out).predict(["the cat and the sun"])) == 1


def test_interactions_become_time_ordered_histories_cut_leave_one_out(tmp_path, capsys) -> None:
    rows = [("ana", "i1", "2024-05-03"), ("ana", "i2", "2024-05-01T09:30:00"), ("bo", "i3", "5"),
            ("ana", "i3", "2024-05-02"), ("bo", "i1", "3"), ("bo", "i2", "4"), ("cy", "i1", "1"),
            ("ana", "i4", "2024-05-01T09:30:00+02:00")]
    path = write_csv(tmp_path / "events.csv", rows, ("uid", "item", "when"))
    splits = load("interactions", path=path, user="uid", time="when", short_users="drop")
    assert capsys.readouterr().err == (
        f"attnlab: interactions: left out 1 of 3 users of {path} with fewer than 3 interactions (1 "
        "interaction in all; short_users=drop), e.g. user 'cy' (line 8) has 1\n")
    assert [ex["user"] for ex in splits["test"]] == ["ana", "bo"]
    # ana's in time order: i4 (07:30 UTC), i2 (09:30 UTC), i3, i1
    assert splits["train"][0]["items"] == ["i4", "i2"] and splits["validation"][0]["items"] == ["i3"]
    assert splits["test"][0]["items"] == ["i1"] and splits["test"][0]["timestamps"] == [1714694400]
    assert [s[1]["items"] for s in splits.values()] == [["i1"], ["i2"], ["i3"]]
    with pytest.raises(DataError) as caught:
        load("interactions", path=path, user="uid", time="when")
    assert str(caught.value) == (
        f"{path}: 1 of 3 users has fewer than 3 interactions, e.g. user 'cy' (line 8) has 1; "
        "leave-one-out needs 3 (train, validation, test): add theirs, or leave them out with "
        "short_users=drop")
    bad = write_csv(tmp_path / "bad.csv", [("ana", "i1", "yesterday")], ("user", "item", "timestamp"))
    with pytest.raises(DataError, match=r"bad.csv, line 2: timestamp 'yesterday' is neither a number nor "
                                        r"an ISO 8601 date"):
        load("interactions", path=bad)


def test_interactions_train_a_recommender_that_recommends(tmp_path, store) -> None:
    rows = [(f"u{u}", f"m{(u + k) % 12}", k) for u in range(24) for k in range(6)]
    path = write_csv(tmp_path / "views.tsv", rows, ("user", "item", "timestamp"), "\t")
    exp = {"name": "tiny-views",
           "task": {"name": "interactions", "params": {"path": str(path), "max_len": 8, "negatives": 5}},
           "model": {"d_model": 16, "layers": 1, "heads": 1},
           "attention": "scaled_dot ; causal ; softmax",
           "train": {"epochs": 1, "batch_size": 16}}
    out = tmp_path / "run"
    metrics = attnlab.train.train(load_experiment(exp), out, progress=False,
                                  tracking_uri=store)
    assert 0 <= metrics["test_ndcg10"] <= metrics["test_hr10"] <= 1
    result = CliRunner().invoke(attnlab.cli.app.app, ["predict", str(out), "m1", "m2", "--k", "3"])
    assert result.exit_code == 0, result.output
    assert len(result.output.split()) == 6 and "m1" not in result.output.split()


# -- caches, tracking and predicting without the file -------------------------------------------------


TINY_CSV = {"name": "tiny-service",
            "task": {"name": "csv", "params": {"text": "message", "label": "intent", "vocab_size": 200,
                                               "max_len": 16}},
            "model": {"d_model": 16, "layers": 1, "heads": 2},
            "train": {"epochs": 2, "batch_size": 16, "lr": 0.003}}


def with_path(path: Path) -> dict:
    return {**TINY_CSV, "task": {**TINY_CSV["task"], "params": {**TINY_CSV["task"]["params"],
                                                                 "path": str(path)}}}


def test_the_tokenizer_cache_follows_the_content_not_the_path(tmp_path, cache) -> None:
    from attnlab.tasks import kind

    text = kind("text-classification")
    first = write_csv(tmp_path / "a.csv", messages(10))
    text.prepare(load_experiment(with_path(first)))
    copy = tmp_path / "elsewhere" / "b.csv"
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    text.prepare(load_experiment(with_path(copy)))
    assert len(list((cache / "tokenizers").glob("csv-200-*.json"))) == 1  # one file for one content
    write_csv(first, [*messages(10), ("a new message about opening hours", "Opening-Hours")])
    text.prepare(load_experiment(with_path(first)))
    assert len(list((cache / "tokenizers").glob("csv-200-*.json"))) == 2  # changed content: a new one


def test_a_run_from_a_csv_logs_its_sha256_and_predicts_after_the_csv_is_deleted(tmp_path, store) -> None:
    import hashlib

    import mlflow

    path = write_csv(tmp_path / "service.csv", messages(20))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp_path / "run"
    metrics = attnlab.train.train(load_experiment(with_path(path)), out, progress=False, tracking_uri=store)
    assert {"test_accuracy", "test_macro_f1", "test_majority_rate"} <= set(metrics)
    run_id = json.loads((out / "tracking.json").read_text())["run_id"]
    params = mlflow.MlflowClient(tracking_uri=store).get_run(run_id).data.params
    assert params["data.format"] == "csv" and params["data.sha256"] == digest
    assert json.loads((out / "labels.json").read_text())["labels"] == sorted(INTENTS)
    path.unlink()
    result = CliRunner().invoke(attnlab.cli.app.app, ["predict", str(out), "my card was stolen",
                                                      "when do you open"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[0] in INTENTS for line in lines] == [True, True]  # label, probability, text
    assert [line.split(maxsplit=2)[2] for line in lines] == ["my card was stolen", "when do you open"]


# -- names ------------------------------------------------------------------------------------------


def test_unknown_task_errors_list_every_task(tmp_path) -> None:
    every = ("tasks are the generated mqar, listops, copy, selective_copy, induction_head, the data sets "
             "rotten-tomatoes, sms-spam")
    formats = "and your own files as csv, tsv, jsonl, parquet, pairs, interactions"
    for call, error in ((lambda: load("cvs", path=tmp_path), DataError),
                        (lambda: dataset("cvs"), DataError),
                        (lambda: task_of(TaskConfig(name="cvs")), ConfigError)):
        with pytest.raises(error) as caught:
            call()
        message = str(caught.value)
        assert "'cvs' — did you mean 'csv'?" in message and every in message and formats in message
    assert task_of(TaskConfig(name="interactions")).kind == "recommendation"
    # eval --task from a run on a file: the file's options stay behind, the kind's settings go along
    from attnlab.data import options_carried_over

    params = {"path": "my.csv", "text": "message", "label": "intent", "max_len": 16}
    assert options_carried_over(params, "csv", "sms-spam") == {"max_len": 16}
    with pytest.raises(DataError, match=r"^'mqar' is a generated task, not a data set: "
                                        r"attnlab.data.make\('mqar', num_examples=N\) makes it"):
        load("mqar")
