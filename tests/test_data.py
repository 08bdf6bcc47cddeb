"""Data layer: the GaussianAvatars/VHAP reader (values, sessions, errors) and the synthetic head generator."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
import torch
from PIL import Image

from reflect.data import DataConfig, SessionConfig, SyntheticHeadConfig, dataset_fingerprint, load_splits
from reflect.data.errors import DatasetError
from reflect.data.synthetic import (ProceduralHead, camera_rays, generate_synthetic_head, make_cameras, make_sequence,
                                    render_frames)

TINY = SyntheticHeadConfig(image_size=32, n_train_timesteps=14, n_val_timesteps=3, n_test_timesteps=2,
                           supersample=1, rare_fraction=0.15)


# ----------------------------------------------------------------------------------- hand-written dataset


def _npz(path: Path, drop: Optional[str] = None, **values: Any) -> None:
    arrays = {"expr": np.zeros((1, 100)), "jaw_pose": np.zeros((1, 3)), "eyes_pose": np.zeros((1, 6)),
              "neck_pose": np.zeros((1, 3)), "rotation": np.zeros((1, 3)), "translation": np.zeros((1, 3)),
              "shape": np.zeros(300)}
    arrays.update(values)
    arrays.pop(drop, None)
    np.savez(path, **arrays)


def make_dataset(root: Path, timesteps: tuple[int, ...] = (0,), frame_extra: Optional[dict] = None) -> Path:
    """A 2x2 dataset: OpenGL camera at (0,0,1) looking at the origin, RGBA PNGs with known pixels."""
    (root / "images").mkdir(parents=True)
    (root / "flame_param").mkdir()
    rgba = np.array([[[255, 0, 0, 128], [0, 255, 0, 255]], [[0, 0, 255, 0], [255, 255, 255, 255]]], np.uint8)
    c2w = np.eye(4)
    c2w[2, 3] = 1.0
    for t in timesteps:
        Image.fromarray(rgba, "RGBA").save(root / "images" / f"{t:05d}_00.png")
        expr = np.zeros((1, 100))
        expr[0, 0] = t
        _npz(root / "flame_param" / f"{t:05d}.npz", expr=expr, jaw_pose=np.array([[0.1 * t, 0, 0]]))
    _npz(root / "canonical_flame_param.npz")
    for split in ("train", "val", "test"):
        frames = [{"timestep_index": t, "camera_index": 0, "camera_id": "220700191",
                   "transform_matrix": c2w.tolist(), "fl_x": 2.0, "fl_y": 3.0, "cx": 1.0, "cy": 1.0,
                   "w": 2, "h": 2, "file_path": f"images/{t:05d}_00.png",
                   "flame_param_path": f"flame_param/{t:05d}.npz", **(frame_extra or {})} for t in timesteps]
        doc = {"cx": 9.0, "cy": 9.0, "fl_x": 100.0, "fl_y": 100.0, "w": 2, "h": 2,
               "camera_angle_x": 1.0, "camera_angle_y": 1.0, "timestep_indices": list(timesteps),
               "camera_indices": [0], "frames": frames}
        (root / f"transforms_{split}.json").write_text(json.dumps(doc))
    return root


def test_opengl_to_opencv_intrinsics_and_compositing(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d")
    ds = load_splits(DataConfig(root=str(root), background=[0.0, 0.0, 1.0]))["train"]
    item = ds[0]
    origin = item["viewmat"] @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert torch.allclose(origin, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    up = item["viewmat"] @ torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert up[1] < 0  # world up is image up: OpenCV y points down
    assert torch.allclose(item["cam_center"], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(item["K"], torch.tensor([[2.0, 0, 1], [0, 3, 1], [0, 0, 1]]))  # per-frame wins
    a = 128 / 255
    assert torch.allclose(item["alpha"][0], torch.tensor([[a, 1.0], [0.0, 1.0]]))
    assert torch.allclose(item["image"][:, 0, 0], torch.tensor([a, 0.0, 1 - a]))  # red over blue, half alpha
    assert torch.allclose(item["image"][:, 1, 0], torch.tensor([0.0, 0.0, 1.0]))  # transparent → background
    assert torch.allclose(item["image"][:, 1, 1], torch.ones(3))
    assert item["image"].dtype == torch.float32 and item["viewmat"].dtype == torch.float32
    assert item["frame_id"] == "d/t00000/c0" and ds.width == 2 and ds.height == 2
    assert ds.canonical_shape.shape == (300,) and ds.init_points() is None
    assert ds.region_names == [] and item["regions"] == {}  # real exports carry no region masks


def test_rgb_without_alpha_and_mask(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", timesteps=(0,))
    Image.fromarray(np.full((2, 2, 3), 200, np.uint8), "RGB").save(root / "images" / "00000_00.png")
    ds = load_splits(DataConfig(root=str(root), preload=False))["train"]
    assert torch.equal(ds[0]["alpha"], torch.ones(1, 2, 2))
    root = make_dataset(tmp_path / "m", frame_extra={"fg_mask_path": "mask.png"})
    Image.fromarray(np.full((2, 2, 3), 200, np.uint8), "RGB").save(root / "images" / "00000_00.png")
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8), "L").save(root / "mask.png")
    ds = load_splits(DataConfig(root=str(root), background=[0.0, 0.0, 0.0]))["train"]
    item = ds[0]
    assert torch.equal(item["alpha"][0], torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    # an RGB image beside a mask is the ground truth as stored: the mask serves masked metrics and losses only
    assert torch.allclose(item["image"], torch.full((3, 2, 2), 200 / 255))
    assert ds.ground_truth_rule() == "stored RGB as is (fg_mask: masks only)"


def test_vhap_frames_composited_over_white_are_not_composited_again(tmp_path: Path) -> None:
    """VHAP stores RGB already over white and the soft matte in fg_masks/: at soft edges (hair) the ground
    truth must be the stored pixels, not the stored pixels composited once more with the matte."""
    root = make_dataset(tmp_path / "v", frame_extra={"fg_mask_path": "fg_masks/00000_00.png"})
    colour, matte = np.array([40, 90, 160], np.float32), np.array([[0, 64], [128, 255]], np.uint8)
    a = matte.astype(np.float32)[..., None] / 255
    stored = np.rint(colour * a + 255 * (1 - a)).astype(np.uint8)  # VHAP: composited over white
    Image.fromarray(stored, "RGB").save(root / "images" / "00000_00.png")
    (root / "fg_masks").mkdir()
    Image.fromarray(matte, "L").save(root / "fg_masks" / "00000_00.png")
    item = load_splits(DataConfig(root=str(root)))["train"][0]
    torch.testing.assert_close(item["image"], torch.from_numpy(stored).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(item["alpha"][0], torch.from_numpy(matte).float() / 255)


def test_multi_session_tags_and_allowlist(tmp_path: Path) -> None:
    a = make_dataset(tmp_path / "a", timesteps=(0, 1, 2))
    b = make_dataset(tmp_path / "b", timesteps=(0, 1, 2))
    (tmp_path / "allow.txt").write_text("0\n2  # keep the ends\n\n")
    (tmp_path / "allow.json").write_text("[1]")
    cfg = DataConfig(sessions=[SessionConfig(root=str(a)), SessionConfig(root=str(b), name="day2",
                                                                         allowlist=str(tmp_path / "allow.txt"))])
    ds = load_splits(cfg)["train"]
    assert ds.session_names == ["a", "day2"]
    assert [ds[i]["frame_id"] for i in range(len(ds))] == [
        "a/t00000/c0", "a/t00001/c0", "a/t00002/c0", "day2/t00000/c0", "day2/t00002/c0"]
    assert ds.session_indices().tolist() == [0, 0, 0, 1, 1]
    assert int(ds[4]["session"]) == 1 and int(ds[4]["timestep"]) == 2
    codes = ds.expression_codes()
    assert codes.shape == (5, 109) and codes[:, 0].tolist() == [0, 1, 2, 0, 2] and codes[2, 100] == pytest.approx(0.2)
    cfg.sessions[1].allowlist = str(tmp_path / "allow.json")
    assert len(load_splits(cfg)["train"]) == 4
    assert dataset_fingerprint(cfg) != dataset_fingerprint(DataConfig(root=str(a)))
    small = load_splits(DataConfig(root=str(a), max_eval_frames=2))
    assert len(small["train"]) == 3 and [int(small["val"][i]["timestep"]) for i in range(2)] == [0, 2]


def _corrupt_image(root: Path) -> None:
    data = (root / "images" / "00000_00.png").read_bytes()
    (root / "images" / "00000_00.png").write_bytes(data[: len(data) // 2])


def _corrupt_pixels(root: Path) -> None:
    """Damage the compressed pixels only (the last IDAT bytes and its CRC): the header still reads."""
    path = root / "images" / "00000_00.png"
    data = bytearray(path.read_bytes())
    iend = data.rindex(b"IEND") - 4  # the IEND chunk starts at its length field
    data[iend - 10:iend] = b"\xff" * 10
    path.write_bytes(bytes(data))


def _edit_frame(**kv: Any):
    def edit(root: Path) -> None:
        for split in ("train", "val", "test"):
            p = root / f"transforms_{split}.json"
            doc = json.loads(p.read_text())
            doc["frames"][0].update(kv)
            p.write_text(json.dumps(doc))
    return edit


@pytest.mark.parametrize("corrupt, match, preload", [
    (lambda r: (r / "images" / "00000_00.png").unlink(), "00000_00.png", True),
    (_edit_frame(transform_matrix=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]), r"transforms_train\.json frame 0.*4x4", True),
    (_corrupt_image, r"00000_00\.png: cannot read the image header", True),
    (_corrupt_pixels, r"00000_00\.png: cannot decode image", True),  # decoded at load
    (_corrupt_pixels, r"00000_00\.png: cannot decode image", False),  # found lazily, at __getitem__
    (_edit_frame(file_path="../../etc/passwd"), r"etc/passwd.*leaves the dataset root", True),
    (_edit_frame(region_mask_paths=["m.png"]), r"frame 0.*'region_mask_paths' must map region names", True),
    (_edit_frame(region_mask_paths={"wrinkles": "nope.png"}), r"nope\.png", True),
    (lambda r: (r / "transforms_train.json").write_text('{"frames": [}'), r"transforms_train\.json: malformed JSON", True),
    (lambda r: _npz(r / "flame_param" / "00000.npz", drop="jaw_pose"), r"00000\.npz: missing key 'jaw_pose'", True),
    (lambda r: (r / "transforms_val.json").unlink(), r"transforms_val\.json: file not found", True),
])
def test_errors_name_the_file(tmp_path: Path, corrupt, match: str, preload: bool) -> None:
    root = make_dataset(tmp_path / "d")
    corrupt(root)
    cfg = DataConfig(root=str(root), preload=preload)
    if preload:  # every problem is found at load time
        with pytest.raises(DatasetError, match=match):
            load_splits(cfg)
        return
    train = load_splits(cfg)["train"]  # the header is fine: nothing is decoded yet
    with pytest.raises(DatasetError, match=match):
        train[0]


def test_vhap_union_dataset_and_extensionless_paths(tmp_path: Path) -> None:
    """GaussianAvatars' UNION datasets point at sibling sequences (``../<seq>/...``) listed in sequences_*.txt."""
    seq = make_dataset(tmp_path / "306_EMO-1", timesteps=(0, 1))
    union = tmp_path / "UNION_306"
    union.mkdir()
    for split in ("train", "val", "test"):
        doc = json.loads((seq / f"transforms_{split}.json").read_text())
        for f in doc["frames"]:
            f["file_path"] = "../306_EMO-1/" + f["file_path"][: -len(".png")]  # GaussianAvatars appends .png
            f["flame_param_path"] = "../306_EMO-1/" + f["flame_param_path"]
        (union / f"transforms_{split}.json").write_text(json.dumps(doc))
    (union / "canonical_flame_param.npz").write_bytes((seq / "canonical_flame_param.npz").read_bytes())
    with pytest.raises(DatasetError, match=r"\.\./306_EMO-1/images/00000_00\.png.*leaves the dataset root"):
        load_splits(DataConfig(root=str(union)))  # not listed: refused
    (union / "sequences_trainval.txt").write_text("306_EMO-1\n")
    ds = load_splits(DataConfig(root=str(union)))["train"]
    assert len(ds) == 2 and ds[1]["expr"][0].item() == 1.0
    assert ds[0]["image"].shape == (3, 2, 2)


