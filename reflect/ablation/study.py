"""Optuna as the scheduler of an ablation's fixed (arm, seed) grid.

Each cell is enqueued once (``study.enqueue_trial``); workers pop WAITING
trials, which Optuna hands to exactly one worker — never GridSampler, which
gives the same cell to several workers (optuna#2039). Local storage is
Optuna's JournalStorage file (safe for several processes, unlike SQLite); any
SQLAlchemy URL (PostgreSQL for several machines) works too, opened as an
``RDBStorage`` with Optuna's heartbeat: each running trial beats every
``heartbeat_interval`` seconds, and a trial whose beat is older than the grace
period (the database server's clock decides, never a worker's) is failed and
re-queued by ``RetryHeartbeatStaleTrialCallback`` for another worker to resume.
"""
from __future__ import annotations

import os
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import optuna
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from reflect.config_loading import ConfigError

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Our ask/tell loops beat for their trials themselves (``trial_heartbeat``), which is what this warns about.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

KEY_ATTR = "reflect_key"


def database_url(url: str) -> str:
    """``postgresql://`` names psycopg2 in SQLAlchemy; Reflect installs psycopg 3 (the ``postgres`` extra), so a
    bare PostgreSQL URL is pointed at it when psycopg2 is absent."""
    if url.startswith("postgres://"):  # a common spelling SQLAlchemy does not know
        url = "postgresql://" + url.split("://", 1)[1]
    if url.startswith("postgresql://"):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


# Optuna's advice (RDBStorage docs): beat every minute, fail a trial after a few missed beats. A trial of ours
# checkpoints every few minutes at most, so a dead worker costs a few minutes of compute, never its results.
HEARTBEAT_S = 60
GRACE_BEATS = 3


def heartbeat_interval() -> int:
    """Seconds between a running trial's heartbeats on a database storage (``REFLECT_HEARTBEAT_S``, default 60);
    a trial is failed and re-queued after ``GRACE_BEATS`` intervals without one."""
    raw = os.environ.get("REFLECT_HEARTBEAT_S", str(HEARTBEAT_S))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError("REFLECT_HEARTBEAT_S", f"expected a whole number of seconds >= 1, got {raw!r}")
    return value


# A trial whose worker dies this many times (one that kills its process: out of memory, a driver crash) stays
# failed instead of taking down every worker in turn.
MAX_RETRIES = 3


def _stale_trial_callback():
    # Optuna >= 4.? names it RetryHeartbeatStaleTrialCallback; RetryFailedTrialCallback is the older spelling.
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    return cls(max_retry=MAX_RETRIES)


def _rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDBStorage with heartbeats whose stale trials are re-queued with their params and user attributes
    (the trial key: whoever claims the copy resumes the same trial from its checkpoint)."""
    interval = heartbeat_interval()
    callback_arg = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback"
                    in optuna.storages.RDBStorage.__init__.__code__.co_varnames else "failed_trial_callback")
    with warnings.catch_warnings():  # heartbeat_interval is "experimental" since Optuna 2.9; it is what we need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=interval, grace_period=GRACE_BEATS * interval,
                                          **{callback_arg: _stale_trial_callback()})


def open_storage(url: Optional[str], default_journal: Path) -> BaseStorage:
    """None → the journal file under runs/; ``*.journal``/``*.log`` paths → a journal; else a database URL
    (an ``RDBStorage`` with heartbeats). A storage that cannot be opened is a ``ConfigError`` naming it."""
    if url is not None and "://" in url:
        try:
            return _rdb_storage(database_url(url))
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy/driver errors have no common base worth importing
            raise ConfigError("--storage", f"cannot open Optuna storage {url!r} ({type(exc).__name__}: {exc}); "
                              "expected a journal file path or a reachable SQLAlchemy URL such as "
                              "postgresql://user@host/db (its driver installed: pip install '.[postgres]')") from None
    path = default_journal if url is None else Path(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as exc:
        raise ConfigError("--storage", f"cannot open the Optuna journal {path}: {exc.strerror or exc}") from None


def open_study(name: str, storage: BaseStorage, direction: str) -> optuna.Study:
    """Create or load the study; a storage that cannot be reached is a user error, not a traceback."""
    try:
        return optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/driver errors have no common base worth importing
        where = getattr(storage, "url", None) or "the journal file"
        raise ConfigError("--storage", f"cannot open Optuna study {name!r} in {where!r} ({type(exc).__name__}: {exc}); "
                          "expected a journal file path or a reachable SQLAlchemy URL such as "
                          "postgresql://user@host/db (its driver installed)") from None


def describe_study(study: optuna.Study, metric: str, attrs: dict) -> None:
    """Metric name and the ablation's question, phase and arms on the study, for optuna-dashboard."""
    import warnings

    try:
        if study.metric_names != [metric]:
            with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use; not the user's concern
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([metric])
        for key, value in attrs.items():
            if study.user_attrs.get(key) != value:
                study.set_user_attr(key, value)
    except Exception:  # noqa: BLE001 - dashboard labels must never stop a run
        pass


