"""The code version a number came from: the git commit of this checkout, marked when it has uncommitted changes."""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Optional, Tuple


@functools.lru_cache(maxsize=1)
def git_state() -> Tuple[Optional[str], Optional[bool]]:
    """(commit, dirty) of the checkout Reflect runs from; (None, None) outside git or without git.

    Cached per process: a process trains with the code it imported, whatever happens to the files later.
    """
    here = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=here).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, timeout=5, cwd=here).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, (dirty if commit else None)


def format_code_version(commit: Optional[str], dirty: Optional[bool]) -> Optional[str]:
    """``<commit>`` or ``<commit> (dirty)``; None without a commit."""
    return None if commit is None else f"{commit}{' (dirty)' if dirty else ''}"


def current_code_version() -> Optional[str]:
    """This process's code version, formatted as records and reports show it."""
    return format_code_version(*git_state())
