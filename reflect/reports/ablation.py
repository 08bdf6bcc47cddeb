"""``reports/<ablation>/summary.json`` and ``report.md`` (+ a curve plot) from the results store.

Every number printed here comes from a trial record; the report lists them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from reflect.ablation.spec import Ablation
from reflect.ablation.store import ResultsStore, TrialRecord, atomic_write_bytes, atomic_write_json, atomic_write_text
from reflect.analysis.inputs import current_records, spread_from_other_studies
from reflect.analysis.verdicts import Spread, analyze
from reflect.reports.ablation_html import render_html
from reflect.reports.figures import report_figures
from reflect.reports.summary import build_summary
from reflect.reports.text import parameter_differences
from reflect.reports.text import compared_arms, number, p_value
from reflect.reports.wandb_report import write_report_definition


def prior_spread(ablation: Ablation, store: ResultsStore) -> Spread | None:
    """The paired spread measured by the other studies under the same runs folder (same profile and metric)."""
    runs_root = store.root.parent
    if not runs_root.is_dir():
        return None
    by_study = {d.name: list(ResultsStore(d).records()) for d in sorted(runs_root.iterdir())
                if d.is_dir() and d != store.root and (d / "trials").is_dir()}
    profile = next(iter(ablation.arms.values())).config.profile
    sd, df, studies = spread_from_other_studies(by_study, ablation.metric.name, profile)
    if sd is None:
        return None
    return Spread(sd, df, f"earlier studies: {', '.join(studies)} ({df} degrees of freedom)")


def summarize(ablation: Ablation, records: list[TrialRecord], prior: Spread | None = None) -> dict[str, Any]:
    """The summary (see :mod:`reflect.reports.summary`) of ``records`` for ``ablation``."""
    return build_summary(ablation, analyze(ablation, records, prior), records)


LITERATURE_WORDS = {"consistent": "**consistent** with the literature (its gain lies in the interval)",
                    "below": "**below** the literature's gain (the whole interval is under it)",
                    "above": "**above** the literature's gain (the whole interval is over it)"}


def render_markdown(summary: dict[str, Any], plot_name: str | None) -> str:
    """The human report: question, design, verdicts with p-values and intervals, evidence, trials used."""
    m, d, design = summary["metric"], summary["decision"], summary["design"]
    unit = m["unit"]
    digits = 2 if unit == "dB" else 4
    lines = [
        f"# Ablation `{summary['ablation']}` (phase {summary['phase']})", "",
        f"**Question.** {summary['question']}", "",
        f"**Data:** {summary.get('data', 'unknown')}.", "",
        f"Metric: `{m['name']}` ({m['mode']}), mean of the last {m['window']} evaluations per trial; baseline arm "
        f"`{summary['baseline']}`; margin {d['margin']:g} {unit}; error {d['alpha_per_side']:g} per side "
        f"({d['confidence']:.0%}) over all looks and arms (Holm). Design: {design['description']}; "
        f"{design['looks_taken']} of {len(design['looks'])} look(s) taken.", "",
    ]
    if summary["overrides"]:
        lines += [f"**Command-line overrides on every arm** (the numbers are not the file's design): "
                  f"`{' '.join(summary['overrides'])}`", ""]
    for note in summary["notes"]:
        lines.append(f"> {note}")
    if summary["notes"]:
        lines.append("")
    lines += [
        f"| arm | n | mean | Δ vs baseline | interval | verdict | p better / worse / equivalent (level) | "
        f"MDE at {design['looks'][-1]} seeds | failed | params |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, a in summary["arms"].items():
        if a["verdict"] == "baseline":
            lines.append(f"| `{name}` | {a['n']} | {number(a['mean'], digits)} | — | — | baseline | — | — | "
                         f"{a['failures']['failed'] if a['failures'] else 0} | {a['parameter_counts'].get('total', '—')} |")
            continue
        ci = a["delta_ci"]
        interval = "—" if not ci else (f"[{number(ci[0], digits, True)}, {number(ci[1], digits, True)}] "
                                       f"({a['interval_confidence']:.1%})")
        tests = a["p_values"]
        pv = " / ".join(p_value(tests[f]["p"]) for f in ("better", "worse", "equivalent")) if tests else "—"
        if tests:
            pv += f" ({tests['better']['level']:.2g})"
        mde = a["mde"][-1]["mde"] if a["mde"] else None
        verdict = a["verdict"] + (f" at {a['decided_at']} seeds" if a["decided"] else "")
        if a["next_seeds"]:
            verdict += f"; next look {a['next_seeds']} seeds"
        if a["underpowered"]:
            verdict += "; **underpowered**"
        fails = a["failures"]
        lines.append(f"| `{name}` | {a['n']} | {number(a['mean'], digits)} | {number(a['delta_db'], digits, True)} | "
                     f"{interval} | {verdict} | {pv} | {number(mde, digits)} | "
                     f"{fails['failed']}/{fails['finished']} (baseline {fails['baseline_failed']}) | "
                     f"{a['parameter_counts'].get('total', '—')} |")
    spread = summary["spread"]
    lines += ["", f"Paired spread σ_d for power: {number(spread['sd'], 3)} {unit} ({spread['source']}). "
              "The p-values are each look's nominal one-sided p; a verdict is taken when one is at or below its "
              "level (the group-sequential boundary at the arm's Holm weight); the interval is at the same level."]
    extra = parameter_differences(summary)
    if extra:
        lines += ["", "**Parameters, as counted on the trials' models:** " + "; ".join(extra) + "."]
    arms = compared_arms(summary)
    if any(a["mde"] for _, a in arms):
        looks = design["looks"]
        lines += ["", "**Minimum detectable effect** (80% power, at each look's level):", "",
                  "| arm | " + " | ".join(f"{n} seeds" for n in looks) + " |", "|---|" + "---|" * len(looks)]
        for n, a in arms:
            lines.append(f"| `{n}` | " + " | ".join(number(r["mde"], digits) for r in a["mde"]) + " |")
    exp = summary["expected"]
    if exp.get("gain_db") is not None:
        lines += ["", f"**Expected from the literature:** {exp['gain_db']:+.2f} dB ({exp['source']})."]
        for n, a in arms:
            lit = a.get("literature")
            if lit:
                lines.append(f"- `{n}`: measured {lit['measured']:+.2f} dB, interval [{lit['interval'][0]:+.2f}, "
                             f"{lit['interval'][1]:+.2f}]: {LITERATURE_WORDS[lit['outcome']]}.")
    for n, a in summary["arms"].items():
        for note in a["notes"]:
            lines.append(f"- `{n}`: {note}")
    frames = [(n, a["frames"]) for n, a in arms if a.get("frames")]
    if frames:
        lines += ["", "**Frames** (description beside the seed-level verdict: per evaluation frame, the paired "
                  "gain averaged over the window's evaluations and the seeds):", ""]
        for n, f in frames:
            worst = ", ".join(f"`{fid}` {g:+.{digits}f}" for fid, g in f["worst"])
            lines.append(f"- `{n}`: {f['share_improved']:.0%} of {f['frames']} frames improved "
                         f"({f['evaluations']} evaluation(s) per trial); worst: {worst}")
    trends = [(n, a["convergence"]) for n, a in summary["arms"].items() if a.get("convergence")
              and a["convergence"]["rise"] is not None]
    if trends:
        lines += ["", "**Convergence** (change of the metric over the averaging window, from each seed's slope):", ""]
        for n, c in trends:
            state = "still improving" if c["still_improving"] else "settled"
            lines.append(f"- `{n}`: {c['rise']:+.{digits}f} {unit} from step {c['steps'][0]} to {c['steps'][1]} "
                         f"(p = {p_value(c['p_value'])}, {c['seeds']} seeds): {state}")
    if summary["exclusions"]:
        lines += ["", "**Not compared** (evaluation protocol differs from the baseline's):"]
        lines += [f"- `{e['key']}`: {', '.join(e['differences'])}" for e in summary["exclusions"]]
    other = sorted({k for a in summary["arms"].values() for k in a.get("other_metrics", {})})
    if other:
        lines += ["", "**Other metrics** (same trials and window; mean per arm, paired Δ vs the baseline in "
                  "brackets; context only, no verdicts):", "",
                  "| metric | " + " | ".join(f"`{n}`" for n in summary["arms"]) + " |",
                  "|---|" + "---|" * len(summary["arms"])]
        for key in other:
            cells = []
            for a in summary["arms"].values():
                om = a.get("other_metrics", {}).get(key)
                cells.append("—" if om is None else f"{om['mean']:.3f}" + ("" if om["delta"] is None else
                                                                            f" ({om['delta']:+.3f})"))
            lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    lines += ["", "**Citations:**"] + [f"- {c}" for c in summary["citations"]]
    proto = summary.get("protocol") or {}
    if proto:
        lines += ["", "**Evaluation protocol:** "
                  f"resolution {proto.get('resolution')}, splits {proto.get('splits')}, background "
                  f"{proto.get('background')}, LPIPS {proto.get('lpips_net')} ({proto.get('lpips')}), dataset "
                  f"`{proto.get('dataset_fingerprint')}`, renderer {proto.get('render_backend')}."]
    versions = summary.get("code_versions") or []
    if len(versions) > 1:
        lines += [f"**Warning:** the compared trials ran on {len(versions)} code versions ({', '.join(versions)}); "
                  "if the change between them affects training, rerun them (delete their records) before deciding."]
    prov = summary.get("provenance") or {}
    if prov:
        lines += [f"**Provenance:** commit `{prov.get('git_commit')}`{' (dirty)' if prov.get('git_dirty') else ''}, "
                  f"packages {prov.get('packages')}."]
    if plot_name:
        lines += ["", f"![curves]({plot_name})"]
    lines += ["", "## Trials used"]
    for name, a in summary["arms"].items():
        for t in a["trials"]:
            val = "—" if t["value"] is None else f"{t['value']:.3f}"
            why = f" — {t['failure_reason']}" if t.get("failure_reason") else ""
            if t.get("wandb_error"):
                why += f" (no W&B mirror: {t['wandb_error']})"
            lines.append(f"- `{t['key']}`: {t['status']}, {val}{why}")
    if summary.get("tradeoff"):
        from reflect.reports.tradeoff import latency_text

        lines += ["", "## Quality × latency (the roadmap's trade-off table)", "",
                  "Quality: this ablation's trials. Latency: render + decoder + SR at the roadmap's 4K output, "
                  "from `benches/bench_latency.py` records on a GPU.", "",
                  "| arm | SR | Δ vs baseline | interval | verdict | 4K latency |", "|---|---|---|---|---|---|"]
        for row in summary["tradeoff"]:
            delta = "—" if row["delta"] is None else f"{row['delta']:+.2f}"
            interval = "—" if not row["interval"] else f"[{row['interval'][0]:+.2f}, {row['interval'][1]:+.2f}]"
            lines.append(f"| `{row['arm']}` | {row['sr_scale']}x | {delta} | {interval} | {row['verdict'] or '—'} | "
                         f"{latency_text(row)} |")
    lines.append(f"\n_Generated {summary['generated_at']} from the results store._")
    return "\n".join(lines) + "\n"


def write_ablation_report(ablation: Ablation, store: ResultsStore, reports_dir: str | Path = "reports") -> dict:
    """Write ``reports/<name>/summary.json``, ``report.md``, ``report.html``, ``curves.png`` and the W&B report
    definition ``wandb_report.json``; returns the summary.

    Each file is written atomically. A render a figure cannot draw (a damaged PNG, a trial whose renders were
    lost) is left out of it and named in the report's notes (report.md and report.html; summary.json keeps the
    analysis' notes only).

    Args:
        ablation: the loaded ablation (with the overrides, profile and seeds the run used).
        store: its results store (the only source of the numbers).
        reports_dir: the reports root.
    Returns:
        The summary, as written to ``summary.json``.
    """
    out = Path(reports_dir) / ablation.name
    out.mkdir(parents=True, exist_ok=True)
    records = list(store.records())
    summary = summarize(ablation, records, prior_spread(ablation, store))
    from reflect.reports.tradeoff import tradeoff_rows

    tradeoff = tradeoff_rows(ablation, summary, [store.root.parent])
    if tradeoff is not None:
        summary["tradeoff"] = tradeoff
    atomic_write_json(out / "summary.json", summary)
    used = current_records(ablation, records)  # older runs stay in the store, never mixed into a report
    figure_notes: list[str] = []  # what the figures left out (a damaged render): shown with the report's notes
    pngs = report_figures(summary, used, figure_notes)
    shown = {**summary, "notes": [*summary["notes"], *figure_notes]}
    curves = pngs["Learning curves"]
    # every file atomically (temp file + os.replace): a kill mid-write leaves the previous report whole
    if curves is not None:
        atomic_write_bytes(out / "curves.png", curves)
    atomic_write_text(out / "report.md", render_markdown(shown, "curves.png" if curves else None))
    atomic_write_text(out / "report.html", render_html(shown, pngs))
    write_report_definition(summary, ablation.arms[ablation.baseline].config.tracking, out)
    return summary
