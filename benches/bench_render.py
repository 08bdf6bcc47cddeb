"""Forward+backward timing of the render backends on a head-like scene.

Run: ``python benches/bench_render.py``. Prints, per (resolution, #Gaussians, channels), each
backend (numba, torch, and gsplat on CUDA) beside the dense reference, timed in the same rounds:
ms, the ratio to the reference (median and minimum over rounds), the image's mean absolute error
and the largest relative gradient error against the reference (float64, up to 128²·2k).
Goal (issue 10): at 64², 2k Gaussians, 16 channels the default CPU backend (numba) is >= 100x the
reference (median; no round below 60x).
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reflect.render import numba_available, rasterization  # noqa: E402
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


def grads_of(fn: Callable, scene: Dict[str, object]) -> Dict[str, Tensor]:
    """Gradients of a fixed random projection of the image and alpha (float64, for comparison)."""
    inputs = {k: (v.clone().double().requires_grad_(True) if k in GRAD_KEYS else
                  (v.double() if isinstance(v, Tensor) else v)) for k, v in scene.items()}
    img, alpha, _ = fn(**inputs)
    weights = torch.randn(img.shape, generator=torch.Generator().manual_seed(1), dtype=img.dtype)
    ((img * weights).sum() + alpha.sum()).backward()
    return {k: inputs[k].grad for k in GRAD_KEYS}  # type: ignore[union-attr]


def grad_error(grads: Dict[str, Tensor], reference: Dict[str, Tensor]) -> float:
    """Largest gradient difference over the inputs, relative to each input's largest reference gradient."""
    return max(((grads[k] - reference[k]).abs().max() / reference[k].abs().max().clamp(min=1e-30)).item()
               for k in GRAD_KEYS)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--counts", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--channels", type=int, nargs="+", default=[3, 16])
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds per scene; each times every backend once (best of --reps) and the reference")
    parser.add_argument("--reps", type=int, default=5, help="timed runs per backend and round (the minimum is kept)")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense reference")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    backends = [b for b in ("numba", "torch") if b != "numba" or numba_available()]
    if torch.cuda.is_available():
        backends.append("gsplat")
    fns = {b: functools.partial(rasterization, backend=b) for b in backends}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; backends: {', '.join(backends)}; "
          f"{args.rounds} rounds; ratio = dense reference ms / backend ms, per round (median [min])")
    header = f"{'res':>5} {'N':>6} {'D':>3} | {'dense ms':>9}"
    for b in backends:
        header += f" | {b + ' ms':>9} {'ratio':>15} {'img MAE':>8} {'grad err':>8}"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for n in args.counts:
            for ch in args.channels:
                scene = head_scene(n, size, ch)
                dense = not args.no_dense and size * size * n <= DENSE_LIMIT
                times: Dict[str, List[float]] = {b: [] for b in backends + ["dense"]}
                images: Dict[str, Tensor] = {}
                for _ in range(args.rounds):  # interleaved, so a slow spell of the machine hits every column
                    for b in backends:
                        device_scene = head_scene(n, size, ch, device="cuda") if b == "gsplat" else scene
                        t, images[b] = best_of(fns[b], device_scene, reps=args.reps)
                        times[b].append(t)
                    if dense:
                        t, images["dense"] = best_of(rasterization_reference, scene, reps=1)
                        times["dense"].append(t)
                row = f"{size:>4}² {n:>6} {ch:>3} | "
                row += f"{statistics.median(times['dense']) * 1e3:>9.1f}" if dense else f"{'skipped':>9}"
                ref_grads = grads_of(rasterization_reference, scene) if dense and size * n <= 128 * 2000 else None
                for b in backends:
                    row += f" | {statistics.median(times[b]) * 1e3:>9.2f} "
                    if dense:
                        ratios = [d / t for d, t in zip(times["dense"], times[b])]
                        mae = (images[b].cpu() - images["dense"]).abs().mean().item()
                        row += f"{statistics.median(ratios):>7.1f}x [{min(ratios):>5.1f}] {mae:>8.1e}"
                    else:
                        row += f"{'-':>15} {'-':>8}"
                    if ref_grads is not None and b != "gsplat":
                        row += f" {grad_error(grads_of(fns[b], scene), ref_grads):>8.1e}"
                    else:
                        row += f" {'-':>8}"
                print(row, flush=True)


if __name__ == "__main__":
    main()
