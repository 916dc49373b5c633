"""Generated tasks: determinism, and each task's definition checked by rebuilding labels from inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnlab import tasks
from attnlab.data import GENERATORS, LISTOPS_TOKENS, SPLITS, make, split_seed
from attnlab.errors import ConfigError
from attnlab.ids import IGNORE_INDEX

SMALL = {"mqar": {"vocab_size": 64, "seq_len": 32, "num_kv_pairs": 4},
         "listops": {"min_length": 20, "max_length": 80},
         "copy": {"seq_len": 20, "copy_len": 6},
         "selective_copy": {"seq_len": 40, "num_tokens": 5},
         "induction_head": {"seq_len": 24, "induction_len": 2, "num_triggers": 3}}


# --- determinism and splits -------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_seed_and_split_give_identical_tensors(name):
    a = make(name, "validation", num_examples=64, seed=3, **SMALL[name])
    b = make(name, "validation", num_examples=64, seed=3, **SMALL[name])
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_splits_and_seeds_differ(name):
    train, val, test = (make(name, s, num_examples=64, seed=3, **SMALL[name]) for s in SPLITS)
    other_seed = make(name, "train", num_examples=64, seed=4, **SMALL[name])
    assert not torch.equal(train.inputs, val.inputs)
    assert not torch.equal(val.inputs, test.inputs)
    assert not torch.equal(train.inputs, other_seed.inputs)


def test_split_seeds_are_disjoint_across_splits_and_base_seeds():
    seen = {}
    for seed in range(200):
        for split in SPLITS:
            derived = split_seed(seed, split)
            assert derived not in seen, (seed, split, seen.get(derived))
            seen[derived] = (seed, split)
    per_split = [{split_seed(s, split) for s in range(200)} for split in SPLITS]
    assert not (per_split[0] & per_split[1] or per_split[0] & per_split[2] or per_split[1] & per_split[2])


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_every_task_builds_with_its_defaults(name):
    info = GENERATORS[name]
    data = make(name, num_examples=4)
    assert len(data) == 4 and info.kind in tasks.KINDS
    assert info.describe().startswith(name)
    assert int(data.inputs.max()) < data.vocab_size and int(data.inputs.min()) >= 0
    assert sum(data.label_distribution().values()) == pytest.approx(1.0)


# --- MQAR --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("random_non_queries", [True, False])
def test_mqar_layout_matches_zoology(random_non_queries):
    vocab, seq_len, k = 128, 64, 6
    data = make("mqar", num_examples=300, seed=1, vocab_size=vocab, seq_len=seq_len, num_kv_pairs=k,
                random_non_queries=random_non_queries)
    assert data.inputs.shape == data.labels.shape == (300, seq_len)
    for x, y in zip(data.inputs.tolist(), data.labels.tolist(), strict=True):
        keys, values = x[0:2 * k:2], x[1:2 * k:2]
        assert all(1 <= key < vocab // 2 for key in keys) and len(set(keys)) == k
        assert all(vocab // 2 <= v < vocab for v in values) and len(set(values)) == k
        assert all(label == IGNORE_INDEX for label in y[:2 * k])
        labelled = [t for t, label in enumerate(y) if label != IGNORE_INDEX]
        assert len(labelled) == k
        # Zoology's shifted labels: the query position itself carries its key's value
        assert sorted(x[t] for t in labelled) == sorted(keys)
        assert all((t - 2 * k) % 2 == 0 for t in labelled)
        assert all(y[t] == values[keys.index(x[t])] for t in labelled)
        if not random_non_queries:
            queries = x[2 * k:]
            assert all(queries.count(key) == 1 and queries.index(key) % 2 == 0 for key in keys)
            assert all(tok == 0 for t, tok in enumerate(queries) if t + 2 * k not in labelled)


def test_mqar_example_from_zoology_docstring_shape():
    data = make("mqar", num_examples=1, seed=0, vocab_size=32, seq_len=16, num_kv_pairs=2,
                random_non_queries=False)
    x, y = data.inputs[0].tolist(), data.labels[0].tolist()
    for t in (t for t, label in enumerate(y) if label != IGNORE_INDEX):
        assert x[t] in x[0:4:2] and y[t] == x[x.index(x[t]) + 1]


def test_mqar_query_slots_follow_the_power_law():
    n, seq_len, k, a = 20_000, 64, 4, 0.01
    data = make("mqar", num_examples=n, seed=0, vocab_size=256, seq_len=seq_len, num_kv_pairs=k,
                power_a=a, random_non_queries=False)
    first_key = data.inputs[:, 0:1]
    region = data.inputs[:, 2 * k:]
    # the first key's slot is the first successive draw, so it is distributed exactly as p
    slot = ((region == first_key).float().argmax(dim=1) // 2).numpy()
    num_slots = (seq_len - 2 * k) // 2
    p = a * np.arange(1, num_slots + 1) ** (a - 1)
    p /= p.sum()
    observed = np.bincount(slot, minlength=num_slots)
    expected = n * p
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    dof = num_slots - 1
    assert chi2 < dof + 8 * np.sqrt(2 * dof), chi2
    assert observed[0] > 10 * observed[-1]
    assert abs(observed[0] / n - p[0]) < 0.02


def test_mqar_rejects_bad_parameters():
    with pytest.raises(ConfigError, match="even seq_len"):
        make("mqar", num_examples=2, seq_len=63)
    with pytest.raises(ConfigError, match="vocab_size > seq_len"):
        make("mqar", num_examples=2, vocab_size=64, seq_len=64)
    with pytest.raises(ConfigError, match="4 \\* num_kv_pairs <= seq_len"):
        make("mqar", num_examples=2, seq_len=16, num_kv_pairs=5)


# --- ListOps -----------------------------------------------------------------------------------------

def _evaluate(tokens: list[str]) -> int:
    """Stack evaluator of a ListOps token list, independent of the generator."""
    stack: list = []
    for tok in tokens:
        if tok.startswith("["):
            stack.append(tok)
        elif tok == "]":
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            op = stack.pop()
            args.sort()
            n = len(args)
            stack.append({"[MIN": args[0], "[MAX": args[-1], "[SM": sum(args) % 10,
                          "[MED": int(np.median(args))}[op])
            assert n >= 2
        else:
            stack.append(int(tok))
    assert len(stack) == 1
    return stack[0]


def test_listops_labels_lengths_and_padding():
    lo, hi = 100, 500
    data = make("listops", num_examples=2000, seed=0, min_length=lo, max_length=hi)
    assert data.labels.dim() == 1 and data.num_classes == 10 and data.pad_id == 0
    assert data.inputs.shape == (2000, hi) and data.labels.shape == (2000,)
    lengths = (data.inputs != data.pad_id).sum(dim=1)
    assert bool(((lengths > lo) & (lengths < hi)).all())
    before_end = torch.arange(hi)[None, :] < lengths[:, None]
    assert torch.equal(data.inputs != data.pad_id, before_end)  # padding only at the end
    for row, label in zip(data.inputs.tolist(), data.labels.tolist(), strict=True):
        tokens = [LISTOPS_TOKENS[i] for i in row if i != data.pad_id]
        assert tokens[0].startswith("[") and tokens[-1] == "]"
        assert _evaluate(tokens) == label
    assert len({tuple(r) for r in data.inputs.tolist()}) == 2000  # unique, as LRA keeps a set
    dist = data.label_distribution()
    print("listops label distribution (100, 500):", {c: round(f, 3) for c, f in dist.items()})
    assert set(dist) == set(range(10)) and sum(dist.values()) == pytest.approx(1.0)
    assert 0.12 < max(dist.values()) < 0.25  # LRA's majority class is about 17 %


def test_listops_rejects_impossible_windows():
    with pytest.raises(ConfigError, match="strictly between"):
        make("listops", num_examples=2, min_length=10, max_length=11)
    with pytest.raises(ConfigError, match="can never be met"):
        make("listops", num_examples=2, max_depth=2, max_args=3, min_length=10, max_length=50)


# --- copy, selective copy, induction head -------------------------------------------------------------

def test_copy_labels_reproduce_the_data_after_the_separator():
    seq_len, c = 20, 6
    data = make("copy", num_examples=200, seed=2, vocab_size=10, seq_len=seq_len, copy_len=c)
    x, y = data.inputs, data.labels
    assert bool((x[:, :c] >= 2).all())
    assert bool((x[:, c:seq_len - c] == 0).all()) and bool((x[:, seq_len - c] == 1).all())
    assert torch.equal(y[:, :seq_len - c], torch.full_like(y[:, :seq_len - c], IGNORE_INDEX))
    assert torch.equal(y[:, seq_len - c:], x[:, :c])
    assert torch.equal(x[:, seq_len - c + 1:], x[:, :c - 1])  # teacher-forced copy after the separator


def test_selective_copy_labels_are_the_data_tokens_in_order():
    vocab, seq_len, k = 12, 40, 5
    data = make("selective_copy", num_examples=200, seed=2, vocab_size=vocab, seq_len=seq_len, num_tokens=k)
    for x, y in zip(data.inputs.tolist(), data.labels.tolist(), strict=True):
        region = x[:seq_len - k]
        tokens = [t for t in region if t != 0]
        assert len(tokens) == k and all(1 <= t < vocab - 1 for t in tokens)
        assert x[seq_len - k:] == [vocab - 1] * k
        assert y[seq_len - k:] == tokens and set(y[:seq_len - k]) == {IGNORE_INDEX}
    positions = (data.inputs[:, :seq_len - k] != 0).float().mean(dim=0)
    assert float(positions.min()) > 0.03  # scattered over the whole region, not packed at the start


@pytest.mark.parametrize(("induction_len", "num_triggers"), [(1, 1), (2, 3)])
def test_induction_head_label_is_what_followed_the_trigger(induction_len, num_triggers):
    vocab, seq_len, k = 20, 24, induction_len
    data = make("induction_head", num_examples=300, seed=5, vocab_size=vocab, seq_len=seq_len,
                induction_len=k, num_triggers=num_triggers)
    trigger = vocab - 1
    for x, y in zip(data.inputs.tolist(), data.labels.tolist(), strict=True):
        region = seq_len - k
        assert x[region] == trigger and set(y[:region]) == {IGNORE_INDEX}
        first = x.index(trigger)
        assert first < region - 1 - k
        target = x[first + 1:first + 1 + k]
        assert trigger not in target
        assert y[region:] == target and x[region + 1:] == target[:-1]
        for pos in (t for t in range(region) if x[t] == trigger):
            assert x[pos + 1:pos + 1 + k] == target


# --- errors ------------------------------------------------------------------------------------------

def test_unknown_task_suggests_the_nearest_name():
    with pytest.raises(ConfigError, match="did you mean 'mqar'"):
        make("mqr", num_examples=2)
    with pytest.raises(ConfigError, match="did you mean 'selective_copy'"):
        make("selectve_copy", num_examples=2)


def test_unknown_parameter_and_split_are_spec_errors():
    with pytest.raises(ConfigError, match="did you mean 'num_kv_pairs'"):
        make("mqar", num_examples=2, num_kv_pair=4)
    with pytest.raises(ConfigError, match="did you mean 'test'"):
        make("mqar", "tset", num_examples=2)
    with pytest.raises(ConfigError, match="num_examples"):
        make("copy", num_examples=0)
    with pytest.raises(ConfigError, match="seed"):
        make("copy", num_examples=2, seed=-1)
