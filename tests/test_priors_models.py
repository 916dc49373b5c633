"""Priors inside models: ListOps parse trees, item genres and K-BERT turned into each batch's
attention inputs, checked against the builders that compute them from the source, through
training, saving, loading and prediction."""

from __future__ import annotations

import json
import re

import pytest
import torch

from attnlab.data.listops import listops
from attnlab.errors import ConfigError
from attnlab.models.base import load_model, save_model
from attnlab.models.encoder_classifier import EncoderClassifier, EncoderClassifierConfig
from attnlab.models.knowledge import build_prior
from attnlab.priors.genres import GenreTable, genre_distances
from attnlab.priors.inputs import ItemGenres, ListOpsTree
from attnlab.priors.trees import listops_parents, tree_distances, tree_neighbours
from attnlab.train import train


def listops_model(programs: str, use: str = "distances") -> EncoderClassifier:
    torch.manual_seed(0)
    return EncoderClassifier(EncoderClassifierConfig(
        vocab_size=16, num_classes=10, d_model=16, layers=2, heads=2, programs=programs, pad_id=0,
        prior={"kind": "listops_tree", "use": use}))


def test_the_listops_prior_gives_the_parse_trees_distances_and_neighbours() -> None:
    ids = listops(num_examples=4, seed=1, min_length=10, max_length=60).inputs
    parse = listops_parents(ids)
    assert torch.equal(ListOpsTree("distances")(ids, None)["distances"],
                       tree_distances(parse.parents, parse.pad))
    assert torch.equal(ListOpsTree("neighbours")(ids, None)["graph"],
                       tree_neighbours(parse.parents, parse.pad))


def test_a_listops_model_reads_the_tree_and_learns_a_bias_per_distance() -> None:
    ids = listops(num_examples=4, seed=2, min_length=10, max_length=60).inputs
    model = listops_model("scaled_dot + graph_distance(4) ; softmax")
    before = model(ids)
    model(ids).square().sum().backward()
    table = model.blocks[0].attention.program_params["mods__0__table"]
    assert table.grad is not None and table.grad.abs().sum() > 0
    with torch.no_grad():
        table.normal_()
    assert not torch.allclose(model(ids), before)  # the bias acts through the tree distances


def test_a_prior_nobody_reads_and_an_unknown_kind_are_refused() -> None:
    with pytest.raises(ConfigError, match=re.escape("gives distances= but no attention program reads it")):
        listops_model("scaled_dot ; softmax")
    with pytest.raises(ConfigError, match="did you mean 'listops_tree'"):
        build_prior({"kind": "listops_trees"})
    with pytest.raises(ConfigError, match="pooling: cls adds a position before them"):
        EncoderClassifier(EncoderClassifierConfig(
            vocab_size=16, num_classes=10, d_model=16, layers=1, heads=2, pad_id=0, pooling="cls",
            programs="scaled_dot ; graph ; softmax", prior={"kind": "listops_tree", "use": "neighbours"}))
    with pytest.raises(ConfigError, match="use must be distances or neighbours"):
        build_prior({"kind": "listops_tree", "use": "parents"})


def test_a_model_with_a_prior_saves_and_loads(tmp_path) -> None:
    ids = listops(num_examples=3, seed=3, min_length=10, max_length=60).inputs
    model = listops_model("scaled_dot ; graph ; softmax", use="neighbours").eval()
    save_model(model, tmp_path)
    again = load_model(tmp_path).eval()
    torch.testing.assert_close(again(ids), model(ids))


def test_item_genres_give_distances_by_shared_genre() -> None:
    prior = ItemGenres(genres=[[], [0], [0, 1], [2], []], names=["a", "b", "c"])
    items = torch.tensor([[0, 1, 2, 3, 4]])
    d = prior(items, items == 0)["distances"]
    table = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.bool)
    assert torch.equal(d, genre_distances(items, GenreTable(table, ("a", "b", "c"))))
    assert d[0, 1, 2] == 1 and d[0, 1, 3] == 2 and d[0, 0].eq(-1).all() and d[0, 4, 4] == 0


