"""Dead sweep trials: which RUNNING trial's worker is gone, and taking it back (failed, then re-queued).

On the journal storage nothing tells Optuna that a worker died (killed, stopped by a signal, crashed), so its
trial would stay RUNNING and hold a slot of the budget forever. Each trial carries who asked it
(``WORKER_ATTR``) and how often its worker died under it (``CRASHES_ATTR``); ``trial_record`` finds the store
record it wrote, ``trial_is_live`` applies the ablation queue's liveness rule to it, and ``reap_dead_trials``
tells a finished-but-untold trial its recorded outcome, or fails a dead one and queues a copy under its name
that resumes its checkpoint (the database's stale-trial callback does this on a heartbeat storage).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import optuna

WORKER_ATTR = "reflect_worker"  # who asked a trial ({host, pid, asked_at}): its liveness until its record exists
CRASHES_ATTR = "reflect_crashes"  # how many times a trial's worker died under it (a clean Ctrl-C is not a crash)


def trial_record(trial: optuna.trial.FrozenTrial, records: Sequence[Any]) -> Optional[Any]:
    """The store record a sweep trial wrote, if any.

    Args:
        trial: the Optuna trial.
        records: the sweep store's records.
    Returns:
        The latest record naming ``trial.number`` written since the trial was asked (a record left by an earlier,
        deleted journal of the same sweep names the same numbers but is older), or None.
    """
    since = (trial.user_attrs.get(WORKER_ATTR) or {}).get("asked_at")
    mine = [r for r in records if r.optuna_trial == trial.number and (since is None or r.updated_at >= since - 1.0)]
    return max(mine, key=lambda r: r.updated_at, default=None)


def trial_is_live(study: optuna.Study, trial: optuna.trial.FrozenTrial, record: Optional[Any]) -> bool:
    """Whether a worker still runs a RUNNING sweep trial (``reflect.ablation.queue.is_live``'s rule).

    Args:
        study: the sweep's study.
        trial: a RUNNING trial of it.
        record: its store record (``trial_record``), or None.
    Returns:
        On a heartbeat storage, what the database says (call ``reap_stale`` first). On the journal, whether the
        process holding the trial lives: the one that wrote its record, or before there is one, the one that
        asked it (same host: its pid lives and is not this process; another host: it wrote or asked within
        ``STALE_AFTER_S``). A record that is already finished (interrupted, complete) while the trial is still
        RUNNING is a worker that stopped without telling Optuna: alive only while that process is.
    """
    from optuna.trial import TrialState

    from reflect.ablation.queue import is_live
    from reflect.ablation.store import RUNNING, TrialRecord
    from reflect.ablation.study import uses_heartbeat

    if uses_heartbeat(study):
        return trial.state == TrialState.RUNNING
    if record is not None:
        return is_live(study, trial, dataclasses.replace(record, status=RUNNING))
    holder = trial.user_attrs.get(WORKER_ATTR) or {}
    asked_at = holder.get("asked_at") or (trial.datetime_start.timestamp() if trial.datetime_start else 0.0)
    claim = TrialRecord(study=study.study_name, arm="", seed=0, config_hash="", status=RUNNING,
                        host=str(holder.get("host", "")), pid=int(holder.get("pid", 0)), updated_at=float(asked_at))
    return not claim.is_stale()


def reap_dead_trials(study: optuna.Study, store: Any) -> list[str]:
    """On a storage without heartbeats (the journal), take back the RUNNING trials whose worker is gone, as the
    database's stale-trial callback does on PostgreSQL. Call under the sweep's budget lock.

    A trial whose record finished (complete, failed, pruned) but was never told is told its record's outcome. Any
    other (killed mid-training, stopped by Ctrl-C, or dead before writing a record) is failed and a copy queued
    with its params, its name (``reflect_arm``: the copy resumes the same work folder and checkpoint) and
    ``retry_history`` (so ``spent()`` counts the copy, not both). A trial whose worker died more than
    ``MAX_RETRIES`` times (a crash that kills the process each time) stays failed, its record too.

    Args:
        study: the sweep's study.
        store: the sweep's results store.
    Returns:
        One line per trial taken back, for the log.
    """
    from optuna.trial import TrialState

    from reflect.ablation.store import COMPLETE, FAILED, INTERRUPTED, PRUNED, RUNNING
    from reflect.ablation.study import MAX_RETRIES, mark_failed, uses_heartbeat

    if uses_heartbeat(study):
        return []
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    records = list(store.records())
    lines = []
    for t in running:
        record = trial_record(t, records)
        if trial_is_live(study, t, record):
            continue
        name = t.user_attrs.get("reflect_arm") or f"trial {t.number}"
        if record is not None and record.status in (COMPLETE, PRUNED, FAILED):  # finished: only the tell was lost
            try:
                if record.status == FAILED:
                    mark_failed(study, t.number, record.failure_reason or "failed")
                elif record.status == PRUNED:
                    study.tell(t.number, state=TrialState.PRUNED)
                else:
                    study.tell(t.number, record.windowed_metric)
            except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                pass  # a grid sampler's stop() outside optimize; the state is stored all the same
            lines.append(f"{name}: told its recorded outcome ({record.status}); its worker had stopped before")
            continue
        crashed = record is None or record.status == RUNNING
        crashes = int(t.user_attrs.get(CRASHES_ATTR, 0)) + int(crashed)
        holder = t.user_attrs.get(WORKER_ATTR) or {}
        host, pid = ((record.host, record.pid) if record is not None else
                     (holder.get("host", "?"), holder.get("pid", "?")))
        why = ("stopped by a signal (interrupted)" if record is not None and record.status == INTERRUPTED else
               f"its worker (pid {pid} on {host}) is gone")
        if crashes > MAX_RETRIES:
            reason = (f"its worker died {crashes} times while running it (a crash that kills the process, such as "
                      f"running out of memory); not retried again (at most {MAX_RETRIES} retries)")
            mark_failed(study, t.number, reason)
            if record is not None:
                record.status, record.failure_reason = FAILED, reason
                store.write(record)
            lines.append(f"{name}: {reason}")
            continue
        mark_failed(study, t.number, f"{why}; re-queued with its params and name to resume")
        system_attrs = {"failed_trial": t.number, **t.system_attrs}
        system_attrs["retry_history"] = [*t.system_attrs.get("retry_history", []), t.number]
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=t.params, distributions=t.distributions,
            user_attrs={**t.user_attrs, CRASHES_ATTR: crashes}, system_attrs=system_attrs))
        lines.append(f"{name}: {why}; re-queued" + (" (the copy resumes its last checkpoint)" if record else ""))
    return lines