def has_waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def mark_failed(study: optuna.Study, trial_number: int, reason: str) -> None:
    """Fail a trial that is not ours to run (a dead worker's, or one left over after the plan changed)."""
    trial = study.get_trials(deepcopy=False)[trial_number]
    if trial.state in (TrialState.RUNNING, TrialState.WAITING):
        study._storage.set_trial_user_attr(trial._trial_id, "reflect_failed_reason", reason)
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)


def _backend(study: optuna.Study):
    # Study wraps an RDBStorage in a _CachedStorage; Optuna's own heartbeat code reaches through study._storage too.
    storage = study._storage
    return getattr(storage, "_backend", storage)


def uses_heartbeat(study: optuna.Study) -> bool:
    """Whether the database decides which trials are alive (RDBStorage with heartbeats)."""
    backend = _backend(study)
    return isinstance(backend, optuna.storages.RDBStorage) and backend.heartbeat_interval is not None


WAIT_POLL_S = 5  # how often a machine with nothing to claim looks again (a beat interval would be a minute)


def heartbeat_seconds(study: optuna.Study) -> Optional[int]:
    """The storage's heartbeat interval, or None where it has none (the journal)."""
    return _backend(study).heartbeat_interval if uses_heartbeat(study) else None


def reap_stale(study: optuna.Study) -> None:
    """Fail the trials whose heartbeat stopped and re-queue copies of them (the storage's stale-trial callback)."""
    if not uses_heartbeat(study):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def record_heartbeat(study: optuna.Study, trial_id: int) -> None:
    """One beat now (a claimed trial beats at once: a trial with no beat is never judged stale by Optuna)."""
    if uses_heartbeat(study):
        study._storage.record_heartbeat(trial_id)


@contextmanager
def trial_heartbeat(study: optuna.Study, trial_id: int) -> Iterator[threading.Event]:
    """Beat for ``trial_id`` every heartbeat interval while the block runs (a daemon thread, as in Optuna's
    ``study.optimize``, which our ask/tell loop does not use). A missed beat is retried at the next interval.

    Yields an event that is set once the database no longer has the trial RUNNING: this worker was taken for
    dead (it stopped beating for longer than the grace period: suspended, cut off) and its trial handed to
    another, so it must stop without writing (``reflect.ablation.execute.StopIfClaimLost``).
    """
    lost = threading.Event()
    if not uses_heartbeat(study):
        yield lost
        return
    interval = heartbeat_seconds(study)
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                if study._storage.get_trial(trial_id).state != TrialState.RUNNING:
                    lost.set()
                    return
                study._storage.record_heartbeat(trial_id)
            except Exception:  # noqa: BLE001 - a lost connection for one beat must not kill the trial
                pass
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"optuna-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join()


def _advisory_lock_id(name: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def study_lock(study: optuna.Study, lock_file: Path) -> Iterator[None]:
    """Mutual exclusion for the queue's check-and-claim steps among every worker of ``study``.

    On PostgreSQL it is a session advisory lock in the study's database, so machines need no shared lock file
    (``flock`` is unreliable on many NFS servers, as Optuna's journal backend warns); elsewhere (the journal
    file, SQLite) an ``flock`` on ``lock_file``, which is on the local disk the journal already needs.
    """
    import fcntl

    backend = _backend(study)
    if isinstance(backend, optuna.storages.RDBStorage) and backend.engine.dialect.name == "postgresql":
        import sqlalchemy

        lock_id = _advisory_lock_id(f"reflect:{study.study_name}:{lock_file.name}")
        with backend.engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
                conn.commit()
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
