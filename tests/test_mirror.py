"""The virtual mirror viewpoint: geometry, the synthetic head's rendered ground truth, and its evaluation."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from reflect.data import DataConfig, SyntheticHeadConfig, load_splits
from reflect.data.errors import DatasetError
from reflect.data.mirror import mirror_camera

TINY = SyntheticHeadConfig(image_size=32, n_train_timesteps=12, n_val_timesteps=3, n_test_timesteps=2,
                           supersample=2)


def look_at_w2c(centre, target):
    """OpenCV world-to-camera matrix of a camera at ``centre`` looking at ``target`` (y down)."""
    forward = np.asarray(target, float) - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])  # y up in the world: the camera's y axis points down
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = rot, -rot @ centre
    return w2c


def test_the_mirror_camera_is_the_eye_reflected_behind_the_display():
    display = look_at_w2c(np.array([0.1, 0.05, 0.6]), [0.1, 0.05, 0.0])  # display plane z = 0.6, normal -z
    K = np.array([[100.0, 0, 16], [0, 100.0, 16], [0, 0, 1]])
    eye = np.array([0.13, 0.07, 0.05])
    viewmat, mirror_K = mirror_camera(display, K, eye)
    centre = -viewmat[:3, :3].T @ viewmat[:3, 3]
    assert np.allclose(centre, [0.13, 0.07, 0.6 + (0.6 - 0.05)])  # reflected across z = 0.6
    assert np.allclose(viewmat[:3, :3], display[:3, :3])  # the display camera's rotation (proper, det +1)
    assert np.linalg.det(viewmat[:3, :3]) == pytest.approx(1.0)
    assert np.allclose(mirror_K[:2, :2], 2 * K[:2, :2]) and np.allclose(mirror_K[:2, 2], K[:2, 2])
    cam = viewmat[:3, :3] @ eye + viewmat[:3, 3]
    assert cam[2] == pytest.approx(2 * 0.55)  # the eye is twice as far from its reflection as from the display
    with pytest.raises(ValueError, match="must be in front"):
        mirror_camera(display, K, np.array([0.0, 0.0, 1.0]))


@pytest.mark.parametrize("flavour", ["gaussian_avatars", "vhap"])
def test_the_synthetic_head_renders_the_mirror_view_and_it_loads_as_a_split(tmp_path, monkeypatch, flavour):
    monkeypatch.setenv("REFLECT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = DataConfig(synthetic=replace(TINY, flavour=flavour))
    splits = load_splits(cfg, ["val", "mirror"])
    val, mirror = splits["val"], splits["mirror"]
    assert len(mirror) == len(val) == 3 and set(mirror.camera_indices()) == {90}
    assert list(mirror.timestep_indices()) == list(val.timestep_indices())
    for i in range(len(mirror)):
        a, b = val[i], mirror[i]
        centre_val = -a["viewmat"][:3, :3].T @ a["viewmat"][:3, 3]
        centre_mirror = -b["viewmat"][:3, :3].T @ b["viewmat"][:3, 3]
        assert float(centre_mirror.norm()) > 1.7 * float(centre_val.norm())  # behind the display, ~2x as far
        assert np.allclose(b["K"][0, 0].item(), 2 * a["K"][0, 0].item())
        coverage_val, coverage_mirror = a["alpha"].mean().item(), b["alpha"].mean().item()
        assert 0.6 < coverage_mirror / coverage_val < 1.4  # the face keeps the display camera's framing
        assert not np.allclose(a["image"].numpy(), b["image"].numpy(), atol=0.05)  # another viewpoint
    image = mirror.frames[0].image
    written_ns = image.stat().st_mtime_ns

    def regenerate(*args, **kwargs):
        raise AssertionError("the cached mirror views were rendered again")

    with monkeypatch.context() as patch:  # the other eye point below is rendered, outside this block
        patch.setattr("reflect.data.synthetic_mirror.generate_mirror_views", regenerate)
        again = load_splits(cfg, ["mirror"])["mirror"]
    assert again.frames[0].image == image and image.stat().st_mtime_ns == written_ns  # cached, not rendered again
    other_eye = load_splits(cfg, ["mirror"], mirror_eye_m=(0.0, 0.0, 0.09))["mirror"]
    assert other_eye.frames[0].image != mirror.frames[0].image  # keyed by the geometry


def test_a_capture_has_no_mirror_ground_truth(tmp_path):
    from reflect.data.synthetic import generate_synthetic_head

    root = generate_synthetic_head(TINY, tmp_path / "export", progress=False)
    with pytest.raises(DatasetError, match="needs ground truth of the virtual mirror viewpoint"):
        load_splits(DataConfig(root=str(root)), ["val", "mirror"])


def test_training_scores_the_mirror_view(tmp_path, tiny_overrides):
    from reflect.config import load_train_config
    from reflect.training import train, trial_splits

    cfg = load_train_config("quick", tiny_overrides + ["eval.splits=[val,mirror]"])
    result = train(cfg, tmp_path / "run")
    last = result.eval_history[-1]
    assert np.isfinite(last["mirror/psnr"]) and np.isfinite(last["val/psnr"])
    mirror = result.per_frame["mirror"]
    assert last["mirror/psnr"] == pytest.approx(np.mean(mirror["psnr"]))  # the mean over the mirror frames
    assert last["mirror/psnr"] != pytest.approx(last["val/psnr"])  # its own frames, not the val split's again
    # one mirror frame per val timestep of the display's camera (c2 on the synthetic head), at camera 90
    val_ids = result.per_frame["val"]["frame_id"]
    assert len(val_ids) == 3 and all(fid.endswith("/c2") for fid in val_ids)
    assert mirror["frame_id"] == [fid[: -len("c2")] + "c90" for fid in val_ids]
    assert mirror["frame_id"] == [f.frame_id for f in trial_splits(cfg, ["mirror"])["mirror"].frames]


def test_reflect_mirror_renders_a_trained_trial_from_the_mirror_viewpoint(tmp_path, tiny_overrides):
    """The capture path: no ground truth, so the views are rendered (flipped, as the display shows them) for the
    sign-off; on the synthetic head the unflipped render is the one the mirror split scores."""
    import json
    import subprocess
    import sys

    from PIL import Image

    from reflect.config import load_train_config
    from reflect.config_loading import ConfigError, to_plain_dict
    from reflect.mirror import render_mirror_views
    from reflect.training import build_module, train, trial_splits

    cfg = load_train_config("quick", tiny_overrides)
    result = train(cfg, tmp_path / "run")
    record = tmp_path / "trial.json"
    record.write_text(json.dumps({"config": to_plain_dict(cfg), "checkpoint": result.checkpoint}))
    written = render_mirror_views(record, out=tmp_path / "mirror", frames=2)
    assert len(written) == 2 and all(p.name.endswith("_c2_mirror.png") for p in written)
    pixels = np.asarray(Image.open(written[0]))
    assert pixels.shape == (32, 32, 3) and pixels.std() > 5  # a head, not a blank frame
    # the same frame of the mirror split (the view the synthetic head scores), rendered by the trained module
    splits = trial_splits(cfg, ["train", "mirror"])
    module, _ = build_module(cfg, splits)
    module.load_state_dict(torch.load(result.checkpoint, map_location="cpu", weights_only=False)["state_dict"],
                           strict=False)
    module.eval()
    mirror = splits["mirror"]
    timestep = int(written[0].name.split("_t")[1][:5])
    item = mirror[int(np.flatnonzero(mirror.timestep_indices() == timestep)[0])]
    with torch.no_grad():
        batch = {k: v[None] for k, v in item.items() if isinstance(v, torch.Tensor)}
        rgb = module.model(batch, mirror.width, mirror.height)["rgb"][0].clamp(0, 1)
    unflipped = (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.int16)
    assert np.abs(pixels.astype(np.int16) - unflipped[:, ::-1]).max() <= 1  # flipped left to right, as shown
    assert np.abs(pixels.astype(np.int16) - unflipped).max() > 10  # and the flip is visible: the head is not symmetric
    proc = subprocess.run([sys.executable, "-m", "reflect.mirror", str(record), "--frames", "1",
                           "--out", str(tmp_path / "cli")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "no PSNR" in " ".join(proc.stdout.split()), proc.stderr[-2000:]
    assert len(list((tmp_path / "cli").glob("*.png"))) == 1
    record.write_text(json.dumps({"config": to_plain_dict(cfg), "checkpoint": str(tmp_path / "gone.ckpt")}))
    with pytest.raises(ConfigError, match="gone.ckpt does not exist"):
        render_mirror_views(record)
