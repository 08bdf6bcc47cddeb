"""The roadmap as data: validation, gates on intervals, sign-offs, phase detection and the status pages."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from reflect.ablation.plan import plan_trials
from reflect.ablation.store import ResultsStore, TrialRecord
from reflect.config_loading import ConfigError
from reflect.reports.status_page import write_status
from reflect.roadmap.signoffs import Signoff, now_iso, read_signoffs, record_signoff
from reflect.roadmap.spec import DEFAULT_ROADMAP, load_roadmap
from reflect.roadmap.status import DecisionStatus, roadmap_status

ROOT = Path(__file__).resolve().parents[1]


def test_repo_roadmap_validates_and_points_at_files():
    roadmap = load_roadmap()
    assert [p.phase for p in roadmap.phases] == [1, 2, 3, 4, 5, 6]
    decisions = [d for p in roadmap.phases for d in p.decisions]
    assert {d.id for d in decisions} >= {"film_vs_concat", "expr_mlp_lr", "decoder_depth", "gv_vs_sobel"}
    for d in decisions:
        assert d.file.is_file() != d.planned, d.id  # written files exist; planned ones do not yet
        assert len(d.citations) >= 2
    assert roadmap.decision("decoder_depth").expected_db == 0.86
    go = roadmap.phases[0].gates[0]
    assert go.name == "GO" and go.next_phase == 2 and go.conditions[0].threshold == 31.0
    assert [x["item"] for x in roadmap.not_to_do][0] == "Total Variation loss" and len(roadmap.references) == 21


def edited(tmp_path, edit):
    data = yaml.safe_load(DEFAULT_ROADMAP.read_text())
    edit(data)
    for folder in ("ablations", "sweeps"):
        shutil.copytree(ROOT / folder, tmp_path / folder, dirs_exist_ok=True)
    path = tmp_path / "roadmap.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_three_seeds(store, ablation):
    """Complete records of film_vs_concat's seeds 0-2: none 2 dB worse, film +0.02 dB (undecided), 40 s each."""
    effects = {"concat": 0.0, "none": -2.0, "film": 0.02}
    for p in plan_trials(ablation, seeds=[0, 1, 2]):
        value = 30.0 + effects[p.arm] + 0.05 * ((p.seed * 7 + len(p.arm)) % 5)
        store.write(TrialRecord(study=ablation.name, arm=p.arm, seed=p.seed, config_hash=p.config_hash,
                                status="complete", eval_history=[{"step": 50 * i, "val/psnr": value} for i in range(1, 13)],
                                wall_time_s=40.0, provenance={"device": "cpu (2 cores)"}))


