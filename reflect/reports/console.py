"""The verdict table printed at the end of ``reflect.ablate`` and by ``reflect.report``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def print_machine_problems(problems: list[str], what: str) -> None:
    """Why this machine cannot run the ``what`` (an ablation, a sweep) as configured; nothing was (or will be)
    trained. ``problems``: one line each (``reflect.ablation.machine``)."""
    console.print(f"[red]this machine cannot run the {what} as configured; nothing was trained:[/]")
    for problem in problems:
        console.print(f"  - {problem}", markup=False)


def print_outcome(summary: dict[str, Any], out_dir: Path) -> int:
    """Print the per-arm verdicts of ``summary``; returns 0, or 1 when nothing could be scored."""
    metric, design = summary["metric"], summary["design"]
    table = Table(title=f"{summary['ablation']}: {metric['name']} (avg of last {metric['window']} evals), "
                        f"{design['description']}, {design['looks_taken']}/{len(design['looks'])} looks taken")
    for col in ("arm", "n", "mean", "Δ vs baseline", "interval", "p (verdict's test)", "verdict"):
        table.add_column(col)
    scored = False
    for name, a in summary["arms"].items():
        delta, dci = a.get("delta_db"), a.get("delta_ci")
        if name != summary["baseline"] and delta is not None:
            scored = True
        p_text = "—"
        if a.get("p_values"):
            family = a["verdict"] if a["verdict"] in a["p_values"] else min(a["p_values"], key=lambda f: a["p_values"][f]["p"])
            test = a["p_values"][family]
            p_text = f"{family}: {test['p']:.2g} ≤ {test['level']:.2g}" if test["rejected"] else \
                f"{family}: {test['p']:.2g} > {test['level']:.2g}"
        verdict = a["verdict"]
        if a.get("next_seeds"):
            verdict += f" (next look: {a['next_seeds']} seeds)"
        table.add_row(name, str(a["n"]), "—" if a["mean"] is None else f"{a['mean']:.3f}",
                      "—" if delta is None else f"{delta:+.3f}",
                      "—" if not dci else f"[{dci[0]:+.3f}, {dci[1]:+.3f}] ({a['interval_confidence']:.1%})",
                      p_text, verdict)
    console.print(table)
    for note in summary["notes"]:
        console.print(f"[yellow]note[/] {note}")
    for name, a in summary["arms"].items():
        for note in a.get("notes", []):
            console.print(f"[yellow]{name}[/]: {note}")
        for t in a["trials"]:
            if t["status"] == "failed":
                console.print(f"[yellow]failed[/] {t['key']}: {t['failure_reason']}")
    console.print(f"report: {out_dir / 'report.md'}  summary: {out_dir / 'summary.json'}")
    if not scored:
        base = summary["arms"][summary["baseline"]]
        why = (f"the baseline arm '{summary['baseline']}' has no complete trial" if base["n"] == 0
               else "no arm has complete trials paired with the baseline's seeds")
        console.print(f"[red]nothing could be scored: {why}[/]")
        return 1
    return 0
