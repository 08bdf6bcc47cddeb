"""Train one configuration end to end (used by ``reflect.train`` and by every ablation trial).

Resumable: checkpoints go to ``<workdir>/checkpoints/last.ckpt`` and a rerun
with the same workdir continues from there, so a killed trial loses at most
the steps since its last checkpoint.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, RichProgressBar

from reflect.code_version import current_code_version
from reflect.config import TrainConfig
from reflect.config_loading import to_plain_dict
from reflect.data import load_splits
from reflect.lightning.datamodule import AvatarDataModule
from reflect.lightning.interrupts import StopOnSignal, TrainingInterrupted
from reflect.lightning.module import AvatarModule
from reflect.render import resolve_backend

LAST_CHECKPOINT = "last.ckpt"


@dataclass
class TrainResult:
    """What a finished training run produced (everything the results store records)."""

    eval_history: list[dict[str, Any]]
    per_frame: dict[str, dict[str, list]]
    train_history: list[dict[str, float]]
    parameter_counts: dict[str, int]
    checkpoint: str
    wall_time_s: float
    steps: int
    lpips_status: str  # "available" | "unavailable"
    lpips_reason: Optional[str]  # why unavailable (the file it looked for), else None
    resolution: tuple[int, int]
    resumed_from_step: int = 0
    # the code versions that trained the weights, oldest first (more than one: resumed across a code change)
    code_versions: list[str] = field(default_factory=list)
    render_backend: str = "torch"  # the backend that actually rendered ("auto" resolved on the run's device)
    ground_truth: str = ""  # how target images are formed (RGBA over the background, or stored RGB as is)
    # per evaluation (the latest eval.per_frame_history of them): {"step": s, "splits": {split: per-frame}}
    per_frame_history: list[dict[str, Any]] = field(default_factory=list)
    renders: list[dict[str, str]] = field(default_factory=list)  # final-evaluation renders: {frame_id, path}
    initialisation: str = ""  # where the Gaussians started (points3d.ply, visual hull, FLAME mesh, ellipsoid)
    extra: dict[str, Any] = field(default_factory=dict)


def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=r".*The number of training batches.*")
    warnings.filterwarnings("ignore", message=r".*ModelCheckpoint with manual optimization.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def check_expression_length(cfg: TrainConfig, available: int) -> None:
    """The model reads ``expr_dims`` leading expression components; the data must have that many."""
    from reflect.data.errors import DatasetError

    for key in ("model.deform.expr_dims", "model.decoder.expr_dims"):
        _, section, leaf = key.split(".")
        wanted = getattr(getattr(cfg.model, section), leaf)
        if section == "deform" and not cfg.model.deform.enabled:
            continue
        if wanted > available:
            raise DatasetError(f"{key}={wanted}, but the data's FLAME expr has {available} components: "
                               f"set {key}={available} or fewer")


def initial_points(cfg: TrainConfig, train_set: Any, flame: Any) -> tuple[Optional[np.ndarray], str]:
    """Where the Gaussians start (``model.gaussians.init``), and how the protocol names it.

    ``auto``: the export's ``points3d.ply``, else a head-sized ellipsoid; ``visual_hull``: carved from the
    training mattes (``reflect.data.hull``). With a FLAME skeleton, always its canonical mesh.
    """
    from reflect.data.errors import DatasetError
    from reflect.data.hull import visual_hull_points

    if flame is not None:
        return None, "flame canonical mesh"
    choice = cfg.model.gaussians.init
    if choice in ("auto", "points3d"):
        points = train_set.init_points()
        if points is not None:
            return points, "points3d.ply"
        if choice == "points3d":
            raise DatasetError(f"model.gaussians.init=points3d, but {train_set.sessions[0].root}/points3d.ply "
                               "does not exist (init=visual_hull carves one from the mattes)")
    if choice == "visual_hull":
        points = visual_hull_points(train_set, seed=cfg.seed)
        if points is not None:
            return points, "visual hull of the training mattes"
        raise DatasetError("model.gaussians.init=visual_hull, but the training frames carry no matte to carve "
                           "(RGB without fg_masks)")
    return None, "ellipsoid"


def trial_splits(cfg: TrainConfig, names: Sequence[str]) -> dict[str, Any]:
    """The named splits as a trial of ``cfg`` reads them (dynamic offsets for the FLAME layer, the mirror
    split's geometry)."""
    return load_splits(cfg.data, names, dynamic_offsets=bool(cfg.model.flame.model_path),
                       mirror_display_camera=cfg.eval.mirror_display_camera, mirror_eye_m=cfg.eval.mirror_eye_m)


def build_module(cfg: TrainConfig, splits: dict[str, Any]) -> tuple[AvatarModule, str]:
    """The Lightning module for ``cfg`` over ``splits`` (its ``train`` split sets the head model and start
    points), and where the Gaussians start; the data's expression length is checked against the model's."""
    from reflect.data.errors import DatasetError

    train_set = splits["train"]
    check_expression_length(cfg, train_set.expression_length())
    for split, dataset in splits.items():  # the model reads the same inputs in evaluation as in training
        if dataset.expression_length() != train_set.expression_length():
            raise DatasetError(f"split '{split}' has {dataset.expression_length()} expression components, "
                               f"'train' {train_set.expression_length()}: every split must come from one tracker run")
    flame = build_flame(cfg, train_set)
    points, initialisation = initial_points(cfg, train_set, flame)
    return AvatarModule(cfg, points, train_set.width, train_set.height, flame=flame), initialisation


def build_flame(cfg: TrainConfig, train_set: Any):
    """The FLAME skeleton for ``model.flame.model_path`` (the subject's canonical shape and static offset from
    ``canonical_flame_param.npz``), or None for the rigid head."""
    if not cfg.model.flame.model_path:
        return None
    from reflect.model.flame import FlameSkeleton, read_flame_model

    return FlameSkeleton(read_flame_model(cfg.model.flame.model_path), train_set.canonical_shape,
                         train_set.expression_length(), train_set.canonical_static_offset)


def train(cfg: TrainConfig, workdir: str | Path, *, resume: bool = True, logger: Any = None,
          callbacks: Sequence[Callback] = (), progress: Optional[bool] = None,
          code_version: Optional[str] = None) -> TrainResult:
    """Train ``cfg`` in ``workdir``; raises DatasetError / DivergenceError / LpipsUnavailable on bad input.

    Args:
        cfg: the validated training config.
        workdir: checkpoints go to ``<workdir>/checkpoints/``; a rerun resumes from ``last.ckpt``.
        resume: False starts over even when a checkpoint exists.
        logger: a Lightning logger (W&B) or None.
        callbacks: extra Lightning callbacks.
        progress: show the progress bar (default: ``cfg.trainer.progress_bar``).
        code_version: the code version stamped into checkpoints (default: this checkout's git state).
    Returns:
        A TrainResult. Its ``wall_time_s`` is the training's over all segments (a resumed run adds to the
        checkpoint's), and ``code_versions`` lists every code version that trained the weights.
    """
    _quiet_lightning()
    workdir = Path(workdir)
    ckpt_dir = workdir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")

    splits = trial_splits(cfg, ["train", *cfg.eval.splits])
    train_set = splits["train"]
    module, initialisation = build_module(cfg, splits)
    datamodule = AvatarDataModule(cfg, {k: splits[k] for k in ["train", *cfg.eval.splits]},
                                  start_step=lambda: module.global_step)

    last = ckpt_dir / LAST_CHECKPOINT
    ckpt_path, resumed_from = _usable_checkpoint(last) if resume else (None, 0)
    show_progress = cfg.trainer.progress_bar if progress is None else progress
    stopper = StopOnSignal(last)
    cbs: list[Callback] = [
        stopper,
        ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0,
                        every_n_train_steps=cfg.trainer.checkpoint_every),
        *callbacks,
    ]
    if show_progress:
        cbs.append(RichProgressBar(leave=False))
    trainer = pl.Trainer(
        max_steps=cfg.trainer.max_steps,
        val_check_interval=cfg.trainer.eval_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        accelerator=cfg.trainer.accelerator,
        devices=1,
        logger=logger if logger is not None else False,
        log_every_n_steps=cfg.trainer.log_every,
        callbacks=cbs,
        enable_progress_bar=show_progress,
        enable_model_summary=False,
        default_root_dir=str(workdir),
    )
    module.code_version = code_version if code_version is not None else current_code_version()
    start = time.perf_counter()
    module.segment_start = start
    stopper.install()
    try:
        _fit(trainer, module, datamodule, ckpt_path, stopper)
        evaluated_now = False
        if not module.eval_history or module.eval_history[-1]["step"] != module.global_step:
            # Always end on an evaluation of the final weights, and keep it in the checkpoint.
            try:
                trainer.validate(module, datamodule=datamodule, verbose=False)
            except SystemExit:  # Lightning's exit on Ctrl-C during that evaluation: the last checkpoint stands
                raise KeyboardInterrupt from None
            evaluated_now = True
        trained_now = evaluated_now or module.global_step > resumed_from
        if trained_now:
            # The training's wall time, fixed now and kept in the checkpoint, so a rerun of the finished run
            # reports this figure, neither its own no-op time nor a checkpoint written before the last eval.
            module.final_wall_s = module.total_wall_s()
            trainer.save_checkpoint(last)
    finally:
        stopper.restore()  # also undoes Lightning's SIG_IGN for SIGINT after a Ctrl-C: a second one works again
    if stopper.received is not None and stopper.stopped is None:
        # The signal came after the last step (in the final evaluation): the run is complete and saved, but the
        # caller asked to stop, so it must not go on to the next trial as if nothing happened.
        raise TrainingInterrupted(int(module.global_step), stopper.received, last)
    wall = module.final_wall_s if trained_now else module.previous_wall_s
    if logger is not None:
        _log_samples(logger, module)
    renders = save_renders(workdir, module)
    return TrainResult(
        eval_history=module.eval_history,
        per_frame=module.last_per_frame,
        per_frame_history=module.per_frame_history,
        render_backend=resolve_backend(cfg.render.backend, module.device),
        ground_truth=train_set.ground_truth_rule(),
        train_history=module.train_history,
        parameter_counts=module.model.count_parameters(),
        checkpoint=str(last),
        wall_time_s=wall,
        steps=int(module.global_step),
        lpips_status="available" if module.lpips_metric.available else "unavailable",
        lpips_reason=None if module.lpips_metric.available else module.lpips_metric.reason,
        resolution=(train_set.width, train_set.height),
        resumed_from_step=resumed_from,
        initialisation=initialisation,
        code_versions=module.segment_code_versions(),
        renders=renders,
        extra={"config": to_plain_dict(cfg)},
    )


