"""Optuna as the scheduler of an ablation's fixed (arm, seed) grid.

Each cell is enqueued once (``study.enqueue_trial``); workers pop WAITING
trials, which Optuna hands to exactly one worker — never GridSampler, which
gives the same cell to several workers (optuna#2039). Local storage is
Optuna's JournalStorage file (safe for several processes, unlike SQLite); any
SQLAlchemy URL (PostgreSQL for several machines) works too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import optuna
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from reflect.config_loading import ConfigError

optuna.logging.set_verbosity(optuna.logging.WARNING)

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


def open_storage(url: Optional[str], default_journal: Path) -> BaseStorage | str:
    """None → the journal file under runs/; ``*.journal``/``*.log`` paths → a journal; else a database URL."""
    if url is not None and "://" in url:
        return database_url(url)  # a database URL: optuna opens it (open_study turns failures into a clear error)
    path = default_journal if url is None else Path(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as exc:
        raise ConfigError("--storage", f"cannot open the Optuna journal {path}: {exc.strerror or exc}") from None


def open_study(name: str, storage: BaseStorage | str, direction: str) -> optuna.Study:
    """Create or load the study; a storage that cannot be reached is a user error, not a traceback."""
    try:
        return optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/driver errors have no common base worth importing
        where = storage if isinstance(storage, str) else "the journal file"
        raise ConfigError("--storage", f"cannot open Optuna storage {where!r} ({type(exc).__name__}: {exc}); "
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
