"""Forward+backward timing of the render backends on a head-like scene.

Run: ``python benches/bench_render.py``. Prints, per (resolution, #Gaussians, channels), the torch
backend vs the dense reference (ms each, ratio, image MAE between them), plus gsplat on CUDA.
Goal: at 64², 2k Gaussians, 16 channels the torch backend is >= 20x faster than the reference.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reflect.render import rasterization  # noqa: E402
from reflect.render.reference import rasterization_reference  # noqa: E402

DENSE_LIMIT = 200_000_000  # pixel×Gaussian pairs above which the dense reference is skipped
GRAD_KEYS = ("means", "quats", "scales", "opacities", "colors")


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


def fwd_bwd(fn: Callable, scene: Dict[str, object]) -> Tuple[float, Tensor]:
    """Wall time (s) of one forward+backward, and the rendered image (on CPU)."""
    inputs = {k: (v.clone().requires_grad_(True) if k in GRAD_KEYS else v) for k, v in scene.items()}
    cuda = scene["means"].device.type == "cuda"  # type: ignore[union-attr]
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    img, alpha, _ = fn(**inputs)
    (img.sum() + alpha.sum()).backward()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, img.detach().cpu()


def best_of(fn: Callable, scene: Dict[str, object], reps: int) -> Tuple[float, Tensor]:
    """Minimum time over ``reps`` runs after one warm-up (the minimum is the least noisy on shared CPUs)."""
    _, img = fwd_bwd(fn, scene)
    return min(fwd_bwd(fn, scene)[0] for _ in range(reps)), img


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--counts", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--channels", type=int, nargs="+", default=[3, 16])
    parser.add_argument("--reps", type=int, default=10, help="timed runs of the torch backend (and gsplat)")
    parser.add_argument("--dense-reps", type=int, default=3,
                        help="timed runs of the dense reference (slow; one run alone is too noisy)")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense reference")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    def torch_fn(**kw: object) -> Tuple[Tensor, Tensor, Dict]:
        return rasterization(**kw, backend="torch")  # type: ignore[arg-type]

    def gsplat_fn(**kw: object) -> Tuple[Tensor, Tensor, Dict]:
        return rasterization(**kw, backend="gsplat")  # type: ignore[arg-type]

    with_gsplat = torch.cuda.is_available()
    header = f"{'res':>5} {'N':>6} {'D':>3} | {'torch ms':>9} {'dense ms':>9} {'ratio':>7} {'MAE':>9}"
    if with_gsplat:
        header += f" | {'gsplat ms':>9} {'MAE(gs)':>9}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for n in args.counts:
            for ch in args.channels:
                scene = head_scene(n, size, ch)
                t_torch, img_t = best_of(torch_fn, scene, reps=args.reps)
                row = f"{size:>4}² {n:>6} {ch:>3} | {t_torch * 1e3:>9.1f} "
                if args.no_dense:
                    row += f"{'-':>9} {'-':>7} {'-':>9}"
                elif size * size * n <= DENSE_LIMIT:
                    t_ref, img_r = best_of(rasterization_reference, scene, reps=args.dense_reps)
                    mae = (img_t - img_r).abs().mean().item()
                    row += f"{t_ref * 1e3:>9.1f} {t_ref / t_torch:>6.1f}x {mae:>9.2e}"
                else:
                    row += f"{'skipped (memory)':>27}"
                if with_gsplat:
                    t_gs, img_g = best_of(gsplat_fn, head_scene(n, size, ch, device="cuda"), reps=args.reps)
                    row += f" | {t_gs * 1e3:>9.2f} {(img_g - img_t).abs().mean().item():>9.2e}"
                print(row, flush=True)


if __name__ == "__main__":
    main()
