"""FLAME as the head's skeleton: the user's own FLAME model file, skinned with smplx's linear blend skinning.

The FLAME model is licensed (flame.is.tue.mpg.de): Reflect never ships or downloads it; users point
``model.flame.model_path`` at their file (GaussianAvatars' and VHAP's ``flame2023.pkl`` / ``generic_model.pkl``).
The parameters follow GaussianAvatars' / VHAP's ``FlameHead``: ``betas = [shape | expr]`` over the shape
directions ``[:300]`` and expression directions ``[300:]``, pose ``[rotation | neck | jaw | eyes]`` over the
five joints (global, neck, jaw, left eye, right eye), ``static_offset`` added to the shaped template before the
joints are regressed, then ``translation``.

Why smplx: its ``lbs`` building blocks (``blend_shapes``, ``vertices2joints``, ``batch_rodrigues``,
``batch_rigid_transform``) are the maintained reference implementation of FLAME's skinning. Reflect skins
*Gaussians*, not only vertices: each Gaussian is bound to a triangle of the canonical mesh (barycentric
weights), and takes that triangle's blended skinning transform and blend-shape displacement, so its position
and orientation follow the head, neck, jaw and eyes while the DeformMLP adds residual offsets in canonical space.
"""
from __future__ import annotations

import hashlib
import pickle
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

N_SHAPE_DIRS = 300  # FLAME's shape directions come first in shapedirs, the expression directions after them
N_JOINTS = 5  # global, neck, jaw, left eye, right eye
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")


class FlameModelError(ValueError):
    """The FLAME model file cannot be used; the message names the file and what is wrong."""


def _dense(value, name: str, path: Path) -> np.ndarray:
    if hasattr(value, "toarray"):  # J_regressor is a scipy sparse matrix in FLAME's files
        value = value.toarray()
    if hasattr(value, "r") and not isinstance(value, np.ndarray):  # a chumpy array (FLAME 2020's generic_model)
        value = value.r
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise FlameModelError(f"{path}: '{name}' is not a numeric array ({type(value).__name__})") from None


