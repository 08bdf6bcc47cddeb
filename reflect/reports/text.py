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