def _fit(trainer: pl.Trainer, module: AvatarModule, datamodule: AvatarDataModule, ckpt_path: Optional[Path],
         stopper: StopOnSignal) -> None:
    """``trainer.fit``, with interrupts given back to the caller.

    Lightning turns Ctrl-C (and SIGTERM) into ``sys.exit(1)`` after its graceful stop; the callers (the CLIs'
    "interrupted, rerun to resume" message, the ablation runner) get TrainingInterrupted when StopOnSignal
    checkpointed the step, else a plain KeyboardInterrupt.
    """
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except SystemExit:
        if trainer.interrupted:
            if stopper.stopped is not None:
                raise stopper.stopped from None
            raise KeyboardInterrupt from None
        raise


def _usable_checkpoint(path: Path) -> tuple[Optional[Path], int]:
    """The last checkpoint and its step if it loads; a file truncated by a kill is set aside, not trusted."""
    if not path.is_file():
        return None, 0
    try:
        step = int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # noqa: BLE001 - any unreadable checkpoint means "start over"
        path.rename(path.with_suffix(".corrupt"))
        return None, 0
    return path, step


RENDERS_DIR = "renders"


def to_uint8_image(image: Any) -> Any:
    """[3, H, W] float tensor in [0, 1] -> [H, W, 3] uint8 array (rounded), as written to files and W&B."""
    return (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")


def save_renders(workdir: Path, module: AvatarModule) -> list[dict[str, str]]:
    """The final evaluation's sample frames as PNGs (ground truth | render, side by side) for report grids.

    Every file is written atomically (temp file + ``os.replace``), the PNGs before ``renders/index.json``, so a
    kill leaves the previous index or the new one, each naming whole PNGs.

    Args:
        workdir: the run's folder; the files go to ``<workdir>/renders/``.
        module: the trained module; its ``sample_images`` are the final evaluation's (empty when this run did
            not evaluate again: a rerun of a finished run).
    Returns:
        ``[{frame_id, path}]``. A run that did not evaluate again returns the index written before; an index
        that cannot be read (cut short, malformed) is warned about and means the renders are missing (``[]``):
        the trained trial stands, only its report grid goes without them.
    """
    import io

    from PIL import Image

    from reflect.ablation.store import atomic_write_bytes, atomic_write_json

    out = Path(workdir) / RENDERS_DIR
    index = out / "index.json"
    if not module.sample_images:
        return read_render_index(index)
    renders = []
    for i, (frame_id, image) in enumerate(module.sample_images):
        buf = io.BytesIO()
        Image.fromarray(to_uint8_image(image)).save(buf, format="PNG")
        path = out / f"{i:02d}.png"
        atomic_write_bytes(path, buf.getvalue())
        renders.append({"frame_id": str(frame_id), "path": str(path)})
    atomic_write_json(index, renders)
    return renders


def read_render_index(index: Path) -> list[dict[str, str]]:
    """The renders ``index`` lists (``[{frame_id, path}]``); ``[]`` when it does not exist.

    Args:
        index: a ``renders/index.json`` written by :func:`save_renders`.
    Returns:
        Its entries, or ``[]`` with a warning naming the file when it cannot be read or is not such a list.
    """
    import json

    if not index.is_file():
        return []
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
        problem = f"invalid JSON ({exc})" if isinstance(exc, json.JSONDecodeError) else f"cannot read it ({exc})"
        return _renders_missing(index, problem)
    if not isinstance(data, list):
        return _renders_missing(index, f"expected a list of {{frame_id, path}}, got {type(data).__name__}")
    for i, entry in enumerate(data):
        if not (isinstance(entry, dict) and isinstance(entry.get("frame_id"), str)
                and isinstance(entry.get("path"), str)):
            return _renders_missing(index, f"entry {i} is not {{frame_id, path}} strings: {entry!r}")
    return data


def _renders_missing(index: Path, problem: str) -> list[dict[str, str]]:
    warnings.warn(f"{index}: render index unreadable, {problem}; this run's renders are treated as missing "
                  "(the trial's results stand; its report grid goes without them)", stacklevel=3)
    return []


def _log_samples(logger: Any, module: AvatarModule) -> None:
    if not module.sample_images or not hasattr(logger, "log_image"):
        return
    logger.log_image(
        key="samples/target|render",
        # uint8, as in the render files: W&B casts float arrays to uint8 without rescaling (images came out black)
        images=[to_uint8_image(img) for _, img in module.sample_images],
        caption=[fid for fid, _ in module.sample_images],
        step=int(module.global_step),
    )
