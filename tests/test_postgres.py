"""Several workers on one study in a real PostgreSQL (Debian's postgresql: initdb + pg_ctl in a temp dir).

Skipped, with the reason, only where the server binaries are missing; in CI (`.ci/run` installs them) a
missing server is an error.
"""
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

from reflect.ablation.study import KEY_ATTR, database_url

from conftest import TINY

BINDIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
BINDIR = Path(BINDIRS[-1]) if BINDIRS else None
if BINDIR is None and os.environ.get("CI"):
    raise RuntimeError("CI must install Debian's postgresql (see .ci/run)")
pytestmark = pytest.mark.skipif(BINDIR is None, reason="needs PostgreSQL server binaries (apt-get install postgresql)")

ABLATION = """
name: pg_abl
phase: 2
question: Do two workers on one PostgreSQL study run every trial once?
citations: ["Optuna RDBStorage", "PostgreSQL 15"]
base: quick
arms:
  concat: {model.decoder.expr_conditioning: concat}
  film: {model.decoder.expr_conditioning: film}
baseline: concat
seeds: 3
metric: {name: val/psnr, mode: max, window: 2}
"""


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway server on a Unix socket in a temp dir (no TCP port to race for); as root it runs as the
    `postgres` user, since initdb refuses root."""
    data = Path(tempfile.mkdtemp(prefix="reflect-pg-", dir="/tmp"))
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*cmd):
        proc = subprocess.run([*as_user, *cmd], capture_output=True, text=True)
        if proc.returncode != 0:
            log = (data / "log").read_text()[-2000:] if (data / "log").is_file() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}\n{log}")

    try:
        run(str(BINDIR / "initdb"), "-D", str(data / "db"), "-U", "reflect", "--auth=trust")
        run(str(BINDIR / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log"), "-w", "start",
            "-o", f"-c listen_addresses='' -k {data}")
        run(str(BINDIR / "createdb"), "-h", str(data), "-U", "reflect", "reflect")
        yield f"postgresql://reflect@/reflect?host={data}"
    finally:
        subprocess.run([*as_user, str(BINDIR / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def test_bare_postgres_urls_use_psycopg3(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # as on a machine with only psycopg 3
    assert database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_two_workers_on_postgres_run_every_trial_once(tmp_path, postgres_url):
    path = tmp_path / "pg_abl.yaml"
    path.write_text(ABLATION)
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "reflect.ablate", str(path), "--storage", postgres_url, "--workers", "2", *TINY,
           "--runs-dir", str(runs), "--reports-dir", str(tmp_path / "reports")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="pg_abl", storage=database_url(postgres_url))
    done = [t.user_attrs[KEY_ATTR] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 6 and len(set(done)) == 6  # every (arm, seed) exactly once
    assert study.metric_names == ["val/psnr"] and study.user_attrs["question"].startswith("Do two workers")
    records = [json.loads(p.read_text()) for p in (runs / "pg_abl" / "trials").glob("*.json")]
    assert sorted((r["arm"], r["seed"]) for r in records) == sorted((a, s) for a in ("concat", "film") for s in range(3))
    summary = json.loads((tmp_path / "reports" / "pg_abl" / "summary.json").read_text())
    assert summary["arms"]["film"]["n"] == 3 and summary["arms"]["concat"]["n"] == 3

    # another machine starts the same ablation with another plan (other overrides: other trial keys) while a
    # trial of this plan is live: it is refused with a clear message, not allowed to fail our trials
    record_path = next((runs / "pg_abl" / "trials").glob("film-s0-*.json"))
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "status": "running", "pid": os.getpid(),
                                       "host": socket.gethostname()}))
    live = study.ask()  # a RUNNING trial of this plan in the database
    live.set_user_attr(KEY_ATTR, record_path.stem)
    other = subprocess.run([*cmd, "trainer.max_steps=8"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert other.returncode == 2 and "running another plan" in other.stderr
    assert study.trials[live.number].state == optuna.trial.TrialState.RUNNING  # untouched


KILL_ABLATION = ABLATION.replace("name: pg_abl", "name: pg_kill").replace("seeds: 3", "seeds: 2")


def test_a_killed_workers_trial_is_requeued_by_the_database_and_resumed_from_its_checkpoint(tmp_path, postgres_url):
    """Worker A is killed (SIGKILL) in its last trial; worker B, started on the same study, finds nothing queued,
    waits until the database judges A's heartbeat stale (Optuna's RetryHeartbeatStaleTrialCallback re-queues a
    copy), then claims the copy and resumes it from A's last checkpoint in the shared runs folder."""
    import signal
    import time

    path = tmp_path / "pg_kill.yaml"
    path.write_text(KILL_ABLATION)
    runs = tmp_path / "runs"
    # beats every 5 s, stale after 15 s: B starts (~5 s, more on a loaded machine) while A's trial still looks
    # alive, so B must wait for it
    env = {**os.environ, "REFLECT_HEARTBEAT_S": "5"}
    steps = ["trainer.max_steps=400", "trainer.checkpoint_every=20", "trainer.eval_every=200"]
    cmd = [sys.executable, "-m", "reflect.ablate", str(path), "--storage", postgres_url, *TINY, *steps,
           "--workers", "1", "--runs-dir", str(runs), "--reports-dir", str(tmp_path / "reports")]
    worker_a = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=tmp_path)
    deadline = time.time() + 300
    checkpoint = None
    trials = runs / "pg_kill" / "trials"
    while checkpoint is None and time.time() < deadline and worker_a.poll() is None:
        finished = {p.stem for p in trials.glob("*.json") if json.loads(p.read_text() or "{}").get("status") == "complete"}
        if len(finished) == 3:  # A is on its last trial: kill it once that trial has a checkpoint
            checkpoint = next((c for c in (runs / "pg_kill" / "work").glob("*/checkpoints/last.ckpt")
                               if c.parents[1].name not in finished), None)
        time.sleep(0.1)
    assert checkpoint is not None, worker_a.stderr.read()[-3000:] if worker_a.poll() is not None else "no checkpoint"
    worker_a.send_signal(signal.SIGKILL)
    worker_a.wait()
    victim = checkpoint.parents[1].name  # the trial A was training

    worker_b = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert worker_b.returncode == 0, worker_b.stderr[-3000:]
    assert "waiting for 1 trial(s) running on other workers (1 on this machine, 0 elsewhere: " in worker_b.stderr

    study = optuna.load_study(study_name="pg_kill", storage=database_url(postgres_url))
    of_victim = [t for t in study.trials if t.user_attrs.get(KEY_ATTR) == victim]
    failed = [t for t in of_victim if t.state == optuna.trial.TrialState.FAIL]
    retried = [t for t in of_victim if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(failed) == 1 and len(retried) == 1  # failed by the database, re-queued once, completed once
    assert retried[0].system_attrs["failed_trial"] == failed[0].number  # the copy is Optuna's retry of it
    done = [t.user_attrs[KEY_ATTR] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4 and len(set(done)) == 4  # every (arm, seed) exactly once

    record = json.loads((runs / "pg_kill" / "trials" / f"{victim}.json").read_text())
    assert record["status"] == "complete" and record["steps"] == 400
    assert 20 <= record["provenance"]["resumed_from_step"] < 400  # resumed from A's checkpoint, not retrained
    summary = json.loads((tmp_path / "reports" / "pg_kill" / "summary.json").read_text())
    assert summary["arms"]["film"]["n"] == 2 and summary["arms"]["concat"]["n"] == 2


PG_SWEEP = """
name: pg_sweep
phase: 1
base: quick
space:
  model.decoder.expr_conditioning: {type: categorical, choices: [concat, film]}
sampler: {name: random, seed: 3}
pruner: {name: none}
n_trials: 4
metric: {name: val/psnr, mode: max, window: 2}
"""


def test_a_sweep_with_two_workers_on_postgres_trains_no_configuration_twice(tmp_path, postgres_url):
    """Two configurations, a budget of 4 trials, two workers on one PostgreSQL study (locks: advisory)."""
    from reflect.ablation.store import ResultsStore

    path = tmp_path / "pg_sweep.yaml"
    path.write_text(PG_SWEEP)
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "reflect.sweep", str(path), *TINY, "--workers", "2", "--storage", postgres_url,
           "--runs-dir", str(runs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="pg_sweep", storage=database_url(postgres_url))
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 4 and len(study.trials) == 4  # the study-wide budget, exactly
    # each configuration the study sampled was trained exactly once; a repeat got the stored value or was pruned
    complete = [r for r in ResultsStore(runs / "pg_sweep").records() if r.status == "complete"]
    sampled = {t.params["model.decoder.expr_conditioning"] for t in finished}
    assert len({r.config_hash for r in complete}) == len(complete) == len(sampled) >= 1
    assert {r.overrides["model.decoder.expr_conditioning"] for r in complete} == sampled


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_the_heartbeat_notices_when_the_database_hands_the_trial_to_another_worker(tmp_path, postgres_url,
                                                                                    monkeypatch):
    import time

    from reflect.ablation.study import mark_failed, open_storage, open_study, trial_heartbeat

    monkeypatch.setenv("REFLECT_HEARTBEAT_S", "1")
    study = open_study("pg_lost", open_storage(postgres_url, tmp_path / "unused.journal"), "maximize")
    trial = study.ask()
    with trial_heartbeat(study, trial._trial_id) as lost:
        time.sleep(1.5)
        assert not lost.is_set()  # beating, RUNNING: ours
        mark_failed(study, trial.number, "stale: re-queued for another worker")
        deadline = time.time() + 5
        while not lost.is_set() and time.time() < deadline:
            time.sleep(0.1)
        assert lost.is_set()
