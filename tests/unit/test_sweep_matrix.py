"""Sweep matrices: expansion into trials, the CrossFuse stage-1 dependency, errors that name
the key; the trainer's stop rules (early stopping, deadline) that sweeps rely on."""

from __future__ import annotations

import shutil
import time

import pytest
import yaml

from fusion.checkpoint import LAST, load_checkpoint
from fusion.config import SweepConfig, load_config
from fusion.errors import ConfigError
from fusion.sweep.matrix import expand
from fusion.sweep.runner import plan
from fusion.sweep.summary import trials_markdown
from fusion.train.loop import Trainer, epochs_without_improvement
from tests.conftest import REPO


@pytest.fixture
def ws(tmp_path):
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def _with_sweeps(ws, sweeps: dict):
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["sweeps"] = sweeps
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return ws


def test_the_papers_ablations_expand_to_every_variant_with_one_shared_stage1():
    sweep = SweepConfig(
        data={"ir-vis": "tno", "medical": "harvard", "multi-focus": None, "multi-exposure": "mef"},
        seeds=[0, 1],
        matrix=[
            {"model": "cadnif", "tasks": ["ir-vis", "medical", "multi-focus", "multi-exposure"]},
            {"model": "crossfuse", "tasks": ["ir-vis"]},
            {"model": "ufa", "tasks": ["multi-focus"]},
            {
                "model": "ufa",
                "variants": ["UFA"],
                "tasks": ["multi-focus"],
                "grid": {"train.options.lambda_l1": [0, 0.4, 0.6, 0.8, 1]},
            },
        ],
    )
    trials = expand(sweep)
    by_model = {m: [t for t in trials if t.overrides["train"]["model"] == m] for m in ("cadnif", "crossfuse", "ufa")}
    assert len(by_model["cadnif"]) == 5 * 4 * 2  # Table 6 x four tasks x two seeds
    stage1 = [t for t in by_model["crossfuse"] if t.overrides["train"].get("stage") == "autoencoder"]
    assert [t.id for t in stage1] == ["crossfuse-stage1-ir-vis-s0", "crossfuse-stage1-ir-vis-s1"]
    stage2 = [t for t in by_model["crossfuse"] if t not in stage1]
    assert len(stage2) == 8 * 2  # s1-c1 ... one-stage; "full" is s1-c1's alias
    assert {t.depends_on for t in stage2 if t.overrides["train"]["variant"] != "one-stage"} == {t.id for t in stage1}
    assert {t.overrides["train"].get("stage") for t in stage2} == {"fusion", None}
    assert all(t.depends_on is None for t in stage2 if t.overrides["train"]["variant"] == "one-stage")
    assert trials.index(stage1[0]) < min(trials.index(t) for t in stage2)
    assert len(by_model["ufa"]) == (4 + 5) * 2
    lam = [t for t in by_model["ufa"] if "lambda_l1" in t.overrides["train"].get("options", {})]
    assert sorted({t.overrides["train"]["options"]["lambda_l1"] for t in lam}) == [0, 0.4, 0.6, 0.8, 1]
    assert "ufa-UFA-multi-focus-s1-lambda_l1=0.4" in {t.id for t in lam}
    assert {t.overrides["train"]["source"] for t in by_model["cadnif"]} == {"tno", "harvard", None, "mef"}
    assert len({t.id for t in trials}) == len(trials)


def test_a_repeated_row_and_bad_grids_are_refused():
    with pytest.raises(ConfigError, match="appears twice"):
        expand(SweepConfig(matrix=[{"model": "ufa", "variants": ["UFA"]}, {"model": "ufa", "variants": ["UFA"]}]))
    with pytest.raises(ValueError, match="train.\\* or evaluate.\\*"):
        SweepConfig(matrix=[{"model": "ufa", "grid": {"lambda_l1": [0]}}])
    with pytest.raises(ValueError, match="no repeats"):
        SweepConfig(seeds=[1, 1], matrix=[{"model": "ufa"}])


