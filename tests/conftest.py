"""Shared test setup: tiny configs, an isolated dataset cache, W&B never online."""
import atexit
import os
import shutil
import tempfile

import pytest

# Before anything imports wandb or generates data: tests never touch the network or ~/.cache.
if "REFLECT_CACHE_DIR" not in os.environ:  # one cache per test session, removed when the session ends
    os.environ["REFLECT_CACHE_DIR"] = tempfile.mkdtemp(prefix="reflect-test-cache-")
    atexit.register(shutil.rmtree, os.environ["REFLECT_CACHE_DIR"], ignore_errors=True)
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.pop("WANDB_API_KEY", None)

# A 32 px synthetic head with a few frames and a small avatar: seconds per training run on 2 cores.
TINY_DATA = [
    "data.synthetic.image_size=32",
    "data.synthetic.n_train_timesteps=12",
    "data.synthetic.n_val_timesteps=3",
    "data.synthetic.n_test_timesteps=2",
    "data.synthetic.supersample=1",
]
TINY = TINY_DATA + [
    "model.gaussians.num_gaussians=400",
    "model.decoder.channels=8",
    "model.deform.hidden=16",
    "trainer.batch_size=1",
    "trainer.max_steps=6",
    "trainer.eval_every=3",
    "trainer.checkpoint_every=3",
    "trainer.progress_bar=false",
    "tracking.wandb=false",
]


@pytest.fixture
def empty_hub(tmp_path):
    """Point the torch hub cache at an empty folder (no LPIPS backbone weights), restore it afterwards."""
    import torch

    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


@pytest.fixture
def tiny_overrides():
    return list(TINY)


@pytest.fixture(autouse=True)
def interactive_sigint():
    """SIGINT handled as in an interactive shell (Python's default handler), whatever pytest inherited: a job
    started in the background by a non-interactive shell (as CI may be) begins with SIGINT ignored, and a
    process started ignoring a signal keeps ignoring it (``reflect.lightning.interrupts``), as it should."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
