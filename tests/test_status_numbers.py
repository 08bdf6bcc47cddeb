"""The numbers the status page and the reports print: forecasts counted as the runner and the sweep count,
the synthetic-fleet note read from the fleet and the roadmap, the trade-off table's latency filtered as the gate
filters it, W&B plots that follow the metric, and pages written atomically. Records are written directly."""
import json
import math
import os
from pathlib import Path

import pytest

from reflect.ablation.store import ResultsStore, TrialRecord
from reflect.roadmap.spec import Decision, load_roadmap
from test_roadmap import edited, write_three_seeds

ROOT = Path(__file__).resolve().parents[1]


def film_decision(tmp_path):
    path = tmp_path / "film_vs_concat.yaml"
    path.write_text((ROOT / "ablations" / "film_vs_concat.yaml").read_text())
    return Decision("film_vs_concat", "claim", ("a", "b"), path)


def edited_roadmap(tmp_path, edit):
    """The repository's roadmap with ``edit`` applied, beside copies of the files its decisions name."""
    return load_roadmap(edited(tmp_path, edit))


# --- 1. the "still needed" forecast -------------------------------------------------------------------------------

def test_stale_records_leave_the_whole_current_plan_to_run(tmp_path):
    """24 complete records of an older config (hash) are not today's trials: all 24 of the plan are still needed,
    exactly as on an empty store (before: 'running', 0 trials left)."""
    from reflect.ablation.spec import load_ablation
    from reflect.roadmap.status import decision_status

    decision = film_decision(tmp_path)
    empty = decision_status(decision, [tmp_path / "runs"])
    assert empty.forecast.trials == 24  # 3 arms x the design's 8 seeds
    ablation = load_ablation(decision.file)
    store = ResultsStore(tmp_path / "runs" / ablation.name)
    for arm in ablation.arms:
        for seed in range(8):
            store.write(TrialRecord(study=ablation.name, arm=arm, seed=seed, config_hash="oldhash", status="complete",
                                    eval_history=[{"step": 50 * i, "val/psnr": 30.0} for i in range(1, 13)],
                                    wall_time_s=40.0, provenance={"device": "cpu (2 cores)"}))
    assert len(list(store.records())) == 24
    status = decision_status(decision, [tmp_path / "runs"])
    assert status.forecast.trials == 24
    # the store has run (other configurations), so it is not "not run"; but none of its records is of the file's plan
    assert status.state == "running" and status.verdicts == {} and not status.settled
    assert "24 record(s) of other configurations set aside" in status.detail and "--profile" in status.detail
    assert status.forecast.trial_s == {"cpu (2 cores)": 40.0}  # the cost those real runs measured


def test_failed_trials_are_finished_as_the_runner_counts_them(tmp_path):
    """Seed 3 of film and of the baseline failed: the runner does not retry them (without --retry-failed), so the
    forecast counts seeds 4..7 for each, 2 x 4 = 8 (before: 10, the failed seeds counted as still to run)."""
    from reflect.ablation.plan import plan_trials
    from reflect.ablation.spec import load_ablation
    from reflect.roadmap.status import decision_status

    decision = film_decision(tmp_path)
    ablation = load_ablation(decision.file)
    store = ResultsStore(tmp_path / "runs" / ablation.name)
    write_three_seeds(store, ablation)
    before = decision_status(decision, [tmp_path / "runs"])
    assert before.forecast.trials == 10  # film and concat, seeds 3..7 each
    for p in plan_trials(ablation, seeds=[3]):
        if p.arm in ("film", "concat"):
            store.write(TrialRecord(study=ablation.name, arm=p.arm, seed=3, config_hash=p.config_hash, status="failed",
                                    failure_reason="RuntimeError: boom"))
    status = decision_status(decision, [tmp_path / "runs"])
    assert status.verdicts == {"none": "worse", "film": "inconclusive"}
    assert status.forecast.trials == 8