def read_flame_model(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a FLAME model pickle, checked for FLAME's keys and shapes.

    Args:
        path: the ``.pkl`` file (FLAME 2020 ``generic_model.pkl`` or FLAME 2023 ``flame2023.pkl``).
    Returns:
        ``v_template [V,3]``, ``shapedirs [V,3,300+E]``, ``posedirs [V,3,(J-1)*9]``, ``J_regressor [J,V]``,
        ``parents [J]`` (int), ``weights [V,J]``, ``faces [F,3]`` (int).
    Raises:
        FlameModelError naming the file: missing, not a pickle, chumpy needed, a key missing or misshapen.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FlameModelError(f"{path}: FLAME model file not found (model.flame.model_path; FLAME is licensed, "
                              "download it from https://flame.is.tue.mpg.de and point the setting at it)")
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="latin1")
    except ModuleNotFoundError as exc:
        raise FlameModelError(f"{path}: unpickling needs the module '{exc.name}' (FLAME 2020 files store chumpy "
                              "arrays: pip install chumpy, or use FLAME 2023's flame2023.pkl)") from None
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        raise FlameModelError(f"{path}: not a readable FLAME model pickle ({exc})") from None
    if not isinstance(raw, dict):
        raise FlameModelError(f"{path}: expected a dict of FLAME arrays, got {type(raw).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise FlameModelError(f"{path}: missing {', '.join(missing)} (a FLAME model has {', '.join(REQUIRED_KEYS)})")
    arrays = {k: _dense(raw[k], k, path) for k in REQUIRED_KEYS}
    v = arrays["v_template"]
    n = v.shape[0] if v.ndim == 2 and v.shape[1] == 3 else None
    checks = [
        ("v_template", n is not None, "[V, 3]"),
        ("shapedirs", arrays["shapedirs"].ndim == 3 and arrays["shapedirs"].shape[:2] == (n, 3)
         and arrays["shapedirs"].shape[2] > N_SHAPE_DIRS, f"[V, 3, >{N_SHAPE_DIRS}] (shape then expression)"),
        ("J_regressor", arrays["J_regressor"].shape == (N_JOINTS, n), f"[{N_JOINTS}, V]"),
        ("weights", arrays["weights"].shape == (n, N_JOINTS), f"[V, {N_JOINTS}]"),
        ("posedirs", arrays["posedirs"].shape == (n, 3, (N_JOINTS - 1) * 9), f"[V, 3, {(N_JOINTS - 1) * 9}]"),
        ("kintree_table", arrays["kintree_table"].shape == (2, N_JOINTS), f"[2, {N_JOINTS}]"),
        ("f", arrays["f"].ndim == 2 and arrays["f"].shape[1] == 3, "[F, 3]"),
    ]
    for name, ok, expected in checks:
        if not ok:
            raise FlameModelError(f"{path}: '{name}' has shape {list(arrays[name].shape)}, expected {expected}")
    parents = arrays["kintree_table"][0].astype(np.int64)
    parents[0] = -1
    return {"v_template": v, "shapedirs": arrays["shapedirs"], "posedirs": arrays["posedirs"],
            "J_regressor": arrays["J_regressor"], "parents": parents, "weights": arrays["weights"],
            "faces": arrays["f"].astype(np.int64)}


def flame_model_fingerprint(path: str) -> str:
    """Short content hash of a FLAME model file: it shapes every result, so it enters a trial's identity.

    A file that is not there hashes as "missing" (planning still works; the dry run and the run say why it
    cannot train, as ``reflect.ablation.machine`` checks the file before anything trains).
    """
    resolved = Path(path).expanduser()
    try:
        stat = resolved.stat()
    except OSError:
        return "missing"
    return _content_hash(str(resolved), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _content_hash(path: str, size: int, mtime_ns: int) -> str:  # size and mtime key the cache: a changed file
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


class FlameSkeleton(nn.Module):
    """FLAME's template, blend shapes and skinning, with Gaussians bound to its canonical triangles.

    Args:
        arrays: ``read_flame_model``'s output.
        shape: the subject's shape parameters [S] (``canonical_flame_param.npz``), S <= 300.
        expr_dims: expression components the data has (FLAME's expression directions are cut to these).
        static_offset: per-vertex offsets [V,3] of the tracked subject, or None.
    """

    def __init__(self, arrays: dict[str, np.ndarray], shape: np.ndarray, expr_dims: int,
                 static_offset: Optional[np.ndarray] = None):
        super().__init__()
        from smplx.lbs import blend_shapes

        f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731

        def buffer(name: str, value: torch.Tensor) -> None:
            # rebuilt from the model file whenever a run starts (its content is in the trial's identity), so
            # checkpoints need not carry ~8 MB of FLAME per trial
            self.register_buffer(name, value, persistent=False)
        shapedirs = f32(arrays["shapedirs"])
        n_expr = min(expr_dims, shapedirs.shape[2] - N_SHAPE_DIRS)
        shape = f32(shape).reshape(-1)[:N_SHAPE_DIRS]
        buffer("expr_dirs", shapedirs[:, :, N_SHAPE_DIRS:N_SHAPE_DIRS + n_expr].contiguous())
        shaped = f32(arrays["v_template"]) + blend_shapes(shape[None], shapedirs[:, :, :shape.numel()])[0]
        if static_offset is not None:
            shaped = shaped + self._model_vertices(f32(static_offset).reshape(-1, 3), shaped.shape[0], "static_offset")
        buffer("v_shaped", shaped)  # [V,3] the subject's canonical (neutral) mesh
        buffer("posedirs", f32(arrays["posedirs"]).reshape(-1, arrays["posedirs"].shape[-1]).T
                             .contiguous())  # [(J-1)*9, V*3], smplx's layout
        buffer("J_regressor", f32(arrays["J_regressor"]))
        buffer("parents", torch.as_tensor(arrays["parents"], dtype=torch.long))
        buffer("weights", f32(arrays["weights"]))
        buffer("faces", torch.as_tensor(arrays["faces"], dtype=torch.long))
        self.n_expr = n_expr

    @staticmethod
    def _model_vertices(offsets: torch.Tensor, n: int, name: str) -> torch.Tensor:
        """The model's n vertices of per-vertex ``offsets`` [V',...]: VHAP and GaussianAvatars append 120 teeth
        vertices after FLAME's 5023 (``FlameHead.add_teeth``), so their offsets have more rows; FLAME's come first."""
        if offsets.shape[0] < n:
            raise ValueError(f"{name} has {offsets.shape[0]} vertices, the FLAME model {n}: not this model's offsets")
        return offsets[:n]

    def sample_surface(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n points on the canonical mesh, area-weighted: (points [n,3], face index [n], barycentric [n,3])."""
        tri = self.v_shaped[self.faces]  # [F,3,3]
        area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)
        face = torch.multinomial(area / area.sum(), n, replacement=True, generator=generator)
        u, v = torch.rand(n, generator=generator), torch.rand(n, generator=generator)
        flip = u + v > 1
        u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
        bary = torch.stack([1 - u - v, u, v], dim=-1)
        return (bary[:, :, None] * tri[face]).sum(1), face, bary

    def pose(self, expr: torch.Tensor, rotation: torch.Tensor, neck: torch.Tensor, jaw: torch.Tensor,
             eyes: torch.Tensor, dynamic_offset: Optional[torch.Tensor] = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-vertex skinning transforms and canonical displacements for a batch of frames.

        Args:
            expr [B,E'] (the first ``n_expr`` are used), rotation/neck/jaw [B,3], eyes [B,6] (axis-angle),
            dynamic_offset [B,V,3] or None.
        Returns:
            (transforms [B,V,4,4] — FLAME's LBS transform of each vertex, before translation —,
             displacement [B,V,3] — expression and pose-corrective blend shapes plus dynamic offsets, in the
             canonical frame, applied before the transform).
        """
        from smplx.lbs import batch_rigid_transform, batch_rodrigues, blend_shapes, vertices2joints

        b = expr.shape[0]
        displacement = blend_shapes(expr[:, :self.n_expr], self.expr_dirs)
        if dynamic_offset is not None:
            offsets = dynamic_offset.reshape(b, -1, 3)
            displacement = displacement + self._model_vertices(offsets.transpose(0, 1), self.v_shaped.shape[0],
                                                               "dynamic_offset").transpose(0, 1)
        joints = vertices2joints(self.J_regressor, self.v_shaped[None] + displacement)
        full_pose = torch.cat([rotation, neck, jaw, eyes], dim=1)  # [B, 15]
        rot_mats = batch_rodrigues(full_pose.reshape(-1, 3)).reshape(b, -1, 3, 3)
        pose_feature = (rot_mats[:, 1:] - torch.eye(3, dtype=rot_mats.dtype, device=rot_mats.device)).reshape(b, -1)
        displacement = displacement + (pose_feature @ self.posedirs).reshape(b, -1, 3)
        _, rel = batch_rigid_transform(rot_mats, joints, self.parents)  # [B,J,4,4]
        transforms = torch.einsum("vj,bjxy->bvxy", self.weights, rel)
        return transforms, displacement

    def vertices(self, expr, rotation, neck, jaw, eyes, translation, dynamic_offset=None) -> torch.Tensor:
        """The posed mesh [B,V,3] (what smplx's ``lbs`` gives for the same inputs), for checks and init."""
        transforms, displacement = self.pose(expr, rotation, neck, jaw, eyes, dynamic_offset)
        points = self.v_shaped[None] + displacement
        moved = (transforms[..., :3, :3] @ points[..., None])[..., 0] + transforms[..., :3, 3]
        return moved + translation[:, None, :]


def bound_transforms(transforms: torch.Tensor, displacement: torch.Tensor, faces: torch.Tensor,
                     face_index: torch.Tensor, bary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each Gaussian's blended transform [B,N,4,4] and displacement [B,N,3] from its triangle's vertices."""
    corners = faces[face_index]  # [N,3]
    weights = bary[None, :, :, None]
    disp = (displacement[:, corners] * weights).sum(2)
    trans = (transforms[:, corners] * weights[..., None]).sum(2)
    return trans, disp


def orthonormal(matrices: torch.Tensor) -> torch.Tensor:
    """The nearest rotation to each 3x3 matrix [...,3,3] (polar decomposition by SVD): blended skinning
    transforms are not exactly rotations where a triangle straddles two joints."""
    u, _, vh = torch.linalg.svd(matrices)
    det = torch.det(u @ vh)
    fix = torch.ones_like(matrices[..., 0])
    fix[..., 2] = det.sign()
    return u @ torch.diag_embed(fix) @ vh
