"""Next-item recommendation as a training task: leave-one-out histories, sampled negatives,
HR@10 / NDCG@10 with known answers, the most-popular baseline, and a Recommender that recommends."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

import attnlab
import attnlab.cli.app
import attnlab.train
from attnlab import tasks
from attnlab.data import load
from attnlab.errors import InputError, ProgramError
from attnlab.tasks.recommendation import Recommender
from attnlab.train.config import load_experiment
from attnlab.train.metrics import popularity_scores, ranking_scores
from attnlab.train.run import evaluate

RECOMMENDATION = tasks.kind("recommendation")

TINY = {"name": "tiny-recsys",
        "task": {"name": "movielens-100k", "params": {"max_len": 20, "negatives": 100}},
        "model": {"d_model": 16, "layers": 1, "heads": 1},
        "attention": "scaled_dot ; causal ; softmax",
        "train": {"epochs": 1, "batch_size": 128, "lr": 0.003}}


@pytest.fixture(scope="module")
def splits():
    prepared = RECOMMENDATION.prepare(load_experiment(TINY))
    return {"train": prepared.train, "validation": prepared.validation, "test": prepared.test}, \
        prepared.encoders


@pytest.fixture(scope="module")
def users():
    return load("movielens-100k")


def test_training_windows_predict_each_next_item(splits, users) -> None:
    data, index = splits
    train = data["train"]
    assert train.inputs.shape[1] == 20 and train.vocab_size == 1_683
    scored = train.labels != -100
    assert int(scored.sum()) == sum(len(u["items"]) - 1 for u in users["train"])  # all but the first
    # a target is the input one step later, inside a window
    inside = scored[:, :-1] & (train.inputs[:, 1:] != 0)
    assert torch.equal(train.labels[:, :-1][inside], train.inputs[:, 1:][inside])
    assert (train.inputs[~scored] == 0).all()  # left padding, never a target
    first = users["train"][0]["items"]
    assert index.items[int(train.inputs[0, -1]) - 1] == first[-2]
    assert index.items[int(train.labels[0, -1]) - 1] == first[-1]
    assert index.popularity.sum() == sum(len(u["items"]) for u in users["train"])


def test_held_out_items_rank_among_unseen_negatives(splits, users) -> None:
    data, index = splits
    for split, theirs, history in (("validation", "validation", lambda u: users["train"][u]["items"]),
                                   ("test", "test", lambda u: users["train"][u]["items"]
                                    + users["validation"][u]["items"])):
        held = data[split]
        assert held.candidates.shape == (943, 101)
        assert (held.labels[:, :-1] == -100).all()
        for u in (0, 1, 500, 942):
            target = users[theirs][u]["items"][0]
            assert index.items[int(held.labels[u, -1]) - 1] == target
            assert int(held.candidates[u, 0]) == int(held.labels[u, -1])
            ids = [int(i) for i in held.inputs[u] if i]
            assert [index.items[i - 1] for i in ids] == history(u)[-20:]
            seen = {*users["train"][u]["items"], *users["validation"][u]["items"],
                    *users["test"][u]["items"]}
            negatives = [index.items[int(i) - 1] for i in held.candidates[u, 1:]]
            assert len(set(negatives)) == 100 and not seen & set(negatives)
    again = RECOMMENDATION.prepare(load_experiment(TINY))
    assert torch.equal(again.test.candidates, data["test"].candidates)  # fixed by the seed


def test_hit_rate_and_ndcg_have_known_answers() -> None:
    scores = torch.tensor([[9.0, 1, 2, 3],  # first: hit, ndcg 1
                           [2.0, 5, 6, 1],  # third: ndcg 1 / log2(4)
                           [1.0, 1, 0, 0]])  # a tie counts against the true item: second
    hit, ndcg = ranking_scores(scores, k=2)
    assert hit.tolist() == [1.0, 0.0, 1.0]
    assert ndcg.tolist() == pytest.approx([1.0, 0.0, 1 / math.log2(3)])
    assert ranking_scores(scores, k=3)[1][1] == pytest.approx(0.5)


def test_the_popular_baseline_ranks_by_training_counts(splits) -> None:
    data, index = splits
    scores = popularity_scores(index.popularity, data["test"])
    assert 0.2 < scores["test_popular_hr10"] < 0.6  # far above chance (10 / 101)
    assert 0 < scores["test_popular_ndcg10"] < scores["test_popular_hr10"]


def test_a_recommendation_run_reports_hr_and_ndcg_and_recommends(tmp_path, users) -> None:
    out = tmp_path / "run"
    metrics = attnlab.train.train(load_experiment(TINY), out, progress=False,
                                  tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {"test_hr10", "test_ndcg10", "test_popular_hr10", "test_popular_ndcg10"} <= set(metrics)
    assert 0 <= metrics["test_ndcg10"] <= metrics["test_hr10"] <= 1
    scores = evaluate(out)
    assert scores["test_hr10"] == pytest.approx(metrics["test_hr10"])
    model = attnlab.load(out)
    assert isinstance(model, Recommender)
    history = users["train"][0]["items"][:30]
    top = model.recommend(history, k=5)
    assert len(top) == 5 and not set(top) & set(history)
    with pytest.raises(InputError, match="not in the catalogue: 99999"):
        model.recommend(["99999"])
    result = CliRunner().invoke(attnlab.cli.app.app, ["predict", str(out), *history, "--k", "3"])
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 3


def test_the_recommender_must_be_causal(splits) -> None:
    data = splits[0]["train"]
    with pytest.raises(ProgramError, match="must not see the future"):
        RECOMMENDATION.build_model(load_experiment({**TINY, "attention": "scaled_dot ; softmax"}), data)
