"""``reports/status.{json,md,html}``: the roadmap dashboard, like the header of the roadmap file."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from reflect.ablation.store import atomic_write_json, atomic_write_text
from reflect.reports.html import esc, figure_png, img, page, table
from reflect.reports.text import number
from reflect.roadmap.spec import MetricCondition, Roadmap
from reflect.roadmap.status import RoadmapStatus


def synthetic_note(status: RoadmapStatus, roadmap: Roadmap) -> str:
    """The note over a synthetic-only fleet: the image sizes its trials recorded, and the roadmap's own Phase 1
    target (its phase-passing gate's val/psnr threshold), read from the loaded roadmap."""
    sizes = status.resolutions
    where = f" at {' and '.join(f'{s} px' for s in sizes)}" if sizes else " (no trial recorded its image size)"
    target = ""
    first = next((p for p in roadmap.phases if p.phase == 1), None)
    gate = next(iter(first.passing_gates), None) if first is not None else None
    psnr = next((c for c in gate.conditions if isinstance(c, MetricCondition) and c.metric.endswith("/psnr")),
                None) if gate is not None else None
    if psnr is not None:
        bound = (f"in [{psnr.range[0]:g}, {psnr.range[1]:g}] dB" if psnr.comparator == "between"
                 else f"{psnr.comparator} {psnr.threshold:g} dB")
        target = f", such as Phase 1's {gate.name} gate ({psnr.metric} avg{psnr.window} {bound})"
    return (f"Every trial in this fleet ran on the embedded synthetic head{where}: its PSNR is not comparable with "
            f"the roadmap's real-capture targets{target}, whichever side of them it falls. The gates below are "
            "evaluated as they would be on real captures, to show the machinery; point data.root at a capture to "
            "place the project for real.")


def status_json(status: RoadmapStatus) -> dict[str, Any]:
    """The JSON form: ``current_phase``, ``progress``, ``best``, ``phases`` (with conditions and states)."""
    def phase_entry(p):
        return {
            "phase": p.phase, "title": p.title, "db_range": p.db_range, "outcome": p.outcome, "passed": p.passed,
            "missing": p.missing,
            "gates": [{"gate": g.gate, "text": g.text, "state": g.state, "passes_phase": g.passes_phase, "source": g.source,
                       "conditions": [asdict(c) for c in g.conditions]} for g in p.gates],
            "conditions": [{"gate": g.gate, **asdict(c)} for g in p.gates for c in g.conditions],
            "decisions": [{**asdict(d), "forecast": None if d.forecast is None else
                           {**asdict(d.forecast), "trial_hours": d.forecast.trial_hours}} for d in p.decisions],
        }
    return {
        "roadmap": status.roadmap, "current_phase": status.current_phase,
        "progress": {"passed": status.passed, "total": status.total, "percent": status.percent},
        "best": {k: {"value": b.value, "trial": b.trial, "metric": b.metric, "interval": b.interval, "seeds": b.seeds,
                     "synthetic": b.synthetic} for k, b in status.best.items()},
        "phases": [phase_entry(p) for p in status.phases],
        "fleet": {"groups": status.groups, "synthetic_only": status.synthetic_only, "runs_dirs": status.runs_dirs,
                  "resolutions": status.resolutions},
        "updated": status.updated,
    }


def _header_lines(status: RoadmapStatus) -> list[str]:
    b = status.best
    detected = f"PSNR {number(b['psnr'].value, 2)} dB, LPIPS {number(b['lpips'].value, 4)}"
    return [f"Status: Phase {status.current_phase} (auto-detected from fleet: {detected})",
            f"Overall Progress: {status.passed}/{status.total} phases · {status.percent:.0f}%",
            f"Best PSNR: {number(b['psnr'].value, 2)} dB ({b['psnr'].trial or 'no trial'})",
            f"Best LPIPS: {number(b['lpips'].value, 4)} ({b['lpips'].trial or 'unavailable: no trial evaluated LPIPS'})",
            f"Best SSIM: {number(b['ssim'].value, 4)} ({b['ssim'].trial or 'no trial'})",
            f"Updated: {status.updated}"]


def _forecast_text(d) -> str:
    f = d.forecast
    if f is None:
        return "—"
    hours = f.trial_hours
    cost = "; ".join(f"{h:.2f} trial-hours on {device}" for device, h in hours.items()) or \
        "cost unknown (no trial measured yet)"
    return f"{f.trials} trials, {cost}"


def _md(text) -> str:
    """A markdown table cell: pipes escaped, no line breaks."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_status_md(status: RoadmapStatus, roadmap: Roadmap) -> str:
    lines = [f"# {roadmap.title}", ""] + [f"{line}  " for line in _header_lines(status)] + [""]
    if status.synthetic_only:
        lines += [f"> {synthetic_note(status, roadmap)}", ""]
    lines += ["## Quality ladder", "", "| Milestone | PSNR | SSIM | LPIPS | What it looks like | Best now |", "|---|---|---|---|---|---|"]
    best = status.best["psnr"].value
    for m in roadmap.ladder:
        psnr = f"{m.psnr:g}" + (f"-{m.psnr_high:g}" if m.psnr_high else "") + " dB"
        reached = "—" if best is None else ("reached" if best >= m.psnr else f"{best - m.psnr:+.2f} dB")
        lines.append(f"| {_md(m.milestone)} | {psnr} | {m.ssim:g} | {m.lpips:g} | {_md(m.looks_like)} | {reached} |")
    for p in status.phases:
        lines += ["", f"## Phase {p.phase}: {p.title} — **{p.outcome}**" + (" (passed)" if p.passed else ""), ""]
        if p.decisions:
            lines += ["| decision | file | state | verdicts | still needed |", "|---|---|---|---|---|"]
            for d in p.decisions:
                verdicts = ", ".join(f"{a}: {v}" for a, v in d.verdicts.items()) or "—"
                lines.append(f"| {_md(d.id)} | `{_md(d.file)}` | {d.state} | {_md(verdicts)} | {_md(_forecast_text(d))} |")
            lines.append("")
        for g in p.gates:
            source = "" if g.source == "ROADMAP_V3" else f" _(source: {g.source})_"
            lines.append(f"- **{g.gate}** ({g.state}): {g.text}{source}")
            for c in g.conditions:
                extra = ""
                if c.probability is not None:
                    extra = f"; P(met) = {c.probability:.2f}"
                if c.seeds_to_settle is not None:
                    extra += f"; ~{c.seeds_to_settle} seeds would settle it"
                lines.append(f"  - {c.description}: **{c.state}** — {c.detail}{extra}")
    lines += ["", "## What not to do", ""] + [
        f"- **{x.get('item')}** — {x.get('evidence')}" + (f" (confirmed by `{x['file']}`)" if x.get("file") else "")
        for x in roadmap.not_to_do]
    return "\n".join(lines) + "\n"


def _ladder_figure(status: RoadmapStatus, roadmap: Roadmap) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2.8))
    names = [m.milestone for m in roadmap.ladder]
    for i, m in enumerate(roadmap.ladder):
        ax.barh(i, (m.psnr_high or m.psnr + 0.3) - m.psnr, left=m.psnr, color="#c9d4f2", edgecolor="#5a6fb0")
    best = status.best["psnr"]
    if best.value is not None:
        ax.axvline(best.value, color="#b3261e", lw=2, label=f"best {best.value:.2f} dB ({best.trial})")
        if best.interval:
            ax.axvspan(best.interval[0], best.interval[1], color="#b3261e", alpha=0.15, label="95% interval")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("val PSNR (dB)")
    if best.value is not None:
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.set_title("Quality ladder (no trial in the fleet yet)")
    ax.grid(axis="x", alpha=0.3)
    if best.value is not None:
        ax.set_title("Quality ladder and the fleet's best")
    fig.tight_layout()
    return figure_png(fig)


def render_status_html(status: RoadmapStatus, roadmap: Roadmap) -> str:
    body = [f"<h1>{esc(roadmap.title)}</h1>", "<p>" + "<br>".join(esc(line) for line in _header_lines(status)) + "</p>"]
    if status.synthetic_only:
        body.append(f'<p class="note">{esc(synthetic_note(status, roadmap))}</p>')
    body.append(img(_ladder_figure(status, roadmap), "quality ladder", "Roadmap milestones (bars) and the best "
                    "configuration's windowed val PSNR with its 95% interval over seeds."))
    best = status.best["psnr"].value
    rows = []
    for m in roadmap.ladder:
        psnr = f"{m.psnr:g}" + (f"-{m.psnr_high:g}" if m.psnr_high else "") + " dB"
        rows.append([m.milestone, psnr, f"{m.ssim:g}", f"{m.lpips:g}", m.looks_like,
                     "—" if best is None else ("reached" if best >= m.psnr else f"{best - m.psnr:+.2f} dB")])
    body += ["<h2>Quality ladder</h2>", table(["Milestone", "PSNR", "SSIM", "LPIPS", "What it looks like", "Best now"], rows)]
    for p in status.phases:
        body.append(f"<h2>Phase {p.phase}: {esc(p.title)} — <span class=\"state-{esc(p.outcome)}\">{esc(p.outcome)}"
                    f"</span>{' (passed)' if p.passed else ''}</h2>")
        if p.decisions:
            body.append(table(["decision", "file", "state", "verdicts", "still needed"],
                              [[d.id, d.file, d.state, ", ".join(f"{a}: {v}" for a, v in d.verdicts.items()) or "—",
                                _forecast_text(d)] for d in p.decisions]))
        for g in p.gates:
            conds = []
            for c in g.conditions:
                extra = "" if c.probability is None else f"; P(met) = {c.probability:.2f}"
                if c.seeds_to_settle is not None:
                    extra += f"; ~{c.seeds_to_settle} seeds would settle it"
                conds.append([c.description, f'<span class="state-{c.state}">{c.state}</span>', esc(c.detail + extra)])
            source = "" if g.source == "ROADMAP_V3" else f' <span class="muted">(source: {esc(g.source)})</span>'
            body.append(f"<p><b>{esc(g.gate)}</b> (<span class=\"state-{g.state}\">{esc(g.state)}</span>): "
                        f"{esc(g.text)}{source}</p>")
            body.append(table(["condition", "state", "evidence"], conds, raw_columns=(1, 2)))
    body.append("<h2>What not to do</h2><ul>" + "".join(f"<li><b>{esc(x.get('item'))}</b> — {esc(x.get('evidence'))}"
                                                        + (f" (confirmed by <code>{esc(x['file'])}</code>)" if x.get("file") else "")
                                                        + "</li>"
                                                        for x in roadmap.not_to_do) + "</ul>")
    body.append("<h2>References</h2>" + table(["paper", "venue", "contribution", "PSNR or latency", "setting"],
                                              [[r.get("paper"), r.get("venue"), r.get("contribution"), r.get("psnr"),
                                                r.get("setting")] for r in roadmap.references]))
    return page(f"{roadmap.title}: status", "".join(body))


def write_status(status: RoadmapStatus, roadmap: Roadmap, reports_dir: str | Path) -> Path:
    """Write ``status.json``, ``status.md`` and ``status.html`` under ``reports_dir``; returns the html path."""
    out = Path(reports_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "status.json", status_json(status))
    atomic_write_text(out / "status.md", render_status_md(status, roadmap))
    path = out / "status.html"
    atomic_write_text(path, render_status_html(status, roadmap))
    return path
