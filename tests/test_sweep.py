"""Sweeps: validation, W&B export, a tiny Optuna search recorded in the store, pruning."""
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from reflect.ablation.store import ResultsStore
from reflect.ablation.sweep_spec import load_sweep
from reflect.ablation.sweep_worker import worker
from reflect.config_loading import ConfigError
from reflect.sweep import export_wandb

from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]

SWEEP = """
name: tiny_sweep
phase: 1
base: quick
space:
  optim.lr_deform: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
  model.decoder.expr_conditioning: {type: categorical, choices: [concat, film]}
sampler: {name: random, seed: 3}
pruner: {name: none}
n_trials: 2
metric: {name: val/psnr, mode: max, window: 2}
"""


def test_repo_sweep_is_valid_and_exports_to_wandb(tmp_path):
    spec, (base, _, _) = load_sweep(ROOT / "sweeps" / "expr_mlp_lr.yaml")
    out = tmp_path / "wandb_sweep.yaml"
    export_wandb(spec, base, out)
    doc = yaml.safe_load(out.read_text())
    assert doc["method"] == "bayes"
    assert doc["metric"] == {"name": "val/psnr", "goal": "maximize"}
    lr = doc["parameters"]["optim.lr_deform"]
    # relative to each profile's own rate: the quick profile's 1e-3, the full profile's (the roadmap's) 5e-5
    assert lr["distribution"] == "log_uniform_values"
    assert lr["min"] == pytest.approx(2e-4) and lr["max"] == pytest.approx(4e-3)
    full, _ = load_sweep(ROOT / "sweeps" / "expr_mlp_lr.yaml", profile="full")
    p = full.space["optim.lr_deform"]
    assert p.low == pytest.approx(1e-5) and p.high == pytest.approx(2e-4) and p.low < 4e-5 and p.high > 5e-5
    assert "reflect.train" in doc["command"] and "${args_no_hyphens}" in doc["command"]


def test_space_keys_must_exist(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(SWEEP.replace("optim.lr_deform", "optim.lr_deformer"))
    with pytest.raises(ConfigError, match=r"space\.optim\.lr_deformer.*unknown key"):
        load_sweep(path)


def test_tiny_sweep_runs_and_rerun_reuses_the_store(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SWEEP)
    runs = tmp_path / "runs"
    worker(str(path), tuple(TINY), None, str(runs), 2)
    records = list(ResultsStore(runs / "tiny_sweep").records())
    assert len(records) == 2 and all(r.status == "complete" for r in records)
    assert all(1e-5 <= r.overrides["optim.lr_deform"] <= 1e-3 for r in records)
    # The study already has its trials: a rerun trains nothing and adds none.
    import reflect.training

    before = {r.key: r.updated_at for r in records}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reflect.training, "train", lambda *a, **k: pytest.fail("the rerun trained a trial"))
        worker(str(path), tuple(TINY), None, str(runs), 2)
    assert {r.key: r.updated_at for r in ResultsStore(runs / "tiny_sweep").records()} == before
    study = optuna.load_study(study_name="tiny_sweep", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(runs / "tiny_sweep" / "optuna.journal"))))
    assert len(study.trials) == 2


def test_cli_dry_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "reflect.sweep", str(ROOT / "sweeps" / "expr_mlp_lr.yaml"),
                           "--dry-run"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "optim.lr_deform" in proc.stdout and "nothing was trained" in proc.stdout


def test_pruned_trial_is_recorded_as_pruned(tmp_path):
    from reflect.ablation.execute import run_trial
    from reflect.ablation.plan import PlannedTrial
    from reflect.config import config_hash, load_train_config
    from reflect.ablation.sweep_optuna import StepPruningCallback

    path = tmp_path / "tiny.yaml"
    path.write_text(SWEEP)
    spec, _ = load_sweep(path)
    cfg = load_train_config("quick", TINY)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1000.0))
    trial = study.ask()
    store = ResultsStore(tmp_path / "runs" / "tiny_sweep")
    p = PlannedTrial("t000", 0, cfg, config_hash(cfg), {})
    record = run_trial(spec, p, store, trial.number, callbacks=[StepPruningCallback(trial, "val/psnr")])
    assert record.status == "pruned" and "step 3" in record.failure_reason
    assert store.get(p.key).status == "pruned"


