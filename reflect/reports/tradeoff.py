"""The roadmap's quality x latency trade-off table for an ablation over render resolution x SR factor.

Quality comes from the ablation's trials (each arm's paired Δ and interval); latency from the benchmark
records ``benches/bench_latency.py`` appends under ``<runs>/benchmarks/`` (render + decoder + SR at the
roadmap's 4K output, per SR factor). Only GPU records count: a CPU total is not what the roadmap targets, and
the bench records none. Where no record exists the table says so instead of a number.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from reflect.ablation.spec import Ablation


def sr_factor(ablation: Ablation, arm: str) -> int:
    return int(ablation.arms[arm].config.model.decoder.sr_scale)


def tradeoff_rows(ablation: Ablation, summary: dict[str, Any], runs_dirs: Sequence[str | Path]
                  ) -> Optional[list[dict[str, Any]]]:
    """One row per arm (arm, SR factor, Δ and interval, the newest GPU latency for that factor), or None when
    the arms do not differ in ``model.decoder.sr_scale`` (no trade-off to show)."""
    from reflect.roadmap.fleet import latency_records

    factors = {arm: sr_factor(ablation, arm) for arm in ablation.arms}
    if len(set(factors.values())) < 2:
        return None
    gpu = [r for r in latency_records(runs_dirs) if r.get("total_ms") is not None]
    rows = []
    for arm, factor in factors.items():
        stats = summary["arms"].get(arm, {})
        matching = [r for r in gpu if abs(float(r.get("sr", 0)) - factor) < 1e-6]
        newest = max(matching, key=lambda r: str(r.get("at", ""))) if matching else None
        rows.append({
            "arm": arm, "sr_scale": factor, "n": stats.get("n"), "delta": stats.get("delta_db"),
            "interval": stats.get("delta_ci"), "verdict": stats.get("verdict"),
            "latency_ms": None if newest is None else float(newest["total_ms"]),
            "latency_config": None if newest is None else newest.get("config"),
            "latency_device": None if newest is None else newest.get("device"),
        })
    return rows


def latency_text(row: dict[str, Any]) -> str:
    if row["latency_ms"] is not None:
        return f"{row['latency_ms']:.2f} ms ({row['latency_config']}, {row['latency_device']})"
    if row["sr_scale"] == 1:
        return "— (no 4K configuration renders at full resolution in the bench)"
    return "not measured on a GPU (run benches/bench_latency.py there)"
