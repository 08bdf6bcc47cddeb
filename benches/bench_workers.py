"""The same ablation with 1 and with N local workers, side by side: wall time, trials, speed-up.

Run: ``python benches/bench_workers.py [--workers 2] [--seeds 3] [--small] [key=value ...]``. Each run
trains a fresh copy of a two-arm ablation (fixed seeds, so both runs train the same trials) in a temporary
store: the quick profile's own trials on the embedded synthetic head (about 15 s each on 2 cores), or with
``--small`` the tests' 32×32 head for 120 steps, where process start-up (imports, ~4 s per worker) dominates. ``--workers N`` gives each worker cores/N torch (and numba) threads, so on a
machine with few cores the speed-up measures how well one trial uses its threads, not extra hardware.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reflect.ablation.runner import RunOptions, run_ablation, store_for  # noqa: E402

ABLATION = """
name: bench_workers
phase: 2
question: How much faster do {workers} local workers drain the same queue than one?
citations: ["Optuna (Akiba et al., KDD 2019): one study, many workers", "reflect: the local --workers path"]
base: quick
arms:
  concat: {{model.decoder.expr_conditioning: concat}}
  film: {{model.decoder.expr_conditioning: film}}
baseline: concat
seeds: {seeds}
metric: {{name: val/psnr, mode: max, window: 2}}
expected: {{gain_db: null, source: "a timing bench, not a decision"}}
"""
SMALL = ["data.synthetic.image_size=32", "data.synthetic.n_train_timesteps=12", "data.synthetic.n_val_timesteps=3",
         "data.synthetic.n_test_timesteps=2", "data.synthetic.supersample=1", "data.max_eval_frames=4", "model.gaussians.num_gaussians=1000",
         "trainer.max_steps=120", "trainer.eval_every=40", "trainer.checkpoint_every=120",
         "trainer.progress_bar=false", "tracking.wandb=false"]


def run_once(workers: int, seeds: int, overrides: List[str]) -> tuple[float, int]:
    """Wall seconds and completed trials of one fresh run with ``workers`` processes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_workers.yaml"
        path.write_text(ABLATION.format(workers=workers, seeds=seeds))
        opts = RunOptions(path=str(path), overrides=tuple(overrides), runs_dir=str(Path(tmp) / "runs"))
        start = time.perf_counter()
        ablation = run_ablation(opts, workers=workers)
        wall = time.perf_counter() - start
        done = sum(1 for r in store_for(ablation, opts.runs_dir).records() if r.status == "complete")
    return wall, done


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="training overrides for every trial")
    parser.add_argument("--workers", type=int, default=2, help="workers of the second run (the first has 1)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm (two arms)")
    parser.add_argument("--small", action="store_true", help="tiny trials (start-up cost dominates)")
    args = parser.parse_args(argv)
    import os

    overrides = [*(SMALL if args.small else ["trainer.progress_bar=false", "tracking.wandb=false"]), *args.overrides]
    rows = [(w, *run_once(w, args.seeds, overrides)) for w in (1, args.workers)]
    print(f"{os.cpu_count()} cores; 2 arms x {args.seeds} seeds; overrides: {' '.join(overrides)}")
    print(f"{'workers':>7} | {'wall s':>8} | {'trials':>6} | {'s/trial':>8} | {'speed-up':>8}")
    print("-" * 50)
    for workers, wall, done in rows:
        print(f"{workers:>7} | {wall:>8.1f} | {done:>6} | {wall / max(done, 1):>8.1f} | {rows[0][1] / wall:>7.2f}x")


if __name__ == "__main__":
    main()
