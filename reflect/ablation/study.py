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

optuna.logging.set_verbosity(optuna.logging.WARNING)

KEY_ATTR = "reflect_key"


def open_storage(url: Optional[str], default_journal: Path) -> BaseStorage | str:
    """None → the journal file under runs/; ``*.journal``/``*.log`` paths → a journal; else a database URL."""
    if url is None:
        default_journal.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(default_journal)))
    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    return url


def open_study(name: str, storage: BaseStorage | str, direction: str) -> optuna.Study:
    return optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True)


def has_waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def mark_failed(study: optuna.Study, trial_number: int, reason: str) -> None:
    """Fail a trial that is not ours to run (a dead worker's, or one left over after the plan changed)."""
    trial = study.get_trials(deepcopy=False)[trial_number]
    if trial.state in (TrialState.RUNNING, TrialState.WAITING):
        study._storage.set_trial_user_attr(trial._trial_id, "reflect_failed_reason", reason)
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