def test_bad_trials_keep_their_error_and_the_rest_resolve(ws):
    _with_sweeps(
        ws,
        {
            "s": {
                "profile": "tiny",
                "overrides": ["train.epochs=1"],
                "matrix": [{"model": "ufa", "variants": ["UFA", "NOPE"]}, {"model": "nosuch"}],
            }
        },
    )
    _, trials = plan(ws, "s")
    by_id = {t.id: t for t in trials}
    assert by_id["ufa-UFA-multi-focus-s0"].config["train"]["epochs"] == 1
    assert by_id["ufa-UFA-multi-focus-s0"].error is None and "sweeps" not in by_id["ufa-UFA-multi-focus-s0"].config
    assert "unknown variant 'NOPE'" in by_id["ufa-NOPE-multi-focus-s0"].error
    assert "unknown model 'nosuch'" in by_id["nosuch-all-multi-focus-s0"].error


def test_a_data_parallel_trial_resolves_with_its_workers(ws):
    _with_sweeps(
        ws,
        {
            "dp": {
                "profile": "tiny",
                "matrix": [{"model": "ufa", "variants": ["UFA"], "grid": {"train.ray.num_workers": [1, 2]}}],
            }
        },
    )
    _, trials = plan(ws, "dp")
    by_id = {t.id: t for t in trials}
    assert all(t.error is None for t in trials)
    assert by_id["ufa-UFA-multi-focus-s0-num_workers=1"].config["train"]["ray"]["num_workers"] == 1
    assert by_id["ufa-UFA-multi-focus-s0-num_workers=2"].config["train"]["ray"]["num_workers"] == 2


def test_data_parallel_trials_run_no_more_at_a_time_than_fit_with_their_workers():
    """Tune reserves only a trial's own resources; its Ray Train workers ask for theirs later.
    side_by_side counts both, so that trials started together can all place their workers
    (two of 1 + 2 x 0.5 CPUs on a 2-CPU node, started together, waited for workers for good)."""
    from fusion.config import RayConfig
    from fusion.sweep.tune_phase import side_by_side

    two = RayConfig(num_workers=2, cpus_per_worker=0.5, gpus_per_worker=0.25)
    four = RayConfig(num_workers=4, cpus_per_worker=0.5, gpus_per_worker=0.25)
    gpus = 64.0  # each worker also takes a quarter GPU
    assert side_by_side([two, two], 1, 0, {"CPU": 2.0, "GPU": gpus}) == 1  # 1 + 2 x 0.5 = 2 CPUs each
    assert side_by_side([two] * 3, 1, 0, {"CPU": 4.0, "GPU": gpus}) == 2
    assert side_by_side([two] * 3, 1, 0, {"CPU": 64.0, "GPU": gpus}) == 3  # never more than there are
    assert side_by_side([two, four], 1, 0, {"CPU": 7.0, "GPU": gpus}) == 2  # the largest footprint (1 + 4 x 0.5)
    # GPUs too: 4 x 0.25 + the trial's own 0.5 is 1.5 GPUs
    assert side_by_side([two, four], 1, 0.5, {"CPU": 64.0, "GPU": 3.0}) == 2
    assert side_by_side([two, two], 1, 0, {"CPU": 2.0}) == 1  # at least one: check_fits refused what cannot fit


def test_sweep_errors_name_the_key(ws):
    _with_sweeps(
        ws,
        {
            "s": {"data": {"ir-vis": "tno"}, "matrix": [{"model": "cadnif"}]},
            "p": {"profile": "nope", "matrix": [{"model": "ufa"}]},
        },
    )
    with pytest.raises(ConfigError, match="sweeps.s.data.ir-vis: 'tno' is not in the `sources` registry"):
        plan(ws, "s")
    with pytest.raises(ConfigError, match="profile 'nope'"):
        plan(ws, "p")
    with pytest.raises(ConfigError, match="sweep 'missing' is not defined.*defined: \\['p', 's'\\]"):
        plan(ws, "missing")
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["sweeps"]["s"]["typo"] = 1
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="sweeps.s.typo: unknown parameter"):
        load_config(ws)


def test_the_shipped_smoke_sweep_resolves(ws):
    sweep, trials = plan(ws, "smoke")
    assert all(t.error is None for t in trials) and sweep.budget_minutes > 0
    assert {t.config["train"]["model"] for t in trials} == {"ufa", "cadnif", "crossfuse"}
    md = trials_markdown([{"trial": "a|b", "status": "failed", "best_val_loss": float("nan"), "error": "x\ny"}])
    assert "a/b" in md and "x y" in md and "nan" not in md


