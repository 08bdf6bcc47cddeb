"""Sweeps: a dead or interrupted trial is resumed and the budget stays exact; every value of the space and the
metric are checked when the file loads; a trial whose configuration is invalid is a failed trial; a sweep takes
no decision block.

Dead workers are simulated by writing the journal and the store directly (a record of another host, not updated
for longer than ``STALE_AFTER_S``; a trial asked by this very process, as after a pid reused by a restart), and a
Ctrl-C by a SIGINT this process sends itself at a fixed training step: nothing depends on timing.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types
from dataclasses import asdict
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pytorch_lightning.callbacks import Callback

from reflect.ablation.store import STALE_AFTER_S, ResultsStore, TrialRecord, atomic_write_json
from reflect.ablation.sweep_spec import load_sweep
from reflect.ablation.sweep_worker import worker
from reflect.config_loading import ConfigError

from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]

SWEEP = """
name: {name}
phase: 1
base: quick
space:
  optim.lr_deform: {{type: float, low: 1.0e-5, high: 1.0e-3, log: true}}
sampler: {{name: random, seed: 3}}
pruner: {{name: none}}
n_trials: {n_trials}
metric: {{name: val/psnr, mode: max, window: 2}}
"""


def write_sweep(tmp_path: Path, name: str, n_trials: int = 2, text: str = SWEEP) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.format(name=name, n_trials=n_trials))
    return path


def load_journal(runs: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(runs / name / "optuna.journal"))))


def states(study: optuna.Study) -> list[tuple[int, str]]:
    return [(t.number, t.state.name) for t in study.get_trials(deepcopy=False)]


class SigintAtStep(Callback):
    """A Ctrl-C at a fixed step: the trainer stops at the step boundary with a checkpoint (reflect.lightning)."""

    def __init__(self, step: int):
        self.step, self.sent = step, False

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupted_trial_is_resumed_from_its_checkpoint_and_the_budget_stays_exact(tmp_path, monkeypatch):
    import reflect.training

    path = write_sweep(tmp_path, "resume")
    runs = tmp_path / "runs"
    real_train = reflect.training.train

    def interrupted_train(cfg, workdir, **kwargs):
        kwargs["callbacks"] = [*kwargs.get("callbacks", ()), SigintAtStep(4)]
        return real_train(cfg, workdir, **kwargs)

    monkeypatch.setattr(reflect.training, "train", interrupted_train)
    with pytest.raises(KeyboardInterrupt):
        worker(str(path), tuple(TINY), None, str(runs), 2)
    monkeypatch.setattr(reflect.training, "train", real_train)
    store = ResultsStore(runs / "resume")
    [stopped] = list(store.records())
    assert stopped.arm == "t000" and stopped.status == "interrupted"
    step = int(re.search(r"after step (\d+)", stopped.failure_reason).group(1))
    assert 4 <= step < 6 and (store.workdir(stopped.key) / "checkpoints" / "last.ckpt").is_file()
    assert states(load_journal(runs, "resume")) == [(0, "RUNNING")]  # never told: Ctrl-C left it running

    worker(str(path), tuple(TINY), None, str(runs), 2)
    records = {r.arm: r for r in store.records()}
    assert sorted(records) == ["t000", "t002"] and all(r.status == "complete" for r in records.values())
    resumed = records["t000"]
    assert resumed.key == stopped.key and resumed.provenance["resumed_from_step"] == step and resumed.steps == 6
    study = load_journal(runs, "resume")
    # the dead trial is failed and its copy (same params, same name) resumed it; the copy alone uses a slot
    assert states(study) == [(0, "FAIL"), (1, "COMPLETE"), (2, "COMPLETE")]
    dead, copy, fresh = study.trials
    assert copy.params == dead.params and copy.user_attrs["reflect_arm"] == "t000"
    assert copy.system_attrs["retry_history"] == [0] and fresh.user_attrs["reflect_arm"] == "t002"
    assert "interrupted" in dead.user_attrs["reflect_failed_reason"]

    # The budget is spent: a third run trains nothing and adds no trial.
    monkeypatch.setattr(reflect.training, "train", lambda *a, **k: pytest.fail("the third run trained a trial"))
    worker(str(path), tuple(TINY), None, str(runs), 2)
    assert len(load_journal(runs, "resume").trials) == 3


def _claimed_trial(study, spec, base, layers, arm):
    """Ask a trial as a sweep worker does and return it with the config hash its record would have."""
    import copy

    from reflect.config import config_hash, load_train_config
    from reflect.ablation.sweep_optuna import suggest

    trial = study.ask()
    params = {k: suggest(trial, k, p) for k, p in spec.space.items()}
    trial.set_user_attr("reflect_arm", arm)
    layer = ("sweep trial", list(params.items()))
    cfg = copy.deepcopy(load_train_config(base, tuple(TINY), extra_layers=layers + [layer]))
    cfg.seed = spec.seed
    return trial, params, config_hash(cfg)


def _write_record(store, spec, arm, trial, params, chash, host, updated_at):
    """A RUNNING record as a worker on ``host`` last wrote it at ``updated_at`` (written directly: store.write
    would stamp the time now)."""
    record = TrialRecord(study=spec.name, arm=arm, seed=spec.seed, config_hash=chash, status="running",
                         metric_name=spec.metric.name, metric_window=spec.metric.window, optuna_trial=trial.number,
                         overrides=params, host=host, pid=1, started_at=updated_at, updated_at=updated_at)
    atomic_write_json(store.record_path(record.key), asdict(record))
    return record


def journal_sweep(tmp_path, name, n_trials):
    """A sweep file, its loaded spec and layers, its store and its (empty) journal study, as a worker would open them."""
    from reflect.ablation.study import open_storage

    path = write_sweep(tmp_path, name, n_trials=n_trials)
    runs = tmp_path / "runs"
    spec, (base, layers, _) = load_sweep(path, tuple(TINY))
    store = ResultsStore(runs / name)
    study = optuna.create_study(study_name=name, storage=open_storage(None, store.root / "optuna.journal"),
                                direction="maximize")
    return path, runs, spec, base, layers, store, study


def test_a_dead_workers_trial_is_resumed_and_a_live_one_is_left_alone(tmp_path):
    path, runs, spec, base, layers, store, study = journal_sweep(tmp_path, "reap", 3)
    now = time.time()
    # trial 0: a worker on another machine that stopped updating its record long ago (killed, power cut)
    dead, dead_params, dead_hash = _claimed_trial(study, spec, base, layers, "t000")
    _write_record(store, spec, "t000", dead, dead_params, dead_hash, "another-host", now - 3 * STALE_AFTER_S)
    # trial 1: a worker on another machine that updated its record just now: alive, never taken from it
    live, live_params, live_hash = _claimed_trial(study, spec, base, layers, "t001")
    _write_record(store, spec, "t001", live, live_params, live_hash, "another-host", now)
    # trial 2: asked on this host by a process that died before writing any record (this very pid: a pid that
    # names the asking process is a reused one, as after a container restart)
    orphan = study.ask()
    orphan.set_user_attr("reflect_worker", {"host": socket.gethostname(), "pid": os.getpid(), "asked_at": now})

    worker(str(path), tuple(TINY), None, str(runs), 3)
    study = load_journal(runs, "reap")
    assert states(study) == [(0, "FAIL"), (1, "RUNNING"), (2, "FAIL"), (3, "COMPLETE"), (4, "COMPLETE")]
    copy0 = study.trials[3]
    assert copy0.params == dead_params and copy0.user_attrs["reflect_arm"] == "t000"
    assert copy0.system_attrs["retry_history"] == [0] and study.trials[4].system_attrs["retry_history"] == [2]
    records = {r.arm: r for r in store.records()}
    assert records["t000"].status == "complete" and records["t000"].key == f"t000-s0-{dead_hash}"
    assert records["t000"].optuna_trial == 3
    assert records["t001"].status == "running" and records["t001"].host == "another-host"  # untouched
    assert records["t004"].status == "complete"  # the orphan's copy: it had no name yet, so it took its own
    assert len(records) == 3


def test_a_trial_that_kills_its_worker_again_and_again_is_failed_not_retried_forever(tmp_path):
    from reflect.ablation.study import MAX_RETRIES

    path, runs, spec, base, layers, store, study = journal_sweep(tmp_path, "crashy", 1)
    trial, params, chash = _claimed_trial(study, spec, base, layers, "t000")
    trial.set_user_attr("reflect_crashes", MAX_RETRIES)  # its worker died that many times already
    _write_record(store, spec, "t000", trial, params, chash, "another-host", time.time() - 3 * STALE_AFTER_S)
    import reflect.training

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reflect.training, "train", lambda *a, **k: pytest.fail("a trial was trained"))
        worker(str(path), tuple(TINY), None, str(runs), 1)
    study = load_journal(runs, "crashy")
    assert states(study) == [(0, "FAIL")]  # no copy, and its failure uses the budget's one slot
    [record] = list(store.records())
    assert record.status == "failed" and f"died {MAX_RETRIES + 1} times" in record.failure_reason
    assert study.trials[0].user_attrs["reflect_failed_reason"] == record.failure_reason


BAD_VALUES = [
    ("{type: categorical, choices: [0.5, 2.0]}", "choice 2.0"),
    ("{type: float, low: 0.5, high: 1.5}", "high 1.5"),
    ("{type: float, low: -0.5, high: 0.9}", "low -0.5"),
]


@pytest.mark.parametrize("param, bad", BAD_VALUES)
def test_every_value_of_the_space_is_validated_when_the_file_loads(tmp_path, param, bad):
    path = write_sweep(tmp_path, "badvalue", text=SWEEP.replace(
        "optim.lr_deform: {{type: float, low: 1.0e-5, high: 1.0e-3, log: true}}",
        f"model.gaussians.init_opacity: {param.replace('{', '{{').replace('}', '}}')}"))
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    exc = info.value
    assert exc.source == str(path) and exc.key == "space.model.gaussians.init_opacity"
    assert exc.message.startswith(bad) and "expected a value in (0, 1)" in exc.message


def test_a_space_key_whose_values_are_all_good_still_loads(tmp_path):
    path = write_sweep(tmp_path, "goodvalue", text=SWEEP.replace(
        "optim.lr_deform: {{type: float, low: 1.0e-5, high: 1.0e-3, log: true}}",
        "model.gaussians.init_opacity: {{type: categorical, choices: [0.5, 0.95]}}"))
    spec, _ = load_sweep(path)
    assert spec.space["model.gaussians.init_opacity"].choices == [0.5, 0.95]


def test_a_trial_with_an_invalid_configuration_fails_and_the_others_go_on(tmp_path):
    """sr_scale 2 and 4 are valid (so the file loads) but 3, inside the range, is not: a failed trial."""
    path = write_sweep(tmp_path, "midrange", n_trials=3, text=SWEEP.replace(
        "optim.lr_deform: {{type: float, low: 1.0e-5, high: 1.0e-3, log: true}}",
        "model.decoder.sr_scale: {{type: int, low: 2, high: 4, step: 1}}").replace("name: random", "name: grid"))
    runs = tmp_path / "runs"
    worker(str(path), tuple(TINY), None, str(runs), 3)
    study = load_journal(runs, "midrange")
    by_value = {t.params["model.decoder.sr_scale"]: t for t in study.trials}
    assert sorted(by_value) == [2, 3, 4]
    assert by_value[3].state == TrialState.FAIL
    assert "sr_scale: expected one of (1, 2, 4), got 3" in by_value[3].user_attrs["reflect_failed_reason"]
    assert by_value[2].state == by_value[4].state == TrialState.COMPLETE
    records = {r.overrides["model.decoder.sr_scale"]: r for r in ResultsStore(runs / "midrange").records()}
    assert {v: r.status for v, r in records.items()} == {2: "complete", 3: "failed", 4: "complete"}
    assert records[3].failure_reason == by_value[3].user_attrs["reflect_failed_reason"]


METRIC_CASES = [
    ("metric: {{name: mirror/psnr, mode: max, window: 2}}", "", TINY,
     "metric.name", "the metric's split 'mirror' is not evaluated in each trial (eval.splits = ['val', 'test'])"),
    ("metric: {{name: val/psnr, mode: max, window: 500}}", "", TINY,
     "metric.window", "expected at most the 2 evaluations each trial makes (trainer.max_steps 6 / "
     "trainer.eval_every 3, rounded up), got 500"),
    # a range over max_steps (the quick profile's eval_every is 50): its low end evaluates once, fewer than the window
    ("metric: {{name: val/psnr, mode: max, window: 2}}", "  trainer.max_steps: {{type: int, low: 50, high: 600}}\n", (),
     "metric.window", "expected at most the 1 evaluations a trial with trainer.max_steps = 50 makes (trainer.max_steps "
     "50 / trainer.eval_every 50, rounded up), got 2"),
]


@pytest.mark.parametrize("metric, extra_space, overrides, key, message", METRIC_CASES)
def test_the_metric_must_be_evaluated_by_every_trial(tmp_path, metric, extra_space, overrides, key, message):
    text = SWEEP.replace("metric: {{name: val/psnr, mode: max, window: 2}}", metric).replace(
        "sampler:", extra_space + "sampler:")
    path = write_sweep(tmp_path, "metric", text=text)
    with pytest.raises(ConfigError) as info:
        load_sweep(path, tuple(overrides))
    assert (info.value.source, info.value.key, info.value.message) == (str(path), key, message)


def test_the_ablation_reports_its_metric_checks_as_before(tmp_path):
    """The checks are shared with load_ablation, whose messages name the arm."""
    from reflect.ablation.spec import load_ablation

    path = tmp_path / "abl.yaml"
    path.write_text("name: abl\nphase: 1\nquestion: q\ncitations: [a, b]\n"
                    "arms: {base: {}, other: {optim.lr_deform: 1.0e-4}}\nbaseline: base\n"
                    "metric: {name: val/psnr, window: 500}\n")
    with pytest.raises(ConfigError) as info:
        load_ablation(path, tuple(TINY))
    assert info.value.key == "metric.window" and info.value.message == (
        "expected at most the 2 evaluations arm 'base' makes (trainer.max_steps 6 / trainer.eval_every 3, rounded "
        "up), got 500")


def test_a_sweep_rejects_a_decision_block(tmp_path):
    path = write_sweep(tmp_path, "decide", text=SWEEP + "decision: {{min_effect_db: 0.2}}\n")
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    assert info.value.source == str(path) and info.value.key == "decision"
    assert "takes no decision block" in info.value.message and "ablation" in info.value.message


def test_a_space_key_given_as_a_command_line_override_is_refused(tmp_path):
    """The command line is the last layer of each trial's config: the override would fix the key in every trial."""
    path = write_sweep(tmp_path, "fixed")
    with pytest.raises(ConfigError) as info:
        load_sweep(path, (*TINY, " optim.lr_deform =1.0e-4"))
    assert (info.value.source, info.value.key) == ("command line", "optim.lr_deform")
    assert info.value.message == (f"is in the sweep's space ({path}); a command-line override would fix it in every "
                                  "trial: remove one of the two")
    proc = subprocess.run([sys.executable, "-m", "reflect.sweep", str(path), "--dry-run", "optim.lr_deform=1.0e-4"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "command line: optim.lr_deform: is in the sweep's space" in " ".join(proc.stderr.split())
    spec, _ = load_sweep(path, (*TINY, "optim.lr_decoder=1.0e-3"))  # a key outside the space is still an override
    assert list(spec.space) == ["optim.lr_deform"]


def test_every_repo_sweep_file_loads():
    files = sorted((ROOT / "sweeps").glob("*.yaml"))
    assert files
    for path in files:
        spec, _ = load_sweep(path)
        assert spec.name and spec.space


def test_a_stepped_range_is_validated_at_the_last_value_it_can_give():
    """Optuna samples low, low + step, ... up to high: validation and the grid use the last such value, never high
    itself when a step does not land on it, and never a value past high."""
    from reflect.ablation.sweep_optuna import make_sampler
    from reflect.ablation.sweep_spec import ParamSpec, range_steps, space_values

    p = ParamSpec(type="float", low=0.5, high=1.04, step=0.1)
    assert space_values(p) == [("low", 0.5), ("high", pytest.approx(1.0))]  # 1.04 is never sampled
    assert range_steps(100, 360, 100) == 3 and range_steps(0.1, 0.3, 0.1) == 3  # float rounding tolerated
    ints = ParamSpec(type="int", low=100, high=360, step=100)
    assert space_values(ints) == [("low", 100), ("high", 300)]
    spec = types.SimpleNamespace(sampler=types.SimpleNamespace(name="grid", seed=0), space={"trainer.max_steps": ints})
    sampler = make_sampler(spec)
    assert sorted(sampler._search_space["trainer.max_steps"]) == [100, 200, 300]  # round() gave 400 as well
