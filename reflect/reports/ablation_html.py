"""``reports/<ablation>/report.html``: the self-contained ablation report (figures embedded)."""
from __future__ import annotations

from typing import Any

from typing import Optional

from reflect.reports.html import esc, img, page, table
from reflect.reports.text import compared_arms, number, parameter_differences


def _verdict_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, a in summary["arms"].items():
        if a["verdict"] == "baseline":
            rows.append([name, str(a["n"]), number(a["mean"], 3), "—", "—", "baseline", "—", "—",
                         str((a.get("failures") or {}).get("failed", 0)), str(a["parameter_counts"].get("total", "—"))])
            continue
        ci = a.get("delta_ci")
        interval = "—" if not ci else f"[{ci[0]:+.3f}, {ci[1]:+.3f}] ({a['interval_confidence']:.1%})"
        tests = a.get("p_values") or {}
        pv = "; ".join(f"{f}: p = {t['p']:.2g} vs {t['level']:.2g}" for f, t in tests.items()) or "—"
        verdict = a["verdict"] + (f" at {a['decided_at']} seeds" if a.get("decided") else "")
        if a.get("next_seeds"):
            verdict += f" (next look: {a['next_seeds']} seeds)"
        if a.get("underpowered"):
            verdict += " — underpowered"
        fails = a.get("failures") or {}
        mde = a["mde"][-1]["mde"] if a.get("mde") else None
        rows.append([name, str(a["n"]), number(a["mean"], 3), number(a["delta_db"], 3, True), interval, verdict, pv,
                     number(mde, 3), f"{fails.get('failed', 0)}/{fails.get('finished', 0)} (baseline {fails.get('baseline_failed', 0)})",
                     str(a["parameter_counts"].get("total", "—"))])
    return rows


