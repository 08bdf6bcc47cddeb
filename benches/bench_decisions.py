"""Seeds and wall time of the sequential seed design vs a fixed ``max``, simulated and on a real store.

    python benches/bench_decisions.py [--ablation ablations/film_vs_concat.yaml] [--runs-dir runs]
                                      [--simulations 2000] [--profile P] [key=value ...]

Overrides and ``--profile`` as given to ``reflect.ablate``: a store's trials are those of the ablation as it was
run (with other overrides, the trials have other config hashes and are not this ablation's).

Part 1 simulates ablations with the engine's own replay (reflect.analysis.simulation), at the paired spread the
store measured (or the engine's stated assumption when it has none): per scenario, the
verdicts, the share of ablations whose sequential verdict equals the fixed-max verdict on the same data,
and the trials run (baseline included) as a share of the fixed design's. Wall time is those trials times
the mean trial time measured in the store (or a stated assumption when the store is empty).
Part 2 reads the ablation's results store (run `python -m reflect.ablate FILE` first): the trials the
sequential design really ran and their summed wall time, against the fixed-max design's trial count at the
same measured mean trial time (an estimate: those extra trials were not run).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reflect.ablation.spec import load_ablation  # noqa: E402
from reflect.ablation.store import COMPLETE, ResultsStore  # noqa: E402
from reflect.config_loading import ConfigError  # noqa: E402
from reflect.analysis.inputs import current_records  # noqa: E402
from reflect.analysis.simulation import at_margin, null_effect, simulate, uniform_effects  # noqa: E402
from reflect.analysis.verdicts import DEFAULT_PSNR_SPREAD_DB, analyze  # noqa: E402

# A quick-profile trial on one thread of this project's 2-core machine (measured at db185b7: ~21 s; ~15 s on two
# threads), used only when the store has no finished trial to measure.
ASSUMED_TRIAL_S = 21.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ablation", default=str(ROOT / "ablations" / "film_vs_concat.yaml"))
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--simulations", type=int, default=2000)
    p.add_argument("--profile", default=None, help="the profile the ablation ran on (as reflect.ablate --profile)")
    p.add_argument("overrides", nargs="*", help="key=value overrides the ablation ran with (as reflect.ablate)")
    args = p.parse_args()

    try:
        ablation = load_ablation(args.ablation, args.overrides, profile=args.profile)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    looks, max_seeds = ablation.design.looks, ablation.design.max_seeds
    arms = len(ablation.arms) - 1
    store = ResultsStore(Path(args.runs_dir) / ablation.name)
    used = [r for r in current_records(ablation, store.records()) if r.status == COMPLETE and r.wall_time_s]
    trial_s = statistics.mean(r.wall_time_s for r in used) if used else ASSUMED_TRIAL_S
    cost = f"{trial_s:.1f} s per trial ({'measured over ' + str(len(used)) + ' trials' if used else 'assumed'})"
    # simulate at the store's own paired spread when it has measured one, else at the stated assumption
    observed = analyze(ablation, store.records()).spread if used else None
    if observed is not None and observed.source == "observed" and observed.sd:
        spread_db, spread_from = observed.sd, f"observed in the store, {observed.df} df"
    else:
        spread_db, spread_from = DEFAULT_PSNR_SPREAD_DB, "assumed: no paired seeds in the store"

    print(f"Simulated ablations: {arms} arm(s) vs the baseline, looks {list(looks)}, margin {ablation.margin} dB, "
          f"σ_d = {spread_db:.3f} dB ({spread_from}), α = {ablation.decision.alpha} per side, {args.simulations} "
          f"each; trial cost {cost}")
    header = (f"{'true gains (dB)':<24}{'better':>8}{'worse':>8}{'equiv':>8}{'inconcl':>9}{'false +':>9}"
              f"{'agree':>8}{'trials seq/fixed':>18}{'wall seq/fixed':>20}{'ratio':>7}")
    print(header)
    print("-" * len(header))
    for label, sampler in [("uniform [-1, +1]", uniform_effects(-1, 1)), ("uniform [-0.5, +0.5]", uniform_effects(-0.5, 0.5)),
                           ("all at +margin", at_margin(ablation.margin)), ("all 0 (A/A)", null_effect()),
                           ("all +1.0", uniform_effects(1.0, 1.0))]:
        start = time.perf_counter()
        r = simulate(sampler, spread_db, ablation.margin, looks, ablation.decision.alpha, arms=arms,
                     ablations=args.simulations, seed=1)
        fixed_trials = (arms + 1) * max_seeds
        seq_trials = r.seed_fraction * fixed_trials
        v = {k: n / (args.simulations * arms) for k, n in r.verdicts.items()}
        print(f"{label:<24}{v['better']:>8.3f}{v['worse']:>8.3f}{v['equivalent']:>8.3f}{v['inconclusive']:>9.3f}"
              f"{r.false_better:>9.4f}{r.agreement:>8.3f}{seq_trials:>9.1f}/{fixed_trials:<8d}"
              f"{seq_trials * trial_s / 60:>11.1f} / {fixed_trials * trial_s / 60:<5.1f} min{r.seed_fraction:>7.2f}"
              f"   ({time.perf_counter() - start:.1f} s to simulate)")

    print()
    records = list(store.records())
    if not current_records(ablation, records):
        print(f"{ablation.name}: no trials of this plan in {store.root} (run `python -m reflect.ablate "
              f"{args.ablation}` first, and pass the overrides and --profile it ran with)")
        return 0
    analysis = analyze(ablation, records)
    ran = [r for r in current_records(ablation, records) if r.status in (COMPLETE, "failed")]
    wall = sum(r.wall_time_s or 0.0 for r in ran)
    fixed_trials = len(ablation.arms) * max_seeds
    print(f"{ablation.name} (quick profile, store {store.root}): looks taken {analysis.looks_taken}/{len(looks)}, "
          f"finished: {analysis.finished}")
    for name, arm in analysis.arms.items():
        if not arm.is_baseline:
            print(f"  {name}: {arm.verdict}" + (f" at {arm.decided_at} seeds" if arm.decided else "")
                  + (f", next look {arm.next_seeds}" if arm.next_seeds else ""))
    print(f"{'design':<26}{'trials':>8}{'wall (min)':>12}")
    print(f"{'sequential (ran)':<26}{len(ran):>8}{wall / 60:>12.1f}")
    print(f"{'fixed max (estimated)':<26}{fixed_trials:>8}{fixed_trials * trial_s / 60:>12.1f}")
    print(f"ratio sequential / fixed: trials {len(ran) / fixed_trials:.2f}, wall {wall / (fixed_trials * trial_s):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