def test_training_with_the_listops_prior_then_eval_gives_the_same_accuracy(tmp_path) -> None:
    exp = {"name": "listops-prior", "task": {"name": "listops", "params": {"min_length": 10,
                                                                           "max_length": 60},
                                             "train_examples": 64, "val_examples": 32,
                                             "test_examples": 32},
           "model": {"d_model": 16, "layers": 1, "heads": 2,
                     "prior": {"kind": "listops_tree", "use": "distances"}},
           "attention": "scaled_dot + graph_distance(4) ; softmax",
           "train": {"epochs": 1, "batch_size": 16, "seed": 0}}
    from attnlab.train.run import evaluate

    metrics = train(exp, tmp_path / "run", tracking_uri=f"sqlite:///{tmp_path}/ml.db", progress=False)
    config = json.loads((tmp_path / "run" / "model.json").read_text())["config"]
    assert config["prior"] == {"kind": "listops_tree", "use": "distances"}
    again = evaluate(tmp_path / "run")
    assert again["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_a_prior_on_a_model_that_takes_none_is_refused(tmp_path) -> None:
    exp = {"name": "lm-prior", "task": {"name": "copy", "train_examples": 16, "val_examples": 8,
                                        "test_examples": 8},
           "model": {"d_model": 16, "layers": 1, "heads": 2,
                     "prior": {"kind": "listops_tree"}},
           "attention": "causal ; softmax", "train": {"epochs": 1, "batch_size": 8}}
    with pytest.raises(ConfigError, match="takes no prior"):
        train(exp, tmp_path / "run", tracking_uri=f"sqlite:///{tmp_path}/ml.db", progress=False)


# -- K-BERT ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kbert_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("kbert") / "run"
    exp = {"name": "trec-kbert", "task": {"name": "trec-questions",
                                          "params": {"labels": "coarse", "vocab_size": 1000,
                                                     "max_len": 32},
                                          "train_examples": 256, "val_examples": 64,
                                          "test_examples": 64},
           "model": {"d_model": 16, "layers": 1, "heads": 2, "prior": {"kind": "kbert"}},
           "attention": "scaled_dot ; graph ; softmax", "train": {"epochs": 1, "batch_size": 32}}
    metrics = train(exp, out, tracking_uri=f"sqlite:///{out.parent}/ml.db", progress=False)
    return out, metrics


def test_kbert_in_the_model_recovers_the_sentence_trees_exactly(kbert_run) -> None:
    """The prior reads from the ids alone what the builder knew: visible matrix, soft positions."""
    from attnlab.data.datasets import read
    from attnlab.priors.kbert import KBert
    from attnlab.priors.knowledge import text_trees
    from attnlab.tasks import task_of
    from attnlab.train.config import load_experiment

    out, _ = kbert_run
    exp = load_experiment(out / "experiment.yaml")
    enc = task_of(exp.task).load_encoders(out, exp)
    texts = [ex["text"] for ex in read("trec-questions", labels="coarse")][:1500]
    batch, _ = text_trees(texts, enc.tokenizer, enc.lookup, max_len=enc.max_len,
                          max_branches=enc.max_branches, class_tokens=enc.classes)
    assert (batch.branch.amax(1) > 0).float().mean() > 0.9  # most questions carry knowledge
    spec = json.loads((out / "model.json").read_text())["config"]["prior"]
    prior = KBert(**{k: v for k, v in spec.items() if k != "kind"})
    got = prior(batch.tokens, batch.pad)
    assert torch.equal(got["graph"], batch.visible())
    assert torch.equal(got["positions"], batch.positions.masked_fill(batch.pad, 0))


def test_a_kbert_run_predicts_new_text_with_its_knowledge(kbert_run) -> None:
    import attnlab

    out, _ = kbert_run
    predictor = attnlab.load(out)
    ids = predictor.encode("What city is the capital of France ?")
    first = predictor.encoder.base.vocab_size
    assert (ids >= first).sum() >= 2  # city → location, capital → location or …
    assert predictor.predict(["What city is the capital of France ?"])[0] in predictor.encoder.label_names