def write_sweep_records(runs, statuses):
    store = ResultsStore(runs / "expr_mlp_lr")
    for i, status in enumerate(statuses):
        store.write(TrialRecord(study="expr_mlp_lr", arm=f"t{i:03d}", seed=0, config_hash=f"h{i}", status=status,
                                wall_time_s=60.0 if status == "complete" else None,
                                provenance={"device": "cpu (2 cores)"}, optuna_trial=i))


def sweep_decision():
    return Decision("expr_mlp_lr", "claim", ("a", "b"), ROOT / "sweeps" / "expr_mlp_lr.yaml")


def test_a_sweep_whose_budget_is_spent_with_a_failure_is_settled(tmp_path):
    """expr_mlp_lr runs 8 trials; reflect.sweep counts a failed trial in its budget and runs no more after 7
    complete + 1 failed, so nothing is left (before: '1 sweep trial left' forever)."""
    from reflect.roadmap.status import decision_status
    from reflect.ablation.sweep_spec import load_sweep

    assert load_sweep(sweep_decision().file)[0].n_trials == 8
    write_sweep_records(tmp_path / "runs", ["complete"] * 6 + ["pruned", "failed"])
    status = decision_status(sweep_decision(), [tmp_path / "runs"])
    assert status.settled and status.state == "settled" and status.forecast is None
    assert status.detail == "8/8 sweep trials finished (1 failed)"


def test_a_running_sweep_trial_is_in_the_budget_and_still_to_finish(tmp_path):
    """5 complete, 1 failed, 1 running: the sweep will start one more (8 - 7 in its budget) and the running one has
    to finish, so 2 are needed; one complete fewer and a failure more than finished-only counting would see."""
    from reflect.roadmap.status import decision_status

    write_sweep_records(tmp_path / "runs", ["complete"] * 5 + ["failed", "running"])
    status = decision_status(sweep_decision(), [tmp_path / "runs"])
    assert not status.settled and status.state == "running"
    assert status.forecast.trials == 2 and status.forecast.trial_s == {"cpu (2 cores)": 60.0}
    assert status.detail == "6/8 sweep trials finished (1 failed, 1 running or interrupted)"
    write_sweep_records(tmp_path / "runs", ["complete"] * 5 + ["failed", "interrupted", "complete"])
    status = decision_status(sweep_decision(), [tmp_path / "runs"])
    assert status.forecast.trials == 1 and not status.settled  # the interrupted trial keeps its slot, unfinished


# --- 2. the synthetic-fleet note ----------------------------------------------------------------------------------

def synthetic_fleet(runs):
    """Two synthetic studies: one whose records carry the evaluated resolution (128x128), one recorded without a
    protocol whose config names data.synthetic.image_size 96."""
    for study, size, protocol in (("a", 128, {"resolution": [128, 128], "dataset_fingerprint": "s128"}),
                                  ("b", 96, {})):
        store = ResultsStore(runs / study)
        for seed in range(2):
            store.write(TrialRecord(
                study=study, arm="arm", seed=seed, config_hash=f"{study}{seed}", status="complete",
                config={"seed": seed, "data": {"root": None, "sessions": [], "synthetic": {"image_size": size}}},
                protocol=protocol, eval_history=[{"step": 10 * i, "val/psnr": 25.0 + seed} for i in range(1, 6)],
                metric_window=5))


def test_the_synthetic_note_names_the_fleets_image_sizes_and_the_roadmaps_threshold(tmp_path):
    from reflect.reports.status_page import render_status_html, render_status_md, status_json
    from reflect.roadmap.status import DecisionStatus, roadmap_status

    def edit(data):
        data["phases"][0]["gates"][0]["conditions"][0]["threshold"] = 30.5

    roadmap = edited_roadmap(tmp_path, edit)
    synthetic_fleet(tmp_path / "runs")
    decisions = {d.id: DecisionStatus(d.id, "claim", "x.yaml", "ablation", "not run", False)
                 for p in roadmap.phases for d in p.decisions}
    status = roadmap_status(roadmap, [tmp_path / "runs"], decisions=decisions)
    assert status.synthetic_only
    md = render_status_md(status, roadmap)
    note = next(line for line in md.splitlines() if line.startswith("> "))
    assert "synthetic head at 96x96 px and 128x128 px:" in note
    assert "Phase 1's GO gate (val/psnr avg20 >= 30.5 dB)" in note
    assert "64 px" not in note and "31 dB" not in note and "will not reach" not in note
    assert "96x96 px and 128x128 px" in render_status_html(status, roadmap)
    assert status_json(status)["fleet"]["resolutions"] == ["96x96", "128x128"]
    real = roadmap_status(roadmap, [tmp_path / "none"], groups=[], decisions=decisions)
    assert not real.synthetic_only  # no fleet, no note
    assert not [line for line in render_status_md(real, roadmap).splitlines() if line.startswith("> ")]


