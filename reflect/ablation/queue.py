"""The trial queue on the Optuna study: what is enqueued, who claims what, and one plan per study.

Each (arm, seed) of the plan is enqueued once; a worker claims the next queued trial and writes its
RUNNING record under the study's lock (``study_lock``: a PostgreSQL advisory lock, or a local ``flock``), so
no two workers run one trial. Which running trials are alive: on a database storage the database decides
(Optuna's heartbeat; a dead worker's trial is failed and re-queued by its stale-trial callback); on the
journal file, the trial's record (its pid on this host). ``check_plan`` keeps machines with different plans
off one study.
"""
from __future__ import annotations

import socket
import sys
import time
from typing import Iterable, Optional

import optuna
from optuna.trial import TrialState

from reflect.ablation.execute import running_record
from reflect.ablation.plan import PlannedTrial
from reflect.ablation.spec import Ablation
from reflect.ablation.store import COMPLETE, RUNNING, ResultsStore, TrialRecord
from reflect.ablation.study import (KEY_ATTR, WAIT_POLL_S, has_waiting, heartbeat_seconds, mark_failed, reap_stale,
                                    record_heartbeat, study_lock, uses_heartbeat)


def is_live(study: optuna.Study, trial: optuna.trial.FrozenTrial, record: Optional[TrialRecord]) -> bool:
    """Whether a worker is running ``trial`` now.

    Heartbeat storage (call ``reap_stale`` first): RUNNING in the database and claimed in the store. Journal:
    its RUNNING record is not stale (same host: the pid lives; another host: a recent update).
    """
    if record is None or record.status != RUNNING:
        return False
    if uses_heartbeat(study):
        return trial.state == TrialState.RUNNING
    return not record.is_stale()


def live_keys(study: optuna.Study, store: ResultsStore, keys: Optional[Iterable[str]] = None) -> set[str]:
    """Keys (of ``keys``, default all) whose trial a worker is running now; fails and re-queues stale ones first
    (under the study's lock: Optuna fails a stale trial and adds its copy in two steps, and ``sync_queue`` must
    not see the first without the second, or it would queue the trial a second time)."""
    with study_lock(study, store.root / ".queue.lock"):
        reap_stale(study)
    wanted = set(keys) if keys is not None else None
    live = set()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        key = t.user_attrs.get(KEY_ATTR)
        if key and (wanted is None or key in wanted) and is_live(study, t, store.get(key)):
            live.add(key)
    return live


def sync_queue(ablation: Ablation, plan: list[PlannedTrial], store: ResultsStore, study: optuna.Study,
               known: Optional[set[str]] = None) -> int:
    """Enqueue every trial of ``plan`` that is neither complete nor alive somewhere; returns how many are pending.

    Waiting trials whose key is not in ``known`` (default: ``plan``'s keys) belong to an earlier plan and are
    failed off; a sequential design passes every trial it may run as ``known`` and one look's as ``plan``.
    """
    with study_lock(study, store.root / ".queue.lock"):
        reap_stale(study)  # a dead worker's trial: failed, and a copy queued with its key (resumed by whoever claims it)
        by_key: dict[str, list[optuna.trial.FrozenTrial]] = {}
        for t in study.get_trials(deepcopy=False):
            by_key.setdefault(t.user_attrs.get(KEY_ATTR, ""), []).append(t)
        planned = known if known is not None else {p.key for p in plan}
        for key, trials in by_key.items():
            if key not in planned:  # left over from an earlier plan (other seeds, renamed arms, new overrides)
                for t in trials:
                    if t.state == TrialState.WAITING:
                        mark_failed(study, t.number, "not in the current plan (the ablation changed)")
        pending = 0
        for p in plan:
            if store.complete(p.key):
                continue
            pending += 1
            queued = False
            for t in by_key.get(p.key, []):
                if t.state == TrialState.WAITING:
                    queued = True
                elif t.state == TrialState.RUNNING:
                    if is_live(study, t, store.get(p.key)):
                        queued = True  # a live worker is on it
                    else:
                        mark_failed(study, t.number, "worker died (stale); re-enqueued")
            if not queued:
                study.enqueue_trial({"arm": p.arm, "seed": p.seed}, user_attrs={KEY_ATTR: p.key})
        return pending


