"""The analysis layer: tests against scipy/statsmodels, boundaries, power, Holm, and the replay on records."""
import json
import textwrap

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from reflect.ablation.plan import plan_trials
from reflect.ablation.spec import load_ablation
from reflect.ablation.store import ResultsStore, TrialRecord
from reflect.analysis import design as design_module
from reflect.analysis.design import boundaries
from reflect.analysis.hypothesis import (equivalence_test, inferiority_test, interval, superiority_test,
                                         verdict_from_interval, family_test, FAMILIES)
from reflect.analysis.power import minimum_detectable_effect
from reflect.analysis.verdicts import analyze
from reflect.config_loading import ConfigError
from reflect.reports.ablation import write_ablation_report

RNG = np.random.default_rng(11)
SAMPLES = [RNG.normal(mu, sd, n) for mu, sd, n in [(0.3, 0.1, 3), (-0.2, 0.3, 5), (0.05, 0.1, 8), (1.0, 0.5, 12)]]


@pytest.mark.parametrize("gains", SAMPLES)
def test_one_sided_tests_match_scipy(gains):
    margin = 0.1
    sup = superiority_test(gains, margin, 0.025)
    ref = sps.ttest_1samp(gains - margin, 0.0, alternative="greater")
    assert sup.p_value == pytest.approx(ref.pvalue, abs=1e-9) and sup.statistic == pytest.approx(ref.statistic, abs=1e-9)
    inf = inferiority_test(gains, -margin, 0.025)
    ref = sps.ttest_1samp(gains + margin, 0.0, alternative="less")
    assert inf.p_value == pytest.approx(ref.pvalue, abs=1e-9) and inf.statistic == pytest.approx(ref.statistic, abs=1e-9)
    assert sup.rejected == (sup.p_value <= 0.025) and sup.df == len(gains) - 1


@pytest.mark.parametrize("gains", SAMPLES)
def test_tost_matches_statsmodels(gains):
    baseline = RNG.normal(30.0, 0.2, len(gains))
    arm = baseline + gains
    for margin in (0.1, 0.5, 2.0):
        ours = equivalence_test(arm - baseline, margin, 0.05)
        p_ref = ttost_paired(arm, baseline, -margin, margin)[0]
        assert ours.p_value == pytest.approx(p_ref, abs=1e-9)


@pytest.mark.parametrize("gains", SAMPLES)
def test_interval_matches_scipy_and_never_disagrees_with_its_tests(gains):
    for level in (0.025, 0.0086, 0.0022):
        lo, hi = interval(gains, level)
        ref = sps.t.interval(1 - 2 * level, len(gains) - 1, loc=np.mean(gains), scale=sps.sem(gains))
        assert (lo, hi) == pytest.approx(ref, abs=1e-9)
        for margin in (0.0, 0.05, 0.1, 0.3, 1.0):
            tests = {f: family_test(f, gains, margin, level) for f in FAMILIES}
            by_tests = next((f for f in FAMILIES if tests[f].rejected), "inconclusive")
            assert verdict_from_interval((lo, hi), margin) == by_tests


def test_identical_arms_give_an_exact_zero_interval():
    zeros = [0.0, 0.0, 0.0]
    assert interval(zeros, 0.025) == (0.0, 0.0)
    assert equivalence_test(zeros, 0.1, 0.025).rejected and not superiority_test(zeros, 0.1, 0.025).rejected
    assert verdict_from_interval((0.0, 0.0), 0.1) == "equivalent"


def test_boundaries_are_deterministic_and_fixed_design_is_alpha():
    first = boundaries((3, 5, 8), 0.025)
    design_module._boundaries_cached.cache_clear()
    design_module._null_p_paths.cache_clear()
    assert boundaries((3, 5, 8), 0.025) == first
    assert boundaries((6,), 0.025) == (0.025,)
    # every level below alpha, and the final look close to it (Hwang–Shih–DeCani γ = −2 spends late)
    assert all(0 < a < 0.025 for a in first) and first[2] > 0.6 * 0.025
    with pytest.raises(ValueError, match="looks"):
        boundaries((5, 3), 0.025)


