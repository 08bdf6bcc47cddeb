"""Config values the run would reject are rejected on load: a ConfigError naming the key and what was expected.

Each check here used to pass the load (and an ablation's --dry-run) and then fail mid-run with a raw traceback,
or train silently wrong (a freeze window in steps read as a fraction kept the Gaussians frozen all run).
"""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from reflect.config import FreezeWindow, load_train_config
from reflect.config_loading import ConfigError
from reflect.data.errors import DatasetError

ROOT = Path(__file__).resolve().parents[1]


def load(*overrides):
    return load_train_config("quick", list(overrides))


def one_line(text: str) -> str:
    """A CLI's stderr as one line (rich wraps long messages at the terminal width)."""
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------- trainer


@pytest.mark.parametrize("value", ["auto", "cpu", "gpu", "cuda"])
def test_the_accelerators_lightning_is_given_load(value):
    assert load(f"trainer.accelerator={value}").trainer.accelerator == value


@pytest.mark.parametrize("value", ["foo", "GPU", "tpu"])
def test_an_unknown_accelerator_names_the_choices(value):
    with pytest.raises(ConfigError, match=rf"command line: trainer\.accelerator: expected one of "
                                          rf"\('auto', 'cpu', 'gpu', 'cuda'\), got '{value}'"):
        load(f"trainer.accelerator={value}")


@pytest.mark.parametrize("key, meaning", [("num_workers", r"0 = load in the training process"),
                                          ("sample_images", r"0 = log no images")])
def test_negative_worker_and_image_counts_are_rejected(key, meaning):
    with pytest.raises(ConfigError, match=rf"trainer\.{key}: expected an integer >= 0 \({meaning}\), got -1"):
        load(f"trainer.{key}=-1")
    assert getattr(load(f"trainer.{key}=0").trainer, key) == 0


def test_a_bad_accelerator_exits_2_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "reflect.train", "trainer.accelerator=foo"],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert re.search(r"reflect\.train: error: .*command line: trainer\.accelerator: expected one of "
                     r"\('auto', 'cpu', 'gpu', 'cuda'\), got 'foo'", one_line(proc.stderr)), proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started


# ---------------------------------------------------------------------------------------------- model


def test_a_negative_view_pe_frequency_count_is_rejected():
    with pytest.raises(ConfigError, match=r"model\.decoder\.view_pe_freqs: expected an integer >= 0 "
                                          r"\(0 = the raw view direction only\), got -1"):
        load("model.decoder.view_conditioning=pe", "model.decoder.view_pe_freqs=-1")


def test_zero_view_pe_frequencies_condition_on_the_raw_direction():
    import torch

    from reflect.model.decoder import ScreenSpaceDecoder

    cfg = load("model.decoder.view_conditioning=pe", "model.decoder.view_pe_freqs=0", "model.decoder.channels=4")
    decoder = ScreenSpaceDecoder(cfg.model.decoder, in_channels=5)
    assert decoder.view_dim == 3
    out = decoder(torch.zeros(1, 5, 4, 4), torch.zeros(1, cfg.model.decoder.expr_dims + 3),
                  torch.tensor([[0.0, 0.0, 1.0]]))
    assert out.shape == (1, 3, 4, 4)


# ---------------------------------------------------------------------------------------------- eval


def test_a_negative_mirror_display_camera_is_rejected():
    with pytest.raises(ConfigError, match=r"eval\.mirror_display_camera: expected a camera index >= 0 or null"):
        load("eval.mirror_display_camera=-1")


def test_the_synthetic_heads_cameras_are_checked_on_load():
    with pytest.raises(ConfigError, match=r"eval\.mirror_display_camera: expected one of the synthetic head's "
                                          r"cameras \[0, 1, 2\] .* or null, got 5"):
        load("eval.mirror_display_camera=5", "eval.splits=[val, mirror]")
    assert load("eval.mirror_display_camera=1").eval.mirror_display_camera == 1
    # a capture's cameras are the data's: known only when its transforms are read
    assert load("eval.mirror_display_camera=5", "data.root=/nowhere").eval.mirror_display_camera == 5


def test_generating_mirror_views_of_a_missing_camera_is_a_dataset_error(tmp_path):
    from reflect.data.config import SyntheticHeadConfig
    from reflect.data.synthetic_mirror import generate_mirror_views

    with pytest.raises(DatasetError, match=r"eval\.mirror_display_camera=3, but the synthetic head has cameras "
                                           r"0, 1, 2"):
        generate_mirror_views(SyntheticHeadConfig(image_size=8), tmp_path / "mirror", display_camera=3)


