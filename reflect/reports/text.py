"""How the reports write numbers and pick arms (shared by report.md, report.html and the status page)."""
from __future__ import annotations

from typing import Any, Optional


def number(value: Optional[float], digits: int = 2, signed: bool = False) -> str:
    """A number with ``digits`` decimals (``+`` sign when ``signed``), or an em dash for a missing one."""
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def p_value(value: float) -> str:
    return "<1e-6" if value < 1e-6 else f"{value:.2g}"


def compared_arms(summary: dict[str, Any]) -> list[tuple[str, dict]]:
    """The summary's arms other than the baseline, in file order."""
    return [(n, a) for n, a in summary["arms"].items() if a["verdict"] != "baseline"]


def parameter_differences(summary: dict[str, Any]) -> list[str]:
    """Per arm whose model differs in size from the baseline's: the difference, total and by component."""
    base = summary["arms"].get(summary["baseline"], {}).get("parameter_counts") or {}
    out = []
    for name, arm in summary["arms"].items():
        counts = arm.get("parameter_counts") or {}
        if name == summary["baseline"] or not counts or not base or counts.get("total") == base.get("total"):
            continue
        parts = [f"{part} {counts.get(part, 0) - base.get(part, 0):+,}" for part in sorted(set(counts) | set(base))
                 if part != "total" and counts.get(part, 0) != base.get(part, 0)]
        out.append(f"`{name}` {counts['total'] - base['total']:+,} vs `{summary['baseline']}` ({', '.join(parts)})")
    return out
