"""W&B as a mirror of a report: the verdict table logged to the ablation's group, and a W&B report definition.

The definition (``reports/<name>/wandb_report.json``) is built from the summary without the network; the
W&B report itself (runs grouped by arm, dB curves, the verdict table) is built with ``wandb-workspaces`` and
published only with ``reflect.report --publish`` when online (building its run sets needs the W&B API).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

from reflect.ablation.store import atomic_write_json
from reflect.config import TrackingConfig
from reflect.tracking import resolve_wandb_mode

SUMMARY_COLUMNS = ["arm", "n", "mean", "delta", "interval_low", "interval_high", "interval_confidence", "verdict",
                   "decided_at", "p_better", "p_worse", "p_equivalent"]


def summary_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """One row per arm of the verdict table (the baseline has no interval)."""
    rows = []
    for name, a in summary["arms"].items():
        ci = a.get("delta_ci") or [None, None]
        tests = a.get("p_values") or {}
        rows.append([name, a["n"], a["mean"], a.get("delta_db"), ci[0], ci[1], a.get("interval_confidence"),
                     a["verdict"], a.get("decided_at"), *(tests.get(f, {}).get("p") for f in
                                                          ("better", "worse", "equivalent"))])
    return rows


def log_summary_table(summary: dict[str, Any], tracking: TrackingConfig, save_dir: Path) -> Optional[str]:
    """Log the verdict table as a W&B run of the ablation's group (job type ``summary``); returns the run's id.

    W&B is a mirror: any failure is returned as a warning string by the caller's choice, never raised.
    """
    mode = resolve_wandb_mode(tracking)
    if mode == "disabled":
        return None
    import wandb

    save_dir.mkdir(parents=True, exist_ok=True)
    run_id = f"{summary['ablation']}-summary-{int(time.time())}"  # offline runs cannot resume: a new id each time
    run = wandb.init(project=tracking.project, entity=tracking.entity, group=summary["ablation"], job_type="summary",
                     name=f"{summary['ablation']}-summary", id=run_id, dir=str(save_dir), mode=mode,
                     config={"ablation": summary["ablation"], "metric": summary["metric"], "design": summary["design"]},
                     settings=wandb.Settings(silent=True, console="off"), reinit="create_new")
    try:
        run.log({"verdicts": wandb.Table(columns=SUMMARY_COLUMNS, data=summary_rows(summary))})
        for name, a in summary["arms"].items():
            run.summary[f"{name}/delta"] = a.get("delta_db")
            run.summary[f"{name}/verdict"] = a["verdict"]
    finally:
        run.finish()
    return run_id


# The metrics the trainer also logs foreground-masked (reflect.lightning.module: <split>/psnr_masked, ssim_masked);
# LPIPS, region PSNRs and the masked metrics themselves have no masked variant.
MASKED_VARIANT = {"psnr": "psnr_masked", "ssim": "ssim_masked"}


def plotted_metrics(metric: str) -> list[str]:
    """The curves a report plots for its metric: the metric, then its masked variant where one is logged."""
    split, _, name = metric.partition("/")
    masked = MASKED_VARIANT.get(name)
    return [metric] + ([f"{split}/{masked}"] if masked else [])


def report_definition(summary: dict[str, Any], tracking: TrackingConfig) -> dict[str, Any]:
    """The W&B report as data: what ``publish_report`` builds (no network needed to write it)."""
    metric = summary["metric"]["name"]
    lines = [f"| {' | '.join(SUMMARY_COLUMNS[:8])} |", "|" + "---|" * 8]
    for row in summary_rows(summary):
        cells = ["—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)) for v in row[:8]]
        lines.append("| " + " | ".join(cells) + " |")
    return {
        "entity": tracking.entity, "project": tracking.project,
        "title": f"Ablation {summary['ablation']} (phase {summary['phase']})",
        "description": summary["question"],
        "group": summary["ablation"], "groupby": "job_type",
        "line_plots": [{"x": "trainer/global_step", "y": [m]} for m in plotted_metrics(metric)],
        "verdict_table_markdown": "\n".join(lines),
        "citations": summary["citations"],
        "generated_at": summary["generated_at"],
    }


def write_report_definition(summary: dict[str, Any], tracking: TrackingConfig, out_dir: Path) -> Path:
    path = out_dir / "wandb_report.json"
    atomic_write_json(path, report_definition(summary, tracking))  # a reader never sees half a definition
    return path


def build_report(definition: dict[str, Any]):
    """The ``wandb_workspaces`` report object of a definition (constructed offline; saving needs the network)."""
    import wandb_workspaces.reports.v2 as wr

    runset = wr.Runset(entity=definition["entity"] or "", project=definition["project"], name="arms",
                       filters=f"group == '{definition['group']}'", groupby=[definition["groupby"]])
    panels = [wr.LinePlot(x=p["x"], y=p["y"]) for p in definition["line_plots"]]
    blocks = [wr.H1(definition["title"]), wr.P(definition["description"]),
              wr.PanelGrid(runsets=[runset], panels=panels),
              wr.H2("Verdicts"), wr.MarkdownBlock(definition["verdict_table_markdown"]),
              wr.H2("Citations"), wr.UnorderedList(items=list(definition["citations"]))]
    return wr.Report(entity=definition["entity"] or "", project=definition["project"], title=definition["title"],
                     description=definition["description"], blocks=blocks)


def publish_report(definition: dict[str, Any], tracking: TrackingConfig) -> str:
    """Publish the report to W&B (online only); returns its URL."""
    if resolve_wandb_mode(tracking) != "online":
        raise RuntimeError("W&B is not online (no API key, or tracking.mode offline/disabled): the report definition "
                           "stays on disk; run `wandb login` and `python -m reflect.report FILE --publish` later")
    if not definition.get("entity") and not os.environ.get("WANDB_ENTITY"):
        raise RuntimeError("publishing a W&B report needs an entity: set tracking.entity or WANDB_ENTITY")
    report = build_report(definition)
    report.save()
    return report.url