def test_mixed_sizes_rejected(tmp_path: Path) -> None:
    a = make_dataset(tmp_path / "a")
    b = make_dataset(tmp_path / "b", frame_extra={"w": 4, "h": 4})
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(b / "images" / "00000_00.png")
    with pytest.raises(DatasetError, match="all frames of a split must share one size"):
        load_splits(DataConfig(sessions=[SessionConfig(root=str(a)), SessionConfig(root=str(b))]))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="background: expected"):
        DataConfig(background=[1.0, 2.0, 0.0]).validate()
    with pytest.raises(ValueError, match="n_val_timesteps: expected"):
        SyntheticHeadConfig(n_val_timesteps=500).validate()
    with pytest.raises(ValueError, match="root: expected"):
        SessionConfig().validate()


# ----------------------------------------------------------------------------------- synthetic head


def test_synthetic_deterministic(tmp_path: Path) -> None:
    a = generate_synthetic_head(TINY, tmp_path / "a", progress=False)
    b = generate_synthetic_head(TINY, tmp_path / "b", progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) > 40
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_synthetic_through_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLECT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = DataConfig(synthetic=TINY)
    splits = load_splits(cfg)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # no temp folder left behind
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert (len(train), len(val), len(test)) == (28, 3, 4)
    item = train[0]
    shapes = {"image": (3, 32, 32), "alpha": (1, 32, 32), "viewmat": (4, 4), "K": (3, 3), "cam_center": (3,),
              "expr": (100,), "jaw_pose": (3,), "eyes_pose": (6,), "neck_pose": (3,), "rotation": (3,),
              "translation": (3,)}
    for k, s in shapes.items():
        assert tuple(item[k].shape) == s and item[k].dtype == torch.float32, k
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert 0.1 < item["alpha"].mean() < 0.9  # a head in front of the background
    assert torch.linalg.norm(item["cam_center"]) == pytest.approx(0.8, abs=0.02)
    assert set(train.camera_indices()) == {0, 1} and set(val.camera_indices()) == {2}  # novel view held out
    assert set(val.timestep_indices()) <= set(train.timestep_indices())
    assert not set(test.timestep_indices()) & set(train.timestep_indices())  # held-out timesteps
    codes = train.expression_codes()
    assert (codes[:, 100] > 0.35).any() and (codes[:, 100] < 0.3).mean() > 0.8  # rare, big jaw openings
    assert train.init_points().shape == (10000, 3) and np.abs(train.init_points()).max() < 0.2
    assert train.canonical_shape.shape == (300,)
    image = train.frames[0].image
    written_ns = image.stat().st_mtime_ns

    def regenerate(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the cached synthetic head was generated again")

    monkeypatch.setattr("reflect.data.synthetic.generate_synthetic_head", regenerate)
    assert load_splits(cfg)["train"].frames[0].image == image  # cached, not regenerated
    assert image.stat().st_mtime_ns == written_ns
    assert val.region_names == test.region_names == ["wrinkles"]
    assert train.region_names == [] and train[0]["regions"] == {}  # evaluation only: not in the training loop
    region = val[0]["regions"]["wrinkles"]
    assert region.shape == (1, 32, 32) and set(region.unique().tolist()) == {0.0, 1.0}
    assert 0.02 < region.mean() < 0.3 and (region <= (val[0]["alpha"] > 0).float()).all()  # on the face only
    fp = dataset_fingerprint(cfg)
    assert fp == dataset_fingerprint(DataConfig(synthetic=TINY)) != dataset_fingerprint(DataConfig())


def test_wrinkles_follow_brow_raise() -> None:
    """Same pose, low vs high brow raise: the forehead band gets dark horizontal lines (texture, not geometry)."""
    cfg = SyntheticHeadConfig(image_size=64, supersample=2)
    seq = make_sequence(cfg)
    for k in seq:
        seq[k] = np.repeat(seq[k][:1] * 0, 2, axis=0)
    seq["expr"][1, 1] = 2.0
    c2ws, focal = make_cameras(cfg)
    rays = [camera_rays(c, focal, 64, 2) for c in c2ws]
    rgba, regions = render_frames(ProceduralHead(0), seq, np.array([0, 1]), np.array([2, 2]), rays, 64, 2)
    rgba, regions = rgba.astype(float), regions > 127
    # forehead at head-local (0, 0.066, 0.07) projects near row 32 - 0.076 * focal / 0.73
    row = int(round(32 - 0.076 * focal / 0.73))
    band = rgba[:, row - 3:row + 4, 27:37, :3].mean(-1)
    assert band[1].mean() < band[0].mean() - 15  # darker on average
    assert band[1].mean(1).std() > band[0].mean(1).std() + 5  # and striped along the rows
    # the wrinkle region marks the same skin with and without the wrinkles (only the line position moves)
    # and holds the pixels the expression darkened
    assert (regions[0] == regions[1]).mean() > 0.97 and regions[0, row - 3:row + 4, 27:37].mean() > 0.5
    changed = np.abs(rgba[1, ..., :3] - rgba[0, ..., :3]).max(-1) > 20
    changed[row + 4:] = False  # below the forehead band the brows themselves move up: not wrinkles
    assert changed.sum() > 20 and (changed & regions[1]).sum() / changed.sum() > 0.9


def test_monocular_capture_without_val_frames(tmp_path: Path) -> None:
    """A single-camera export has an empty val split: the error says how to evaluate on test alone."""
    root = make_dataset(tmp_path / "mono", timesteps=(0, 1))
    doc = json.loads((root / "transforms_val.json").read_text())
    doc["frames"] = []
    (root / "transforms_val.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"split 'val' has no frames.*eval\.splits=\[test\]"):
        load_splits(DataConfig(root=str(root)))
    splits = load_splits(DataConfig(root=str(root)), ["train", "test"])
    assert sorted(splits) == ["test", "train"] and len(splits["test"]) == 2


class _BrokenDataset(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        raise DatasetError("/data/images/00001_00.png: cannot decode image, expected a readable PNG/JPEG")


def test_error_from_a_dataloader_worker_keeps_only_the_message() -> None:
    """With trainer.num_workers > 0 PyTorch re-raises a worker's error with its traceback folded into the text."""
    from reflect.cli_errors import user_message

    loader = torch.utils.data.DataLoader(_BrokenDataset(), num_workers=1)
    with pytest.raises(DatasetError) as info:
        next(iter(loader))
    assert "Original Traceback" in str(info.value)  # what PyTorch does
    assert user_message(info.value) == "/data/images/00001_00.png: cannot decode image, expected a readable PNG/JPEG"
    assert user_message(DatasetError("plain: message")) == "plain: message"


def test_fingerprint_follows_every_file_a_trial_reads_and_not_the_folder_name(tmp_path):
    """Re-tracked FLAME parameters or a new points3d.ply change the fingerprint (so the trial identity); a copy of
    the export under another folder name does not."""
    import json
    import shutil

    import numpy as np

    from reflect.data import DataConfig, dataset_fingerprint
    from reflect.data.synthetic import generate_synthetic_head

    root = generate_synthetic_head(SyntheticHeadConfig(image_size=16, n_train_timesteps=3, n_val_timesteps=1,
                                                       n_test_timesteps=1, supersample=1), tmp_path / "export",
                                   progress=False)
    before = dataset_fingerprint(DataConfig(root=str(root)))
    copy = shutil.copytree(root, tmp_path / "another_name")
    assert dataset_fingerprint(DataConfig(root=str(copy))) == before
    frame = json.loads((copy / "transforms_train.json").read_text())["frames"][0]
    flame = copy / frame["flame_param_path"]
    params = dict(np.load(flame))
    params["expr"] = params["expr"] + 0.01  # re-tracked: same file name, same transforms files
    np.savez(flame, **params)
    retracked = dataset_fingerprint(DataConfig(root=str(copy)))
    assert retracked != before
    (copy / "points3d.ply").write_bytes((copy / "points3d.ply").read_bytes() + b"\n")
    assert dataset_fingerprint(DataConfig(root=str(copy))) not in (before, retracked)
    changed = dataset_fingerprint(DataConfig(root=str(copy)))
    flame.unlink()  # a file the reader would report when it loads the frame: the fingerprint still changes
    assert dataset_fingerprint(DataConfig(root=str(copy))) not in (before, retracked, changed)


def test_downscale_reduces_images_and_intrinsics_together(tmp_path):
    """data.downscale=2: half-size frames, box-averaged pixels, K / 2 (principal point included), alpha as uint8."""
    import torch.nn.functional as F

    root = generate_synthetic_head(SyntheticHeadConfig(image_size=32, n_train_timesteps=2, n_val_timesteps=1,
                                                       n_test_timesteps=1, supersample=1), tmp_path / "export",
                                   progress=False)
    full = load_splits(DataConfig(root=str(root)), ["train"])["train"]
    half = load_splits(DataConfig(root=str(root), downscale=2), ["train"])["train"]
    assert (half.width, half.height) == (16, 16) and len(half) == len(full)
    a, b = full[0], half[0]
    torch.testing.assert_close(b["K"][:2], a["K"][:2] / 2)
    assert torch.equal(b["viewmat"], a["viewmat"])
    # premultiplied averages: the reduced frame composited over the background is the averaged composited frame
    pooled = F.avg_pool2d(a["image"][None], 2)[0]
    assert (b["image"] - pooled).abs().max() < 3 / 255 and b["image"].shape == (3, 16, 16)  # uint8 rounding
    _, metric_alpha, over, _ = half._cache[0]  # the export is RGBA: both alphas exist, both kept as uint8
    assert metric_alpha.dtype == over.dtype == torch.uint8 and metric_alpha.shape == (1, 16, 16)
    from reflect.config import load_train_config
    from reflect.config_loading import ConfigError

    with pytest.raises(ConfigError, match=r"data\.downscale.*integer >= 1"):
        load_train_config("quick", ["data.downscale=0"])


@pytest.mark.parametrize("convention,stored_cy", [("vhap", 48 - 14.0), ("top", 14.0)])
def test_a_marker_reprojects_where_it_was_seen_for_both_principal_point_conventions(tmp_path, convention, stored_cy):
    """VHAP's exporter (default opencv->opengl conversion, vhap/util/camera.py) writes cy = h - cy_opencv; a
    nerfstudio-style export writes cy from the top. Either way the loaded camera must put a known 3-D point on
    the pixel it was seen at: here (30, 2) for fx = fy = 60, cx = 24, cy = 14 (from the top), 48x48 frames."""
    root = make_dataset(tmp_path / convention, frame_extra={"fl_x": 60.0, "fl_y": 60.0, "cx": 24.0, "cy": stored_cy,
                                                           "w": 48, "h": 48})
    Image.fromarray(np.zeros((48, 48, 4), np.uint8), "RGBA").save(root / "images" / "00000_00.png")
    item = load_splits(DataConfig(root=str(root), principal_point=convention), ["train"])["train"][0]
    camera = item["viewmat"] @ torch.tensor([0.1, 0.2, 0.0, 1.0])  # OpenGL camera at z = 1 sees it at (0.1, 0.2)
    pixel = (item["K"] @ camera[:3]) / camera[2]
    torch.testing.assert_close(pixel[:2], torch.tensor([30.0, 2.0]), atol=1e-4, rtol=0)  # the issue asks 0.5 px


def test_a_later_synthetic_session_is_another_capture_of_the_same_head(tmp_path: Path) -> None:
    """Other lighting, wider motion and expressions, and mis-tracked timesteps its allowlist leaves out."""
    from reflect.data.synthetic import SESSION_ALLOWLIST, config_key

    first, second = make_sequence(TINY), make_sequence(TINY, session=1)
    assert np.std(second["rotation"]) / np.std(first["rotation"]) > 1.4  # 1.8x the motion (other random waves)
    assert np.ptp(second["expr"][:, :3]) > np.ptp(first["expr"][:, :3])
    glitched = np.flatnonzero(second["tracked_as"] != np.arange(len(second["tracked_as"])))
    assert len(glitched) == round(0.12 * TINY.n_train_timesteps) and (first["tracked_as"] == np.arange(
        len(first["tracked_as"]))).all()
    assert not second["rare"][glitched].any() and (glitched < TINY.n_train_timesteps).all()

    root = generate_synthetic_head(TINY, tmp_path / "s2", progress=False, session=1)
    allowed = {int(line) for line in (root / SESSION_ALLOWLIST).read_text().splitlines() if not line.startswith("#")}
    assert allowed == set(range(TINY.n_train_timesteps + TINY.n_test_timesteps)) - set(glitched.tolist())
    for t in (int(glitched[0]), int(sorted(allowed)[0])):  # a mis-tracked timestep stores another's parameters
        stored = np.load(root / "flame_param" / f"{t:05d}.npz")
        source = int(second["tracked_as"][t])
        assert np.array_equal(stored["rotation"][0], second["rotation"][source].astype(np.float32))
    frames = json.loads((root / "transforms_train.json").read_text())["frames"]
    assert {f["timestep_index"] for f in frames if f.get("tracking_glitch")} == set(glitched.tolist())
    base = generate_synthetic_head(TINY, tmp_path / "s1", progress=False)
    a = np.asarray(Image.open(base / "images" / "00000_00.png"), dtype=float)
    b = np.asarray(Image.open(root / "images" / "00000_00.png"), dtype=float)
    on_both = (a[..., 3] > 250) & (b[..., 3] > 250)
    assert on_both.mean() > 0.1
    # the warm tint: blue falls more than red under the second session's light
    ratio = b[on_both, :3].mean(0) / a[on_both, :3].mean(0)
    assert ratio[2] < ratio[0] - 0.05
    assert config_key(TINY, 1) != config_key(TINY) == config_key(SyntheticHeadConfig(**{
        **TINY.__dict__, "sessions": 2, "allowlist": False}))  # loader options are not in a session's key


def test_two_synthetic_sessions_train_together_and_evaluate_on_the_first(tmp_path, monkeypatch) -> None:
    from dataclasses import replace

    from reflect.data.synthetic import make_sequence

    monkeypatch.setenv("REFLECT_CACHE_DIR", str(tmp_path / "cache"))
    two = replace(TINY, sessions=2)
    splits = load_splits(DataConfig(synthetic=two, eval_sessions=["synthetic"]))
    train, val = splits["train"], splits["val"]
    assert train.session_names == ["synthetic", "synthetic2"] and val.session_names == ["synthetic"]
    glitched = set(np.flatnonzero(make_sequence(TINY, 1)["tracked_as"] != np.arange(
        TINY.n_train_timesteps + TINY.n_test_timesteps)).tolist())
    second = train.timestep_indices()[train.session_indices() == 1]
    assert len(second) == 2 * (TINY.n_train_timesteps - len(glitched)) and not set(second.tolist()) & glitched
    only_first = load_splits(DataConfig(synthetic=TINY))
    assert [f.frame_id for f in val.frames] == [f.frame_id for f in only_first["val"].frames]  # same frames scored
    unguarded = load_splits(DataConfig(synthetic=replace(two, allowlist=False)), splits=("train",))["train"]
    assert len(unguarded) == len(train) + 2 * len(glitched)  # the guard is what left them out
    with pytest.raises(DatasetError, match="no session named 'session1'.*'synthetic', 'synthetic2'"):
        load_splits(DataConfig(synthetic=two, eval_sessions=["session1"]))
    prints = {dataset_fingerprint(DataConfig(synthetic=c)) for c in (TINY, two, replace(two, allowlist=False))}
    assert len(prints) == 3
    # scored on session 1's frames either way: the evaluated data's fingerprint is the one-session dataset's
    from reflect.data import evaluation_fingerprint

    alone = dataset_fingerprint(DataConfig(synthetic=TINY))
    assert evaluation_fingerprint(DataConfig(synthetic=two, eval_sessions=["synthetic"])) == alone
    assert evaluation_fingerprint(DataConfig(synthetic=TINY, eval_sessions=["synthetic"])) == alone
    assert evaluation_fingerprint(DataConfig(synthetic=two)) == dataset_fingerprint(DataConfig(synthetic=two))
    assert evaluation_fingerprint(DataConfig(synthetic=two, eval_sessions=["synthetic2"])) not in (alone, *prints)


def test_any_expression_length_is_read_and_must_be_one_per_split(tmp_path: Path) -> None:
    """Trackers export other than 100 expression components; the model checks it has the ones it reads."""
    from reflect.config import load_train_config
    from reflect.training import check_expression_length

    root = make_dataset(tmp_path / "d", timesteps=(0, 1))
    for t in (0, 1):
        _npz(root / "flame_param" / f"{t:05d}.npz", expr=np.full((1, 50), float(t)))
    train = load_splits(DataConfig(root=str(root)))["train"]
    assert train.expression_length() == 50 and train[1]["expr"].shape == (50,) and train[1]["expr"][49] == 1.0
    cfg = load_train_config("quick", ["model.deform.expr_dims=50", "model.decoder.expr_dims=10"])
    check_expression_length(cfg, 50)
    cfg = load_train_config("quick", ["model.deform.expr_dims=60"])
    with pytest.raises(DatasetError, match=r"model.deform.expr_dims=60, but the data's FLAME expr has 50"):
        check_expression_length(cfg, 50)
    _npz(root / "flame_param" / "00001.npz", expr=np.zeros((1, 20)))
    with pytest.raises(DatasetError, match="has 50 expression components but frame .* has 20"):
        load_splits(DataConfig(root=str(root)), splits=("train",))


def test_the_vhap_flavoured_synthetic_export_reads_as_the_same_scene(tmp_path: Path) -> None:
    """VHAP's conventions (RGB over white + matte, cy stored from the bottom, an off-centre principal point,
    neck_pose, no points3d.ply) read back to the same poses and ground truth as the GaussianAvatars flavour."""
    from dataclasses import replace

    from reflect.data.synthetic import VHAP_PRINCIPAL_POINT, axis_angle_to_matrix

    soft = replace(TINY, supersample=2)  # sub-pixel coverage: soft matte edges
    ga_root = generate_synthetic_head(soft, tmp_path / "ga", progress=False)
    vhap_root = generate_synthetic_head(replace(soft, flavour="vhap"), tmp_path / "vhap", progress=False)
    assert not (vhap_root / "points3d.ply").exists() and (vhap_root / "fg_masks").is_dir()
    stored = json.loads((vhap_root / "transforms_train.json").read_text())["frames"][0]
    assert stored["cy"] == pytest.approx(32 - VHAP_PRINCIPAL_POINT[1] * 32)  # from the bottom, as VHAP writes it
    ga = load_splits(DataConfig(root=str(ga_root)))["train"]
    vhap = load_splits(DataConfig(root=str(vhap_root)))["train"]
    assert vhap.init_points() is None and ga.init_points() is not None
    a, b = ga[3], vhap[3]
    assert b["K"][0, 2] == pytest.approx(VHAP_PRINCIPAL_POINT[0] * 32) and b["K"][1, 2] == pytest.approx(
        VHAP_PRINCIPAL_POINT[1] * 32)  # read back top-origin
    assert torch.allclose(a["viewmat"], b["viewmat"]) and torch.allclose(a["expr"], b["expr"])
    assert b["neck_pose"].abs().max() > 0.01 and a["neck_pose"].abs().max() == 0
    pose = lambda item: axis_angle_to_matrix(item["rotation"].double().numpy()) @ axis_angle_to_matrix(
        item["neck_pose"].double().numpy())
    assert np.allclose(pose(a), pose(b), atol=1e-5)  # one head pose, split differently
    # ground truth: the stored RGB as it is (already over white) and the matte as alpha
    rgb = np.asarray(Image.open(vhap_root / stored["file_path"]), dtype=np.float32) / 255
    matte = np.asarray(Image.open(vhap_root / stored["fg_mask_path"]), dtype=np.float32) / 255
    first = vhap[0]
    assert np.array_equal(first["image"].permute(1, 2, 0).numpy(), rgb)
    assert np.array_equal(first["alpha"][0].numpy(), matte) and ((matte > 0.05) & (matte < 0.95)).any()
    # the same head lands at the same place in both after the principal point's shift: compare the alpha
    # silhouettes' centroids, offset by the principal points' difference
    def centroid(alpha):
        ys, xs = np.mgrid[0:32, 0:32]
        return np.array([(alpha * xs).sum(), (alpha * ys).sum()]) / alpha.sum()
    shift = (np.array(VHAP_PRINCIPAL_POINT) - 0.5) * 32
    assert np.allclose(centroid(b["alpha"][0].numpy()) - centroid(a["alpha"][0].numpy()), shift, atol=0.5)
    top = load_splits(DataConfig(root=str(vhap_root), principal_point="top"), splits=("train",))["train"]
    assert top[3]["K"][1, 2] == pytest.approx(32 - VHAP_PRINCIPAL_POINT[1] * 32)  # the wrong reading differs


def test_dynamic_offsets_are_read_for_the_flame_layer_only(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", timesteps=(0, 1))
    for t in (0, 1):
        _npz(root / "flame_param" / f"{t:05d}.npz", dynamic_offset=np.full((1, 7, 3), float(t)))
    plain = load_splits(DataConfig(root=str(root)), splits=("train",))["train"]
    assert "dynamic_offset" not in plain[1]  # not read (60 KB a timestep on a real export) without the layer
    with_layer = load_splits(DataConfig(root=str(root)), splits=("train",), dynamic_offsets=True)["train"]
    assert with_layer[1]["dynamic_offset"].shape == (7, 3) and with_layer[1]["dynamic_offset"].max() == 1.0
    _npz(root / "flame_param" / "00001.npz")
    with pytest.raises(DatasetError, match="has a dynamic_offset but frame .* has none"):
        load_splits(DataConfig(root=str(root)), splits=("train",), dynamic_offsets=True)


def test_the_visual_hull_of_the_vhap_flavour_lies_on_the_head(tmp_path: Path) -> None:
    """No points3d.ply (VHAP writes none): the hull carved from the mattes and head poses finds the face side of
    the surface the GaussianAvatars flavour's point cloud samples, and covers more of it than the ellipsoid."""
    from dataclasses import replace

    from reflect.data.hull import visual_hull_points
    from reflect.model.avatar import ellipsoid_surface_points

    cfg = replace(TINY, n_train_timesteps=40, supersample=2)
    truth = torch.as_tensor(load_splits(DataConfig(root=str(generate_synthetic_head(
        cfg, tmp_path / "ga", progress=False))), splits=("train",))["train"].init_points())
    vhap = load_splits(DataConfig(root=str(generate_synthetic_head(replace(cfg, flavour="vhap"), tmp_path / "v",
                                                                   progress=False))), splits=("train",))["train"]
    hull = torch.as_tensor(visual_hull_points(vhap, n=3000))
    ellipsoid = ellipsoid_surface_points(3000, torch.Generator().manual_seed(0))

    def to_truth(points):  # median distance from each point to the nearest true surface sample
        return torch.cdist(points, truth).min(dim=1).values.median().item()

    def coverage(points):  # share of the true surface with a start point within 1 cm
        return (torch.cdist(truth, points).min(dim=1).values < 0.01).float().mean().item()

    face_side = hull[:, 2] > 0
    assert to_truth(hull[face_side]) < 0.012  # measured 9.4 mm at 32 px (7.3 mm at 64 px)
    assert coverage(hull) > coverage(ellipsoid) + 0.05  # measured 0.69 vs 0.55
    assert to_truth(hull) > to_truth(ellipsoid)  # why it is not the default: the back stays uncarved
    rgb_only = load_splits(DataConfig(root=str(tmp_path / "v")), splits=("train",))["train"]
    for frame in rgb_only.frames:
        frame.mask = None  # as an RGB export without mattes: nothing to carve
    rgb_only._cache = None
    assert visual_hull_points(rgb_only) is None


def test_the_start_points_follow_model_gaussians_init(tmp_path: Path) -> None:
    from dataclasses import replace

    from reflect.config import load_train_config
    from reflect.training import initial_points

    vhap = load_splits(DataConfig(root=str(generate_synthetic_head(replace(TINY, flavour="vhap", supersample=2),
                                                                   tmp_path / "v", progress=False))),
                       splits=("train",))["train"]
    ga = load_splits(DataConfig(root=str(generate_synthetic_head(TINY, tmp_path / "g", progress=False))),
                     splits=("train",))["train"]
    cfg = lambda init: load_train_config("quick", [f"model.gaussians.init={init}"])  # noqa: E731
    assert initial_points(cfg("auto"), ga, None)[1] == "points3d.ply"
    assert initial_points(cfg("auto"), vhap, None) == (None, "ellipsoid")  # no point cloud: the ellipsoid
    points, source = initial_points(cfg("visual_hull"), vhap, None)
    assert source == "visual hull of the training mattes" and points.shape == (10000, 3)
    with pytest.raises(DatasetError, match="init=points3d, but .*points3d.ply does not exist"):
        initial_points(cfg("points3d"), vhap, None)
    assert initial_points(cfg("auto"), ga, object())[1] == "flame canonical mesh"
    with pytest.raises(Exception, match="init: expected one of"):
        cfg("hull")


def test_a_short_session_trains_on_the_first_timesteps_and_is_scored_on_the_same_frames(tmp_path, monkeypatch):
    monkeypatch.setenv("REFLECT_CACHE_DIR", str(tmp_path / "cache"))
    full = load_splits(DataConfig(synthetic=TINY))
    short = load_splits(DataConfig(synthetic=TINY, train_timesteps=5))
    assert sorted(set(short["train"].timestep_indices())) == list(range(5))
    assert len(short["train"]) == 5 * 2 and len(full["train"]) == TINY.n_train_timesteps * 2  # both cameras
    assert [f.frame_id for f in short["val"].frames] == [f.frame_id for f in full["val"].frames]
    with pytest.raises(ValueError, match="train_timesteps: expected a positive integer"):
        DataConfig(train_timesteps=0).validate()
