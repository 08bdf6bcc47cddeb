"""``python -m reflect.sweep FILE``: an Optuna search over training-config knobs.

Samplers and pruners are Optuna's own (TPE, random, grid, CMA-ES; median,
Hyperband); every trial is recorded in the results store like an ablation
trial, so a rerun returns finished configurations from the store instead of
retraining them. ``--export-wandb OUT.yaml`` writes the equivalent W&B sweep.
"""
from __future__ import annotations

if __name__ in ("__main__", "__mp_main__"):  # the CLI and its spawned workers: imports without the cyclic GC
    from reflect.startup import pause_gc

    pause_gc()

import argparse
import multiprocessing as mp
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from rich.console import Console
from rich.table import Table

from reflect.ablation.sweep_spec import SweepSpec, load_sweep
from reflect.ablation.sweep_worker import _spawned_worker, worker
from reflect.cli_errors import exit_on_user_error
from reflect.config import PROFILES
from reflect.startup import freeze_imports

console = Console()


def export_wandb(spec: SweepSpec, base: str, out: Path) -> None:
    """Write the equivalent W&B sweep (for users who run ``wandb agent``): reflect.train takes key=value args.

    Args:
        spec: the sweep.
        base: the profile or config file the W&B runs start from.
        out: the YAML file to write (its folder is created).
    """
    method = {"tpe": "bayes", "cmaes": "bayes", "random": "random", "grid": "grid"}[spec.sampler.name]
    params: dict[str, Any] = {}
    for key, p in spec.space.items():
        if p.type == "categorical":
            params[key] = {"values": list(p.choices)}
        elif p.type == "int":
            params[key] = {"distribution": "q_log_uniform_values" if p.log else "int_uniform",
                           "min": int(p.low), "max": int(p.high), **({"q": int(p.step)} if p.log and p.step else {})}
        else:
            params[key] = {"distribution": "log_uniform_values" if p.log else "uniform", "min": p.low, "max": p.high}
    for key, value in spec.overrides.items():
        params[key] = {"value": value}
    params["seed"] = {"value": spec.seed}
    doc: dict[str, Any] = {
        "name": spec.name, "method": method,
        "metric": {"name": spec.metric.name, "goal": "maximize" if spec.metric.mode == "max" else "minimize"},
        "parameters": params,
        "command": ["${env}", "${interpreter}", "-m", "reflect.train", base, "${args_no_hyphens}"],
    }
    if spec.pruner.name == "hyperband":
        doc["early_terminate"] = {"type": "hyperband", "min_iter": spec.pruner.min_resource}
    header = ""
    if spec.pruner.name == "median":
        header = "# Optuna's median pruner has no W&B equivalent; W&B's hyperband early_terminate is the closest.\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + yaml.safe_dump(doc, sort_keys=False))


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: the arguments (None: ``sys.argv[1:]``).
    Returns:
        The parsed options; ``overrides`` holds the ``key=value`` arguments, in any order among the options.
    """
    p = argparse.ArgumentParser(prog="python -m reflect.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--dry-run", action="store_true", help="validate the file and print the search space")
    p.add_argument("--profile", choices=PROFILES, help="start every trial from this profile instead of the file's base")
    p.add_argument("--storage", help="journal file path or database URL (default: runs/<sweep>/optuna.journal)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--export-wandb", metavar="OUT.yaml", help="write the equivalent W&B sweep config and exit")
    return p.parse_intermixed_args(argv)  # options and key=value in any order (cpython#59317)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m reflect.sweep``: validate, dry-run, export or run the sweep and print its trials.

    Args:
        argv: the arguments (None: ``sys.argv[1:]``).
    Returns:
        The exit status: 0 with at least one complete trial (or for a dry run or an export), 1 with none; a user
        error exits 2 with one line naming the file and key.
    """
    args = parse_args(argv)
    freeze_imports()
    with exit_on_user_error("reflect.sweep"):
        spec, (base, _, base_cfg) = load_sweep(args.file, tuple(args.overrides), args.profile)
        if args.export_wandb:
            export_wandb(spec, base, Path(args.export_wandb))
            console.print(f"wrote {args.export_wandb}")
            return 0
        table = Table(title=f"sweep {spec.name}: {spec.n_trials} trials, sampler {spec.sampler.name}, "
                            f"pruner {spec.pruner.name}, metric {spec.metric.name} ({spec.metric.mode})")
        for col in ("key", "type", "range / choices", "log"):
            table.add_column(col)
        for key, p in spec.space.items():
            rng = str(p.choices) if p.type == "categorical" else f"[{p.low}, {p.high}]"
            table.add_row(key, p.type, rng, str(p.log))
        console.print(table)
        from reflect.ablation.machine import config_problems, describe_data
        from reflect.reports.console import print_machine_problems

        console.print(describe_data(base_cfg)[0])  # a missing or corrupt capture stops here, before any trial
        problems = config_problems(base_cfg)
        if problems:
            print_machine_problems(problems, "sweep")
            return 2
        if args.dry_run:
            console.print("dry run: the sweep, its space and its data are valid; nothing was trained.")
            return 0
        if args.workers <= 1:
            worker(args.file, tuple(args.overrides), args.storage, args.runs_dir, spec.n_trials, profile=args.profile)
        else:
            from reflect.ablation.machine import usable_cores
            from reflect.ablation.runner import forward_signals, worker_threads_env

            ctx = mp.get_context("spawn")
            threads = max(1, usable_cores() // args.workers)
            procs = [ctx.Process(target=_spawned_worker,
                                 args=(args.file, tuple(args.overrides), args.storage, args.runs_dir, spec.n_trials,
                                       threads, index, args.profile))
                     for index in range(args.workers)]
            with worker_threads_env(threads):
                for proc in procs:
                    proc.start()
            with forward_signals(procs) as received:
                for proc in procs:
                    proc.join()
            if received:  # the workers stopped at a step boundary and recorded it; now this process stops too
                raise KeyboardInterrupt(f"{received[0]} forwarded to the workers")
        return print_sweep_results(spec, args.runs_dir)


def print_sweep_results(spec: SweepSpec, runs_dir: str) -> int:
    """Print every trial of the sweep's store (status, windowed metric, params).

    Args:
        spec: the sweep.
        runs_dir: the results stores' root.
    Returns:
        0 if any trial is complete, else 1.
    """
    from reflect.ablation.store import ResultsStore

    records = sorted(ResultsStore(Path(runs_dir) / spec.name).records(), key=lambda r: r.arm)
    table = Table(title=f"{spec.name}: {spec.metric.name} (avg of last {spec.metric.window} evals)")
    for col in ("trial", "status", "value", "params"):
        table.add_column(col)
    for r in records:
        table.add_row(r.arm, r.status, "—" if r.windowed_metric is None else f"{r.windowed_metric:.3f}",
                      ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.overrides.items()))
    console.print(table)
    return 0 if any(r.status == "complete" for r in records) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:  # the collector resumes on every way out (reflect.startup)
        freeze_imports()
