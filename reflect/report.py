"""``python -m reflect.report ABLATION_FILE... [--runs-dir R] [--reports-dir P]``: rebuild reports.

Rebuilds ``reports/<name>/summary.json``, ``report.md``, ``report.html`` and figures of each ablation from
the results store alone (nothing is trained), then the roadmap status pages (``reports/status.*``);
``reflect.ablate`` runs the same code when it finishes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from reflect.cli_errors import exit_on_user_error
from reflect.reports.console import console, print_outcome


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m reflect.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="ABLATION_FILE|key=value",
                   help="ablation files, e.g. ablations/*.yaml, then the key=value overrides the run used (if any)")
    p.add_argument("--profile", choices=["quick", "full"], help="the profile the run used instead of `base`")
    p.add_argument("--seeds", help="the seeds the run used instead of the file's: a count (3) or a list (0,1,2)")
    p.add_argument("--runs-dir", default="runs", help="results store root (default: runs)")
    p.add_argument("--reports-dir", default="reports", help="where reports go (default: reports)")
    p.add_argument("--roadmap", help="the roadmap file the status pages follow (default: roadmap.yaml)")
    p.add_argument("--publish", action="store_true",
                   help="also log the verdict table to W&B and publish the W&B report (needs W&B online)")
    return p.parse_intermixed_args(argv)


def publish(summary: dict, ablation, store, out_dir: Path) -> int:
    """Mirror the verdict table and publish the W&B report; 1 (with the reason) when W&B cannot take it."""
    import json

    from reflect.reports.wandb_report import log_summary_table, publish_report

    tracking = ablation.arms[ablation.baseline].config.tracking
    try:
        log_summary_table(summary, tracking, store.root)
        url = publish_report(json.loads((out_dir / "wandb_report.json").read_text()), tracking)
    except Exception as exc:  # noqa: BLE001 - the store and the local report stand; say why W&B did not
        console.print(f"[yellow]W&B report not published[/]: {exc}")
        return 1
    console.print(f"W&B report: {url}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Rebuild the reports of every file given; exit 1 if any could not be scored, 2 on bad input."""
    args = parse_args(argv)
    worst = 0
    with exit_on_user_error("reflect.report"):
        from reflect.ablation.spec import load_ablation
        from reflect.ablation.store import ResultsStore
        from reflect.reports.ablation import write_ablation_report

        from reflect.ablate import parse_seeds

        files = [f for f in args.files if "=" not in f]
        overrides = [f for f in args.files if "=" in f]
        for file in files:
            # the same overrides, profile and seeds as the run: they change trial identities and the design
            ablation = load_ablation(file, overrides, parse_seeds(args.seeds), args.profile)
            store = ResultsStore(Path(args.runs_dir) / ablation.name)
            if not store.trials_dir.is_dir():
                console.print(f"[red]{file}: no results store at {store.root}[/] (run `python -m reflect.ablate "
                              f"{file}` first, or pass --runs-dir)")
                worst = max(worst, 1)
                continue
            start = time.perf_counter()
            summary = write_ablation_report(ablation, store, args.reports_dir)
            worst = max(worst, print_outcome(summary, Path(args.reports_dir) / ablation.name))
            if args.publish:
                worst = max(worst, publish(summary, ablation, store, Path(args.reports_dir) / ablation.name))
            console.print(f"{ablation.name}: report rebuilt in {time.perf_counter() - start:.2f} s")
        from reflect.status import refresh_status

        refresh_status([args.runs_dir], args.reports_dir, args.roadmap)
    return worst


if __name__ == "__main__":
    sys.exit(main())
