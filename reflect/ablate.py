"""``python -m reflect.ablate FILE [key=value ...]``: run an ablation and score it.

Every (arm, seed) is a trial of an Optuna study named after the ablation; the
results store under ``runs/<ablation>/`` is the source of truth; the end
writes ``reports/<ablation>/summary.json`` and ``report.md``. Rerunning the
same command resumes: complete trials are never redone.
"""
from __future__ import annotations

if __name__ in ("__main__", "__mp_main__"):  # the CLI and its spawned workers: imports without the cyclic GC
    from reflect.startup import pause_gc

    pause_gc()

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from reflect.cli_errors import exit_on_user_error

console = Console()


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m reflect.ablate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="an ablation file, e.g. ablations/film_vs_concat.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="training-config overrides for every arm")
    p.add_argument("--profile", choices=["quick", "full"], help="start every arm from this profile instead of `base`")
    p.add_argument("--seeds", help="seeds to run instead of the file's: a count (3) or a list (0,1,2)")
    p.add_argument("--storage", help="Optuna storage: a journal file path or a database URL "
                                     "(default: runs/<ablation>/optuna.journal)")
    p.add_argument("--workers", default="auto", type=parse_workers,
                   help="local worker processes on the same study: a number, or auto (the default): one per CPU core "
                        "up to 4 on a machine without CUDA, one per --gpus entry, else 1")
    p.add_argument("--gpus", help="GPUs for the local workers, e.g. 0,1,2,3 (worker i gets GPU i mod N; physical "
                                  "indices: they replace CUDA_VISIBLE_DEVICES)")
    p.add_argument("--runs-dir", default="runs", help="results store root (default: runs)")
    p.add_argument("--reports-dir", default="reports", help="where reports go (default: reports)")
    p.add_argument("--dry-run", action="store_true", help="validate everything and print the trial plan; train nothing")
    p.add_argument("--retry-failed", action="store_true",
                   help="run the plan's failed trials again (after fixing their cause); failed trials otherwise "
                        "count as finished, against their arm")
    p.add_argument("--rerun", action="store_true",
                   help="train every trial of the plan again from scratch (after a code change that affects "
                        "training); old records and checkpoints are kept under retried/")
    # intermixed: options and key=value overrides in any order (plain parse_args rejects overrides after an
    # option on Python < 3.12, cpython#59317)
    return p.parse_intermixed_args(argv)


def parse_workers(text: str) -> Optional[int]:
    """``--workers``: a positive count, or ``auto`` (None: ``machine.auto_workers`` decides)."""
    if text == "auto":
        return None
    try:
        workers = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or auto, got {text!r}") from None
    if workers < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (or auto), got {workers}")
    return workers


def parse_seeds(text: Optional[str]) -> Optional[tuple[int, ...]]:
    if not text:
        return None
    from reflect.config_loading import ConfigError

    try:
        parts = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError("--seeds", f"expected a count or a comma-separated list of integers, got {text!r}") from None
    if len(parts) == 1 and "," not in text:
        if parts[0] < 1:
            raise ConfigError("--seeds", f"expected a positive count, got {parts[0]}")
        return tuple(range(parts[0]))
    return tuple(parts)


class LiveStatus:
    """Renderable polled by rich.Live: the design's look, each arm's current verdict, the running trials."""

    ANALYSIS_EVERY_S = 3.0  # the replay reads every record: often enough for a person, cheap for the run

    def __init__(self, ablation, store):
        from reflect.ablation.plan import plan_trials

        self.ablation, self.store = ablation, store
        self.keys = [p.key for p in plan_trials(ablation)]
        self.started = time.time()
        self._analysis, self._analysed_at = None, 0.0

    def _verdicts(self) -> Text:
        from reflect.analysis.verdicts import analyze

        if time.time() - self._analysed_at > self.ANALYSIS_EVERY_S:
            self._analysis, self._analysed_at = analyze(self.ablation, list(self.store.records())), time.time()
        a = self._analysis
        looks = a.looks
        parts = [f"look {a.looks_taken}/{len(looks)} taken (looks at {', '.join(map(str, looks))} seeds)"]
        for name, arm in a.arms.items():
            if arm.is_baseline:
                continue
            state = arm.verdict + (f" at {arm.decided_at}" if arm.decided else "")
            if arm.next_seeds:
                state += f", running to {arm.next_seeds} seeds"
            parts.append(f"{name}: {state}")
        return Text(" · ".join(parts))

    def __rich__(self):
        records = {r.key: r for r in self.store.records()}
        done = sum(1 for k in self.keys if records.get(k) and records[k].status == "complete")
        failed = sum(1 for k in self.keys if records.get(k) and records[k].status == "failed")
        table = Table(box=None, show_header=True, header_style="bold")
        for col in ("arm", "seed", "step", self.ablation.metric.name):
            table.add_column(col)
        for k in self.keys:
            r = records.get(k)
            if r is not None and r.status == "running":
                prog = r.progress or {}
                metric = prog.get("metric")
                table.add_row(r.arm, str(r.seed), f"{prog.get('step', 0)}/{prog.get('max_steps', '?')}",
                              "—" if metric is None else f"{metric:.2f}")
        head = Text(f"{self.ablation.name}: {done} trials complete, {failed} failed, at most {len(self.keys)} "
                    f"planned, {time.time() - self.started:.0f} s")
        bar = ProgressBar(total=len(self.keys), completed=done, width=50)
        parts = [head, bar, self._verdicts()]
        return Group(*parts, table) if table.row_count else Group(*parts)


