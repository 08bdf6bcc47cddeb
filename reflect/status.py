"""``python -m reflect.status [--runs-dir R ...] [--reports-dir P] [--roadmap FILE]``: the roadmap dashboard.

Evaluates every phase's gates on the fleet (every complete trial under the runs folders, sign-offs and
recorded benchmarks), detects the current phase and writes ``reports/status.{json,md,html}``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from reflect.cli_errors import exit_on_user_error
from reflect.reports.console import console


def add_roadmap_args(p: argparse.ArgumentParser) -> None:
    from reflect.roadmap.spec import DEFAULT_ROADMAP

    p.add_argument("--roadmap", default=str(DEFAULT_ROADMAP), help="the roadmap file (default: roadmap.yaml)")


def refresh_status(runs_dirs: Sequence[str], reports_dir: str, roadmap_path: Optional[str] = None) -> Optional[Path]:
    """Rebuild the status pages; returns the html path (None, with a message, when there is no roadmap file)."""
    from reflect.reports.status_page import write_status
    from reflect.roadmap.spec import DEFAULT_ROADMAP, load_roadmap
    from reflect.roadmap.status import roadmap_status

    path = Path(roadmap_path or DEFAULT_ROADMAP)
    if not path.is_file():
        console.print(f"status: no roadmap file at {path}; status pages not written")
        return None
    roadmap = load_roadmap(path)
    status = roadmap_status(roadmap, list(runs_dirs))
    out = write_status(status, roadmap, reports_dir)
    console.print(f"status: Phase {status.current_phase}, {status.passed}/{status.total} phases · "
                  f"{status.percent:.0f}% → {out}")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m reflect.status [--runs-dir DIR ...] [--reports-dir DIR]``: rebuild the roadmap's status page
    (status.md, status.html, status.json) from the results stores.

    Args:
        argv: the command line after the program name (None: ``sys.argv[1:]``); ``--help`` lists it.
    Returns:
        0 when written; a user error (unreadable roadmap file, bad arguments) exits 2.
    """
    p = argparse.ArgumentParser(prog="python -m reflect.status", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs-dir", action="append", help="a results store root (repeatable; default: runs)")
    p.add_argument("--reports-dir", default="reports", help="where status.* go (default: reports)")
    add_roadmap_args(p)
    args = p.parse_args(argv)
    with exit_on_user_error("reflect.status"):
        from reflect.config_loading import ConfigError

        if not Path(args.roadmap).is_file():
            raise ConfigError("--roadmap", f"no roadmap file at {args.roadmap}")
        refresh_status(args.runs_dir or ["runs"], args.reports_dir, args.roadmap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