def claim_next(ablation: Ablation, by_key: dict[str, PlannedTrial], store: ResultsStore,
                study: optuna.Study) -> Optional[tuple[optuna.Trial, PlannedTrial]]:
    """Pop the next queued trial of the current plan and write its RUNNING record, under the queue lock.

    Why under the lock: ``sync_queue`` (another process starting the same ablation) treats a RUNNING Optuna
    trial without a live RUNNING record as a dead worker's; claiming and recording in one locked step leaves
    it no window in which a trial that has just started looks dead.
    """
    with study_lock(study, store.root / ".queue.lock"):
        reap_stale(study)
        while has_waiting(study):
            trial = study.ask()
            record_heartbeat(study, trial._trial_id)  # at once: Optuna never judges a trial without a beat stale
            key = trial.user_attrs.get(KEY_ATTR)
            if key is None:
                # Not one of ours: ask() created a fresh trial because no waiting one was left.
                study.tell(trial, state=TrialState.FAIL)
                return None
            p = by_key.get(key)
            if p is None:  # queued by an earlier plan; checked before suggest_*, whose choices it may lack
                trial.set_user_attr("reflect_failed_reason", "not in the current plan (the ablation changed)")
                study.tell(trial, state=TrialState.FAIL)
                continue
            trial.suggest_categorical("arm", list(ablation.arms))
            trial.suggest_categorical("seed", list(ablation.seeds))
            existing = store.get(p.key)
            if existing is not None and existing.status == COMPLETE:  # enqueued twice; already done
                tell(study, trial, existing)
                continue
            store.write(running_record(ablation, p, trial.number))
            return trial, p
    return None


def tell(study: optuna.Study, trial: optuna.Trial, record: TrialRecord) -> None:
    """Report a finished trial to Optuna. The store already holds the result, so a study that no longer takes
    it (another process failed the trial as stale in the meantime) is worth a warning, not a crash."""
    try:
        if record.status == COMPLETE:
            study.tell(trial, record.windowed_metric)
        else:
            trial.set_user_attr("reflect_failed_reason", record.failure_reason or "")
            study.tell(trial, state=TrialState.FAIL)
    except (ValueError, RuntimeError) as exc:
        import warnings

        warnings.warn(f"Optuna trial {trial.number} ({record.key}) could not be told its result ({exc}); "
                      "the results store has it", RuntimeWarning, stacklevel=2)


PLAN_ATTR = "reflect_plan"


def check_plan(ablation: Ablation, study: optuna.Study, store: ResultsStore, known: set[str]) -> None:
    """Several machines on one study must run one plan: refuse to start while a study recorded with another plan
    has live trials.

    The plan is the hash of every trial key the design may run (arms, seeds, overrides, data); it is kept in the
    study's user attributes. A different plan with no live trial (an earlier run of a changed file) is adopted,
    and its queued trials are failed off by ``sync_queue`` as before.
    """
    import hashlib

    from reflect.config_loading import ConfigError

    plan_id = hashlib.sha256("\n".join(sorted(known)).encode()).hexdigest()[:16]
    previous = study.user_attrs.get(PLAN_ATTR)
    if previous and previous != plan_id:
        live = live_keys(study, store)  # any live trial: plans may overlap (other seeds), so a key cannot tell whose
        if live:
            raise ConfigError("--storage", f"study {ablation.name!r} is running another plan of this ablation "
                              f"(plan {previous}, live trials: {', '.join(sorted(live)[:3])}); this machine's plan "
                              f"is {plan_id}: start every machine with the same file, overrides and --seeds (and "
                              "the same data), or use another --storage")
    if previous != plan_id:
        study.set_user_attr(PLAN_ATTR, plan_id)


def where_running(store: ResultsStore, keys: Iterable[str]) -> str:
    """Where running trials run, in words: how many on this host (sibling local workers) and how many elsewhere,
    from each RUNNING record's host (the claim record has no provenance yet, but always its host)."""
    here = socket.gethostname()
    records = [store.get(key) for key in keys]
    local = sum(1 for record in records if record is not None and record.host == here)  # every record has a host
    return f"{local} on this machine, {len(records) - local} elsewhere"


def wait_for_others(study: optuna.Study, store: ResultsStore, keys: Iterable[str], waiting_since: list[float]) -> bool:
    """With nothing left to claim: on a heartbeat storage, while other workers still run trials of ``keys``,
    sleep a few seconds (``WAIT_POLL_S``, at most a heartbeat interval) and return True (the caller claims again: a dead worker's trial comes back
    queued once its heartbeat is stale); False when none is running (or on the journal, which never re-queues).

    Why wait: this machine's report and the next look of a sequential design need those trials' results.
    ``waiting_since`` holds the time the wait began (empty before), for the progress line.
    """
    if not uses_heartbeat(study):
        return False
    running = live_keys(study, store, keys)  # fails and re-queues stale trials first
    if has_waiting(study):
        return True  # a dead worker's trial was just re-queued: claim it
    if not running:
        return False
    if not waiting_since:
        waiting_since.append(time.time())
        print(f"waiting for {len(running)} trial(s) running on other workers ({where_running(store, running)}: "
              f"{', '.join(sorted(running)[:3])}); a dead worker's trial is re-queued here once its heartbeat is stale",
              file=sys.stderr, flush=True)
    time.sleep(min(heartbeat_seconds(study), WAIT_POLL_S))
    return True
