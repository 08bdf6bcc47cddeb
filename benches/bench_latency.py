"""Inference latency of the roadmap's render + super-resolution configurations, recorded for the gates.

    python benches/bench_latency.py [--runs-dir runs] [--gaussians 100000] [--reps 20] [--no-record]

Configurations (ROADMAP_V3, Phase 3), each ending at a 4K (3840×2160) output:
  960×540 + 4× SR · 1440×810 + ~2.7× SR (8/3: bilinear ×8/3 then a 3×3 refinement conv) · 1920×1080 + 2× SR
Per configuration it times, as median ms over ``--reps`` runs after warm-up: rasterizing the Gaussians'
latent features at the render resolution (gsplat on CUDA; skipped on a CPU, where the torch backend at these
sizes measures nothing the roadmap targets), the screen-space decoder, and the SR head. Rows are appended
to ``<runs>/benchmarks/latency.jsonl`` (device, what ran, each part and the total), where the Phase 3 latency
gate reads them; on a CPU-only machine the rows are recorded with ``total_ms: null`` and the gate stays
incomplete ("no latency recorded on a GPU").
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reflect.ablation.execute import device_kind, provenance  # noqa: E402
from reflect.model.config import DecoderConfig  # noqa: E402
from reflect.model.decoder import ScreenSpaceDecoder, conditioning_dims  # noqa: E402
from reflect.roadmap.fleet import BENCHMARKS_DIR, LATENCY_FILE  # noqa: E402
from reflect.roadmap.signoffs import now_iso  # noqa: E402

OUTPUT = (3840, 2160)
CONFIGS = [("960x540+4x", (960, 540), 4), ("1440x810+2.67x", (1440, 810), 8 / 3), ("1920x1080+2x", (1920, 1080), 2)]


class FractionalSR(nn.Module):
    """Bilinear ×s to the output size, then a 3×3 refinement conv (a non-integer SR factor)."""

    def __init__(self, channels: int, size: tuple[int, int]):
        super().__init__()
        self.size = size
        self.refine = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.refine(nn.functional.interpolate(x, size=(self.size[1], self.size[0]), mode="bilinear",
                                                     align_corners=False))


def timed(fn, reps: int, device: torch.device) -> float:
    """Median wall ms of ``fn()`` over ``reps`` runs after two warm-ups (CUDA events on a GPU)."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--gaussians", type=int, default=100_000)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--no-record", action="store_true", help="print only; do not append to the benchmark record")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reps = args.reps if device.type == "cuda" else max(1, min(args.reps, 3))
    prov = provenance()
    rows = []
    print(f"device: {device_kind()} ({device.type}); decoder channels {args.channels}, latent {args.latent_dim}; "
          f"median of {reps} runs")
    print(f"{'config':<18}{'rasterize ms':>14}{'decoder ms':>12}{'SR ms':>9}{'total ms':>10}{'SR params':>11}")
    for label, (w, h), scale in CONFIGS:
        integer = float(scale).is_integer()
        cfg = DecoderConfig(channels=args.channels, expr_conditioning="film", sr_scale=int(scale) if integer else 1)
        decoder = ScreenSpaceDecoder(cfg, args.latent_dim).to(device).eval()
        sr_head = decoder.sr_head if integer else FractionalSR(3, OUTPUT).to(device).eval()
        body = nn.ModuleList(decoder.blocks)
        feats = torch.randn(1, args.latent_dim, h, w, device=device)
        code = torch.randn(1, conditioning_dims(cfg), device=device)
        view = torch.nn.functional.normalize(torch.randn(1, 3, device=device), dim=-1)
        with torch.no_grad():
            def run_body():
                x = feats
                for i, block in enumerate(body):
                    x = block(x)
                    if i < len(decoder.films):
                        x = decoder.films[i](x, code)
                return x
            hidden = run_body()
            decoder_ms = timed(run_body, reps, device)
            sr_ms = timed(lambda: sr_head(hidden), reps, device)
            raster_ms = None
            if device.type == "cuda":
                from bench_render import head_scene  # noqa: E402 - same scene as the render bench

                from reflect.render import rasterization

                scene = head_scene(args.gaussians, max(w, h), args.latent_dim, device="cuda")
                scene["width"], scene["height"] = w, h
                raster_ms = timed(lambda: rasterization(**scene, backend="gsplat"), reps, device)
        total = None if raster_ms is None else raster_ms + decoder_ms + sr_ms
        params = sum(p.numel() for p in sr_head.parameters())
        print(f"{label:<18}{'—' if raster_ms is None else f'{raster_ms:.2f}':>14}{decoder_ms:>12.2f}{sr_ms:>9.2f}"
              f"{'—' if total is None else f'{total:.2f}':>10}{params:>11d}")
        rows.append({"config": label, "render": f"{w}x{h}", "sr": round(scale, 3), "output": f"{OUTPUT[0]}x{OUTPUT[1]}",
                     "device": device_kind(), "device_type": device.type, "gaussians": args.gaussians,
                     "rasterize_ms": raster_ms, "decoder_ms": decoder_ms, "sr_ms": sr_ms, "total_ms": total,
                     "reps": reps, "at": now_iso(), "code_version": prov.get("git_commit")})
    if device.type != "cuda":
        print("no GPU: rasterization not timed and no total recorded; the latency gate needs a GPU record")
    if not args.no_record:
        out = Path(args.runs_dir) / BENCHMARKS_DIR / LATENCY_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        print(f"recorded {len(rows)} rows → {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
