"""The FLAME layer on a tiny model file in FLAME's format (the real one is licensed: tests make their own)."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from reflect.model.flame import FlameModelError, FlameSkeleton, read_flame_model

N_EXPR_DIRS = 20
# FLAME's joints: global (root), neck, jaw, left eye, right eye
JOINT_CENTRES = np.array([[0.0, -0.09, -0.01], [0.0, -0.05, -0.01], [0.0, -0.03, 0.01],
                          [0.03, 0.02, 0.06], [-0.03, 0.02, 0.06]])


def sphere_mesh(rings: int = 8, segments: int = 12, radii=(0.08, 0.1, 0.09)):
    """A UV ellipsoid: vertices [V,3] and triangles [F,3] (poles shared)."""
    verts = [[0.0, radii[1], 0.0]]
    for i in range(1, rings):
        theta = np.pi * i / rings
        for j in range(segments):
            phi = 2 * np.pi * j / segments
            verts.append([radii[0] * np.sin(theta) * np.sin(phi), radii[1] * np.cos(theta),
                          radii[2] * np.sin(theta) * np.cos(phi)])
    verts.append([0.0, -radii[1], 0.0])
    faces = []
    ring = lambda i, j: 1 + (i - 1) * segments + j % segments  # noqa: E731
    for j in range(segments):
        faces.append([0, ring(1, j + 1), ring(1, j)])
        faces.append([len(verts) - 1, ring(rings - 1, j), ring(rings - 1, j + 1)])
    for i in range(1, rings - 1):
        for j in range(segments):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            faces += [[a, b, d], [a, d, c]]
    return np.array(verts), np.array(faces)


def write_tiny_flame(path: Path, seed: int = 0, pose_correctives: bool = True) -> Path:
    """A FLAME-format pickle: 5 joints with FLAME's kinematic tree, skinning weights by region (jaw below the
    mouth and in front, eyes around the eye centres, root at the bottom, neck elsewhere), small blend shapes,
    a sparse J_regressor; the same keys and shape semantics as FLAME's file. Without ``pose_correctives``
    the pose blend shapes are zero, so a joint moves only what it is weighted on."""
    import scipy.sparse

    rng = np.random.default_rng(seed)
    v, f = sphere_mesh()
    n = len(v)
    weights = np.zeros((n, 5))
    jaw = (v[:, 1] < -0.03) & (v[:, 2] > 0.0)
    eyes = [np.linalg.norm(v - JOINT_CENTRES[k], axis=1) < 0.035 for k in (3, 4)]
    root = v[:, 1] < -0.085
    weights[:, 1] = 1.0
    weights[jaw] = [0, 0, 1, 0, 0]
    weights[eyes[0]] = [0, 0, 0, 1, 0]
    weights[eyes[1]] = [0, 0, 0, 0, 1]
    weights[root] = [1, 0, 0, 0, 0]
    # each joint regressed from the 4 vertices nearest its centre (joints follow shape, as in FLAME)
    regressor = np.zeros((5, n))
    for k, centre in enumerate(JOINT_CENTRES):
        nearest = np.argsort(np.linalg.norm(v - centre, axis=1))[:4]
        regressor[k, nearest] = 0.25
    model = {
        "v_template": v, "f": f.astype(np.uint32),
        "shapedirs": rng.normal(0.0, 1e-3, size=(n, 3, 300 + N_EXPR_DIRS)),
        "posedirs": rng.normal(0.0, 1e-4, size=(n, 3, 36)) * pose_correctives,
        "J_regressor": scipy.sparse.csc_matrix(regressor), "weights": weights,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
    }
    with open(path, "wb") as fh:
        pickle.dump(model, fh, protocol=2)
    return path


@pytest.fixture
def tiny_flame(tmp_path) -> Path:
    return write_tiny_flame(tmp_path / "flame_tiny.pkl")


def pose_batch(**values):
    zero = torch.zeros(1, 3)
    batch = {"expr": torch.zeros(1, 100), "rotation": zero, "neck_pose": zero, "jaw_pose": zero,
             "eyes_pose": torch.zeros(1, 6), "translation": zero}
    batch.update({k: torch.as_tensor(v, dtype=torch.float32).reshape(1, -1) for k, v in values.items()})
    return batch


def test_the_skeleton_poses_vertices_exactly_as_smplx_lbs(tiny_flame):
    """Our split of FLAME's skinning (transforms + displacement, for binding Gaussians) against smplx's lbs."""
    from smplx.lbs import lbs

    arrays = read_flame_model(tiny_flame)
    shape = np.random.default_rng(1).normal(size=300).astype(np.float32)
    static = np.random.default_rng(2).normal(0, 1e-3, size=arrays["v_template"].shape).astype(np.float32)
    skeleton = FlameSkeleton(arrays, shape, expr_dims=100, static_offset=static)
    assert skeleton.n_expr == N_EXPR_DIRS  # cut to the model's expression directions
    g = torch.Generator().manual_seed(0)
    expr = torch.randn(2, 100, generator=g)
    rotation, neck, jaw = (0.3 * torch.randn(2, 3, generator=g) for _ in range(3))
    eyes, translation = 0.2 * torch.randn(2, 6, generator=g), torch.randn(2, 3, generator=g) * 0.01
    ours = skeleton.vertices(expr, rotation, neck, jaw, eyes, translation)
    f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    shapedirs = f32(arrays["shapedirs"])
    betas = torch.cat([f32(shape)[None].expand(2, -1), expr[:, :N_EXPR_DIRS]], dim=1)
    reference, _ = lbs(betas, torch.cat([rotation, neck, jaw, eyes], dim=1), f32(arrays["v_template"]) + f32(static),
                       torch.cat([shapedirs[:, :, :300], shapedirs[:, :, 300:]], dim=2),
                       f32(arrays["posedirs"]).reshape(-1, 36).T, f32(arrays["J_regressor"]),
                       torch.as_tensor(arrays["parents"]), f32(arrays["weights"]))
    assert torch.allclose(ours, reference + translation[:, None], atol=1e-6)


def test_flame_driven_gaussians_move_with_the_neck_and_the_jaw(tmp_path):
    from reflect.config import load_train_config
    from reflect.model.avatar import GaussianAvatar

    tiny_flame = write_tiny_flame(tmp_path / "rigid_parts.pkl", pose_correctives=False)
    cfg = load_train_config("quick", ["model.gaussians.num_gaussians=400", "model.deform.enabled=false"])
    skeleton = FlameSkeleton(read_flame_model(tiny_flame), np.zeros(300, np.float32), expr_dims=100)
    model = GaussianAvatar(cfg.model, None, flame=skeleton, seed=0)
    # initialised on the canonical mesh: every Gaussian on its bound triangle's plane, inside the ellipsoid
    radius = (model.means / torch.tensor([0.08, 0.1, 0.09])).norm(dim=-1)
    assert radius.max() <= 1.0 + 1e-5 and radius.min() > 0.9
    weights = skeleton.weights[skeleton.faces[model.face_index]].mean(1)  # [N,5] joint influence per Gaussian
    on_jaw, on_cranium = weights[:, 2] > 0.99, weights[:, 1] > 0.99
    assert on_jaw.sum() > 5 and on_cranium.sum() > 50
    still = model.deformed_gaussians(pose_batch())["means"][0]
    opened = model.deformed_gaussians(pose_batch(jaw_pose=[0.4, 0, 0]))["means"][0]
    moved = (opened - still).norm(dim=-1)
    assert moved[on_jaw].min() > 1e-3 and moved[on_cranium].max() < 1e-6  # the jaw opens, the cranium stays
    turned = model.deformed_gaussians(pose_batch(neck_pose=[0, 0.5, 0]))
    moved = (turned["means"][0] - still).norm(dim=-1)
    on_root = weights[:, 0] > 0.99
    assert moved[on_cranium].min() > 1e-3 and (not on_root.any() or moved[on_root].max() < 1e-6)
    # the neck turns the head about the neck joint (FLAME's), not about the origin as the rigid head does
    neck_joint = (skeleton.J_regressor @ skeleton.v_shaped)[1]
    before = (still[on_cranium] - neck_joint).norm(dim=-1)
    after = (turned["means"][0, on_cranium] - neck_joint).norm(dim=-1)
    assert torch.allclose(before, after, atol=1e-6) and neck_joint.norm() > 0.04
    assert not torch.allclose(still[on_cranium].norm(dim=-1), turned["means"][0, on_cranium].norm(dim=-1), atol=1e-4)
    quats = turned["quats"][0, on_cranium]  # orientations turn with it, and stay unit quaternions
    assert torch.allclose(quats.norm(dim=-1), torch.ones(len(quats)), atol=1e-5)
    assert (quats[:, 0] - 1).abs().max() > 1e-3
    translated = model.deformed_gaussians(pose_batch(translation=[0.01, 0.02, 0.03]))["means"][0]
    assert torch.allclose(translated - still, torch.tensor([0.01, 0.02, 0.03]).expand_as(still), atol=1e-6)


def test_a_bad_flame_file_is_named_with_what_is_wrong(tmp_path, tiny_flame):
    with pytest.raises(FlameModelError, match="not found.*flame.is.tue.mpg.de"):
        read_flame_model(tmp_path / "absent.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(FlameModelError, match="junk.pkl: not a readable FLAME model pickle"):
        read_flame_model(tmp_path / "junk.pkl")
    model = pickle.loads(tiny_flame.read_bytes())
    for broken, message in ((dict(model, weights=model["weights"][:, :3]), r"'weights' has shape \[.*, 3\]"),
                            ({k: v for k, v in model.items() if k != "posedirs"}, "missing posedirs")):
        path = tmp_path / "broken.pkl"
        path.write_bytes(pickle.dumps(broken))
        with pytest.raises(FlameModelError, match=message):
            read_flame_model(path)


def test_training_with_a_flame_file_records_it_in_identity_and_protocol(tmp_path, tiny_flame, tiny_overrides):
    """End to end on the synthetic head: the FLAME file's content (not its path) is part of the trial's hash."""
    import shutil

    from reflect.config import config_hash, load_train_config
    from reflect.model.avatar import head_model
    from reflect.training import train

    cfg = load_train_config("quick", tiny_overrides + [f"model.flame.model_path={tiny_flame}"])
    result = train(cfg, tmp_path / "run")
    assert result.steps == 6 and np.isfinite(result.eval_history[-1]["val/psnr"])
    assert result.initialisation == "flame canonical mesh"
    again = train(cfg, tmp_path / "run")  # resumes the finished checkpoint: the binding is in it, FLAME is not
    assert again.eval_history == result.eval_history and again.resumed_from_step == 6
    assert head_model(cfg.model).startswith("flame (model ")
    rigid = load_train_config("quick", tiny_overrides)
    elsewhere = tmp_path / "elsewhere" / "flame.pkl"
    elsewhere.parent.mkdir()
    shutil.copy(tiny_flame, elsewhere)
    moved = load_train_config("quick", tiny_overrides + [f"model.flame.model_path={elsewhere}"])
    other = load_train_config("quick", tiny_overrides + [
        f"model.flame.model_path={write_tiny_flame(tmp_path / 'other.pkl', seed=5)}"])
    assert config_hash(cfg) == config_hash(moved) != config_hash(rigid)
    assert config_hash(other) != config_hash(cfg)


def test_a_dry_run_names_a_flame_file_it_cannot_read(tmp_path):
    import subprocess
    import sys

    ablation = tmp_path / "flame_abl.yaml"
    ablation.write_text(f"""