# --- 3. the quality x latency table -------------------------------------------------------------------------------

def bench_row(**fields):
    row = {"config": "1920x1080+2x", "render": "1920x1080", "sr": 2, "output": "3840x2160", "device": "NVIDIA H200",
           "device_type": "cuda", "gaussians": 100_000, "total_ms": 6.5, "at": "2026-12-01T00:00:00Z"}
    return {**row, **fields}


def write_bench(runs, rows):
    from reflect.roadmap.fleet import BENCHMARKS_DIR, LATENCY_FILE

    path = runs / BENCHMARKS_DIR / LATENCY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


SR_SUMMARY = {"arms": {"render_full": {"n": 3}, "render_half_sr2": {"n": 3, "delta_db": -0.4, "verdict": "worse"},
                       "render_quarter_sr4": {"n": 3, "delta_db": -1.2, "verdict": "worse"}}}


def test_a_toy_scene_gpu_benchmark_is_not_the_tables_4k_latency(tmp_path):
    """bench_latency.py --gaussians 1000 on a GPU, newer and faster than the 100,000-Gaussian run: the gate does not
    read it, and neither does the table (before: 0.90 ms shown as the 4K latency)."""
    from reflect.ablation.spec import load_ablation
    from reflect.reports.tradeoff import latency_text, tradeoff_rows

    write_bench(tmp_path / "runs", [bench_row(), bench_row(gaussians=1000, total_ms=0.9, at="2026-12-02T00:00:00Z"),
                                    bench_row(sr=4, config="960x540+4x", gaussians=1000, total_ms=0.5)])
    ablation = load_ablation(ROOT / "ablations" / "sr_resolution.yaml")
    table = {r["arm"]: r for r in tradeoff_rows(ablation, SR_SUMMARY, [tmp_path / "runs"])}
    assert table["render_half_sr2"]["latency_ms"] == 6.5 and table["render_half_sr2"]["latency_gaussians"] == 100_000
    assert latency_text(table["render_half_sr2"]) == "6.50 ms (1920x1080+2x, NVIDIA H200, 100,000 Gaussians)"
    assert table["render_quarter_sr4"]["latency_ms"] is None
    assert latency_text(table["render_quarter_sr4"]) == ("not measured on a GPU with at least 100,000 Gaussians "
                                                         "(run benches/bench_latency.py there)")
    # the floor is the roadmap's data: a roadmap asking for 500 Gaussians takes the newer 1000-Gaussian runs
    roadmap = edited_roadmap(tmp_path, lambda d: d["phases"][2]["gates"][0]["conditions"][1].update(min_gaussians=500))
    table = {r["arm"]: r for r in tradeoff_rows(ablation, SR_SUMMARY, [tmp_path / "runs"], roadmap)}
    assert table["render_half_sr2"]["latency_ms"] == 0.9 and table["render_quarter_sr4"]["latency_gaussians"] == 1000