def print_plan(ablation, store) -> None:
    """The trial plan (with the look each seed enters at) and the power of each planned look."""
    from reflect.ablation.runner import trial_status

    design = ablation.design
    entering = {seed: next(n for n in design.looks if i < n) for i, seed in enumerate(design.seeds)}
    table = Table(title=f"{ablation.name}: {len(ablation.arms)} arms, {design.describe()} "
                        f"(phase {ablation.phase}, baseline {ablation.baseline})")
    for col in ("arm", "seed", "look", "config hash", "status", "overrides"):
        table.add_column(col)
    for p, rec in trial_status(ablation, store):
        status = rec.status if rec else "pending"
        table.add_row(p.arm, str(p.seed), f"{entering[p.seed]} seeds", p.config_hash, status,
                      ", ".join(f"{k}={v}" for k, v in p.overrides.items()) or "—")
    console.print(table)
    print_power(ablation, store)


def print_power(ablation, store) -> None:
    """The minimum detectable effect at each look, from the spread the store shows (or the stated default)."""
    from reflect.analysis.verdicts import analyze
    from reflect.reports.ablation import prior_spread

    analysis = analyze(ablation, list(store.records()), prior_spread(ablation, store))
    unit = "dB" if ablation.metric.kind == "psnr" else ablation.metric.kind.upper()
    spread = analysis.spread
    if spread.sd is None:
        console.print(f"power: {spread.source}; no MDE can be given")
        return
    table = Table(title=f"minimum detectable effect (80% power), margin {analysis.margin:g} {unit}")
    table.add_column("seeds per arm")
    table.add_column("one-sided level")
    table.add_column(f"MDE ({unit})")
    arm = next(a for a in analysis.arms.values() if not a.is_baseline)
    for row in arm.mde:
        table.add_row(str(row.seeds), f"{row.level:.4f}", "—" if row.mde is None else f"{row.mde:.3f}")
    console.print(table)
    console.print(f"paired spread σ_d = {spread.sd:.3f} {unit}: {spread.source}")
    expected = ablation.expected.gain_db
    if expected is not None and arm.mde and arm.mde[-1].mde is not None and abs(expected) < arm.mde[-1].mde:
        console.print(f"[yellow]underpowered[/]: the expected {expected:+.2f} {unit} is below the MDE at "
                      f"{arm.mde[-1].seeds} seeds ({arm.mde[-1].mde:.3f}); a verdict of 'better' is unlikely even "
                      "if the literature is right")


def check_data(ablation) -> str:
    """Validate the data location the arms will use without training (synthetic: where it is cached)."""
    from reflect.ablation.machine import describe_data
    from reflect.config_loading import ConfigError
    from reflect.data.synthetic import REGION_NAMES

    cfg = next(iter(ablation.arms.values())).config
    data, region = cfg.data, ablation.metric.region
    line, splits = describe_data(cfg)  # a capture: validates every transforms file, npz and image
    if splits is None:  # the embedded synthetic head
        if region is not None and region not in REGION_NAMES:
            raise ConfigError(str(ablation.path), f"the synthetic head has no region {region!r} "
                              f"(it has {list(REGION_NAMES)})", "metric.name")
        side = data.synthetic.image_size // data.downscale
        check_resolutions(ablation, (side, side))
        return line
    have = splits[ablation.metric.split].region_names
    if region is not None and region not in have:
        raise ConfigError(str(ablation.path), f"the dataset's {ablation.metric.split} frames have no region mask "
                          f"{region!r} (region_mask_paths: {have or 'none'})", "metric.name")
    check_resolutions(ablation, (splits["train"].width, splits["train"].height))
    return line