def test_boundaries_control_the_error_on_fresh_null_paths():
    """An independent simulation (other seed, other size than the calibration): P(any look rejects) ≈ α."""
    looks, alpha, paths = (3, 5, 8), 0.025, 100_000
    levels = boundaries(looks, alpha)
    x = np.random.default_rng(99).standard_normal((paths, looks[-1]))
    rejected = np.zeros(paths, dtype=bool)
    for n, level in zip(looks, levels):
        t = x[:, :n].mean(1) / (x[:, :n].std(1, ddof=1) / np.sqrt(n))
        rejected |= sps.t.sf(t, n - 1) <= level
    se = np.sqrt(alpha * (1 - alpha) / paths)
    assert abs(rejected.mean() - alpha) < 4 * se


def test_mde_has_the_stated_power():
    sd, n, level, margin = 0.1, 5, 0.01, 0.1
    mde = minimum_detectable_effect(sd, n, level, margin)
    critical = sps.t.isf(level, n - 1)
    power = sps.nct.sf(critical, n - 1, (mde - margin) / (sd / np.sqrt(n)))
    assert power == pytest.approx(0.8, abs=1e-6)
    assert minimum_detectable_effect(sd, 8, level, margin) < mde
    assert minimum_detectable_effect(sd, 1, level, margin) is None


# --- the replay on trial records --------------------------------------------------------------------------

ABLATION = """
name: decide
phase: 2
question: q?
citations: [a, b]
base: quick
arms:
  concat: {{model.decoder.expr_conditioning: concat}}
  film: {{model.decoder.expr_conditioning: film}}
  none: {{model.decoder.expr_conditioning: none}}
baseline: concat
seeds: {seeds}
metric: {{name: {metric}, mode: {mode}, window: 3}}
expected: {{gain_db: 0.3, source: lit}}
decision: {decision}
"""


def write(tmp_path, seeds="{min: 3, max: 8}", metric="val/psnr", mode="max", decision="{min_effect_db: 0.1}"):
    path = tmp_path / "decide.yaml"
    path.write_text(textwrap.dedent(ABLATION.format(seeds=seeds, metric=metric, mode=mode, decision=decision)))
    return path


def records_for(ablation, values, status=None, protocol=None):
    """Complete records with today's config hashes; ``values[arm][seed]`` is the windowed metric."""
    status, protocol = status or {}, protocol or {}
    out = []
    for p in plan_trials(ablation, seeds=sorted({s for v in values.values() for s in v})):
        if p.seed not in values.get(p.arm, {}):
            continue
        v = values[p.arm][p.seed]
        st = status.get((p.arm, p.seed), "complete")
        hist = [{"step": 10 * i, ablation.metric.name: v} for i in range(1, 6)]
        out.append(TrialRecord(study=ablation.name, arm=p.arm, seed=p.seed, config_hash=p.config_hash, status=st,
                               windowed_metric=v if st == "complete" else None, eval_history=hist,
                               metric_name=ablation.metric.name,
                               protocol=protocol.get((p.arm, p.seed), {"dataset_fingerprint": "d", "resolution": [64, 64]}),
                               failure_reason=None if st == "complete" else "DivergenceError: test"))
    return out


def seeds_values(effect, n, spread=0.1, seed=0):
    rng = np.random.default_rng(seed)
    return {s: 30.0 + effect + spread * rng.standard_normal() for s in range(n)}


def test_sequential_replay_decides_clear_arms_at_the_first_look(tmp_path):
    ablation = load_ablation(write(tmp_path))
    values = {"concat": seeds_values(0, 3, seed=1), "film": seeds_values(0.02, 3, seed=2)}
    values["none"] = {s: values["concat"][s] - 3.0 + 0.05 * (s - 1) for s in range(3)}
    a = analyze(ablation, records_for(ablation, values))
    none, film = a.arms["none"], a.arms["film"]
    assert a.looks_taken == 1 and not a.finished
    assert none.verdict == "worse" and none.decided_at == 3 and none.next_seeds is None
    assert film.verdict == "inconclusive" and film.next_seeds == 5
    # only the undecided arm and the baseline get the next look's seeds
    assert a.trials_to_run() == {"film": (0, 1, 2, 3, 4), "concat": (0, 1, 2, 3, 4)}
    # the interval shown is at the level of the verdict's test, and says the same thing
    level = none.tests["worse"].level
    assert none.interval_confidence == pytest.approx(1 - 2 * level)
    assert none.delta_ci[1] < -ablation.margin
    gains = [values["none"][s] - values["concat"][s] for s in range(3)]
    assert none.tests["worse"].p_value == pytest.approx(
        sps.ttest_1samp(np.array(gains) + 0.1, 0, alternative="less").pvalue, abs=1e-9)
    assert level == boundaries((3, 5, 8), 0.025 / 2)[0]  # Holm's first step: α/2 with two arms


