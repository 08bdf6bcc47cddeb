"""Running ablations end to end: store, resume, kill -9, two workers, failures, reports."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import optuna
import pytest

from reflect.ablation.runner import RunOptions, plan_trials, run_ablation, store_for
from reflect.ablation.study import KEY_ATTR, open_storage, open_study
from reflect.reports.ablation import write_ablation_report

from conftest import TINY

ABLATION = """
name: {name}
phase: 2
question: Does FiLM beat concat on the tiny head?
citations: ["FlashAvatar (CVPR 2024)", "Gaussian Head Avatar (CVPR 2024)"]
base: quick
arms:
  concat: {{model.decoder.expr_conditioning: concat}}
  {second}
baseline: concat
seeds: 2
metric: {{name: val/psnr, mode: max, window: 2}}
expected: {{gain_db: 0.5, source: test}}
decision: {{min_effect_db: 0.1, confidence: 0.9}}
"""
FILM = "film: {model.decoder.expr_conditioning: film}"
NAN_ARM = "broken: {model.decoder.expr_conditioning: film, optim.lr_decoder: 1.0e+30}"


def write_ablation(tmp_path, name="tiny_abl", second=FILM):
    path = tmp_path / f"{name}.yaml"
    path.write_text(ABLATION.format(name=name, second=second))
    return path


def opts_for(tmp_path, path, **kw):
    return RunOptions(path=str(path), overrides=tuple(TINY), runs_dir=str(tmp_path / "runs"), **kw)


def test_end_to_end_then_rerun_trains_nothing(tmp_path, monkeypatch):
    opts = opts_for(tmp_path, write_ablation(tmp_path))
    ablation = run_ablation(opts)
    store = store_for(ablation, opts.runs_dir)
    records = {r.key: r for r in store.records()}
    assert len(records) == 4 and all(r.status == "complete" for r in records.values())
    rec = next(iter(records.values()))
    assert rec.windowed_metric == pytest.approx(sum(h["val/psnr"] for h in rec.eval_history[-2:]) / 2)
    assert rec.provenance["packages"]["torch"] and rec.protocol["resolution"] == [32, 32]
    assert rec.protocol["ground_truth"] == "RGBA composited over the background"  # the synthetic head's PNGs
    assert len(rec.per_frame["val"]["psnr"]) == len(rec.protocol["eval_frame_ids"]["val"]) > 0
    assert Path(rec.checkpoint).is_file()

    summary = write_ablation_report(ablation, store, tmp_path / "reports")
    film = summary["arms"]["film"]
    assert film["n"] == 2 and film["n_paired"] == 2
    vals = {r.seed: r.windowed_metric for r in records.values() if r.arm == "film"}
    base = {r.seed: r.windowed_metric for r in records.values() if r.arm == "concat"}
    assert film["delta_db"] == pytest.approx(sum(vals[s] - base[s] for s in (0, 1)) / 2)
    # the verdict is the one its interval shows (the same level), and both come from these two seeds
    lo, hi = film["delta_ci"]
    shown = ("better" if lo > 0.1 else "worse" if hi < -0.1 else "equivalent" if -0.1 < lo and hi < 0.1
             else "inconclusive")
    assert film["verdict"] == shown and lo <= film["delta_db"] <= hi
    assert film["p_values"]["better"]["level"] == pytest.approx(0.05)  # confidence 0.9, one arm: α = 0.05
    # context metrics: the synthetic head's wrinkle region, windowed like the decision metric
    wr = {a: {r.seed: sum(h["val/psnr_wrinkles"] for h in r.eval_history[-2:]) / 2
              for r in records.values() if r.arm == a} for a in ("film", "concat")}
    other = film["other_metrics"]["val/psnr_wrinkles"]
    assert other["n"] == 2 and other["mean"] == pytest.approx(sum(wr["film"].values()) / 2)
    assert other["delta"] == pytest.approx(sum(wr["film"][s] - wr["concat"][s] for s in (0, 1)) / 2)
    assert "val/psnr" not in film["other_metrics"] and "test/psnr" in film["other_metrics"]
    on_disk = json.loads((tmp_path / "reports" / "tiny_abl" / "summary.json").read_text())
    assert on_disk["arms"]["concat"]["verdict"] == "baseline"
    report = (tmp_path / "reports" / "tiny_abl" / "report.md").read_text()
    assert "tiny_abl" in report and "| `val/psnr_wrinkles` |" in report

    # Rerunning the same command trains nothing.
    import reflect.training

    def no_training(*a, **k):
        raise AssertionError("a complete trial was trained again")

    monkeypatch.setattr(reflect.training, "train", no_training)
    before = {k: r.updated_at for k, r in records.items()}
    run_ablation(opts)
    assert {r.key: r.updated_at for r in store.records()} == before

    # A trial reused from another code version is named in the report, never silently mixed in.
    assert "code versions" not in report and len(summary["code_versions"]) == 1
    old = next(iter(records.values()))
    current = old.code_version
    assert old.code_versions == [current]  # the versions that trained its weights: just this one
    old.provenance = {**old.provenance, "git_commit": "0ld0c0de", "git_dirty": False, "trained_by": ["0ld0c0de"]}
    store.write(old)
    summary = write_ablation_report(ablation, store, tmp_path / "reports")
    assert "0ld0c0de" in summary["code_versions"] and len(summary["code_versions"]) == 2
    assert "ran on 2 code versions" in (tmp_path / "reports" / "tiny_abl" / "report.md").read_text()

    # Deleting a record after a code change resumes its finished checkpoint: the record must still say which
    # code trained the weights (both versions), not relabel the old numbers with the new commit.
    monkeypatch.undo()  # training allowed again
    import reflect.ablation.execute as execute

    monkeypatch.setattr(execute, "git_state", lambda: ("n3wc0de", False))
    victim = next(r for r in store.records() if r.key != old.key)
    store.record_path(victim.key).unlink()
    run_ablation(opts)
    resumed = store.get(victim.key)
    assert resumed.status == "complete" and resumed.code_version == "n3wc0de"
    assert resumed.code_versions == [current, "n3wc0de"]
    assert resumed.eval_history == victim.eval_history  # nothing retrained: the old curve, honestly labelled
    # the training's time (kept in the finished checkpoint), not the rerun's: the rerun trained no step
    assert resumed.wall_time_s == pytest.approx(victim.wall_time_s)
    summary = write_ablation_report(ablation, store, tmp_path / "reports")
    assert {current, "n3wc0de"} <= set(summary["code_versions"])

    # --rerun trains the whole plan again from scratch; the old records and checkpoints are set aside, not lost.
    run_ablation(opts, rerun=True)
    fresh = {r.key: r for r in store.records()}
    assert len(fresh) == 4 and all(r.status == "complete" and r.code_versions == ["n3wc0de"] for r in fresh.values())
    assert len(list((store.trials_dir / "retried").glob("*.json"))) == 4
    assert len([p for p in (store.workdir(victim.key).parent / "retried").iterdir() if p.is_dir()]) == 4


def test_diverging_arm_fails_while_others_complete(tmp_path):
    opts = opts_for(tmp_path, write_ablation(tmp_path, "nan_abl", NAN_ARM))
    ablation = run_ablation(opts)
    store = store_for(ablation, opts.runs_dir)
    status = {(r.arm, r.seed): r for r in store.records()}
    assert {k: r.status for k, r in status.items()} == {
        ("concat", 0): "complete", ("concat", 1): "complete", ("broken", 0): "failed", ("broken", 1): "failed"}
    assert "DivergenceError" in status[("broken", 0)].failure_reason
    summary = write_ablation_report(ablation, store, tmp_path / "reports")
    assert summary["arms"]["broken"]["n"] == 0 and summary["arms"]["broken"]["verdict"] == "inconclusive"


def test_kill_after_first_trial_then_rerun_keeps_it(tmp_path):
    path = write_ablation(tmp_path, "kill_abl")
    runs = tmp_path / "runs"
    # one process (no spawned workers): SIGKILL stops all the training there is
    cmd = [sys.executable, "-m", "reflect.ablate", str(path), *TINY, "--runs-dir", str(runs), "--workers", "1",
           "--reports-dir", str(tmp_path / "reports")]
    err = tmp_path / "first_run.stderr"
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err.open("w"))
    trials = runs / "kill_abl" / "trials"
    deadline = time.time() + 240
    first = None
    while time.time() < deadline and first is None:
        if proc.poll() is not None:
            pytest.fail(f"the ablation exited ({proc.returncode}) before a trial completed: {err.read_text()[-2000:]}")
        for f in trials.glob("*.json") if trials.is_dir() else []:
            if json.loads(f.read_text()).get("status") == "complete":
                first = f
        time.sleep(0.2)
    assert first is not None, "no trial completed in time"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = json.loads(first.read_text())

    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    after = {f.name: json.loads(f.read_text()) for f in trials.glob("*.json")}
    assert len(after) == 4 and all(r["status"] == "complete" for r in after.values())
    assert after[first.name]["started_at"] == kept["started_at"]  # not redone
    assert after[first.name]["updated_at"] == kept["updated_at"]


def test_two_workers_never_run_the_same_trial(tmp_path):
    opts = opts_for(tmp_path, write_ablation(tmp_path, "two_workers"))
    ablation = run_ablation(opts, workers=2)
    store = store_for(ablation, opts.runs_dir)
    records = list(store.records())
    assert len(records) == 4 and all(r.status == "complete" for r in records)
    # each record says how many threads its trial trained with (each worker got its share of the cores), and the
    # device kind the status page forecasts by carries it: a 1-thread trial's time is not a 2-thread one's
    from reflect.ablation.machine import usable_cores

    threads = max(1, usable_cores() // 2)
    assert {r.provenance["threads"] for r in records} == {threads}
    assert all(r.provenance["device"].endswith(f"({threads} thread{'' if threads == 1 else 's'})") for r in records)
    study = open_study(ablation.name, open_storage(None, store.root / "optuna.journal"), "maximize")
    ran = Counter(t.user_attrs[KEY_ATTR] for t in study.get_trials()
                  if t.state == optuna.trial.TrialState.COMPLETE)
    assert set(ran) == {p.key for p in plan_trials(ablation)}
    assert all(n == 1 for n in ran.values())


def test_trials_queued_by_an_earlier_plan_are_dropped_not_crashed_on(tmp_path):
    """Queue seeds 0-2 (as an earlier `--seeds 3` run would), then run with seeds 0,1: seed 2 is failed off."""
    from reflect.ablation.queue import sync_queue

    path = write_ablation(tmp_path, "replanned")
    earlier = RunOptions(path=str(path), overrides=tuple(TINY), runs_dir=str(tmp_path / "runs"), seeds=(2, 0, 1))
    abl = earlier.load()
    store = store_for(abl, earlier.runs_dir)
    study = open_study(abl.name, open_storage(None, store.root / "optuna.journal"), "maximize")
    assert sync_queue(abl, plan_trials(abl), store, study) == 6

    run_ablation(opts_for(tmp_path, path))  # the file's seeds: 0, 1
    records = list(store.records())
    assert sorted((r.arm, r.seed) for r in records) == [("concat", 0), ("concat", 1), ("film", 0), ("film", 1)]
    assert all(r.status == "complete" for r in records)
    trials = study.get_trials()
    dropped = [t for t in trials if t.user_attrs[KEY_ATTR].split("-")[1] == "s2"]
    assert len(dropped) == 2 and all(t.state == optuna.trial.TrialState.FAIL for t in dropped)
    assert all("not in the current plan" in t.user_attrs["reflect_failed_reason"] for t in dropped)


class _NoRun:
    """A W&B logger whose run cannot start."""

    @property
    def experiment(self):
        raise RuntimeError("W&B is down")


@pytest.mark.parametrize("where", ["start", "final"])
def test_a_wandb_mirror_failure_does_not_fail_the_trial(tmp_path, monkeypatch, where):
    import reflect.ablation.execute as execute
    import reflect.tracking

    def broken(*a, **k):
        raise RuntimeError("W&B is down")

    if where == "start":
        monkeypatch.setattr(reflect.tracking, "make_wandb_logger", lambda *a, **k: _NoRun())
    else:
        monkeypatch.setattr(execute, "_mirror_final", broken)
    opts = RunOptions(path=str(write_ablation(tmp_path, "mirror")), overrides=(*TINY, "tracking.wandb=true"),
                      runs_dir=str(tmp_path / "runs"), seeds=(0,))
    abl = opts.load()
    store = store_for(abl, opts.runs_dir)
    expect = pytest.warns(RuntimeWarning, match="W&B run could not start") if where == "start" else nullcontext()
    with expect:
        record = execute.run_trial(abl, plan_trials(abl)[0], store)
    assert record.status == "complete" and record.windowed_metric is not None
    assert record.wandb_error == "RuntimeError: W&B is down"
    assert store.get(record.key).status == "complete"


def test_sigterm_records_the_trial_as_interrupted_and_the_next_run_resumes_it(tmp_path):
    import signal

    from pytorch_lightning.callbacks import Callback

    from reflect.ablation.execute import run_trial

    class TermAt(Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    opts = opts_for(tmp_path, write_ablation(tmp_path, name="term_abl"))
    ablation = opts.load()
    store = store_for(ablation, opts.runs_dir)
    planned = plan_trials(ablation)[0]
    with pytest.raises(KeyboardInterrupt):
        run_trial(ablation, planned, store, callbacks=[TermAt()])
    record = store.get(planned.key)
    assert record.status == "interrupted" and "SIGTERM after step 2" in record.failure_reason
    done = run_trial(ablation, planned, store)
    assert done.status == "complete" and done.steps == 6
    assert [h["step"] for h in done.eval_history] == [3, 6]
    assert done.provenance["trained_by"] == [record.code_version]


def test_a_worker_whose_claim_was_lost_stops_and_writes_nothing(tmp_path):
    """Taken for dead (its heartbeat went stale) while it was only unreachable: another worker owns the trial now,
    so this one stops at its next step and leaves that worker's record as it is."""
    import threading

    from pytorch_lightning.callbacks import Callback

    from reflect.ablation.execute import run_trial, running_record

    opts = opts_for(tmp_path, write_ablation(tmp_path, name="lost_abl"))
    ablation = opts.load()
    store = store_for(ablation, opts.runs_dir)
    planned = plan_trials(ablation)[0]
    lost = threading.Event()
    theirs = running_record(ablation, planned, 7)
    theirs.host, theirs.pid = "the-new-owner", 4242

    class HandedOverAt2(Callback):  # the database re-queues the trial and another worker claims it at step 2
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 2 and not lost.is_set():
                store.write(theirs)
                lost.set()

    assert run_trial(ablation, planned, store, 3, callbacks=[HandedOverAt2()], claim_lost=lost) is None
    record = store.get(planned.key)
    assert record.host == "the-new-owner" and record.optuna_trial == 7 and record.status == "running"
    assert not list((store.workdir(planned.key) / "checkpoints").glob("epoch*.ckpt"))
    assert not (store.workdir(planned.key) / "checkpoints" / "last.ckpt").exists()  # stopped before step 3's


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("how", ["ctrl-c to the group", "sigterm to the parent", "sigkill to the parent"])
def test_a_signal_with_two_workers_stops_both_at_a_checkpoint_and_the_rerun_resumes(tmp_path, how):
    """The default (--workers auto) on 2 cores is two spawned workers. Ctrl-C reaches the terminal's whole group;
    a SIGTERM to the parent alone (kill, a scheduler) is forwarded; if the parent is SIGKILLed, the kernel
    SIGTERMs the workers (PR_SET_PDEATHSIG). Each way, both trials stop at a step boundary with a checkpoint,
    no worker trains on, and nothing prints a traceback."""
    path = write_ablation(tmp_path, "signal_workers")
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "reflect.ablate", str(path), *TINY, "trainer.max_steps=400",
           "trainer.checkpoint_every=20", "trainer.eval_every=200", "--workers", "2", "--runs-dir", str(runs),
           "--reports-dir", str(tmp_path / "reports")]
    out = tmp_path / "first_run.out"
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=out.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    trials = runs / "signal_workers" / "trials"
    deadline, running = time.time() + 240, []
    while len(running) < 2:  # both workers are training, past their first checkpoint
        if proc.poll() is not None:
            pytest.fail(f"the ablation exited ({proc.returncode}) before it was signalled: {out.read_text()[-2000:]}")
        if time.time() > deadline:
            pytest.fail(f"two trials were not running in time: {out.read_text()[-2000:]}")
        records = [json.loads(f.read_text() or "{}") for f in trials.glob("*.json")] if trials.is_dir() else []
        running = [r for r in records if r.get("status") == "running" and (r.get("progress") or {}).get("step", 0) >= 40]
        time.sleep(0.2)
    workers = {r["pid"] for r in running}
    assert len(workers) == 2 and proc.pid not in workers
    if how == "ctrl-c to the group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGTERM if how == "sigterm to the parent" else signal.SIGKILL)
    rc = proc.wait(timeout=120)
    assert rc == (-signal.SIGKILL if how == "sigkill to the parent" else 130)
    deadline = time.time() + 120
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers), "a worker trains on"
    text = out.read_text()
    assert "Traceback" not in text, text[-3000:]
    if how != "sigkill to the parent":
        assert "interrupted; finished work and checkpoints are kept, rerun to" in text
    stopped = [r for r in (json.loads(f.read_text()) for f in trials.glob("*.json")) if r["pid"] in workers]
    assert [r["status"] for r in stopped] == ["interrupted", "interrupted"]
    if how != "ctrl-c to the group":
        return
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:]
    after = {r["arm"] + str(r["seed"]): r for r in (json.loads(f.read_text()) for f in trials.glob("*.json"))}
    assert len(after) == 4 and all(r["status"] == "complete" for r in after.values())
    resumed = [r for r in after.values() if r["provenance"].get("resumed_from_step", 0) > 0]
    assert len(resumed) == 2 and all(r["provenance"]["resumed_from_step"] >= 20 for r in resumed)
