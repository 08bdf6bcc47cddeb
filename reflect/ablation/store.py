"""The results store: one JSON record per trial under ``runs/<study>/trials/`` — the source of truth.

Records are written atomically (temp file + ``os.replace``), so a kill at any
moment leaves either the old record or the new one. Reports, gates and
statistics read only this store; W&B and Optuna's storage are mirrors.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from reflect.code_version import format_code_version

COMPLETE, FAILED, PRUNED, RUNNING = "complete", "failed", "pruned", "running"
# stopped by SIGINT/SIGTERM (its checkpoint kept): not finished, so the next run resumes it
INTERRUPTED = "interrupted"
STATUSES = (COMPLETE, FAILED, PRUNED, RUNNING, INTERRUPTED)
# A running record whose heartbeat is older than this (and whose process cannot be
# checked because it lives on another machine) is considered dead.
STALE_AFTER_S = 180.0


@dataclass
class TrialRecord:
    study: str
    arm: str
    seed: int
    config_hash: str
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    failure_reason: Optional[str] = None
    metric_name: Optional[str] = None
    metric_window: Optional[int] = None
    windowed_metric: Optional[float] = None
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    train_history: list[dict[str, Any]] = field(default_factory=list)
    per_frame: dict[str, Any] = field(default_factory=dict)  # the final evaluation's per-frame metrics
    per_frame_history: list[dict[str, Any]] = field(default_factory=list)  # every evaluation in the window
    renders: list[dict[str, str]] = field(default_factory=list)  # final-evaluation renders {frame_id, path}
    parameter_counts: dict[str, int] = field(default_factory=dict)
    wall_time_s: Optional[float] = None
    steps: int = 0
    checkpoint: Optional[str] = None
    provenance: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    progress: dict[str, Any] = field(default_factory=dict)  # live: step, last eval metric
    optuna_trial: Optional[int] = None
    wandb_error: Optional[str] = None  # why the W&B mirror is missing or incomplete (the result stands)

    @property
    def key(self) -> str:
        return trial_key(self.arm, self.seed, self.config_hash)

    def is_stale(self, now: Optional[float] = None) -> bool:
        """A running record whose process is gone (same host: pid check; elsewhere: heartbeat age).

        A record naming this very process is stale too: whoever asks is not running that trial, so it is a pid
        reused after a restart (containers hand out the same pids), never a live worker.
        """
        if self.status != RUNNING:
            return False
        if self.host == socket.gethostname():
            return self.pid == os.getpid() or not _pid_alive(self.pid)
        return (now or time.time()) - self.updated_at > STALE_AFTER_S

    @property
    def code_version(self) -> Optional[str]:
        """The commit the trial ran on (" (dirty)" with uncommitted changes), or None without provenance."""
        if not self.provenance:
            return None
        return format_code_version(self.provenance.get("git_commit"), self.provenance.get("git_dirty"))

    @property
    def code_versions(self) -> list[str]:
        """Every code version that trained this trial's weights, oldest first (a resumed checkpoint carries
        the versions of its earlier segments); ``[code_version]`` for records without that history."""
        trained_by = (self.provenance or {}).get("trained_by")
        if trained_by:
            return [str(v) for v in trained_by]
        return [self.code_version] if self.code_version else []


def trial_key(arm: str, seed: int, config_hash: str) -> str:
    return f"{arm}-s{seed}-{config_hash}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited child not yet reaped) counts as dead.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a shared store needs the umask's permissions
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: os.umask is process-wide, so probing it while a heartbeat thread writes could leave a
# file the training thread creates world-writable.
_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class ResultsStore:
    """``runs/<study>/``: ``trials/<arm>-s<seed>-<hash>.json`` records and ``work/`` trial folders."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.trials_dir = self.root / "trials"
        self.work_dir = self.root / "work"
        self._write_lock = threading.Lock()  # a trial's record is written by its thread and its heartbeat

    def record_path(self, key: str) -> Path:
        return self.trials_dir / f"{key}.json"

    def workdir(self, key: str) -> Path:
        return self.work_dir / key

    def write(self, record: TrialRecord) -> None:
        with self._write_lock:
            record.updated_at = time.time()
            atomic_write_json(self.record_path(record.key), asdict(record))

    @contextmanager
    def heartbeat(self, record: TrialRecord, every_s: float = 30.0, claim_lost: Any = None) -> Iterator[None]:
        """Rewrite ``record`` every ``every_s`` seconds while the block runs.

        Why: another host judges a RUNNING record by its age (``STALE_AFTER_S``); loading a large capture
        happens before training callbacks can beat, so without this a slow start would look like a dead worker.
        ``claim_lost`` set (the trial was handed to another worker) stops the beats.
        """
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every_s):
                if claim_lost is not None and claim_lost.is_set():
                    return  # another worker owns the record now
                try:
                    self.write(record)
                except Exception:  # noqa: BLE001 - a missed beat only risks a duplicate run, never a wrong result
                    pass

        thread = threading.Thread(target=beat, name=f"heartbeat-{record.key}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def get(self, key: str) -> Optional[TrialRecord]:
        path = self.record_path(key)
        if not path.is_file():
            return None
        return _read_record(path)

    def records(self) -> Iterator[TrialRecord]:
        if not self.trials_dir.is_dir():
            return
        for path in sorted(self.trials_dir.glob("*.json")):
            rec = _read_record(path)
            if rec is not None:
                yield rec

    def complete(self, key: str) -> bool:
        rec = self.get(key)
        return rec is not None and rec.status == COMPLETE


def _read_record(path: Path) -> Optional[TrialRecord]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # atomic writes make this near impossible; an unreadable record means "not done"
    known = {f for f in TrialRecord.__dataclass_fields__}
    return TrialRecord(**{k: v for k, v in data.items() if k in known})
