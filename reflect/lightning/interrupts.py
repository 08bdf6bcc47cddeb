"""Stopping on SIGINT / SIGTERM at a step boundary, with a checkpoint of that step.

Why not Lightning's own handling: Ctrl-C stops wherever the KeyboardInterrupt lands (mid-step), and
SIGTERM (a scheduler's pre-emption, ``kill``) stops at the end of the step, both writing nothing, so
everything since the last periodic checkpoint is lost. Here SIGINT only sets a flag: the training loop
finishes its step, saves ``last.ckpt`` and raises :class:`TrainingInterrupted`; on SIGTERM Lightning's
own stop is caught at the same step boundary and the checkpoint written before it exits. The ablation
runner records either as an ``interrupted`` trial. A second Ctrl-C interrupts at once, as usual.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any, Optional

from pytorch_lightning.callbacks import Callback

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after step ``step``; ``checkpoint`` holds that step (a rerun resumes there)."""

    def __init__(self, step: int, signal_name: str, checkpoint: Path):
        super().__init__(f"{signal_name} after step {step}; checkpoint {checkpoint}")
        self.step, self.signal_name, self.checkpoint = step, signal_name, checkpoint


class StopOnSignal(Callback):
    """Turn SIGINT/SIGTERM into a checkpointed stop at the end of the current training step.

    Args:
        checkpoint: where to save (the run's ``last.ckpt``, which resuming reads).
    Handlers are installed only in the main thread (Python allows no other) and restored when training ends;
    a signal the process was started ignoring (``nohup``, a background job) stays ignored.
    """

    def __init__(self, checkpoint: Path):
        self.checkpoint = Path(checkpoint)
        self.received: Optional[str] = None
        self.stopped: Optional[TrainingInterrupted] = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without waiting for the step
        self.received = signal.Signals(signum).name

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in HANDLED_SIGNALS:
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN:
                continue  # started ignoring it (nohup, a background job of a script): keep ignoring it
            self._previous[sig] = previous
            signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _stop(self, trainer: Any) -> TrainingInterrupted:
        trainer.save_checkpoint(self.checkpoint)
        self.stopped = TrainingInterrupted(int(trainer.global_step), self.received or "SIGTERM", self.checkpoint)
        return self.stopped

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        if self.received is not None:
            raise self._stop(trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Lightning stops on SIGTERM by itself (``SIGTERMException`` at the end of the step, after the step's
        callbacks): write the checkpoint of that step here before it exits."""
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and self.stopped is None:
            self._stop(trainer)
