"""Forward+backward timing of the render backends on a head-like scene.

Run: ``python benches/bench_render.py``. Prints, per (resolution, #Gaussians, channels), the torch
backend vs the dense reference (ms each, ratio, image MAE between them), plus gsplat on CUDA.
Goal: at 64², 2k Gaussians, 16 channels the torch backend is >= 20x faster than the reference.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reflect.render import rasterization  # noqa: E402
from reflect.render.reference import rasterization_reference  # noqa: E402

DENSE_LIMIT = 200_000_000  # pixel×Gaussian pairs above which the dense reference is skipped


def head_scene(n: int, size: int, channels: int, device: str = "cpu", seed: int = 0) -> Dict[str, object]:
    """Gaussians of a few mm on a ~0.1 m ellipsoid, one camera 0.8 m away framing the head."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    d = d / d.norm(dim=-1, keepdim=True)
    means = d * torch.tensor([0.08, 0.11, 0.09]) * (1 + 0.05 * torch.randn(n, 1, generator=g))
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.4) * 0.004
    opacities = torch.sigmoid(torch.randn(n, generator=g) * 1.5 + 1.0)
    colors = torch.rand(n, channels, generator=g)
    viewmats = torch.eye(4)[None].clone()
    viewmats[0, 2, 3] = 0.8
    f = size * 0.8 / 0.26  # head (~0.22 m tall) fills the image
    Ks = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]])[None]
    tensors = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                   viewmats=viewmats, Ks=Ks)
    out: Dict[str, object] = {k: v.to(device) for k, v in tensors.items()}
    out.update(width=size, height=size)
    return out


GRAD_KEYS = ("means", "quats", "scales", "opacities", "colors")


def fwd_bwd(fn: Callable, scene: Dict[str, object]) -> Tuple[float, Tensor]:
    """Wall time (s) of one forward+backward, and the rendered image."""
    inputs = {k: (v.clone().requires_grad_(True) if k in GRAD_KEYS else v) for k, v in scene.items()}
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    img, alpha, _ = fn(**inputs)
    (img.sum() + alpha.sum()).backward()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, img.detach()


def best_of(fn: Callable, scene: Dict[str, object], reps: int) -> Tuple[float, Tensor]:
    """Minimum time over ``reps`` runs after one warm-up."""
    _, img = fwd_bwd(fn, scene)
    return min(fwd_bwd(fn, scene)[0] for _ in range(reps)), img


def main() -> None:
    torch.set_num_threads(2)
    torch_fn = lambda **kw: rasterization(**kw, backend="torch")  # noqa: E731
    gsplat_fn: Optional[Callable] = None
    if torch.cuda.is_available():
        gsplat_fn = lambda **kw: rasterization(**kw, backend="gsplat")  # noqa: E731
    header = f"{'res':>5} {'N':>6} {'D':>3} | {'torch ms':>9} {'dense ms':>9} {'ratio':>7} {'MAE':>9}"
    if gsplat_fn:
        header += f" | {'gsplat ms':>9} {'MAE(gs)':>9}"
    print(header)
    print("-" * len(header))
    for size in (64, 128):
        for n in (2000, 10000):
            for ch in (3, 16):
                scene = head_scene(n, size, ch)
                t_torch, img_t = best_of(torch_fn, scene, reps=5)
                row = f"{size:>4}² {n:>6} {ch:>3} | {t_torch * 1e3:>9.1f} "
                if size * size * n <= DENSE_LIMIT:
                    t_ref, img_r = best_of(rasterization_reference, scene, reps=1)
                    mae = (img_t - img_r).abs().mean().item()
                    row += f"{t_ref * 1e3:>9.1f} {t_ref / t_torch:>6.1f}x {mae:>9.2e}"
                else:
                    row += f"{'skipped (memory)':>27}"
                if gsplat_fn:
                    cuda_scene = head_scene(n, size, ch, device="cuda")
                    t_gs, img_g = best_of(gsplat_fn, cuda_scene, reps=5)
                    mae_g = (img_g.cpu() - img_t).abs().mean().item()
                    row += f" | {t_gs * 1e3:>9.2f} {mae_g:>9.2e}"
                print(row, flush=True)


if __name__ == "__main__":
    main()