name: flame_abl
phase: 2
question: Does a FLAME-driven head beat the rigid one?
citations: ["GaussianAvatars (Qian et al., CVPR 2024)", "FLAME (Li et al., SIGGRAPH Asia 2017)"]
base: quick
arms:
  rigid: {{}}
  flame: {{model.flame.model_path: {tmp_path / 'flame2023.pkl'}}}
baseline: rigid
seeds: 2
metric: {{name: val/psnr, mode: max, window: 2}}
""")
    proc = subprocess.run([sys.executable, "-m", "reflect.ablate", str(ablation), "--dry-run",
                           "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    said = " ".join((proc.stdout + proc.stderr).split())  # the console wraps long lines
    assert "arm 'flame'" in said and "FLAME model file not found" in said and "arm 'rigid'" not in said


def test_offsets_from_an_export_with_teeth_vertices_and_dynamic_offsets(tiny_flame):
    """VHAP/GaussianAvatars append 120 teeth vertices after FLAME's: their offsets' first rows are FLAME's."""
    arrays = read_flame_model(tiny_flame)
    n = len(arrays["v_template"])
    offsets = np.random.default_rng(3).normal(0, 1e-3, size=(n + 120, 3)).astype(np.float32)
    with_teeth = FlameSkeleton(arrays, np.zeros(300, np.float32), 100, static_offset=offsets[None])
    plain = FlameSkeleton(arrays, np.zeros(300, np.float32), 100, static_offset=offsets[:n])
    assert torch.equal(with_teeth.v_shaped, plain.v_shaped)
    with pytest.raises(ValueError, match="static_offset has 10 vertices"):
        FlameSkeleton(arrays, np.zeros(300, np.float32), 100, static_offset=offsets[:10])
    zero3, zero6 = torch.zeros(1, 3), torch.zeros(1, 6)
    dynamic = torch.as_tensor(offsets)[None]  # [1, V+120, 3]
    rest = plain.vertices(torch.zeros(1, 100), zero3, zero3, zero3, zero6, zero3)
    moved = plain.vertices(torch.zeros(1, 100), zero3, zero3, zero3, zero6, zero3, dynamic_offset=dynamic)
    assert torch.allclose(moved - rest, dynamic[:, :n], atol=1e-7)  # at rest the offsets are added as they are


def test_reflect_train_names_a_missing_flame_file_without_a_traceback(tmp_path, tiny_overrides):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "reflect.train", *tiny_overrides,
                           f"model.flame.model_path={tmp_path / 'flame2023.pkl'}", f"output_dir={tmp_path / 'out'}"],
                          capture_output=True, text=True, timeout=300)
    said = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2 and "FLAME model file not found" in said and "Traceback" not in said  # a user error
