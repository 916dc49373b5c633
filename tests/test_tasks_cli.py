"""`attnlab tasks`: every task an experiment can name, with kind, options and defaults."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from attnlab.cli.app import app
from attnlab.data import DATASETS, GENERATORS
from attnlab.data.files import FORMATS
from attnlab.errors import ConfigError
from attnlab.tasks import named_tasks


def run(*args: str):
    return CliRunner().invoke(app, ["tasks", *args], env={"COLUMNS": "400"})


def test_every_nameable_task_is_listed_with_kind_options_and_defaults() -> None:
    listed = {task.name: task for task in named_tasks()}
    assert list(listed) == [*GENERATORS, *DATASETS, *FORMATS]
    csv = listed["csv"]
    assert (csv.kind, csv.origin, csv.required) == ("text-classification", "your file", ("path",))
    # the format's own options, then the text kind's settings
    assert csv.options == {"text": "text", "label": "label", "split": "split",
                           "duplicates": "keep", "vocab_size": 8000, "max_len": 64}
    assert listed["vader-sentiment"].options == {"path": None, "download": False, "domain": "all",
                                                 "neutral": "keep", "vocab_size": 8000, "max_len": 64}
    assert listed["interactions"].options["negatives"] == 100
    assert listed["copy"].options == {"vocab_size": 16, "seq_len": 32, "copy_len": 16}

    result = run()
    assert result.exit_code == 0, result.output
    # a row's first line names it; a long summary wraps onto lines with an empty name
    lines = [line for line in result.output.splitlines() if line.count("│") > 4]
    rows = {line.split("│")[1].strip(): line for line in lines if line.split("│")[1].strip()}
    assert set(rows) == {*GENERATORS, *DATASETS, *FORMATS}
    assert ("path (required), text=text, label=label, split=split, duplicates=keep, vocab_size=8000, "
            "max_len=64") in rows["csv"]
    assert "path=null, download=false, labels=coarse, vocab_size=8000, max_len=64" in rows["trec-questions"]
    assert "your own users' interactions" in rows["interactions"]


def test_kind_filters_and_an_unknown_kind_names_the_kinds() -> None:
    result = run("--kind", "translation")
    assert result.exit_code == 0, result.output
    names = [line.split("│")[1].strip() for line in result.output.splitlines() if line.count("│") > 4]
    assert names == ["kjv-spanish", "greek-english", "pairs"]
    assert [t.name for t in named_tasks("recommendation")] == ["movielens-100k", "interactions"]
    with pytest.raises(ConfigError, match="unknown task kind 'translate' — did you mean 'translation'"):
        named_tasks("translate")
    result = run("--kind", "translate")
    assert result.exit_code == 2
    assert "error: unknown task kind 'translate' — did you mean 'translation'?; kinds are" in result.output
