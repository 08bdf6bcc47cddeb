"""The ablation report's figures (matplotlib, PNG bytes), drawn from the summary and the trial records only.

- forest plot: each arm's paired Δ with the interval its verdict used, the ±margin band;
- paired lines: each seed's baseline value → arm value;
- learning curves: mean ± spread over seeds, per arm;
- sequential looks: the gain's interval at every look taken, against the ±margin boundaries;
- image grid: ground truth, each arm's render and its error map, on the same evaluation frames.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from reflect.ablation.store import COMPLETE, TrialRecord
from reflect.reports.html import figure_png
from reflect.reports.text import compared_arms


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def forest_plot(summary: dict[str, Any]) -> Optional[bytes]:
    arms = [(n, a) for n, a in compared_arms(summary) if a.get("delta_ci")]
    if not arms:
        return None
    plt = _plt()
    margin, unit = summary["decision"]["margin"], summary["metric"]["unit"]
    fig, ax = plt.subplots(figsize=(8, 0.7 * len(arms) + 1.6))
    ax.axvspan(-margin, margin, color="#e6e9f2", label=f"±margin ({margin:g} {unit})")
    ax.axvline(0, color="#888", lw=1)
    for i, (name, a) in enumerate(arms):
        lo, hi = a["delta_ci"]
        ax.plot([lo, hi], [i, i], color="#2f4fa8", lw=3)
        ax.plot(a["delta_db"], i, "o", color="#b3261e")
        ax.annotate(f"{a['verdict']} ({a['interval_confidence']:.1%})", (hi, i), xytext=(6, -3),
                    textcoords="offset points", fontsize=8)
    ax.set_yticks(range(len(arms)), [n for n, _ in arms])
    ax.set_xlabel(f"Δ {summary['metric']['name']} vs {summary['baseline']} ({unit})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title("Paired Δ per arm, with the interval its verdict used", fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


def paired_lines(summary: dict[str, Any]) -> Optional[bytes]:
    arms = [(n, a) for n, a in compared_arms(summary) if a.get("seeds_used")]
    if not arms:
        return None
    base = {t["seed"]: t["value"] for t in summary["arms"][summary["baseline"]]["trials"] if t["value"] is not None}
    plt = _plt()
    fig, axes = plt.subplots(1, len(arms), figsize=(3.2 * len(arms) + 0.5, 3.2), squeeze=False)
    for ax, (name, a) in zip(axes[0], arms):
        mine = {t["seed"]: t["value"] for t in a["trials"] if t["value"] is not None}
        for seed in a["seeds_used"]:
            if seed in base and seed in mine:
                ax.plot([0, 1], [base[seed], mine[seed]], "-o", color="#2f4fa8", alpha=0.7)
                ax.annotate(f"s{seed}", (1, mine[seed]), xytext=(4, -3), textcoords="offset points", fontsize=7)
        ax.set_xticks([0, 1], [summary["baseline"], name])
        ax.set_xlim(-0.3, 1.4)
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(summary["metric"]["name"])
    fig.suptitle("Each seed: baseline → arm (paired)")
    fig.tight_layout()
    return figure_png(fig)


def learning_curves(summary: dict[str, Any], records: list[TrialRecord]) -> Optional[bytes]:
    metric = summary["metric"]["name"]
    used = {(n, t["key"]) for n, a in summary["arms"].items() for t in a["trials"]}
    done = [r for r in records if r.status == COMPLETE and (r.arm, r.key) in used and r.eval_history]
    if not done:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for i, name in enumerate(summary["arms"]):
        curves = [{h["step"]: h[metric] for h in r.eval_history if h.get(metric) is not None}
                  for r in done if r.arm == name]
        steps = sorted({s for c in curves for s in c})
        if not steps:
            continue
        values = [[c[s] for c in curves if s in c] for s in steps]
        mean = np.array([np.mean(v) for v in values])
        spread = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values])
        ax.plot(steps, mean, color=f"C{i}", label=f"{name} ({len(curves)} seeds)")
        ax.fill_between(steps, mean - spread, mean + spread, color=f"C{i}", alpha=0.2)
    window = summary["metric"]["window"]
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"Mean ± sd over seeds; the verdict averages the last {window} evaluations", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def looks_plot(summary: dict[str, Any]) -> Optional[bytes]:
    arms = [(n, a) for n, a in compared_arms(summary) if a.get("looks")]
    if not arms:
        return None
    plt = _plt()
    margin = summary["decision"]["margin"]
    planned = summary["design"]["looks"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.axhspan(-margin, margin, color="#e6e9f2", label="±margin")
    for i, (name, a) in enumerate(arms):
        for j, look in enumerate(a["looks"]):
            if look["interval"] is None:
                continue
            x = look["seeds"] + 0.12 * (i - (len(arms) - 1) / 2)
            lo, hi = look["interval"]
            ax.plot([x, x], [lo, hi], color=f"C{i}", lw=3, label=name if j == 0 else None)
            ax.annotate(look["verdict"], (x, hi), xytext=(3, 2), textcoords="offset points", fontsize=7)
    ax.set_xticks(planned)
    ax.set_xlabel("seeds at the look")
    ax.set_ylabel("gain vs baseline (positive = better)")
    ax.set_title("Sequential looks: each look's interval at its boundary level")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


def image_grid(summary: dict[str, Any], records: list[TrialRecord],
               notes: Optional[list[str]] = None) -> Optional[bytes]:
    """Rows: the baseline's final-evaluation frames; columns: ground truth, then each arm's render and error.

    A render that cannot be drawn (file missing, damaged, another size) leaves its frame out of the grid, and a
    complete trial without renders (its render index was lost) leaves its seed out; each is warned about.

    Args:
        summary: the report summary (its baseline and arms).
        records: the trials the report uses.
        notes: when given, one line per render left out is appended, naming the trial and the file.
    Returns:
        The grid as PNG bytes, or None when no seed has renders for every arm.
    """
    from PIL import Image

    def problem(text: str) -> None:
        warnings.warn(text, stacklevel=3)
        if notes is not None:
            notes.append(text)

    arms = list(summary["arms"])
    complete = [r for r in records if r.status == COMPLETE and r.arm in summary["arms"]]
    by_arm_seed = {(r.arm, r.seed): r for r in complete if r.renders}
    if by_arm_seed:  # some trial has renders: one that has none lost them (no trial has any: nothing to say)
        for r in complete:
            if not r.renders:
                problem(f"`{r.key}`: no renders recorded (its render index was missing or unreadable); the "
                        f"image grid leaves seed {r.seed} out")
    base_seeds = sorted(s for (a, s) in by_arm_seed if a == summary["baseline"])
    seed = next((s for s in base_seeds if all((n, s) in by_arm_seed for n in arms)), None)
    if seed is None:
        return None

    def load(rec: TrialRecord) -> dict[str, np.ndarray]:
        out = {}
        for entry in rec.renders:
            path = Path(entry["path"])
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(path) as image:
                        out[entry["frame_id"]] = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
            except FileNotFoundError:
                problem(f"`{rec.key}`: render {path} is missing; frame `{entry['frame_id']}` left out of the "
                        "image grid")
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                problem(f"`{rec.key}`: render {path} is unreadable ({exc}); frame `{entry['frame_id']}` left out "
                        "of the image grid")
        return out

    images = {n: load(by_arm_seed[(n, seed)]) for n in arms}
    base = images[summary["baseline"]]
    frames = []
    for f in base:
        if not all(f in images[n] for n in images):
            continue
        odd = [n for n in images if images[n][f].shape != base[f].shape]
        if odd:
            problem(f"frame `{f}`: the renders of {', '.join(odd)} are {images[odd[0]][f].shape[1::-1]} px, the "
                    f"baseline's {base[f].shape[1::-1]}; left out of the image grid")
            continue
        frames.append(f)
    if not frames:
        return None
    plt = _plt()
    cols = 1 + 2 * len(images)
    fig, axes = plt.subplots(len(frames), cols, figsize=(1.6 * cols, 1.7 * len(frames) + 0.4), squeeze=False)
    for row, frame in enumerate(frames):
        full = images[summary["baseline"]][frame]
        width = full.shape[1] // 2
        truth = full[:, :width]
        axes[row][0].imshow(truth)
        axes[row][0].set_title("ground truth" if row == 0 else "", fontsize=8)
        axes[row][0].set_ylabel(frame.split("/")[-2] if "/" in frame else frame, fontsize=7)
        for j, name in enumerate(images):
            render = images[name][frame][:, width:]
            error = np.abs(render - truth).mean(axis=2)
            axes[row][1 + 2 * j].imshow(render)
            axes[row][2 + 2 * j].imshow(np.clip(error * 4, 0, 1), cmap="magma", vmin=0, vmax=1)
            if row == 0:
                axes[row][1 + 2 * j].set_title(name, fontsize=8)
                axes[row][2 + 2 * j].set_title(f"|{name} − gt| ×4", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Final evaluation, seed {seed}, the same frames for every arm", fontsize=9)
    fig.tight_layout()
    return figure_png(fig)


def report_figures(summary: dict[str, Any], records: list[TrialRecord],
                   notes: Optional[list[str]] = None) -> dict[str, Optional[bytes]]:
    """Every figure of the report, drawn once.

    Args:
        summary: the report summary.
        records: the trials the report uses.
        notes: when given, what a figure had to leave out (a damaged render file) is appended, one line each.
    Returns:
        Title → PNG bytes (None where no trial has the data yet).
    """
    return {"Paired differences": forest_plot(summary), "Per-seed pairs": paired_lines(summary),
            "Learning curves": learning_curves(summary, records), "Sequential looks": looks_plot(summary),
            "Renders on the same evaluation frames": image_grid(summary, records, notes)}
