"""``python -m reflect.signoff PHASE CHECK --by NAME --note "..."``: record a human sign-off a gate needs.

Sign-offs are append-only (``<runs>/signoffs.jsonl``): who, when, the note, the code version and the trials
looked at (``--trials KEY,KEY``; default: every complete trial of the fleet's best configuration).
``--revoke`` records a revocation; ``--list`` shows every entry. The status pages are refreshed after a change.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from reflect.cli_errors import exit_on_user_error
from reflect.reports.console import console


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m reflect.signoff PHASE CONDITION --by WHO --note TEXT`` (or ``--revoke``, ``--list``): record a
    person's sign-off of a roadmap condition in ``runs/signoffs.jsonl``.

    Args:
        argv: the command line after the program name (None: ``sys.argv[1:]``); ``--help`` lists it.
    Returns:
        0 when recorded (or listed); a user error (unknown phase or condition, bad arguments) exits 2.
    """
    p = argparse.ArgumentParser(prog="python -m reflect.signoff", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", nargs="?", type=int, help="the roadmap phase (1-6)")
    p.add_argument("check", nargs="?", help="the sign-off a gate names, e.g. expression_tracking")
    p.add_argument("--by", help="who signs off")
    p.add_argument("--note", default="", help="what was looked at and seen")
    p.add_argument("--trials", help="comma-separated trial keys looked at (default: the best configuration's)")
    p.add_argument("--revoke", action="store_true", help="record a revocation of this sign-off")
    p.add_argument("--list", action="store_true", help="list every recorded sign-off and revocation")
    p.add_argument("--runs-dir", default="runs", help="results store root holding signoffs.jsonl (default: runs)")
    p.add_argument("--reports-dir", default="reports", help="where the refreshed status pages go (default: reports)")
    from reflect.status import add_roadmap_args

    add_roadmap_args(p)
    args = p.parse_args(argv)
    with exit_on_user_error("reflect.signoff"):
        from reflect.config_loading import ConfigError
        from reflect.roadmap.signoffs import Signoff, now_iso, read_signoffs, record_signoff

        if args.list:
            entries = read_signoffs([args.runs_dir])
            if not entries:
                console.print(f"no sign-offs recorded in {args.runs_dir}")
            for s in entries:
                what = "REVOKED" if s.revoked else "signed off"
                console.print(f"{s.at}  phase {s.phase}  {s.check}: {what} by {s.by} (code {s.code_version}; "
                              f"{len(s.trials)} trials) {s.note}")
            return 0
        if args.phase is None or args.check is None or not args.by:
            raise ConfigError("reflect.signoff", "expected PHASE CHECK --by NAME (or --list)")
        from reflect.roadmap.spec import load_roadmap

        roadmap = load_roadmap(args.roadmap)
        checks = {c.check for ph in roadmap.phases if ph.phase == args.phase for g in ph.gates
                  for c in g.conditions if hasattr(c, "check")}
        if args.check not in checks:
            raise ConfigError("reflect.signoff", f"phase {args.phase} has no sign-off {args.check!r}; its gates name "
                              f"{sorted(checks) or 'none'}")
        if args.trials:
            trials = tuple(t for t in args.trials.split(",") if t)
        else:
            from reflect.roadmap.fleet import best_group, load_fleet

            best = best_group(load_fleet([args.runs_dir]), "val/psnr", 20)
            trials = tuple(r.key for r in best.group.records) if best else ()
        from reflect.ablation.execute import provenance

        prov = provenance()
        version = f"{prov['git_commit']}{' (dirty)' if prov.get('git_dirty') else ''}"
        path = record_signoff(args.runs_dir, Signoff(args.phase, args.check, args.by, args.note, now_iso(), version,
                                                     trials, args.revoke))
        console.print(f"{'revoked' if args.revoke else 'signed off'}: phase {args.phase} {args.check} by {args.by} "
                      f"({len(trials)} trials) → {path}")
        from reflect.status import refresh_status

        refresh_status([args.runs_dir], args.reports_dir, args.roadmap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