def test_no_verdict_before_the_first_look(tmp_path):
    ablation = load_ablation(write(tmp_path))
    values = {"concat": seeds_values(0, 2), "film": seeds_values(5.0, 2), "none": seeds_values(5.0, 2)}
    a = analyze(ablation, records_for(ablation, values))
    assert a.looks_taken == 0 and all(a.arms[n].verdict == "inconclusive" for n in ("film", "none"))
    assert a.arms["film"].next_seeds == 3 and "has not been reached" in a.notes[0]


def test_holm_raises_the_level_after_a_rejection(tmp_path):
    """Fixed design, two arms: one clearly better, the other only at α — rejected at α/1 after the first."""
    ablation = load_ablation(write(tmp_path, seeds="6"))
    base = seeds_values(0, 6, seed=3)
    film = {s: base[s] + 2.0 + 0.05 * (-1) ** s for s in range(6)}
    noise = np.array([0.05, -0.04, 0.06, -0.05, 0.04, -0.06])
    # gains chosen so that the superiority p-value lies between α/2 and α
    target = sps.t.isf(0.018, 5) * noise.std(ddof=1) / np.sqrt(6) + 0.1
    none = {s: base[s] + target + noise[s] - noise.mean() for s in range(6)}
    a = analyze(ablation, records_for(ablation, {"concat": base, "film": film, "none": none}))
    p_none = a.arms["none"].tests["better"].p_value
    assert 0.0125 < p_none < 0.025
    assert a.arms["film"].verdict == "better" and a.arms["none"].verdict == "better"
    assert a.arms["none"].tests["better"].level == pytest.approx(0.025)
    # Holm-adjusted p-values are statsmodels'
    for family in FAMILIES:
        ps = [a.arms[n].tests[family].p_value for n in ("film", "none")]
        ref = multipletests(ps, method="holm")[1]
        assert [a.arms[n].holm_p[family] for n in ("film", "none")] == pytest.approx(list(ref), abs=1e-12)


def test_more_failures_than_the_baseline_is_never_better(tmp_path):
    ablation = load_ablation(write(tmp_path, seeds="4"))
    base = seeds_values(0, 4)
    film = {s: base[s] + 2.0 + 0.01 * s for s in range(4)}
    values = {"concat": base, "film": film, "none": dict(film)}
    recs = records_for(ablation, values, status={("none", 3): "failed"})
    a = analyze(ablation, recs)
    assert a.arms["film"].verdict == "better"
    none = a.arms["none"]
    assert none.verdict == "inconclusive" and none.failures.failed == 1 and none.failures.baseline_failed == 0
    assert "not judged better" in none.failures.flag


def test_trials_under_another_protocol_are_not_compared(tmp_path):
    ablation = load_ablation(write(tmp_path, seeds="3"))
    values = {a: seeds_values(0, 3) for a in ("concat", "film", "none")}
    other = {("film", 2): {"dataset_fingerprint": "other", "resolution": [64, 64]}}
    a = analyze(ablation, records_for(ablation, values, protocol=other))
    assert [(e.arm, e.seed, e.differences) for e in a.exclusions] == [("film", 2, ("dataset_fingerprint",))]
    assert 2 not in a.arms["film"].values and a.arms["film"].seeds_used == (0, 1)


def test_planned_seeds_after_the_deciding_look_are_ignored(tmp_path):
    ablation = load_ablation(write(tmp_path))
    base = seeds_values(0, 5)
    values = {"concat": base, "none": {s: base[s] - 3 + 0.01 * s for s in range(5)},
              "film": {s: base[s] - 3 + 0.01 * s for s in range(5)}}
    a = analyze(ablation, records_for(ablation, values))
    none = a.arms["none"]
    assert none.decided_at == 3 and none.seeds_used == (0, 1, 2) and not none.notes


