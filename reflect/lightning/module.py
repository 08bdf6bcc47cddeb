"""AvatarModule: the Lightning wrapper that trains and evaluates a GaussianAvatar.

Manual optimisation, because the roadmap's recipes need per-group learning
rates, freeze windows and a discriminator with its own optimizer in one step.
"""
from __future__ import annotations

import math
import time
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch

from reflect.config import TrainConfig
from reflect.losses import LossStack
from reflect.losses.regularizers import knn_graph
from reflect.metrics import LpipsMetric, psnr, ssim_full_and_masked
from reflect.model import GaussianAvatar


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


class AvatarModule(pl.LightningModule):
    """Trains and evaluates a GaussianAvatar: one manual-optimisation step per batch (the loss stack on its
    schedules, freeze windows, the optional discriminator), evaluation of every ``eval.splits`` split each
    ``trainer.eval_every`` steps into ``eval_history`` and per-frame metrics, and those histories kept in the
    checkpoint so a resumed run keeps its whole curve.

    Args: cfg: the trial's config; init_points: canonical surface samples [P,3] or None; width, height: the
    rendered image size; eval_frame_ids: split → frame ids (recorded with the metrics); flame: the FLAME skeleton
    or None (the rigid head).
    """

    def __init__(self, cfg: TrainConfig, init_points: Optional[np.ndarray], width: int, height: int,
                 eval_frame_ids: Optional[dict[str, list[str]]] = None, flame: Any = None):
        super().__init__()
        self.cfg = cfg
        self.automatic_optimization = False
        self.width, self.height = width, height
        self.model = GaussianAvatar(
            cfg.model, init_points, background=tuple(cfg.data.background),
            render_backend=cfg.render.backend, eps2d=cfg.render.eps2d, seed=cfg.seed, flame=flame,
        )
        self.loss_stack = LossStack(cfg.loss, total_steps=cfg.trainer.max_steps)
        self.needs_knn = "laplacian" in self.loss_stack.enabled_terms()
        if self.needs_knn:
            self.register_buffer("knn_index", knn_graph(self.model.means.detach(), cfg.loss.laplacian.k))
        self.disc_optimizer = (
            torch.optim.Adam(self.loss_stack.discriminator.parameters(), lr=cfg.loss.adversarial.lr, betas=(0.5, 0.999))
            if self.loss_stack.discriminator is not None else None
        )
        self.lpips_metric = LpipsMetric(cfg.eval.lpips_net, cfg.eval.lpips_weights_path)
        self.eval_frame_ids = eval_frame_ids or {}
        # Filled during evaluation; saved in checkpoints so a resumed run keeps its whole curve.
        self.eval_history: list[dict[str, Any]] = []
        self.last_per_frame: dict[str, dict[str, list]] = {}
        self.per_frame_history: list[dict[str, Any]] = []  # the latest eval.per_frame_history evaluations
        self.train_history: list[dict[str, float]] = []
        # Provenance carried in the checkpoint across resumes: the code versions that trained these weights
        # (oldest first) and the training wall time of the earlier segments, up to the checkpoint.
        self.code_version: Optional[str] = None  # this segment's; set by the trainer before fit
        self.trained_by: list[str] = []
        self.previous_wall_s = 0.0
        self.final_wall_s: Optional[float] = None  # set when training ends: what the last checkpoint keeps
        self.segment_start: Optional[float] = None
        self._eval_buffers: dict[str, dict[str, list]] = {}
        self.sample_images: list[tuple[str, torch.Tensor]] = []

    # --- optimisation ------------------------------------------------------------------
    def configure_optimizers(self):
        groups = self.model.parameter_groups()
        param_groups = [
            {"params": params, "lr": self.cfg.optim.lr(name), "name": name}
            for name, params in groups.items() if params
        ]
        # fused: one kernel over all parameters (~3.5x faster than the per-tensor loop on the CPU, same update
        # up to float rounding); torch has it on the CPU and CUDA for floating-point parameters.
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                    for group in param_groups for p in group["params"])
        opt = torch.optim.Adam(param_groups, eps=1e-15, fused=fused)
        gamma = self.cfg.optim.final_lr_ratio ** (1.0 / max(1, self.cfg.trainer.max_steps))
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)
        return [opt], [sched]

    def frozen_groups(self, step: int) -> set[str]:
        out: set[str] = set()
        for window in self.cfg.optim.freeze:
            if window.active(step, self.cfg.trainer.max_steps):
                out.update(window.groups())
        return out

    def _aux(self, out: dict) -> dict:
        aux = {"latents": self.model.latents, "offsets": out["offsets"], "scales": out["scales"]}
        if self.needs_knn:
            aux["knn_index"] = self.knn_index
        return aux

    def training_step(self, batch: dict, batch_idx: int):
        step = self.global_step
        opt = self.optimizers()
        sched = self.lr_schedulers()
        out = self.model(batch, self.width, self.height)
        total, logs = self.loss_stack(out["rgb"], batch["image"], step=step, mask=batch["alpha"], aux=self._aux(out))
        if not torch.isfinite(total):
            raise DivergenceError(f"training loss became {total.item()} at step {step} ({logs})")
        opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        frozen = self.frozen_groups(step)
        if frozen:
            for group in opt.optimizer.param_groups:
                if group["name"] in frozen:
                    for p in group["params"]:
                        p.grad = None  # Adam skips parameters without gradients: truly frozen
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        opt.step()
        sched.step()
        if self.disc_optimizer is not None:
            d_loss = self.loss_stack.discriminator_loss(out["rgb"].detach(), batch["image"], step=step)
            if d_loss is not None:
                self.disc_optimizer.zero_grad(set_to_none=True)
                d_loss.backward()
                self.disc_optimizer.step()
                logs["loss/discriminator"] = float(d_loss.detach())
        with torch.no_grad():
            logs["train/psnr"] = float(psnr(out["rgb"].detach().clamp(0, 1), batch["image"]).mean())
        if step % self.cfg.trainer.log_every == 0 or step == self.cfg.trainer.max_steps - 1:
            self.train_history.append({"step": step, **logs})
            self.log_dict({k: v for k, v in logs.items()}, prog_bar=False, batch_size=batch["image"].shape[0])
            # Only on logged steps: Lightning's log() costs ~1 ms a call (5% of a quick-profile step), and
            # the logger only receives values every log_every steps anyway; the progress bar shows the latest.
            self.log("loss", logs["loss/total"], prog_bar=True, batch_size=batch["image"].shape[0])
        return total.detach()

    # --- evaluation --------------------------------------------------------------------
    def _split_name(self, dataloader_idx: int) -> str:
        return self.cfg.eval.splits[dataloader_idx]

    def on_validation_epoch_start(self) -> None:
        self._eval_buffers = {}
        self.sample_images = []

    @torch.no_grad()
    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        split = self._split_name(dataloader_idx)
        out = self.model(batch, self.width, self.height)
        pred, target, mask = out["rgb"].clamp(0, 1), batch["image"], batch["alpha"]
        buf = self._eval_buffers.setdefault(split, {"frame_id": [], "psnr": [], "ssim": [], "psnr_masked": [],
                                                    "ssim_masked": [], "lpips": []})
        buf["frame_id"] += list(batch["frame_id"])
        buf["psnr"] += psnr(pred, target).tolist()
        ssim_full, ssim_masked = ssim_full_and_masked(pred, target, mask)
        buf["ssim"] += ssim_full.tolist()
        buf["psnr_masked"] += psnr(pred, target, mask=mask).tolist()
        buf["ssim_masked"] += ssim_masked.tolist()
        for name, region in batch.get("regions", {}).items():
            buf.setdefault(f"psnr_{name}", []).extend(region_psnr(pred, target, region))
        lp = self.lpips_metric(pred, target) if self.lpips_metric.available else None
        buf["lpips"] += lp.tolist() if lp is not None else [None] * pred.shape[0]
        if len(self.sample_images) < self.cfg.trainer.sample_images and split == self.cfg.eval.splits[0]:
            for i in range(min(pred.shape[0], self.cfg.trainer.sample_images - len(self.sample_images))):
                self.sample_images.append((batch["frame_id"][i], torch.cat([target[i], pred[i]], dim=2).cpu()))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self._finish_evaluation()

    def on_train_start(self) -> None:
        """Run the evaluation a resumed run would otherwise skip.

        Lightning writes a step's checkpoint at the end of the training step, before that step's evaluation,
        so resuming from it starts after the evaluation; without this the curve (and the windowed metric
        that averages it) would miss a point after every kill and restart.
        """
        step, every = int(self.global_step), self.cfg.trainer.eval_every
        if step > 0 and step % every == 0 and not any(h["step"] == step for h in self.eval_history):
            self._evaluate_now()

    @torch.no_grad()
    def _evaluate_now(self) -> None:
        was_training = self.training
        self.eval()
        self.on_validation_epoch_start()
        for idx, loader in enumerate(self.trainer.datamodule.val_dataloader()):
            for i, batch in enumerate(loader):
                self.validation_step(self.transfer_batch_to_device(batch, self.device, idx), i, idx)
        self._finish_evaluation()
        self.train(was_training)

    def _finish_evaluation(self) -> None:
        record: dict[str, Any] = {"step": int(self.global_step)}
        for split, buf in self._eval_buffers.items():
            for key in [k for k in buf if k != "frame_id"]:
                vals = [v for v in buf[key] if v is not None]
                record[f"{split}/{key}"] = float(np.mean(vals)) if vals else None
            self.last_per_frame[split] = {k: list(v) for k, v in buf.items()}
        self.eval_history.append(record)
        self.per_frame_history.append({"step": record["step"],
                                       "splits": {split: dict(frames) for split, frames in self.last_per_frame.items()}})
        del self.per_frame_history[:-self.cfg.eval.per_frame_history]
        self.log_dict({k: v for k, v in record.items() if k != "step" and v is not None}, prog_bar=False)
        first = self.cfg.eval.splits[0]
        if record.get(f"{first}/psnr") is not None:
            self.log(f"{first}_psnr", record[f"{first}/psnr"], prog_bar=True)

    # --- checkpoint state beyond parameters --------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["reflect"] = {
            "eval_history": self.eval_history,
            "train_history": self.train_history,
            "last_per_frame": self.last_per_frame,
            "per_frame_history": self.per_frame_history,
            "disc_optimizer": self.disc_optimizer.state_dict() if self.disc_optimizer else None,
            "trained_by": self.segment_code_versions(),
            "train_wall_s": self.final_wall_s if self.final_wall_s is not None else self.total_wall_s(),
        }

    def segment_code_versions(self) -> list[str]:
        """The code versions that trained the current weights: the checkpoint's, then this segment's."""
        versions = list(self.trained_by)
        if self.code_version and (not versions or versions[-1] != self.code_version):
            versions.append(self.code_version)
        return versions

    def total_wall_s(self) -> float:
        """Training wall time over all segments: the checkpoint's earlier segments plus this one so far."""
        running = time.perf_counter() - self.segment_start if self.segment_start is not None else 0.0
        return self.previous_wall_s + running

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("reflect", {})
        self.eval_history = list(state.get("eval_history", []))
        self.train_history = list(state.get("train_history", []))
        self.last_per_frame = dict(state.get("last_per_frame", {}))
        self.per_frame_history = list(state.get("per_frame_history", []))
        # A checkpoint written before this provenance existed says nothing about its code or time: say so.
        self.trained_by = [str(v) for v in state.get("trained_by", ["unknown (checkpoint predates code versions)"])]
        self.previous_wall_s = float(state.get("train_wall_s", 0.0))
        if self.disc_optimizer is not None and state.get("disc_optimizer"):
            self.disc_optimizer.load_state_dict(state["disc_optimizer"])


MIN_REGION_PIXELS = 8


def region_psnr(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> list[Optional[float]]:
    """Per-frame PSNR over a region mask [B,1,H,W]; None where the frame's region is (nearly) empty or the
    match there is exact (infinite PSNR would swamp any mean).

    Why: expression detail (wrinkles) covers a few percent of the image, so a full-image PSNR barely moves
    when a decoder learns it; the region score isolates it. Frames without the region have no value rather
    than a misleading one.
    """
    values = psnr(pred, target, mask=region).tolist()
    sizes = region.flatten(1).sum(dim=1).tolist()
    return [v if n >= MIN_REGION_PIXELS and math.isfinite(v) else None for v, n in zip(values, sizes)]
