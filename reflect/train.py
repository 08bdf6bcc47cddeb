"""``python -m reflect.train [CONFIG] [key=value ...]``: train one configuration.

With no CONFIG it trains the quick profile on the embedded synthetic head;
``data.root=PATH`` points it at a real GaussianAvatars/VHAP export;
``trainer.max_steps=N`` shortens it.
"""
from __future__ import annotations

if __name__ == "__main__":  # the CLI process: its heavy imports without the cyclic GC (reflect.startup)
    from reflect.startup import pause_gc

    pause_gc()

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from rich.console import Console

from reflect.ablation.store import atomic_write_json
from reflect.cli_errors import exit_on_user_error
from reflect.config import config_hash, load_train_config
from reflect.config_loading import to_plain_dict
from reflect.tracking import make_wandb_logger

console = Console()


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m reflect.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("items", nargs="*", metavar="CONFIG|key=value",
                   help="an optional config file or profile name (quick, full), then overrides")
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    return p.parse_intermixed_args(argv)  # options and key=value in any order (cpython#59317)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m reflect.train [PROFILE|FILE] [key=value ...]``: train one configuration, write its metrics.json.

    Args:
        argv: the command line after the program name (None: ``sys.argv[1:]``); ``--help`` lists it.
    Returns:
        0 when training finished. A user error (bad config, missing data) exits 2 with one line naming the cause; Ctrl-C
        exits 130 with the checkpoint kept.
    """
    args = parse_args(argv)
    source = None
    overrides = list(args.items)
    if overrides and "=" not in overrides[0]:
        source = overrides.pop(0)
    with exit_on_user_error("reflect.train"):
        cfg = load_train_config(source, overrides)
        chash = config_hash(cfg)
        workdir = Path(cfg.output_dir) / f"{chash}-s{cfg.seed}"
        logger = make_wandb_logger(cfg.tracking, name=f"train-{chash}-s{cfg.seed}", save_dir=workdir,
                                   config=to_plain_dict(cfg), job_type="train", tags=[cfg.profile],
                                   run_id=f"train-{chash}-s{cfg.seed}",
                                   resuming=not args.no_resume and (workdir / "checkpoints" / "last.ckpt").is_file(),
                                   start_service=True)
        # after the logger: W&B's service starts in the background while Lightning imports
        from reflect.startup import freeze_imports
        from reflect.training import train

        freeze_imports()
        result = train(cfg, workdir, resume=not args.no_resume, logger=logger)
        final = result.eval_history[-1]
        # atomically (temp file + os.replace): a kill mid-write leaves the previous metrics.json whole
        atomic_write_json(workdir / "metrics.json",
                          {"config_hash": chash, "eval_history": result.eval_history, "per_frame": result.per_frame,
                           "parameter_counts": result.parameter_counts, "lpips": result.lpips_status,
                           "lpips_reason": result.lpips_reason, "wall_time_s": result.wall_time_s})
        for i, split in enumerate(cfg.eval.splits):
            lp = final.get(f"{split}/lpips")
            line = f"[bold]{split}[/] PSNR {final[f'{split}/psnr']:.2f} dB  SSIM {final[f'{split}/ssim']:.4f}"
            if i == 0:
                line += f"  LPIPS {f'{lp:.4f}' if lp is not None else result.lpips_status}"
            regions = sorted(k for k in final if k.startswith(f"{split}/psnr_") and k != f"{split}/psnr_masked")
            for key in regions:  # region scores the dataset provides, e.g. the synthetic head's wrinkles
                if final[key] is not None:
                    line += f"  {key.split('/psnr_')[1]} PSNR {final[key]:.2f} dB"
            console.print(line)
        if result.lpips_reason:
            console.print(f"LPIPS unavailable: {result.lpips_reason}", style="dim", markup=False)
        console.print(f"parameters: {result.parameter_counts}")
        console.print(f"checkpoint: {result.checkpoint}\nmetrics: {workdir / 'metrics.json'}  "
                      f"({result.steps} steps, {result.wall_time_s:.0f} s)")
        if logger is not None:
            logger.experiment.finish()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:  # the collector resumes on every way out (reflect.startup)
        from reflect.startup import freeze_imports

        freeze_imports()
