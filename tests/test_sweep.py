"""Placeholders in programs, and `sweep`: a grid of settings × seeds, mean ± std per setting, a
sweep that continues where a kill stopped it."""

from __future__ import annotations

import json
import re
import statistics

import pytest
import yaml
from rich.console import Console

import attnlab.train.run
from attnlab import ConfigError
from attnlab.train.config import load_experiment
from attnlab.train.sweep import parse_grid, settings, split_values, sweep
from stores import fresh_store

TINY = {"name": "tiny-sweep",
        "task": {"name": "mqar", "params": {"vocab_size": 32, "seq_len": 8, "num_kv_pairs": 2},
                 "train_examples": 64, "val_examples": 32, "test_examples": 32},
        "model": {"d_model": 16, "layers": 1, "heads": 2},
        "attention": "causal & window($w) ; softmax",
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.01, "seed": 3}}


# -- placeholders ---------------------------------------------------------------------------------


def test_a_placeholder_is_filled_as_written() -> None:
    exp = load_experiment({**TINY, "attention": "scaled_dot + temperature($t) ; causal & window($w)"},
                          ["attention.w=16", "attention.t=0.5"])
    assert str(exp.attention) == "scaled_dot + temperature(0.5) ; causal & window(16) ; softmax"


def test_a_placeholder_fills_the_program_that_the_other_overrides_leave() -> None:
    exp = load_experiment({**TINY, "attention": "causal"},
                          ["attention.w=4", "attention=causal & window($w) ; softmax"])
    assert str(exp.attention) == "scaled_dot ; causal & window(4) ; softmax"


def test_placeholders_fill_every_text_of_a_per_layer_list_and_head_groups() -> None:
    exp = load_experiment({**TINY, "model": {"d_model": 16, "layers": 2, "heads": 2},
                           "attention": ["causal & window($w)",
                                         [["causal & window($w)", 1], ["causal & window($k)", 1]]]},
                          ["attention.w=3", "attention.k=5"])
    first, groups = exp.attention
    assert str(first) == "scaled_dot ; causal & window(3) ; softmax"
    assert [(str(p), h) for p, h in groups] == [("scaled_dot ; causal & window(3) ; softmax", 1),
                                                ("scaled_dot ; causal & window(5) ; softmax", 1)]


def test_an_unknown_placeholder_names_the_ones_the_program_has() -> None:
    with pytest.raises(ConfigError, match=re.escape("attention has no placeholder $ww — did you "
                                                    "mean 'w'? (its placeholders: $w)")):
        load_experiment(TINY, ["attention.ww=4"])
    with pytest.raises(ConfigError, match="its program has no placeholders"):
        load_experiment(TINY, ["attention.w=4", "cross_attention.w=4"])


def test_an_unfilled_placeholder_says_how_to_give_it() -> None:
    with pytest.raises(ConfigError, match=re.escape(
            "attention: placeholder $w has no value: give it with --set attention.w=VALUE "
            "(or --grid / --param)")):
        load_experiment(TINY)


# -- the grid -------------------------------------------------------------------------------------


def test_grid_values_split_at_top_level_commas_only() -> None:
    assert split_values("mix({a}, {b}),rule(within, 2), 'x,y' ,[1, 2]") == [
        "mix({a}, {b})", "rule(within, 2)", "'x,y'", "[1, 2]"]
    grid = parse_grid(["model.heads=1,2,4", "attention=causal ; softmax,causal & window(2) ; softmax",
                       "train.lr=1e-3,0.01"])
    assert grid == {"model.heads": [1, 2, 4],
                    "attention": ["causal ; softmax", "causal & window(2) ; softmax"],
                    "train.lr": ["1e-3", 0.01]}  # values read as YAML, like --set
    assert len(settings(grid)) == 3 * 2 * 2
    assert settings(grid)[1] == {"model.heads": 1, "attention": "causal ; softmax", "train.lr": 0.01}


