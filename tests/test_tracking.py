"""W&B is offline without credentials, online with them, off when asked."""
import pytest

from reflect.config import TrackingConfig
from reflect.tracking import make_wandb_logger, resolve_wandb_mode


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))


def test_offline_without_api_key(no_credentials):
    assert resolve_wandb_mode(TrackingConfig()) == "offline"


def test_online_with_api_key_or_netrc(no_credentials, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode(TrackingConfig()) == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert resolve_wandb_mode(TrackingConfig()) == "online"


def test_disabled_by_config_or_env(no_credentials, monkeypatch):
    assert resolve_wandb_mode(TrackingConfig(wandb=False)) == "disabled"
    assert make_wandb_logger(TrackingConfig(wandb=False), name="x", save_dir=None, config={}) is None
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode(TrackingConfig()) == "disabled"


def test_offline_run_lands_on_disk(no_credentials, tmp_path, capfd):
    logger = make_wandb_logger(TrackingConfig(), name="arm-s0", save_dir=tmp_path, config={"a": 1},
                               group="abl", job_type="arm", tags=["phase2"], run_id="abl-arm-s0")
    run = logger.experiment
    run.log({"val/psnr": 20.0})
    assert run.group == "abl" and run.job_type == "arm" and run.name == "arm-s0"
    run.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    assert "anonymous" not in capfd.readouterr().err  # no false deprecation alarm on every run


def test_a_resumed_offline_segment_gets_its_own_run_id(no_credentials, tmp_path):
    """W&B cannot resume offline runs, and syncing two offline folders with one id overwrites the first."""
    ids = []
    for resuming in (False, True):
        logger = make_wandb_logger(TrackingConfig(), name="arm-s0", save_dir=tmp_path, config={"a": 1},
                                   group="abl", run_id="abl-arm-s0", resuming=resuming)
        run = logger.experiment
        ids.append((run.id, run.name, run.group, dict(run.config)))
        run.finish()
    (first, name0, group0, config0), (second, name1, group1, config1) = ids
    assert first == "abl-arm-s0" and second.startswith("abl-arm-s0-resumed-") and second != first
    assert name0 == name1 == "arm-s0" and group0 == group1 == "abl"
    assert "resumes_run" not in config0 and config1["resumes_run"] == "abl-arm-s0"
    folders = sorted(p.name.rsplit("-", 1)[-1] for p in (tmp_path / "wandb").glob("offline-run-*"))
    assert len(folders) == 2  # two folders, nothing overwritten


def test_empty_wandb_mode_means_unset(no_credentials, monkeypatch, tmp_path):
    """``export WANDB_MODE=`` must not break runs: wandb itself rejects an empty mode."""
    import os

    monkeypatch.setenv("WANDB_MODE", "")
    assert resolve_wandb_mode(TrackingConfig()) == "offline" and "WANDB_MODE" not in os.environ
    monkeypatch.setenv("WANDB_MODE", "")
    logger = make_wandb_logger(TrackingConfig(), name="arm-s0", save_dir=tmp_path, config={})
    logger.experiment.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_sample_images_in_the_offline_run_are_the_renders(no_credentials, tmp_path, tiny_overrides):
    """Read the logged image back from the offline run: the same picture as the saved render, not a black one."""
    import numpy as np
    from PIL import Image

    from reflect.config import load_train_config
    from reflect.training import train

    cfg = load_train_config("quick", tiny_overrides + ["trainer.sample_images=1"])
    logger = make_wandb_logger(TrackingConfig(), name="img-s0", save_dir=tmp_path, config={}, run_id="img-s0")
    result = train(cfg, tmp_path / "run", logger=logger)
    logger.experiment.finish()
    logged = sorted((tmp_path / "wandb").glob("offline-run-*/files/media/images/**/*.png"))
    assert len(logged) == 1, logged
    image = np.asarray(Image.open(logged[0]).convert("RGB")).astype(int)
    render = np.asarray(Image.open(result.renders[0]["path"]).convert("RGB")).astype(int)
    assert image.shape == render.shape == (32, 64, 3)  # ground truth | render, side by side
    assert np.array_equal(image, render)  # the same uint8 picture (float arrays used to come out black)
    assert image.mean() > 100 and image.std() > 10  # a real picture (the synthetic head on white)