def test_two_workers_share_the_budget_and_never_train_a_configuration_twice(tmp_path):
    """Two processes on one study: the space has two configurations and the budget is 4 trials."""
    path = tmp_path / "dup.yaml"
    path.write_text(SWEEP.replace("name: tiny_sweep", "name: dup").replace("n_trials: 2", "n_trials: 4").replace(
        "  optim.lr_deform: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}\n", ""))
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "reflect.sweep", str(path), *TINY, "--workers", "2", "--runs-dir", str(runs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = list(ResultsStore(runs / "dup").records())
    study = optuna.load_study(study_name="dup", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(runs / "dup" / "optuna.journal"))))
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 4  # the study-wide budget, not 4 per worker
    # each configuration the study sampled was trained exactly once; a repeat got the stored value or was pruned
    complete = [r for r in records if r.status == "complete"]
    sampled = {t.params["model.decoder.expr_conditioning"] for t in finished}
    assert len({r.config_hash for r in complete}) == len(complete) == len(sampled) >= 1
    assert {r.overrides["model.decoder.expr_conditioning"] for r in complete} == sampled


def test_workers_get_distinct_sampler_streams():
    from reflect.ablation.sweep_optuna import make_sampler

    spec, _ = load_sweep(ROOT / "sweeps" / "expr_mlp_lr.yaml")
    assert make_sampler(spec, 0)._rng.rng.random() != make_sampler(spec, 1)._rng.rng.random()


def test_a_sigterm_to_the_sweep_reaches_its_workers(tmp_path):
    """The sweep's parent forwards a SIGTERM it alone receives: both workers stop, none trains on, no traceback."""
    import json
    import os
    import signal
    import time

    path = tmp_path / "term.yaml"
    path.write_text(SWEEP.replace("name: tiny_sweep", "name: term").replace("n_trials: 2", "n_trials: 4"))
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "reflect.sweep", str(path), *TINY, "trainer.max_steps=400",
           "trainer.checkpoint_every=20", "trainer.eval_every=200", "--workers", "2", "--runs-dir", str(runs)]
    out = tmp_path / "out.txt"
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=out.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    trials, deadline, running = runs / "term" / "trials", time.time() + 240, []
    while len(running) < 2:
        if proc.poll() is not None or time.time() > deadline:
            pytest.fail(f"two trials were not running in time ({proc.poll()}): {out.read_text()[-2000:]}")
        records = [json.loads(f.read_text() or "{}") for f in trials.glob("*.json")] if trials.is_dir() else []
        running = [r for r in records if r.get("status") == "running" and (r.get("progress") or {}).get("step", 0) >= 40]
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    workers = {r["pid"] for r in running}
    deadline = time.time() + 60
    while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in workers):
        time.sleep(0.2)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers), "a worker trains on"
    assert "Traceback" not in out.read_text()
    stopped = [json.loads(f.read_text()) for f in trials.glob("*.json")]
    assert sorted(r["status"] for r in stopped if r["pid"] in workers) == ["interrupted", "interrupted"]


def test_dry_run_checks_the_data_and_the_machine(tmp_path):
    """A sweep's dry run reads the capture it would train on, and refuses what this machine cannot run."""
    missing = tmp_path / "no_such_capture"
    proc = subprocess.run([sys.executable, "-m", "reflect.sweep", str(ROOT / "sweeps" / "expr_mlp_lr.yaml"),
                           "--dry-run", f"data.root={missing}"], capture_output=True, text=True, cwd=tmp_path)
    said = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2 and str(missing) in said and "Traceback" not in said, said[-2000:]
    proc = subprocess.run([sys.executable, "-m", "reflect.sweep", str(ROOT / "sweeps" / "expr_mlp_lr.yaml"),
                           "--dry-run", "render.backend=gsplat"], capture_output=True, text=True, cwd=tmp_path)
    said = " ".join((proc.stdout + proc.stderr).split())
    if not __import__("torch").cuda.is_available():
        assert proc.returncode == 2 and "render.backend 'gsplat' needs CUDA" in said, said[-2000:]
        assert "nothing was trained" in said and "are valid" not in said
    proc = subprocess.run([sys.executable, "-m", "reflect.sweep", str(ROOT / "sweeps" / "expr_mlp_lr.yaml"),
                           "--dry-run"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and "data: embedded synthetic head" in proc.stdout, proc.stderr[-2000:]