@pytest.mark.parametrize("items, message", [
    (["model.heads"], "--grid takes KEY=V1,V2,…"),
    (["model.heads="], "an empty value"),
    (["model.heads=1,,2"], "an empty value"),
    (["model.heads=1", "model.heads=2"], "--grid model.heads is given twice"),
    (["train.seed=1,2"], "give --seeds N instead"),
])
def test_a_bad_grid_is_one_config_error(items, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_grid(items)


def test_every_setting_is_checked_before_anything_trains(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(attnlab.train.run, "train", lambda *a, **k: pytest.fail("trained"))
    # the third setting: 16 wide with 3 heads, found by building the model, not by training it
    with pytest.raises(ConfigError, match=re.escape("sweep setting model.heads=3 attention.w=2: "
                                                    "dim=16 is not divisible by heads=3")):
        sweep(TINY, parse_grid(["model.heads=1,2,3", "attention.w=2"]), out=tmp_path / "s")
    with pytest.raises(ConfigError, match=re.escape("sweep setting attention.w=2 train.lr=100: "
                                                    "experiment: train.lr")):
        sweep(TINY, parse_grid(["attention.w=2", "train.lr=0.1,100"]), out=tmp_path / "s")
    with pytest.raises(ConfigError, match=re.escape("--seeds: give a number of seeds ≥ 1, got 0")):
        sweep(TINY, parse_grid(["attention.w=2"]), seeds=0, out=tmp_path / "s")
    assert not (tmp_path / "s").exists()


# -- a tiny sweep, killed and continued ----------------------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """2 settings × 2 seeds; the first try is killed in its third run, after one epoch of two;
    the rerun reuses two runs, resumes the third, trains the fourth."""
    from attnlab.train.module import TaskModule

    tmp = tmp_path_factory.mktemp("sweep")
    store, out = fresh_store(tmp), tmp / "sweep"
    grid = parse_grid(["attention.w=1,4"])
    calls, real_train = [], attnlab.train.run.train

    def recording(exp, folder, **kwargs):
        calls.append((folder.relative_to(out).as_posix(), kwargs["resume"]))
        return real_train(exp, folder, **kwargs)

    epochs = []

    def interrupted(self):  # the third run's first epoch end: as a kill would stop it
        epochs.append(1)
        if len(epochs) == 5:
            raise SystemError("killed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attnlab.train.run, "train", recording)
        patch.setattr(TaskModule, "on_train_epoch_end", interrupted, raising=False)
        with pytest.raises(SystemError):
            sweep(TINY, grid, seeds=2, out=out, tracking_uri=store, progress=False)
    first_try = list(calls)
    calls.clear()
    console = Console(record=True, width=120)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attnlab.train.run, "train", recording)
        rows = sweep(TINY, grid, seeds=2, out=out, tracking_uri=store, progress=False,
                     console=console)
    return {"rows": rows, "out": out, "store": store, "first": first_try, "second": list(calls),
            "printed": console.export_text(), "grid": grid}


def test_a_killed_sweep_continues_reusing_finished_runs_and_resuming_the_half_done(swept) -> None:
    assert swept["first"] == [("attention-w-1/seed-3", False), ("attention-w-1/seed-4", False),
                              ("attention-w-4/seed-3", False)]
    assert swept["second"] == [("attention-w-4/seed-3", True), ("attention-w-4/seed-4", False)]
    printed = swept["printed"]
    assert "(1/4) attention.w=1 seed 3: finished before, reused" in printed
    assert "(3/4) attention.w=4 seed 3: resuming where it stopped" in printed
    assert "(4/4) attention.w=4 seed 4\n" in printed
    resumed = json.loads((swept["out"] / "attention-w-4" / "seed-3" / "metrics.json").read_text())
    assert resumed["steps"] == 4 and resumed["epochs"] == 2  # two epochs of two batches, in all


def test_the_sweep_reports_mean_and_sample_std_of_each_setting(swept) -> None:
    out = swept["out"]
    saved = json.loads((out / "sweep.json").read_text())
    assert [s["label"] for s in saved["settings"]] == ["attention.w=1", "attention.w=4"]
    for row, w in zip(saved["settings"], (1, 4), strict=True):
        per_seed = [json.loads((out / f"attention-w-{w}" / f"seed-{s}" / "metrics.json").read_text())
                    for s in (3, 4)]
        scores = [m["test_accuracy"] for m in per_seed]
        assert [r["metrics"]["test_accuracy"] for r in row["runs"]] == scores
        assert row["mean"] == pytest.approx(statistics.fmean(scores))
        assert row["std"] == pytest.approx(statistics.stdev(scores))
        assert row["n"] == 2 and row["setting"] == {"attention.w": w}
        assert str(per_seed[0]["program"]).endswith(f"window({w}) ; softmax")
        line = next(line for line in swept["printed"].splitlines() if line.startswith(f"│ {w} "))
        assert f"{row['mean']:.4f} ± {row['std']:.4f} │ 2 │" in line
    assert saved["main_metric"] == "test_accuracy" and saved["seeds"] == 2
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_run_is_tagged_with_its_sweep_and_setting(swept) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=swept["store"])
    runs = client.search_runs([client.get_experiment_by_name("tiny-sweep").experiment_id],
                              filter_string="tags.`attnlab.sweep` = 'sweep'")
    finished = sorted(r.data.tags["attnlab.setting"] for r in runs if r.info.status == "FINISHED")
    assert finished == ["attention.w=1", "attention.w=1", "attention.w=4", "attention.w=4"]


def test_a_rerun_trains_nothing_new(swept, monkeypatch) -> None:
    monkeypatch.setattr(attnlab.train.run, "train", lambda *a, **k: pytest.fail("trained again"))
    rows = sweep(TINY, swept["grid"], seeds=2, out=swept["out"], tracking_uri=swept["store"],
                 console=Console(quiet=True))
    assert [r["mean"] for r in rows] == [r["mean"] for r in swept["rows"]]


def test_a_rerun_with_another_experiment_is_refused(swept, monkeypatch) -> None:
    monkeypatch.setattr(attnlab.train.run, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ConfigError, match=r"holds a run of another experiment \(train.lr: 0.01 → 0.02"):
        sweep(TINY, swept["grid"], seeds=2, out=swept["out"], overrides=["train.lr=0.02"],
              tracking_uri=swept["store"], console=Console(quiet=True))


def test_the_cli_sweeps_and_bad_grids_are_one_line(tmp_path, swept, monkeypatch) -> None:
    from typer.testing import CliRunner

    from attnlab.cli.app import app

    exp = tmp_path / "tiny.yaml"
    exp.write_text(yaml.safe_dump(TINY))
    runner = CliRunner()
    args = ["sweep", str(exp), "--grid", "attention.w=1,4", "--seeds", "2", "--out",
            str(swept["out"]), "--tracking-uri", swept["store"]]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "finished before, reused" in done.output and "wrote " in done.output
    for bad, message in ([["--grid", "attention.w"], "error: --grid takes KEY=V1,V2,…"],
                         [["--grid", "attention.w=1", "--seeds", "0"], "error: --seeds: give"]):
        failed = runner.invoke(app, ["sweep", str(exp), *bad])
        assert failed.exit_code == 2 and failed.output.startswith(message), failed.output
        assert len(failed.output.strip().splitlines()) == 1
