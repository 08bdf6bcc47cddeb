"""Human sign-offs a gate needs ("visual improvement in expression tracking"), recorded append-only.

``<runs>/signoffs.jsonl``: one JSON line per sign-off or revocation (who, when, note, the code version and
the trials looked at). A check counts as signed off when its latest line for that phase is not a revocation.
Lines are appended with ``O_APPEND`` in a single write, so concurrent writers never interleave a line.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

SIGNOFF_FILE = "signoffs.jsonl"


@dataclass(frozen=True)
class Signoff:
    phase: int
    check: str
    by: str
    note: str
    at: str  # ISO-8601 UTC
    code_version: Optional[str]
    trials: tuple[str, ...]
    revoked: bool = False


def record_signoff(runs_dir: str | Path, signoff: Signoff) -> Path:
    """Append ``signoff`` to ``<runs_dir>/signoffs.jsonl`` (created if needed); returns the file."""
    path = Path(runs_dir) / SIGNOFF_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps({**asdict(signoff), "trials": list(signoff.trials)}, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_signoffs(runs_dirs: Sequence[str | Path]) -> list[Signoff]:
    """Every line of every runs folder's sign-off file, oldest first (a torn line is skipped)."""
    out = []
    for runs in runs_dirs:
        path = Path(runs) / SIGNOFF_FILE
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            try:
                data = json.loads(line)
                out.append(Signoff(int(data["phase"]), str(data["check"]), str(data["by"]), str(data.get("note", "")),
                                   str(data["at"]), data.get("code_version"), tuple(data.get("trials", ())),
                                   bool(data.get("revoked", False))))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
    # Across folders, by time; within one (append-only) file a stable sort keeps the order things happened.
    return sorted(out, key=lambda s: s.at)


def active_signoff(signoffs: Sequence[Signoff], phase: int, check: str) -> Optional[Signoff]:
    """The standing sign-off of (phase, check): its latest entry, unless that entry is a revocation."""
    matching = [s for s in signoffs if s.phase == phase and s.check == check]
    if not matching or matching[-1].revoked:
        return None
    return matching[-1]


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