def test_seeds_outside_the_design_wait_for_its_looks_then_are_flagged(tmp_path):
    ablation = load_ablation(write(tmp_path))
    by_hand = {a: {s: 30.0 + (2.0 if a == "film" else 0.0) + 0.01 * s for s in (10, 11)}
               for a in ("concat", "film", "none")}
    a = analyze(ablation, records_for(ablation, by_hand))
    assert a.looks_taken == 0 and not a.finished and a.arms["film"].next_seeds == 3
    assert a.trials_to_run()["film"] == (0, 1, 2) and "set aside" in a.arms["film"].notes[0]

    fixed = load_ablation(write(tmp_path, seeds="3"))
    base = seeds_values(0, 3)
    values = {"concat": {**base, 7: 30.0, 8: 30.1}}
    values["film"] = {s: v + 2.0 + 0.01 * s for s, v in values["concat"].items()}
    values["none"] = {s: v + 0.01 * s for s, v in values["concat"].items()}
    a = analyze(fixed, records_for(fixed, values))
    film = a.arms["film"]
    assert film.verdict == "better" and film.seeds_used == (0, 1, 2, 7, 8) and film.decided_at == 5
    assert any("design left" in n and "no longer holds" in n for n in film.notes)


def test_the_verdict_reads_the_files_window_not_the_stored_one(tmp_path):
    ablation = load_ablation(write(tmp_path, seeds="3"))
    recs = records_for(ablation, {a: seeds_values(0, 3) for a in ("concat", "film", "none")})
    for r in recs:
        r.eval_history = [{"step": 10 * i, "val/psnr": 20.0 + i} for i in range(1, 6)]
        r.windowed_metric = -1.0  # stale: computed under another window
    a = analyze(ablation, recs)
    assert a.arms["film"].values[0] == pytest.approx((23 + 24 + 25) / 3)  # window 3 of the file


def test_min_metric_flips_the_gain(tmp_path):
    ablation = load_ablation(write(tmp_path, seeds="4", metric="val/lpips", mode="min", decision="{margin: 0.005}"))
    base = {s: 0.10 + 0.001 * s for s in range(4)}
    values = {"concat": base, "film": {s: v - 0.05 for s, v in base.items()},
              "none": {s: v + 0.05 + 0.0001 * s for s, v in base.items()}}
    a = analyze(ablation, records_for(ablation, values))
    assert a.arms["film"].verdict == "better" and a.arms["film"].delta == pytest.approx(-0.05)
    assert a.arms["none"].verdict == "worse" and a.arms["none"].delta_ci[0] > 0


@pytest.mark.parametrize("kwargs, key, pattern", [
    (dict(metric="val/ssim", decision="{min_effect_db: 0.1}"), "decision.min_effect_db", "dB does not apply"),
    (dict(metric="val/ssim", decision="{confidence: 0.95}"), "decision.margin", "expected a margin"),
    (dict(decision="{min_effect_db: 0.1, margin: 0.1}"), "decision.margin", "not both"),
    (dict(seeds="{min: 1, max: 5}"), "seeds", "2 <= min < max"),
    (dict(seeds="{min: 3, max: 8, every: 2}"), "seeds", "unknown key 'every'"),
    (dict(seeds="{min: 3, max: 8, looks: [3, 4]}"), "seeds.looks", "from min"),
])
def test_bad_decisions_name_the_key(tmp_path, kwargs, key, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        load_ablation(write(tmp_path, **kwargs))
    assert key in str(info.value) and "decide.yaml" in str(info.value)


def test_window_longer_than_the_evaluations_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"metric\.window: expected at most the 2 evaluations"):
        load_ablation(write(tmp_path), overrides=["trainer.max_steps=100"])