@pytest.mark.parametrize("edit, key, pattern", [
    (lambda d: d.update(colour="red"), "colour", "unknown key"),
    (lambda d: d["phases"][0]["gates"][0]["conditions"][0].update(comparator="=>"),
     "phases[0].gates[0].conditions[0].comparator", "expected one of"),
    (lambda d: d["phases"][1]["decisions"][2].update(file="ablations/nope.yaml"),
     "phases[1].decisions[2].file", "does not exist"),
    (lambda d: d["phases"][1]["decisions"][2].update(planned=True), "phases[1].decisions[2].planned", "exists"),
    (lambda d: d["phases"][0]["gates"][0].update(gate="MAYBE"), "phases[0].gates[0].gate", "expected one of"),
    (lambda d: d["phases"][1]["gates"][2]["conditions"][0].update(decision="nothing"),
     "phases[1].gates[2].conditions[0].decision", "no decision"),
])
def test_bad_roadmap_names_file_and_key(tmp_path, edit, key, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        load_roadmap(edited(tmp_path, edit))
    assert key in str(info.value) and "roadmap.yaml" in str(info.value)


def write_fleet(runs, psnr_by_seed, study="real", arm="best", ssim=0.88, lpips=0.05, evals=20):
    """Complete records of one real-capture configuration: every evaluation at the seed's value."""
    store = ResultsStore(runs / study)
    for seed, value in psnr_by_seed.items():
        history = [{"step": 1000 * (i + 1), "val/psnr": value, "val/ssim": ssim, "val/lpips": lpips} for i in range(evals)]
        store.write(TrialRecord(study=study, arm=arm, seed=seed, config_hash=f"h{seed}", status="complete",
                                config={"profile": "full", "seed": seed, "data": {"root": "/data/306"}},
                                protocol={"dataset_fingerprint": "f306"}, eval_history=history,
                                windowed_metric=value, wall_time_s=3600.0,
                                provenance={"device": "NVIDIA H100"}))
    return store


def settled(flags):
    return {f"d{i}": DecisionStatus(f"d{i}", "claim", "x.yaml", "ablation", "settled" if s else "running", s)
            for i, s in enumerate(flags)}


def status_for(runs, decisions=None):
    roadmap = load_roadmap()
    if decisions is None:
        decisions = {d.id: DecisionStatus(d.id, d.claim, "x", "ablation", "not written", False)
                     for p in roadmap.phases for d in p.decisions}
    return roadmap, roadmap_status(roadmap, [runs], decisions=decisions)


def gate(status, phase, name):
    return next(g for g in status.phases[phase - 1].gates if g.gate == name)


def test_iterate_band(tmp_path):
    write_fleet(tmp_path, {0: 30.40, 1: 30.50, 2: 30.45, 3: 30.55})
    _, status = status_for(tmp_path)
    p1 = status.phases[0]
    assert p1.outcome == "ITERATE" and not p1.passed and status.current_phase == 1
    assert gate(status, 1, "GO").state == "fails" and gate(status, 1, "REASSESS").state == "fails"


def test_go_interval_straddling_the_threshold_stays_undecided(tmp_path):
    write_fleet(tmp_path, {0: 30.6, 1: 31.5, 2: 30.9, 3: 31.3})
    _, status = status_for(tmp_path)
    metric = gate(status, 1, "GO").conditions[0]
    assert metric.state == "undecided" and 0 < metric.probability < 1
    lo, hi = metric.interval
    assert lo < 31.0 < hi
    # mean 31.075 dB, sd 0.39 dB: a 0.075 dB gap to the threshold is not settled by any seed count up to 50
    assert metric.seeds_to_settle is None
    # record the sign-off: the gate is then undecided on its metric alone (not passed, not failed)
    record_signoff(tmp_path, Signoff(1, "expression_tracking", "ana", "ok", now_iso(), "abc", ()))
    _, status = status_for(tmp_path)
    assert gate(status, 1, "GO").state == "undecided" and status.current_phase == 1
    assert status.phases[0].outcome == "undecided"


def test_signoff_turns_the_gate_and_a_revocation_turns_it_back(tmp_path):
    write_fleet(tmp_path, {0: 31.8, 1: 31.9, 2: 31.85})
    _, before = status_for(tmp_path)
    go = gate(before, 1, "GO")
    assert [c.state for c in go.conditions] == ["holds", "incomplete"] and go.state == "incomplete"
    assert before.phases[0].outcome == "incomplete" and "expression_tracking" in before.phases[0].missing[0]
    record_signoff(tmp_path, Signoff(1, "expression_tracking", "ana", "wrinkles visible", now_iso(), "abc", ("k",)))
    _, after = status_for(tmp_path)
    assert gate(after, 1, "GO").state == "holds" and after.phases[0].outcome == "GO" and after.current_phase == 2
    record_signoff(tmp_path, Signoff(1, "expression_tracking", "ana", "mouth interior blurry", now_iso(), "abc", (),
                                     revoked=True))
    _, revoked = status_for(tmp_path)
    assert gate(revoked, 1, "GO").state == "incomplete" and revoked.current_phase == 1
    assert [s.revoked for s in read_signoffs([tmp_path])] == [False, True]


def test_the_roadmap_headers_own_case(tmp_path):
    """Best PSNR 37.99 dB (above Phase 3's 35) yet Phase 2: Phase 2's sign-off is missing. 1/6 phases · 25%."""
    write_fleet(tmp_path, {0: 37.97, 1: 38.01, 2: 37.99}, ssim=0.8808, lpips=0.0464)
    record_signoff(tmp_path, Signoff(1, "expression_tracking", "ana", "ok", now_iso(), "abc", ()))
    roadmap = load_roadmap()
    decisions = {d.id: DecisionStatus(d.id, d.claim, "x", "ablation", "running", False)
                 for p in roadmap.phases for d in p.decisions}
    for done in ("film_vs_concat", "decoder_depth"):  # 2 of Phase 2's 4 decisions settled
        decisions[done].settled, decisions[done].state = True, "settled"
    status = roadmap_status(roadmap, [tmp_path], decisions=decisions)
    assert status.current_phase == 2 and status.passed == 1 and status.total == 6
    assert status.percent == pytest.approx(25.0)
    assert gate(status, 2, "GO").conditions[0].state == "holds" and gate(status, 2, "GO").state == "incomplete"
    out = write_status(status, roadmap, tmp_path / "reports")
    md = (tmp_path / "reports" / "status.md").read_text()
    assert "Status: Phase 2 (auto-detected from fleet: PSNR 37.99 dB, LPIPS 0.0464)" in md
    assert "Overall Progress: 1/6 phases · 25%" in md and "Best SSIM: 0.8808" in md
    data = json.loads((tmp_path / "reports" / "status.json").read_text())
    assert data["current_phase"] == 2 and data["progress"]["passed"] == 1 and data["progress"]["total"] == 6
    # the numbers on the page are the store's: parse them back and compare with the records
    values = [json.loads(p.read_text())["windowed_metric"] for p in (tmp_path / "real" / "trials").glob("*.json")]
    assert data["best"]["psnr"]["value"] == pytest.approx(np.mean(values), abs=1e-12)
    assert data["best"]["psnr"]["trial"] == "real/best" and data["best"]["lpips"]["value"] == pytest.approx(0.0464)
    html = out.read_text()
    assert re.search(r"Best PSNR: 37\.99 dB", html) and 'src="data:image/png;base64,' in html
    states = [[c["state"] for c in p["conditions"]] for p in data["phases"]]
    assert states[:3] == [["holds", "holds", "fails", "fails"], ["holds", "incomplete", "fails", "incomplete"],
                          ["holds", "incomplete", "incomplete", "fails", "fails"]], states
    assert data["phases"][2]["conditions"][1]["kind"] == "latency"
    assert data["phases"][2]["conditions"][1]["state"] == "incomplete"  # no GPU latency recorded here


def test_latency_gate_reads_recorded_gpu_benchmarks(tmp_path):
    write_fleet(tmp_path, {0: 35.5, 1: 35.6, 2: 35.55})
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    rows = [{"output": "3840x2160", "device": "cpu (2 cores)", "device_type": "cpu", "total_ms": 1.0, "config": "a",
             "gaussians": 100000},  # fastest, but not a GPU: never counts
            {"output": "3840x2160", "device": "NVIDIA H100", "device_type": "cuda", "total_ms": 2.0, "config": "toy",
             "gaussians": 1000},  # a toy scene: never counts
            {"output": "3840x2160", "device": "NVIDIA H100", "device_type": "cuda", "total_ms": None, "config": "c",
             "gaussians": 100000},
            {"output": "3840x2160", "device": "NVIDIA H100", "device_type": "cuda", "total_ms": 6.5, "config": "b",
             "gaussians": 100000}]
    (bench / "latency.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, status = status_for(tmp_path)
    latency = gate(status, 3, "GO").conditions[1]
    assert latency.state == "holds" and latency.value == 6.5 and "NVIDIA H100" in latency.detail


def test_signoff_cli_records_lists_and_refuses_unknown_checks(tmp_path, capsys):
    from reflect.signoff import main

    runs = tmp_path / "runs"
    write_fleet(runs, {0: 31.8, 1: 31.9})
    assert main(["1", "expression_tracking", "--by", "ana", "--note", "wrinkles", "--runs-dir", str(runs),
                 "--reports-dir", str(tmp_path / "reports")]) == 0
    entry = read_signoffs([runs])[0]
    assert entry.by == "ana" and entry.phase == 1 and sorted(entry.trials) == ["best-s0-h0", "best-s1-h1"]
    assert json.loads((tmp_path / "reports" / "status.json").read_text())["current_phase"] == 2
    with pytest.raises(SystemExit) as info:
        main(["1", "no_such_check", "--by", "ana", "--runs-dir", str(runs)])
    assert info.value.code == 2 and "has no sign-off" in capsys.readouterr().err
    main(["--list", "--runs-dir", str(runs)])
    assert "expression_tracking: signed off by ana" in capsys.readouterr().out


def test_between_and_less_than_edges(tmp_path):
    write_fleet(tmp_path, {0: 29.50, 1: 29.55, 2: 29.45})  # interval well below 30
    _, status = status_for(tmp_path)
    assert gate(status, 1, "REASSESS").state == "holds" and gate(status, 1, "ITERATE").state == "fails"
    assert status.phases[0].outcome == "REASSESS"
    other = tmp_path / "straddle"
    write_fleet(other, {0: 29.7, 1: 30.3, 2: 30.0})  # straddles 30: both bands undecided
    _, status = status_for(other)
    assert gate(status, 1, "REASSESS").state == "undecided" and gate(status, 1, "ITERATE").state == "undecided"
    p_reassess = gate(status, 1, "REASSESS").conditions[0].probability
    p_iterate = gate(status, 1, "ITERATE").conditions[0].probability
    values = np.array([29.7, 30.3, 30.0])
    p_go = sps.t.sf((31.0 - values.mean()) / sps.sem(values), 2)  # P(mean >= 31), the third possibility
    assert 0 < p_reassess < 1 and 0 < p_iterate < 1  # below 30, in [30, 31), at least 31: one of the three
    assert p_reassess == pytest.approx(sps.t.cdf((30.0 - values.mean()) / sps.sem(values), 2), abs=1e-9)
    assert p_reassess + p_iterate + p_go == pytest.approx(1.0, abs=1e-9)


def test_a_lucky_single_seed_does_not_hide_a_decided_configuration(tmp_path):
    write_fleet(tmp_path, {0: 31.50, 1: 31.60, 2: 31.55}, arm="three_seeds")
    write_fleet(tmp_path, {0: 31.90}, study="other", arm="one_seed")
    _, status = status_for(tmp_path)
    metric = gate(status, 1, "GO").conditions[0]
    assert metric.group == "real/three_seeds" and metric.state == "holds"


def test_short_runs_can_fail_a_gate_but_never_pass_it(tmp_path):
    write_fleet(tmp_path, {0: 31.8, 1: 31.9, 2: 31.85}, evals=5)  # 5 evaluations < avg20
    _, status = status_for(tmp_path)
    metric = gate(status, 1, "GO").conditions[0]
    assert metric.state == "undecided" and "can fail but not hold" in metric.detail


def test_a_revocation_in_another_runs_folder_still_counts(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    write_fleet(second, {0: 31.8, 1: 31.9, 2: 31.85})
    record_signoff(second, Signoff(1, "expression_tracking", "ana", "ok", "2026-12-01T10:00:00Z", "abc", ()))
    record_signoff(first, Signoff(1, "expression_tracking", "bo", "no", "2026-12-01T11:00:00Z", "abc", (), revoked=True))
    roadmap = load_roadmap()
    decisions = {d.id: DecisionStatus(d.id, d.claim, "x", "ablation", "not written", False)
                 for p in roadmap.phases for d in p.decisions}
    status = roadmap_status(roadmap, [first, second], decisions=decisions)
    assert gate(status, 1, "GO").state == "incomplete" and status.current_phase == 1


def test_every_written_decision_file_validates_on_both_profiles():
    from reflect.ablation.spec import load_ablation
    from reflect.ablation.sweep_spec import load_sweep

    roadmap = load_roadmap()
    written = [d for p in roadmap.phases for d in p.decisions if not d.planned]
    assert len(written) >= 12
    confirmations = [ROOT / x["file"] for x in roadmap.not_to_do if x.get("file")]
    assert len(confirmations) == 4  # TV, FFL alpha, adversarial from step 0, L1-only; DISTS has no file
    for path in confirmations:
        for profile in ("quick", "full"):
            ablation = load_ablation(path, profile=profile)
            assert len(ablation.citations) >= 2 and ablation.expected.source, path
    # the whole library is on the roadmap: every ablation file is a decision or a confirmation
    on_roadmap = {d.file.resolve() for p in roadmap.phases for d in p.decisions} | {p.resolve() for p in confirmations}
    assert sorted(p.name for p in (ROOT / "ablations").glob("*.yaml") if p.resolve() not in on_roadmap) == []
    for d in written:
        if d.is_sweep:
            load_sweep(d.file)
            continue
        for profile in ("quick", "full"):
            ablation = load_ablation(d.file, profile=profile)
            assert len(ablation.citations) >= 2 and ablation.expected.source, d.id
            assert ablation.design.sequential and ablation.design.looks == (3, 5, 8), d.id
        if d.expected_db is not None:
            assert ablation.expected.gain_db == d.expected_db, d.id


def test_decision_status_reads_the_store_and_forecasts_from_measured_cost(tmp_path):
    from reflect.ablation.plan import plan_trials
    from reflect.ablation.spec import load_ablation
    from reflect.roadmap.spec import Decision
    from reflect.roadmap.status import decision_status

    path = tmp_path / "film_vs_concat.yaml"
    path.write_text((ROOT / "ablations" / "film_vs_concat.yaml").read_text())
    decision = Decision("film_vs_concat", "claim", ("a", "b"), path)
    fresh = decision_status(decision, [tmp_path / "runs"], {"cpu (2 cores)": 30.0})
    assert fresh.state == "not run" and fresh.verdicts == {} and not fresh.settled
    assert fresh.forecast.trials == 24 and fresh.forecast.trial_hours == {"cpu (2 cores)": pytest.approx(0.2)}

    ablation = load_ablation(path)
    store = ResultsStore(tmp_path / "runs" / ablation.name)
    write_three_seeds(store, ablation)
    status = decision_status(decision, [tmp_path / "runs"])
    assert status.state == "running" and status.verdicts["none"] == "worse" and status.verdicts["film"] == "inconclusive"
    # film (undecided) and the baseline still need seeds; none is decided and needs none
    # seeds 3..7 (the design's 8) for film and for the baseline it is paired with: 2 × 5
    assert status.forecast.trials == 10 and status.forecast.trial_s == {"cpu (2 cores)": 40.0}


def test_an_lpips_loss_without_weights_stops_the_dry_run_and_the_run(empty_hub, tmp_path, capsys):
    """lpips_schedule needs LPIPS' backbone file: both the dry run and the run say so first, and train nothing."""
    from reflect.ablate import main

    args = [str(ROOT / "ablations" / "lpips_schedule.yaml"), "--runs-dir", str(tmp_path / "runs"),
            "--reports-dir", str(tmp_path / "reports")]
    assert main([*args, "--dry-run"]) == 2
    out = capsys.readouterr().out.replace("\n", " ")
    assert "cannot run the ablation" in out and "alexnet-owt-7be5be79.pth" in out and "'from_start', 'deferred'" in out
    assert main(args) == 2
    assert "nothing was trained" in capsys.readouterr().out
    assert not (tmp_path / "runs" / "lpips_schedule" / "trials").exists()


def test_dry_run_refuses_an_arm_whose_resolution_its_sr_factor_does_not_divide(tmp_path, capsys):
    from reflect.ablate import main

    args = [str(ROOT / "ablations" / "sr_resolution.yaml"), "--dry-run", "--runs-dir", str(tmp_path / "runs")]
    assert main(args) == 0  # 64 px: 1, 2 and 4 all divide it
    assert "local workers:" in capsys.readouterr().out.replace("\n", " ")  # what --workers auto would start
    with pytest.raises(SystemExit) as exit_:
        main([*args, "data.synthetic.image_size=66"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "'render_quarter_sr4' trains at 66x66" in err and "model.decoder.sr_scale" in err


def test_the_mirror_comparison_uses_the_best_configuration_that_evaluated_the_mirror_view():
    """Most configurations never score the mirror view: the SHIP gate's comparison takes the best of those that
    did, seed by seed (mirror/psnr - val/psnr), instead of the fleet's best, which has no mirror/psnr."""
    from reflect.ablation.store import TrialRecord
    from reflect.roadmap.fleet import TrialGroup
    from reflect.roadmap.gates import GateContext, evaluate_condition
    from reflect.roadmap.spec import ComparisonCondition

    def record(arm, seed, val, mirror=None):
        history = [{"step": s, "val/psnr": val, **({"mirror/psnr": mirror} if mirror is not None else {})}
                   for s in range(1, 6)]
        return TrialRecord(study="s", arm=arm, seed=seed, config_hash=arm, status="complete", eval_history=history,
                           metric_window=5)

    best_without = TrialGroup("s", "no_mirror", "a", tuple(record("no_mirror", s, 31.0 + 0.01 * s) for s in range(3)))
    scored = TrialGroup("s", "scored", "b", tuple(record("scored", s, 29.0 + 0.1 * s, 28.9 + 0.1 * s + 0.01 * (s % 2))
                                                   for s in range(3)))
    far = TrialGroup("s", "far", "c", tuple(record("far", s, 28.0 + 0.1 * s, 26.0 + 0.1 * s) for s in range(3)))
    condition = ComparisonCondition(metric="mirror/psnr", against="val/psnr", margin=0.5, text="")
    ctx = GateContext(groups=[best_without, scored, far], signoffs=[], latency=[])
    result = evaluate_condition(condition, 4, ctx)
    assert result.group == "s/scored" and result.state == "holds" and result.value == pytest.approx(-0.0967, abs=1e-3)
    alone = evaluate_condition(condition, 4, GateContext(groups=[best_without, far], signoffs=[], latency=[]))
    assert alone.group == "s/far" and alone.state == "fails"  # 2 dB below its held-out view
    none = evaluate_condition(condition, 4, GateContext(groups=[best_without], signoffs=[], latency=[]))
    assert none.state == "incomplete" and "no configuration evaluated mirror/psnr" in none.detail


def test_the_sr_trade_off_table_puts_recorded_gpu_latency_beside_each_arms_quality(tmp_path):
    import json

    from reflect.ablation.spec import load_ablation
    from reflect.reports.ablation import render_markdown
    from reflect.reports.tradeoff import latency_text, tradeoff_rows
    from reflect.roadmap.fleet import BENCHMARKS_DIR, LATENCY_FILE

    ablation = load_ablation(ROOT / "ablations" / "sr_resolution.yaml")
    bench = tmp_path / "runs" / BENCHMARKS_DIR / LATENCY_FILE
    bench.parent.mkdir(parents=True)
    gpu = {"output": "3840x2160", "device": "NVIDIA H200", "device_type": "cuda", "gaussians": 100_000}
    rows = [{**gpu, "config": "1920x1080+2x", "sr": 2, "total_ms": 4.0, "at": "2026-11-01T00:00:00Z"},
            {**gpu, "config": "1920x1080+2x", "sr": 2, "total_ms": 3.1, "at": "2026-12-01T00:00:00Z"},
            {"config": "960x540+4x", "sr": 4, "output": "3840x2160", "device": "cpu (2 cores)", "device_type": "cpu",
             "gaussians": 100_000, "total_ms": None, "at": "2026-12-01T00:00:00Z"}]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"arms": {"render_full": {"n": 3}, "render_half_sr2": {"n": 3, "delta_db": -0.4, "delta_ci": [-0.6, -0.2],
                                                                       "verdict": "worse"},
                        "render_quarter_sr4": {"n": 3, "delta_db": -1.2, "delta_ci": [-1.5, -0.9], "verdict": "worse"}}}
    table = {r["arm"]: r for r in tradeoff_rows(ablation, summary, [tmp_path / "runs"])}
    assert [table[a]["sr_scale"] for a in ("render_full", "render_half_sr2", "render_quarter_sr4")] == [1, 2, 4]
    assert table["render_half_sr2"]["latency_ms"] == 3.1  # the newest GPU record for that factor
    assert table["render_quarter_sr4"]["latency_ms"] is None  # a CPU row has no total: not a number to show
    assert latency_text(table["render_quarter_sr4"]).startswith("not measured on a GPU")
    assert tradeoff_rows(load_ablation(ROOT / "ablations" / "decoder_depth.yaml"), summary, [tmp_path]) is None
    markdown = render_markdown({**json.loads((ROOT / "reports" / "examples" / "decoder_depth" / "summary.json")
                                             .read_text()), "tradeoff": list(table.values())}, None)
    assert ("| `render_half_sr2` | 2x | -0.40 | [-0.60, -0.20] | worse | "
            "3.10 ms (1920x1080+2x, NVIDIA H200, 100,000 Gaussians) |") in markdown
    from reflect.reports.ablation_html import render_html

    page = render_html({**json.loads((ROOT / "reports" / "examples" / "decoder_depth" / "summary.json").read_text()),
                        "tradeoff": list(table.values())}, {})
    assert "Quality × latency" in page and "3.10 ms (1920x1080+2x, NVIDIA H200, 100,000 Gaussians)" in page


def test_reports_state_how_each_arms_model_differs_in_size_from_the_baseline():
    import json

    from reflect.reports.text import parameter_differences

    summary = json.loads((ROOT / "reports" / "examples" / "decoder_depth" / "summary.json").read_text())
    base = summary["arms"]["five_layer"]["parameter_counts"]
    summary["arms"]["six_layer"]["parameter_counts"] = {**base, "decoder": base["decoder"] + 9248,
                                                        "total": base["total"] + 9248}
    assert parameter_differences(summary) == ["`six_layer` +9,248 vs `five_layer` (decoder +9,248)"]
    summary["arms"]["six_layer"]["parameter_counts"] = dict(base)
    assert parameter_differences(summary) == []  # same size: nothing to say