def render_html(summary: dict[str, Any], pngs: dict[str, Optional[bytes]]) -> str:
    """The report page from the summary (its numbers) and the figures drawn from the records (title → PNG)."""
    m, d, design = summary["metric"], summary["decision"], summary["design"]
    body = [f"<h1>Ablation <code>{esc(summary['ablation'])}</code> (phase {summary['phase']})</h1>",
            f"<p><b>Question.</b> {esc(summary['question'])}</p>",
            f"<p><b>Data:</b> {esc(summary.get('data', 'unknown'))}.</p>",
            f"<p>Metric <code>{esc(m['name'])}</code> ({esc(m['mode'])}), mean of the last {m['window']} evaluations "
            f"per trial; baseline <code>{esc(summary['baseline'])}</code>; margin {d['margin']:g} {esc(m['unit'])}; "
            f"α = {d['alpha_per_side']:g} per side over all looks and arms (Holm). {esc(design['description'])}; "
            f"{design['looks_taken']} of {len(design['looks'])} looks taken.</p>"]
    if summary["overrides"] or design.get("from_command_line"):
        what = " ".join(summary["overrides"])
        seeds = " The seeds came from the command line, not the file's design." if design.get("from_command_line") else ""
        body.append(f'<p class="note"><b>This run differs from the ablation file:</b> overrides on every arm: '
                    f"<code>{esc(what or 'none')}</code>.{esc(seeds)} Its numbers are not the file's design.</p>")
    for note in summary["notes"]:
        body.append(f'<p class="note">{esc(note)}</p>')
    body.append("<h2>Verdicts</h2>")
    body.append(table(["arm", "n", "mean", "Δ", "interval (confidence)", "verdict", "p-values vs levels",
                       f"MDE at {design['looks'][-1]} seeds", "failed", "params"], _verdict_rows(summary)))
    extra = parameter_differences(summary)
    if extra:
        body.append(f"<p><b>Parameters, as counted on the trials' models:</b> {esc('; '.join(extra))}.</p>")
    spread = summary["spread"]
    body.append(f"<p class=\"muted\">Paired spread σ<sub>d</sub> = {number(spread['sd'], 3)} {esc(m['unit'])} "
                f"({esc(spread['source'])}). Each p-value is its look's nominal one-sided p; a verdict is taken "
                "when it is at or below its level, and the interval shown is at that same level.</p>")
    for name, a in summary["arms"].items():
        for note in a.get("notes", []):
            body.append(f'<p class="note"><code>{esc(name)}</code>: {esc(note)}</p>')
    for title, png in pngs.items():
        body.append(f"<h2>{esc(title)}</h2>")
        body.append(img(png, title) if png else '<p class="muted">Nothing to draw yet (no trial has the data).</p>')
    exp = summary["expected"]
    if exp.get("gain_db") is not None:
        body.append(f"<h2>Expected vs measured</h2><p>Literature: {exp['gain_db']:+.2f} dB ({esc(exp['source'])}).</p>")
        rows = [[n, number(a["literature"]["measured"], 2, True),
                 f"[{a['literature']['interval'][0]:+.2f}, {a['literature']['interval'][1]:+.2f}]",
                 a["literature"]["outcome"]] for n, a in compared_arms(summary) if a.get("literature")]
        body.append(table(["arm", "measured gain", "interval", "vs literature"], rows))
    if summary.get("tradeoff"):
        from reflect.reports.tradeoff import latency_text

        body.append("<h2>Quality × latency (the roadmap's trade-off table)</h2>")
        body.append(table(["arm", "SR", "Δ vs baseline", "interval", "verdict", "4K latency"], [
            [r["arm"], f"{r['sr_scale']}x", number(r["delta"], 2, True),
             "—" if not r["interval"] else f"[{r['interval'][0]:+.2f}, {r['interval'][1]:+.2f}]",
             r["verdict"] or "—", latency_text(r)] for r in summary["tradeoff"]]))
    frames = [(n, a["frames"]) for n, a in compared_arms(summary) if a.get("frames")]
    if frames:
        body.append("<h2>Frames</h2>" + table(
            ["arm", "frames", "improved", "worst frames (gain)"],
            [[n, f["frames"], f"{f['share_improved']:.0%}", ", ".join(f"{fid} {g:+.3f}" for fid, g in f["worst"])]
             for n, f in frames]))
    trends = [(n, a["convergence"]) for n, a in summary["arms"].items() if a.get("convergence")
              and a["convergence"]["rise"] is not None]
    if trends:
        body.append("<h2>Convergence over the window</h2>" + table(
            ["arm", "rise over window", "steps", "p", "state"],
            [[n, number(c["rise"], 3, True), f"{c['steps'][0]}–{c['steps'][1]}", f"{c['p_value']:.2g}",
              "still improving" if c["still_improving"] else "settled"] for n, c in trends]))
    if summary["exclusions"]:
        body.append("<h2>Not compared</h2>" + table(["trial", "differs in"],
                                                    [[e["key"], ", ".join(e["differences"])] for e in summary["exclusions"]]))
    body.append("<h2>Citations</h2><ul>" + "".join(f"<li>{esc(c)}</li>" for c in summary["citations"]) + "</ul>")
    proto, prov = summary.get("protocol") or {}, summary.get("provenance") or {}
    body.append("<h2>Protocol and provenance</h2>" + table(["", ""], [
        ["resolution", proto.get("resolution")], ["splits", proto.get("splits")],
        ["LPIPS", f"{proto.get('lpips_net')} ({proto.get('lpips')})"], ["dataset", proto.get("dataset_fingerprint")],
        ["renderer", proto.get("render_backend")], ["commit", prov.get("git_commit")], ["device", prov.get("device")],
        ["code versions compared", ", ".join(summary.get("code_versions") or [])]]))
    rows = [[t["key"], t["status"], number(t["value"], 3), t.get("failure_reason") or ""]
            for a in summary["arms"].values() for t in a["trials"]]
    body.append("<h2>Trials used</h2>" + table(["trial", "status", "value", "failure"], rows))
    body.append(f"<p class=\"muted\">Generated {esc(summary['generated_at'])} from the results store.</p>")
    return page(f"Ablation {summary['ablation']}", "".join(body))