# ---------------------------------------------------------------------------------------------- sampler


def test_session_shares_must_match_the_configured_sessions():
    with pytest.raises(ConfigError, match=r"sampler\.session_shares: expected 2 shares \(one per session; "
                                          r"data\.synthetic\.sessions=2\), got 3"):
        load("data.synthetic.sessions=2", "sampler.session_balance=true", "sampler.session_shares=[1, 1, 2]")
    with pytest.raises(ConfigError, match=r"sampler\.session_shares: expected 1 share \(one per session; "
                                          r"data\.root is one session\), got 2"):
        load("data.root=/nowhere", "sampler.session_balance=true", "sampler.session_shares=[1, 2]")
    with pytest.raises(ConfigError, match=r"sampler\.session_shares: expected 2 shares \(one per session; "
                                          r"data\.sessions has 2 entries\), got 1"):
        load("data.sessions=[{root: /a}, {root: /b}]", "sampler.session_balance=true", "sampler.session_shares=[1]")
    cfg = load("data.synthetic.sessions=2", "sampler.session_balance=true", "sampler.session_shares=[1, 3]")
    assert cfg.sampler.session_shares == [1.0, 3.0]


@pytest.mark.parametrize("shares", ["[]", "[0, 0]", "[1, -1]", "[1, .inf]", "[.nan, 1]"])
def test_session_shares_must_be_finite_positive_numbers(shares):
    with pytest.raises(ConfigError, match=r"sampler\.session_shares: expected a non-empty list of finite "
                                          r"positive numbers \(one per session\) or null"):
        load(f"sampler.session_shares={shares}")


def test_a_share_count_the_training_data_does_not_have_is_a_dataset_error():
    """The data decides last (an allowlist may leave a session without frames): a message, not a ValueError."""
    from reflect.lightning.sampling import SamplerConfig, frame_weights

    cfg = SamplerConfig(session_balance=True, session_shares=[1.0, 1.0, 2.0])
    with pytest.raises(DatasetError, match=r"sampler\.session_shares has 3 shares, but the training data has "
                                           r"2 sessions with frames"):
        frame_weights(cfg, np.zeros((4, 3)), np.array([0, 0, 1, 1]))
    w = frame_weights(SamplerConfig(session_balance=True, session_shares=[1.0, 3.0]), np.zeros((4, 3)),
                      np.array([0, 0, 1, 1]))
    assert np.allclose(w, [0.125, 0.125, 0.375, 0.375])


# ---------------------------------------------------------------------------------------------- optim.freeze


def test_a_freeze_window_in_steps_written_as_a_fraction_is_rejected():
    """NPGA's "5K steps" without units: steps used to freeze the Gaussians for the whole run."""
    with pytest.raises(ConfigError, match=r"optim\.freeze\[0\]\.end: expected a fraction of training in \[0, 1\] "
                                          r"\(use units: steps for absolute steps\), got 5000"):
        load("optim.freeze=[{group: gaussians, start: 0, end: 5000}]")
    with pytest.raises(ConfigError, match=r"optim\.freeze\[1\]\.start: expected a fraction of training in \[0, 1\]"):
        load("optim.freeze=[{group: decoder, end: 0.1}, {group: gaussians, start: -0.1, end: 0.5}]")


def test_a_freeze_window_in_steps_takes_whole_non_negative_steps():
    cfg = load("optim.freeze=[{group: gaussians, start: 0, end: 5000, units: steps}]")
    window = cfg.optim.freeze[0]
    assert window.active(4999, 600) and not window.active(5000, 600)
    with pytest.raises(ConfigError, match=r"optim\.freeze\[0\]\.end: expected a whole number of steps >= 0 "
                                          r"\(units: steps\), got 10\.5"):
        load("optim.freeze=[{group: gaussians, start: 0, end: 10.5, units: steps}]")
    with pytest.raises(ConfigError, match=r"optim\.freeze\[0\]\.start: expected a whole number of steps >= 0"):
        load("optim.freeze=[{group: gaussians, start: -5, end: 10, units: steps}]")