def test_default_looks_and_command_line_seeds(tmp_path):
    ablation = load_ablation(write(tmp_path))
    assert ablation.design.looks == (3, 5, 8) and ablation.seeds == list(range(8))
    fixed = load_ablation(write(tmp_path), seeds=[0, 1, 2, 3])
    assert fixed.design.looks == (4,) and fixed.seeds_from_command_line
    a = analyze(fixed, [])
    assert "--seeds replaced" in a.notes[-1]


def test_summary_is_byte_identical_for_the_same_store(tmp_path):
    ablation = load_ablation(write(tmp_path))
    values = {a: seeds_values(0.5 if a == "film" else 0, 5, seed=4) for a in ("concat", "film", "none")}
    store = ResultsStore(tmp_path / "runs" / ablation.name)
    for rec in records_for(ablation, values):
        store.write(rec)
    write_ablation_report(ablation, store, tmp_path / "r1")
    write_ablation_report(ablation, store, tmp_path / "r2")
    one, two = ((tmp_path / d / "decide" / "summary.json").read_text() for d in ("r1", "r2"))
    strip = lambda text: {k: v for k, v in json.loads(text).items() if k != "generated_at"}  # noqa: E731
    assert strip(one) == strip(two)
    assert one.split('"generated_at"')[0] == two.split('"generated_at"')[0]
    summary = json.loads(one)
    film = summary["arms"]["film"]
    for key in ("n", "mean", "ci", "delta_db", "delta_ci", "verdict", "p_values", "mde", "failures", "next_seeds",
                "decided", "literature"):
        assert key in film, key
    assert summary["design"]["looks"] == [3, 5, 8] and len(summary["design"]["boundaries"]) == 3
    # the numbers are the store's
    deltas = [values["film"][s] - values["concat"][s] for s in film["seeds_used"]]
    assert film["delta_db"] == pytest.approx(np.mean(deltas), abs=1e-12)


def test_report_md_numbers_are_the_stores(tmp_path):
    """Parse the generated report.md (not the code that wrote it) and compare with the records."""
    ablation = load_ablation(write(tmp_path, seeds="4"))
    values = {a: seeds_values(effect, 4, seed=i) for i, (a, effect) in enumerate({"concat": 0, "film": 0.8, "none": -0.4}.items())}
    store = ResultsStore(tmp_path / "runs" / ablation.name)
    for rec in records_for(ablation, values):
        store.write(rec)
    write_ablation_report(ablation, store, tmp_path / "reports")
    md = (tmp_path / "reports" / "decide" / "report.md").read_text()
    for arm in ("film", "none"):
        row = next(line for line in md.splitlines() if line.startswith(f"| `{arm}` |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[1]) == 4
        assert float(cells[2]) == pytest.approx(np.mean(list(values[arm].values())), abs=0.005)
        delta = np.mean([values[arm][s] - values["concat"][s] for s in range(4)])
        assert float(cells[3]) == pytest.approx(delta, abs=0.005)
        lo, hi = (float(x) for x in cells[4].split("]")[0].strip("[").split(","))
        gains = [values[arm][s] - values["concat"][s] for s in range(4)]
        level = float(cells[4].split("(")[1].rstrip("%)")) / 100
        ref = sps.t.interval(level, 3, loc=np.mean(gains), scale=sps.sem(gains))
        assert (lo, hi) == pytest.approx(ref, abs=0.006)


def test_trials_trained_on_other_data_compare_when_scored_on_the_same_data():
    """A data decision (more sessions) changes what a trial trains on, not what it is scored on."""
    from reflect.analysis.inputs import protocol_differences

    base = {"eval_frame_ids": {"val": ["synthetic/t00000/c2"]}, "resolution": [64, 64]}
    one = {**base, "dataset_fingerprint": "aaa", "eval_dataset_fingerprint": "aaa"}
    two = {**base, "dataset_fingerprint": "bbb", "eval_dataset_fingerprint": "aaa"}
    assert protocol_differences(two, one) == ()
    assert protocol_differences({**two, "eval_dataset_fingerprint": "ccc"}, one) == ("eval_dataset_fingerprint",)
    old = {**base, "dataset_fingerprint": "bbb"}  # a record from before the evaluation fingerprint existed
    assert protocol_differences(old, one) == ("dataset_fingerprint",)
    assert protocol_differences({**one, "resolution": [32, 32]}, one) == ("resolution",)