def check_resolutions(ablation, first_size: tuple[int, int]) -> None:
    """Every arm's training resolution must be divisible by its decoder's SR factor (else it fails mid-trial).

    ``first_size`` is the first arm's (width, height); an arm with other data settings (another downscale,
    root or sessions) has its own training split read, without decoding images.
    """
    import dataclasses
    import json

    from reflect.config_loading import ConfigError, to_plain_dict
    from reflect.data import load_splits

    arms = list(ablation.arms.items())
    sizes = {json.dumps(to_plain_dict(arms[0][1].config.data), sort_keys=True, default=str): first_size}
    for name, arm in arms:
        data = arm.config.data
        key = json.dumps(to_plain_dict(data), sort_keys=True, default=str)
        if key not in sizes:
            if data.root is None and not data.sessions:
                side = data.synthetic.image_size // data.downscale
                sizes[key] = (side, side)
            else:
                train = load_splits(dataclasses.replace(data, preload=False), ["train"])["train"]
                sizes[key] = (train.width, train.height)
        width, height = sizes[key]
        scale = arm.config.model.decoder.sr_scale
        if width % scale or height % scale:
            raise ConfigError(str(ablation.path), f"arm {name!r} trains at {width}x{height}, which its SR factor "
                              f"{scale} does not divide (use data.downscale, or another sr_scale)",
                              "model.decoder.sr_scale")


def refresh_status_safely(runs_dir: str, reports_dir: str) -> None:
    """The roadmap pages after a run; a broken roadmap or sibling ablation file is reported, never fails the run."""
    from reflect.status import refresh_status

    try:
        refresh_status([runs_dir], reports_dir)
    except Exception as exc:  # noqa: BLE001 - the trials and this ablation's report are written already
        console.print(f"[yellow]status pages not refreshed[/]: {exc} (run `python -m reflect.status` after fixing it)")


def mirror_summary(summary: dict, ablation, store) -> None:
    """The verdict table into the ablation's W&B group (a mirror: a failure is a warning, never an exit)."""
    from reflect.reports.wandb_report import log_summary_table

    try:
        log_summary_table(summary, ablation.arms[ablation.baseline].config.tracking, store.root)
    except Exception as exc:  # noqa: BLE001 - W&B is a mirror of the store
        console.print(f"[yellow]W&B[/]: the verdict table was not mirrored ({type(exc).__name__}: {exc})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m reflect.ablate FILE [options] [key=value ...]``: run an ablation's sequential seed design, then
    write its report and refresh the status pages.

    Args:
        argv: the command line after the program name (None: ``sys.argv[1:]``); ``--help`` lists it.
    Returns:
        0 once the plan ran and the report is written (failed trials and inconclusive verdicts are in the report),
        1 when nothing could be scored; a user error exits 2 before anything trains; an interrupt exits 130 with
        finished trials kept.
    """
    args = parse_args(argv)
    with exit_on_user_error("reflect.ablate"):
        from reflect.ablation.machine import auto_workers, machine_problems
        from reflect.ablation.runner import RunOptions, run_ablation, store_for
        from reflect.reports.ablation import write_ablation_report
        from reflect.reports.console import print_machine_problems, print_outcome
        from reflect.startup import freeze_imports

        freeze_imports()

        opts = RunOptions(path=args.file, overrides=tuple(args.overrides), seeds=parse_seeds(args.seeds),
                          profile=args.profile, storage=args.storage, runs_dir=args.runs_dir,
                          gpus=tuple(g for g in args.gpus.split(",") if g) if args.gpus else None)
        if args.rerun and args.retry_failed:
            console.print("[red]--rerun retrains every trial; --retry-failed only the failed ones: give one[/]")
            return 2
        ablation = opts.load()
        store = store_for(ablation, args.runs_dir)
        problems = machine_problems(ablation)
        workers = args.workers
        if workers is None:
            workers, why = auto_workers(opts.gpus)
            console.print(f"local workers: {workers} (--workers auto: {why})")
        if args.dry_run:
            print_plan(ablation, store)
            console.print(check_data(ablation))
            if problems:
                print_machine_problems(problems, "ablation")
                return 2
            if args.storage:
                from reflect.ablation.study import open_storage, open_study

                open_study(ablation.name, open_storage(args.storage, store.root / "optuna.journal"),
                           "maximize" if ablation.metric.mode == "max" else "minimize")
                console.print(f"storage: {args.storage} (reachable)")
            console.print("dry run: every arm's config is valid; nothing was trained.")
            return 0
        if problems:
            print_machine_problems(problems, "ablation")
            return 2
        if opts.gpus and len(opts.gpus) > workers:
            console.print(f"[yellow]--gpus lists {len(opts.gpus)} GPUs for {workers} worker(s): GPUs "
                          f"{', '.join(opts.gpus[workers:])} stay idle (use --workers {len(opts.gpus)})[/]")
        live = Live(LiveStatus(ablation, store), console=console, refresh_per_second=2, transient=False)
        run_ablation(opts, workers=workers, display=live, retry_failed=args.retry_failed, rerun=args.rerun)
        summary = write_ablation_report(ablation, store, args.reports_dir)
        outcome = print_outcome(summary, Path(args.reports_dir) / ablation.name)
        mirror_summary(summary, ablation, store)
        refresh_status_safely(args.runs_dir, args.reports_dir)
        return outcome


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:  # the collector resumes on every way out (reflect.startup)
        from reflect.startup import freeze_imports

        freeze_imports()