def test_a_freeze_window_ends_after_it_starts():
    with pytest.raises(ConfigError, match=r"optim\.freeze\[0\]\.end: expected end >= start, got start=0.5, end=0.2"):
        load("optim.freeze=[{group: gaussians, start: 0.5, end: 0.2}]")
    window = load("optim.freeze=[{group: gaussians, start: 0.0, end: 0.05}]").optim.freeze[0]
    assert window.active(29, 600) and not window.active(30, 600)
    FreezeWindow(group="gaussians", start=0, end=1).validate()  # the whole run, as a fraction


def test_the_profiles_freeze_windows_load():
    assert load_train_config("full", ["data.root=/nowhere"]).optim.freeze[0].units == "steps"
    assert load_train_config("quick").optim.freeze == []


# ---------------------------------------------------------------------------------------------- other checks


@pytest.mark.parametrize("override, pattern", [
    ("optim.grad_clip=-1", r"optim\.grad_clip: expected a finite gradient-norm bound >= 0 \(0 = off\), got -1"),
    ("optim.grad_clip=.nan", r"optim\.grad_clip: expected a finite gradient-norm bound >= 0"),
    ("render.eps2d=-0.1", r"render\.eps2d: expected a finite screen-space blur >= 0 \(pixels\^2\), got -0.1"),
    ("seed=-1", r"seed: expected an integer in \[0, 2\*\*32 - 1\], got -1"),
    ("seed=4294967296", r"seed: expected an integer in \[0, 2\*\*32 - 1\], got 4294967296"),
    ("data.synthetic.seed=-3", r"data\.synthetic\.seed: expected an integer >= 0, got -3"),
])
def test_other_values_the_run_would_reject(override, pattern):
    with pytest.raises(ConfigError, match=rf"command line: {pattern}"):
        load(override)


def test_the_edges_of_the_new_ranges_load():
    cfg = load("optim.grad_clip=0", "render.eps2d=0", "seed=4294967295", "data.synthetic.seed=0")
    assert (cfg.optim.grad_clip, cfg.render.eps2d, cfg.seed) == (0.0, 0.0, 2**32 - 1)


# ---------------------------------------------------------------------------------------------- ablations


ABLATION = """
name: bad_freeze
phase: 1
question: Does freezing the base Gaussians for NPGA's 5K steps help?
citations: ["NPGA (SIGGRAPH Asia 2024)", "GaussianAvatars (CVPR 2024)"]
base: quick
arms:
  train_all: {{optim.freeze: []}}
  frozen: {{{arm}}}
baseline: train_all
seeds: 2
metric: {{name: val/psnr, mode: max, window: 3}}
"""


@pytest.mark.parametrize("arm, pattern", [
    ("optim.freeze: [{group: gaussians, start: 0, end: 5000}]",
     r"arms\.frozen: optim\.freeze\[0\]\.end: expected a fraction of training in \[0, 1\]"),
    ("trainer.accelerator: foo", r"arms\.frozen: trainer\.accelerator: expected one of"),
    ("model.decoder.view_pe_freqs: -1", r"arms\.frozen: model\.decoder\.view_pe_freqs: expected an integer >= 0"),
    ("sampler.session_balance: true, sampler.session_shares: [1, 2]",
     r"arms\.frozen: sampler\.session_shares: expected 1 share"),
    ("eval.mirror_display_camera: 7", r"arms\.frozen: eval\.mirror_display_camera: expected one of the synthetic"),
])
def test_an_ablation_arm_with_a_bad_value_does_not_load(tmp_path, arm, pattern):
    from reflect.ablation.spec import load_ablation

    path = tmp_path / "abl.yaml"
    path.write_text(textwrap.dedent(ABLATION.format(arm=arm)))
    with pytest.raises(ConfigError, match=pattern) as info:
        load_ablation(path)
    assert str(path) in str(info.value)


def test_the_dry_run_catches_a_freeze_window_the_run_would_get_wrong(tmp_path):
    path = tmp_path / "abl.yaml"
    path.write_text(textwrap.dedent(ABLATION.format(arm="optim.freeze: [{group: gaussians, start: 0, end: 5000}]")))
    proc = subprocess.run([sys.executable, "-m", "reflect.ablate", str(path), "--dry-run"], capture_output=True,
                          text=True, cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "every arm's config is valid" not in proc.stdout
    assert re.search(r"arms\.frozen: optim\.freeze\[0\]\.end: expected a fraction of training in \[0, 1\] "
                     r"\(use units: steps for absolute steps\), got 5000", one_line(proc.stderr)), proc.stderr