def test_epochs_without_improvement():
    h = [{"val/loss": v} for v in (3.0, 2.0, 2.5, 1.99, 2.0, 2.0)]
    assert epochs_without_improvement(h) == 2
    assert epochs_without_improvement(h, min_delta=0.05) == 4
    assert epochs_without_improvement([]) == 0


def test_early_stopping_stops_and_leaves_a_checkpoint(ws, tiny_prepared, tmp_path):
    # lr 1e-30: the weights cannot move, so val/loss never improves after the first epoch
    cfg = load_config(ws, "tiny", ["train.epochs=5", "train.lr=1e-30", "train.early_stop_patience=2"])
    state = Trainer(cfg, tiny_prepared).fit(tmp_path)
    assert state.stopped == "early_stopped" and state.epoch == 3
    assert load_checkpoint(tmp_path / LAST)["epoch"] == 3


def test_a_deadline_stops_before_an_epoch_that_cannot_finish_and_resuming_matches(ws, tiny_prepared, tmp_path):
    cfg = load_config(ws, "tiny", ["train.epochs=3"])
    assert Trainer(cfg, tiny_prepared).fit(tmp_path / "late", deadline=time.time() - 1).stopped == "out_of_time"
    assert not (tmp_path / "late" / LAST).exists()
    full = Trainer(cfg, tiny_prepared).fit(tmp_path / "full")
    # a deadline one epoch away: the first epoch runs, the second would overrun
    part = Trainer(cfg, tiny_prepared)
    part.fit(tmp_path / "part", deadline=time.time() + 0.05)  # an epoch takes longer than that
    assert part.state.stopped == "out_of_time" and part.state.epoch <= 1 and full.history[0]["epoch_seconds"] > 0.05
    resumed = Trainer(cfg, tiny_prepared)
    last = tmp_path / "part" / LAST
    resumed.fit(tmp_path / "part", resume_from=last if last.is_file() else None)
    a, b = load_checkpoint(tmp_path / "full" / LAST), load_checkpoint(last)
    assert resumed.state.stopped is None and b["epoch"] == 3
    assert all((a["state_dict"][k] == b["state_dict"][k]).all() for k in a["state_dict"])


def test_the_paper_profile_gives_each_model_its_papers_schedule(ws):
    _with_sweeps(
        ws,
        {
            "p": {
                "profile": "paper",
                "matrix": [
                    {"model": "crossfuse", "variants": ["s1-c1", "one-stage"]},
                    {"model": "cadnif", "variants": ["OD-Net"]},
                    {"model": "ufa", "variants": ["UFA"]},
                ],
                "overrides": ["train.batch_size=4"],
            }
        },
    )
    _, trials = plan(ws, "p")
    got = {
        t.id: (t.config["train"]["epochs"], t.config["train"]["lr"], t.config["train"]["batch_size"]) for t in trials
    }
    assert got == {
        "crossfuse-stage1-multi-focus-s0": (4, 1e-4, 4),  # CrossFuse stage 1: 4 epochs, lr 1e-4 (batch from --set)
        "crossfuse-s1-c1-multi-focus-s0": (8, 1e-2, 4),  # stage 2: 8 epochs, lr 1e-2
        "crossfuse-one-stage-multi-focus-s0": (8, 1e-2, 4),
        "cadnif-OD-Net-multi-focus-s0": (10, 1e-5, 4),  # CADNIF: 10 epochs, lr 1e-5
        "ufa-UFA-multi-focus-s0": (300, 1e-4, 4),  # UFA-Fuse: 300 epochs, lr 1e-4
    }
    cadnif = load_config(ws, "paper", ["train.model=cadnif", "train.variant=CA-Net"]).train
    assert (cadnif.crop, cadnif.batch_size, cadnif.lr_step_epochs) == (132, 16, 1000)
    assert load_config(ws, "paper", ["train.model=cadnif", "train.variant=CA-Net", "train.lr=3e-4"]).train.lr == 3e-4
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["profiles"]["paper"]["models"]["cadnix"] = {"train": {"lr": 1}}
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="profiles.paper.models.cadnix: expected <model>"):
        load_config(ws, "paper")
