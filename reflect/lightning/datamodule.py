"""AvatarDataModule: train frames through the configured sampler; val/test for evaluation."""
from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from reflect.config import TrainConfig
from reflect.data.layout import AvatarDataset
from reflect.lightning.sampling import StepIndexedSampler, frame_weights


class AvatarDataModule(pl.LightningDataModule):
    """The training frames in the sampler's step-indexed order (``start_step`` lets a resumed run continue the
    same sequence) and one evaluation loader per ``eval.splits`` split.

    Args: cfg: the trial's config; splits: split name → AvatarDataset (train and the evaluation splits);
    start_step: returns the step training starts at (0, or the checkpoint's).
    """

    def __init__(self, cfg: TrainConfig, splits: dict[str, AvatarDataset], start_step: Callable[[], int]):
        super().__init__()
        self.cfg = cfg
        self.splits = splits
        self.start_step = start_step
        train = splits["train"]
        self.weights = frame_weights(cfg.sampler, train.expression_codes(), train.session_indices())

    def train_dataloader(self) -> DataLoader:
        t = self.cfg.trainer
        sampler = StepIndexedSampler(self.weights, t.max_steps, t.batch_size, self.cfg.seed, self.start_step)
        return DataLoader(self.splits["train"], batch_size=t.batch_size, sampler=sampler,
                          num_workers=t.num_workers, drop_last=True, persistent_workers=t.num_workers > 0)

    def val_dataloader(self) -> list[DataLoader]:
        return [
            DataLoader(self.splits[split], batch_size=max(4, self.cfg.trainer.batch_size), shuffle=False,
                       num_workers=self.cfg.trainer.num_workers)
            for split in self.cfg.eval.splits
        ]
