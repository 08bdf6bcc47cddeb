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
import warnings
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Optional, Union, get_args, get_origin, get_type_hints

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
    """One trial's record, the store's schema (``trials/<arm>-s<seed>-<hash>.json``): what ran (study, arm,
    seed, config and its hash, overrides), how it ended (``status``: running, complete, failed, pruned or
    interrupted, with ``failure_reason``), what it measured (the windowed metric, every evaluation, per-frame
    metrics, renders, wall time, steps) and where it came from (``provenance``: code versions, packages,
    device and threads; ``protocol``: resolution, splits, datasets, renderer). ``host``/``pid``/``updated_at``
    let the queue tell a live trial from a dead one."""

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
    """Write ``data`` as JSON to ``path`` atomically: a kill at any moment leaves the old file or the new one.

    Args:
        path: the file to write (its folder is created if missing).
        data: JSON-serialisable data (numpy arrays and paths are converted).
    """
    _atomic_write(path, lambda f: json.dump(data, f, indent=1, default=_json_default), binary=False)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, like :func:`atomic_write_json`.

    Args:
        path: the file to write (its folder is created if missing).
        text: the whole new content.
    """
    _atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, like :func:`atomic_write_json` (PNGs, figures).

    Args:
        path: the file to write (its folder is created if missing).
        data: the whole new content.
    """
    _atomic_write(path, lambda f: f.write(data), binary=True)


def _atomic_write(path: Path, write: Callable[[IO], Any], binary: bool) -> None:
    """A temp file in ``path``'s folder, filled by ``write``, fsynced, then ``os.replace``d onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a shared store needs the umask's permissions
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as f:
            write(f)
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
    """The record in ``path``, or None (with a warning naming the file and what is wrong) when it is not one.

    None means "not done", as for a missing record: the runner trains the trial again and its write replaces the
    file; reports and status pages leave it out. Fields this version does not know (a newer version wrote the
    record) are ignored, with a warning.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return _skip(path, f"cannot read it ({exc})")
    except json.JSONDecodeError as exc:  # atomic writes make this near impossible: a file from elsewhere
        return _skip(path, f"invalid JSON ({exc})")
    if not isinstance(data, dict):
        return _skip(path, f"expected a JSON object, got {type(data).__name__}")
    fields = _record_fields()
    required = [name for name, f in TrialRecord.__dataclass_fields__.items()
                if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        return _skip(path, f"missing field(s) {', '.join(missing)}")
    for name, value in data.items():
        allowed = fields.get(name)
        if allowed is not None and not _is_instance(value, allowed):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            return _skip(path, f"{name} should be {names}, got {type(value).__name__}")
    unknown = sorted(k for k in data if k not in fields)
    if unknown:
        warnings.warn(f"{path}: ignoring unknown field(s) {', '.join(unknown)} (written by a newer version?)",
                      stacklevel=3)
    return TrialRecord(**{k: v for k, v in data.items() if k in fields})


def _skip(path: Path, problem: str) -> None:
    warnings.warn(f"{path}: skipped, not a readable trial record: {problem}", stacklevel=4)
    return None


_FIELD_TYPES: dict[str, tuple[type, ...]] = {}


def _record_fields() -> dict[str, tuple[type, ...]]:
    """Each TrialRecord field → the JSON types it may hold (``Optional[float]`` → float, int or null)."""
    if not _FIELD_TYPES:
        for name, hint in get_type_hints(TrialRecord).items():
            options = get_args(hint) if get_origin(hint) is Union else (hint,)
            types = [get_origin(t) or t for t in options]
            if float in types:
                types.append(int)  # JSON writes 3.0 as 3.0, but a hand-written record may say 3
            _FIELD_TYPES[name] = tuple(types)
    return _FIELD_TYPES


def _is_instance(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in allowed:
        return False  # true is no seed or step count, though Python's bool is an int
    return isinstance(value, allowed)
