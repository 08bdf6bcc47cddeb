"""The roadmap's quality x latency trade-off table for an ablation over render resolution x SR factor.

Quality comes from the ablation's trials (each arm's paired Δ and interval); latency from the benchmark
records ``benches/bench_latency.py`` appends under ``<runs>/benchmarks/`` (render + decoder + SR at the
roadmap's 4K output, per SR factor). Only the records the roadmap's latency gate would accept count: its
output, on a GPU, with a finite total and at least the gate's ``min_gaussians`` (a toy scene's latency is not
the roadmap's). Where no such record exists the table says so instead of a number.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

from reflect.ablation.spec import Ablation
from reflect.roadmap.spec import LatencyCondition, Roadmap


def sr_factor(ablation: Ablation, arm: str) -> int:
    return int(ablation.arms[arm].config.model.decoder.sr_scale)


def latency_condition(roadmap: Roadmap) -> Optional[LatencyCondition]:
    """The roadmap's latency condition (the first, in phase order), the one this table informs."""
    return next((c for p in roadmap.phases for g in p.gates for c in g.conditions
                 if isinstance(c, LatencyCondition)), None)


def counts_for_latency_gate(record: dict[str, Any], condition: LatencyCondition) -> bool:
    """Whether a benchmark record is one the latency gate reads: the condition's output, a CUDA device, a
    finite total and at least ``condition.min_gaussians`` Gaussians.

    The same rule as ``reflect.roadmap.gates._latency`` (tests/test_status_numbers.py holds the two to one
    answer on every kind of record); the gate keeps its own copy because gates.py is not this module's to edit.
    """
    total = record.get("total_ms")
    return (record.get("output") == condition.output and str(record.get("device_type")) == "cuda"
            and isinstance(total, (int, float)) and math.isfinite(total)
            and int(record.get("gaussians") or 0) >= condition.min_gaussians)


def tradeoff_rows(ablation: Ablation, summary: dict[str, Any], runs_dirs: Sequence[str | Path],
                  roadmap: Optional[Roadmap] = None) -> Optional[list[dict[str, Any]]]:
    """One row per arm (arm, SR factor, Δ and interval, the newest gate-eligible latency for that factor), or None
    when the arms do not differ in ``model.decoder.sr_scale`` (no trade-off to show).

    Args:
        roadmap: whose latency condition decides which records count (default: the repository's roadmap.yaml).
    """
    from reflect.roadmap.fleet import latency_records

    factors = {arm: sr_factor(ablation, arm) for arm in ablation.arms}
    if len(set(factors.values())) < 2:
        return None
    if roadmap is None:
        from reflect.roadmap.spec import load_roadmap

        roadmap = load_roadmap()
    condition = latency_condition(roadmap)
    eligible = [] if condition is None else [r for r in latency_records(runs_dirs)
                                             if counts_for_latency_gate(r, condition)]
    rows = []
    for arm, factor in factors.items():
        stats = summary["arms"].get(arm, {})
        matching = [r for r in eligible if abs(float(r.get("sr", 0)) - factor) < 1e-6]
        newest = max(matching, key=lambda r: str(r.get("at", ""))) if matching else None
        rows.append({
            "arm": arm, "sr_scale": factor, "n": stats.get("n"), "delta": stats.get("delta_db"),
            "interval": stats.get("delta_ci"), "verdict": stats.get("verdict"),
            "latency_ms": None if newest is None else float(newest["total_ms"]),
            "latency_config": None if newest is None else newest.get("config"),
            "latency_device": None if newest is None else newest.get("device"),
            "latency_gaussians": None if newest is None else int(newest["gaussians"]),
            "latency_min_gaussians": None if condition is None else condition.min_gaussians,
        })
    return rows


def latency_text(row: dict[str, Any]) -> str:
    if row["latency_ms"] is not None:
        gaussians = row.get("latency_gaussians")
        count = "" if gaussians is None else f", {gaussians:,} Gaussians"
        return f"{row['latency_ms']:.2f} ms ({row['latency_config']}, {row['latency_device']}{count})"
    if row["sr_scale"] == 1:
        return "— (no 4K configuration renders at full resolution in the bench)"
    least = row.get("latency_min_gaussians")
    scene = "" if least is None else f" with at least {least:,} Gaussians"
    return f"not measured on a GPU{scene} (run benches/bench_latency.py there)"