@pytest.mark.parametrize("fields", [
    {}, {"gaussians": 99_999}, {"gaussians": 100_000}, {"gaussians": None}, {"device_type": "cpu"},
    {"total_ms": None}, {"total_ms": math.inf}, {"total_ms": "6.5"}, {"output": "1920x1080"}, {"device_type": None},
])
def test_the_tables_latency_filter_is_the_gates(fields):
    """One benchmark record at a time: the table counts it exactly when the Phase 3 latency gate can be decided on
    it (holds or fails) rather than left incomplete."""
    from reflect.reports.tradeoff import counts_for_latency_gate, latency_condition
    from reflect.roadmap.gates import INCOMPLETE, GateContext, evaluate_condition

    condition = latency_condition(load_roadmap())
    assert condition.output == "3840x2160" and condition.min_gaussians == 100_000
    row = bench_row(**fields)
    gate = evaluate_condition(condition, 3, GateContext(groups=[], signoffs=[], latency=[row]))
    expected = fields in ({}, {"gaussians": 100_000})
    assert counts_for_latency_gate(row, condition) is expected
    assert (gate.state != INCOMPLETE) is expected


# --- 4. W&B report plots and atomic writes ------------------------------------------------------------------------

SUMMARY = {"ablation": "tiny", "phase": 2, "question": "q?", "citations": ["a"], "generated_at": "now",
           "metric": {"name": "val/psnr"}, "design": {},
           "arms": {"concat": {"n": 3, "mean": 30.0, "delta_db": 0.0, "verdict": "baseline"}}}


@pytest.mark.parametrize("metric, plotted", [
    ("val/psnr", ["val/psnr", "val/psnr_masked"]),
    ("test/ssim", ["test/ssim", "test/ssim_masked"]),
    ("val/lpips", ["val/lpips"]),
    ("mirror/psnr", ["mirror/psnr", "mirror/psnr_masked"]),
    ("val/psnr_masked", ["val/psnr_masked"]),
    ("val/psnr_mouth", ["val/psnr_mouth"]),
])
def test_the_wandb_report_plots_the_metric_it_decides_on(metric, plotted):
    from reflect.config import TrackingConfig
    from reflect.reports.wandb_report import report_definition

    definition = report_definition({**SUMMARY, "metric": {"name": metric}}, TrackingConfig(project="p"))
    assert [p["y"] for p in definition["line_plots"]] == [[m] for m in plotted]
    assert {p["x"] for p in definition["line_plots"]} == {"trainer/global_step"}


def umask_mode():
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def test_report_files_are_replaced_whole(tmp_path):
    """A reader that opened a page before it is rewritten reads the whole old page (the new one is a new file
    moved into place), not a truncated or rewritten one; no temp file is left; permissions follow the umask."""
    from reflect.config import TrackingConfig
    from reflect.reports.status_page import write_status
    from reflect.reports.wandb_report import report_definition, write_report_definition
    from reflect.roadmap.status import DecisionStatus, roadmap_status

    tracking = TrackingConfig(project="p")
    out = tmp_path / "reports"
    out.mkdir()
    old = {name: f"old {name}\n" * 50 for name in ("status.md", "status.html", "wandb_report.json")}
    held = {}
    for name, text in old.items():
        (out / name).write_text(text)
        held[name] = open(out / name)
    try:
        roadmap = load_roadmap()
        decisions = {d.id: DecisionStatus(d.id, "claim", "x.yaml", "ablation", "not run", False)
                     for p in roadmap.phases for d in p.decisions}
        status = roadmap_status(roadmap, [tmp_path / "runs"], groups=[], decisions=decisions)
        html = write_status(status, roadmap, out)
        path = write_report_definition(SUMMARY, tracking, out)
        for name, f in held.items():
            assert f.read() == old[name], name
    finally:
        for f in held.values():
            f.close()
    assert html.read_text().startswith("<!doctype html>") and html.read_text().endswith("</body></html>\n")
    assert (out / "status.md").read_text().startswith(f"# {roadmap.title}\n")
    assert json.loads(path.read_text()) == report_definition(SUMMARY, tracking)
    assert sorted(p.name for p in out.iterdir()) == ["status.html", "status.json", "status.md", "wandb_report.json"]
    for name in ("status.md", "status.html", "wandb_report.json"):
        assert (out / name).stat().st_mode & 0o777 == umask_mode(), name
