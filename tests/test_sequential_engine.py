"""The engine follows the seed design (look by look, only undecided arms), with training stubbed out.

``reflect.training.train`` is replaced by a function that returns a curve whose level depends on the arm
and the seed, so these tests exercise the real planner, queue, store and analysis in a second or two.
"""
import textwrap

import numpy as np
import pytest

import reflect.training
from reflect.ablation.runner import RunOptions, run_ablation, store_for
from reflect.training import TrainResult

from conftest import TINY

ABLATION = """
name: engine
phase: 2
question: q?
citations: [a, b]
base: quick
arms:
  concat: {model.decoder.expr_conditioning: concat}
  film: {model.decoder.expr_conditioning: film}
  none: {model.decoder.expr_conditioning: none}
baseline: concat
seeds: {min: 3, max: 8}
metric: {name: val/psnr, mode: max, window: 2}
decision: {min_effect_db: 0.1}
"""
EFFECT = {"concat": 0.0, "film": 0.05, "none": -3.0}


@pytest.fixture
def fake_training(monkeypatch):
    calls = []

    def train(cfg, workdir, **kwargs):
        arm = cfg.model.decoder.expr_conditioning
        calls.append((arm, cfg.seed))
        if arm == "film" and getattr(train, "fail_film", False):
            raise RuntimeError("planted failure")
        noise = np.random.default_rng(1000 + cfg.seed).normal(0, 0.1)
        level = 30.0 + EFFECT[arm] + noise + (0.3 * np.random.default_rng(cfg.seed * 7 + len(arm)).normal())
        history = [{"step": 3 * i, "val/psnr": level} for i in range(1, 3)]
        return TrainResult(eval_history=history, per_frame={}, train_history=[], parameter_counts={"total": 1},
                           checkpoint=str(workdir), wall_time_s=1.0, steps=6, lpips_status="unavailable",
                           lpips_reason="test", resolution=(32, 32))

    monkeypatch.setattr(reflect.training, "train", train)
    return train, calls


def write(tmp_path):
    path = tmp_path / "engine.yaml"
    path.write_text(textwrap.dedent(ABLATION))
    return path


def test_engine_runs_look_by_look_and_stops_decided_arms(tmp_path, fake_training):
    train, calls = fake_training
    opts = RunOptions(path=str(write(tmp_path)), overrides=tuple(TINY), runs_dir=str(tmp_path / "runs"))
    run_ablation(opts)
    ran = {arm: sorted(s for a, s in calls if a == arm) for arm in EFFECT}
    assert ran["none"] == [0, 1, 2]  # −3 dB: worse at the first look, no more seeds
    assert ran["film"] == list(range(8)) and ran["concat"] == list(range(8))  # +0.05 dB: undecided to max
    calls.clear()
    run_ablation(opts)  # rerun: everything the design needs is complete
    assert calls == []


def test_failed_trials_count_and_are_retried_only_when_asked(tmp_path, fake_training):
    train, calls = fake_training
    train.fail_film = True
    opts = RunOptions(path=str(write(tmp_path)), overrides=tuple(TINY), runs_dir=str(tmp_path / "runs"))
    ablation = run_ablation(opts)
    store = store_for(ablation, opts.runs_dir)
    failed = sorted(r.seed for r in store.records() if r.status == "failed")
    assert failed == list(range(8))  # every film seed failed; the design still ran to its end, once each
    assert sorted(s for a, s in calls if a == "film") == list(range(8))
    calls.clear()
    run_ablation(opts)
    assert calls == []  # a failed trial counts as finished
    train.fail_film = False
    run_ablation(opts, retry_failed=True)
    assert sorted(s for a, s in calls if a == "film") == list(range(8))
    assert all(r.status == "complete" for r in store.records())
    assert len(list((store.trials_dir / "retried").glob("*.json"))) == 8  # the failures are kept, not deleted


def test_a_failed_trial_mid_design_is_not_retried_by_a_rerun(tmp_path, fake_training):
    """A rerun while film is still undecided must not quietly retrain its failed seed (that would change a look
    already taken); only --retry-failed does."""
    train, calls = fake_training
    opts = RunOptions(path=str(write(tmp_path)), overrides=tuple(TINY), runs_dir=str(tmp_path / "runs"),
                      seeds=None)
    ablation = run_ablation(opts)
    store = store_for(ablation, opts.runs_dir)
    for r in list(store.records()):  # back to before the last look: seeds 5-7 not run yet
        if r.seed >= 5:
            store.record_path(r.key).unlink()
    rec = next(r for r in store.records() if r.arm == "film" and r.seed == 1)
    rec.status, rec.failure_reason = "failed", "planted"
    store.write(rec)
    calls.clear()
    run_ablation(opts)
    assert ("film", 5) in calls and ("concat", 7) in calls  # the last look still runs
    assert ("film", 1) not in calls  # the failure stands


def test_another_plan_is_adopted_when_idle_and_refused_while_live(tmp_path):
    import subprocess
    import socket

    from reflect.ablation.queue import PLAN_ATTR, check_plan
    from reflect.ablation.spec import load_ablation
    from reflect.ablation.plan import plan_trials
    from reflect.ablation.store import ResultsStore, TrialRecord
    from reflect.ablation.study import KEY_ATTR, open_storage, open_study
    from reflect.config_loading import ConfigError

    ablation = load_ablation(write(tmp_path), overrides=tuple(TINY))
    store = ResultsStore(tmp_path / "runs" / "engine")
    study = open_study("engine", open_storage(None, store.root / "optuna.journal"), "maximize")
    known = {p.key for p in plan_trials(ablation)}
    study.set_user_attr(PLAN_ATTR, "an-earlier-plan")
    check_plan(ablation, study, store, known)  # nothing live: the file changed, the new plan is adopted
    mine = study.user_attrs[PLAN_ATTR]
    assert mine != "an-earlier-plan"

    study.set_user_attr(PLAN_ATTR, "another-machines-plan")
    sleeper = subprocess.Popen(["sleep", "60"])  # a live worker of the other plan, on this host
    try:
        trial = study.ask()
        trial.set_user_attr(KEY_ATTR, "film-s0-elsewhere")
        store.write(TrialRecord(study="engine", arm="film", seed=0, config_hash="elsewhere", status="running",
                                pid=sleeper.pid, host=socket.gethostname()))
        with pytest.raises(ConfigError, match="running another plan"):
            check_plan(ablation, study, store, known)
    finally:
        sleeper.kill()
        sleeper.wait()
    check_plan(ablation, study, store, known)  # its worker is gone: adopted
    assert study.user_attrs[PLAN_ATTR] == mine
