"""Where a quick-profile training step goes: stage by stage, for each CPU render backend side by side.

Run: ``python benches/bench_trial.py [key=value ...]`` (overrides as for ``reflect.train``, e.g.
``model.gaussians.num_gaussians=10000``). For each backend it builds the real AvatarModule and
batches of the quick profile and prints, per stage, the median ms over ``--steps`` steps and its
share of the bare step:

- the bare step (forward, loss, backward, Adam; what Lightning's training_step does, without
  Lightning), then each stage timed alone on the same batch, forward and backward: DeformMLP and
  pose, projection, compositing, decoder, each enabled loss term, Adam;
- per occurrence: one evaluation (the val and test frames) and one checkpoint write, and their
  cost per step at the profile's eval_every / checkpoint_every;
- the harness: a short Lightning run (no evaluation or checkpoint inside it) per step, minus the
  bare step: Lightning's loop, logging and the data loader.

- per process (skip with ``--no-startup``): what every ``python -m reflect.train`` and every worker pays
  once, each in a fresh interpreter: importing the training stack with the collector paused as the CLIs
  do (``reflect.startup``) and as a plain import, the interpreter's start and exit around a plain import,
  W&B's offline ``init`` + ``finish``, and the render kernels' first call (numba loads its cached machine
  code) against their second.

Stages alone do not add up to the bare step exactly (caches, allocator, autograd bookkeeping);
the row "rest of the step" is the difference. The last column is the ratio torch / first backend.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reflect.config import load_train_config  # noqa: E402
from reflect.data import load_splits  # noqa: E402
from reflect.lightning.datamodule import AvatarDataModule  # noqa: E402
from reflect.lightning.module import AvatarModule  # noqa: E402
from reflect.model.avatar import render_viewmats  # noqa: E402
from reflect.model.decoder import conditioning_dims  # noqa: E402
from reflect.render import BACKENDS, backend_stages, numba_available  # noqa: E402


def timed(fn: Callable[[], object]) -> float:
    """Wall ms of one call."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def fwd_bwd(forward: Callable[[], object]) -> Callable[[], None]:
    """A call that runs ``forward`` and backpropagates ones into each of its differentiable tensor outputs."""
    def run() -> None:
        out = forward()
        tensors = [t for t in (out if isinstance(out, (tuple, list)) else [out])
                   if isinstance(t, torch.Tensor) and t.requires_grad]
        torch.autograd.backward(tensors, [torch.ones_like(t) for t in tensors])
    return run


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(t.is_floating_point())


class Profile:
    """One backend's AvatarModule, optimiser and batches, and the stage timings taken on them."""

    def __init__(self, backend: str, overrides: List[str], steps: int):
        self.cfg = load_train_config("quick", [*overrides, f"render.backend={backend}"])
        self.splits = load_splits(self.cfg.data, ["train", *self.cfg.eval.splits])
        train = self.splits["train"]
        self.width, self.height = train.width, train.height
        self.module = AvatarModule(self.cfg, train.init_points(), self.width, self.height)
        self.opt = self.module.configure_optimizers()[0][0]
        dm = AvatarDataModule(self.cfg, self.splits, start_step=lambda: 0)
        loader = iter(dm.train_dataloader())
        self.batches = [next(loader) for _ in range(steps)]
        self.backend = backend
        self.times: Dict[str, List[float]] = {}

    def record(self, name: str, ms: float) -> None:
        self.times.setdefault(name, []).append(ms)

    def step(self, batch: dict, step: int) -> None:
        """One bare training step, then each stage alone on the same batch."""
        m, loss_stack = self.module.model, self.module.loss_stack

        def bare() -> None:
            out = m(batch, self.width, self.height)
            total, _ = loss_stack(out["rgb"], batch["image"], step=step, mask=batch["alpha"], aux=self.module._aux(out))
            self.opt.zero_grad(set_to_none=True)
            total.backward()
            self.opt.step()
        self.record("bare step", timed(bare))
        self.record("  Adam", timed(self.opt.step))  # grads from the bare step are still there

        gs = m.posed_gaussians(batch)  # what forward renders: head-space Gaussians, the head pose in the camera
        self.record("  deform + pose (fwd+bwd)", timed(fwd_bwd(
            lambda: [v for k, v in m.posed_gaussians(batch).items() if k not in ("rot", "pose")])))
        viewmats = render_viewmats(batch, gs)
        projector, compositor = backend_stages(self.backend)
        s = self.cfg.model.decoder.sr_scale
        w, h = self.width // s, self.height // s
        ks = batch["K"].clone()
        ks[:, :2, :] /= s
        frames = range(batch["expr"].shape[0])
        inputs = [(leaf(gs["means"][i]), leaf(gs["quats"][i]), leaf(gs["scales"][i]), leaf(gs["opacities"]),
                   viewmats[i: i + 1], ks[i: i + 1]) for i in frames]

        def project(i: int):  # noqa: ANN202
            mean, quat, scale, opac, view, K = inputs[i]
            return projector(mean, quat, scale, view, K, w, h, opacities=opac, eps2d=self.module.model.eps2d)
        self.record("  projection (fwd+bwd)", timed(fwd_bwd(
            lambda: [t for i in frames for t in (lambda p: (p.means2d, p.conics, p.opacities))(project(i))])))
        projected = [project(i) for i in frames]
        comp_inputs = [(leaf(p.means2d), leaf(p.conics), leaf(p.opacities), p.valid, p.depths.detach())
                       for p in projected]
        latents = leaf(m.latents)
        self.record("  compositing (fwd+bwd)", timed(fwd_bwd(
            lambda: [t for c in comp_inputs for t in compositor(c[0], c[1], c[2], latents, c[3], c[4], w, h)])))
        # [B, H, W, C] permuted, as the avatar hands the rasterizer's output to the decoder: channels-last,
        # the layout oneDNN's convs are fastest in (a contiguous input would time a slower decoder)
        feats = leaf(torch.rand(batch["expr"].shape[0], h, w, m.latents.shape[1] + 1).permute(0, 3, 1, 2))
        e = self.cfg.model.decoder.expr_dims
        code = torch.cat([batch["expr"][:, :e], batch["jaw_pose"]], dim=-1)
        assert code.shape[-1] == conditioning_dims(self.cfg.model.decoder)
        views = m.view_directions(batch, gs["rot"]).detach()
        self.record("  decoder (fwd+bwd)", timed(fwd_bwd(lambda: m.decoder(feats, code, views))))
        pred = leaf(torch.rand_like(batch["image"]))
        out = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in m(batch, self.width, self.height).items()}
        aux = self.module._aux(out)
        for name, weight in loss_stack.weights(step).items():
            if weight:
                term = getattr(loss_stack, f"_{name}")
                self.record(f"  loss {name} (fwd+bwd)", timed(fwd_bwd(
                    lambda: term(pred, batch["image"], batch["alpha"] if loss_stack.cfg.masked else None, aux))))

    def occasional(self) -> None:
        """Evaluation and checkpoint cost per occurrence, and per step at the profile's intervals."""
        self.module.eval()
        dm = AvatarDataModule(self.cfg, self.splits, start_step=lambda: 0)
        self.module.on_validation_epoch_start()

        def evaluate() -> None:
            with torch.no_grad():
                for idx, loader in enumerate(dm.val_dataloader()):
                    for i, batch in enumerate(loader):
                        self.module.validation_step(batch, i, idx)
        ms = statistics.median(timed(evaluate) for _ in range(3))
        self.module.train()
        t = self.cfg.trainer
        self.times["evaluation (each)"] = [ms]
        self.times[f"  per step (every {t.eval_every})"] = [ms / t.eval_every]
        with tempfile.TemporaryDirectory() as tmp:
            state = {"state_dict": self.module.state_dict(), "optimizer": self.opt.state_dict()}
            ms = statistics.median(timed(lambda: torch.save(state, Path(tmp) / "last.ckpt")) for _ in range(3))
        self.times["checkpoint (each)"] = [ms]
        self.times[f"  per step (every {t.checkpoint_every}) "] = [ms / t.checkpoint_every]

    def harness(self, steps: int, overrides: List[str]) -> None:
        """Lightning's per-step cost beyond the bare step: a short real run with nothing else in it."""
        from reflect.training import train

        with tempfile.TemporaryDirectory() as tmp:
            extra = [f"trainer.max_steps={steps}", f"trainer.eval_every={10 * steps}",
                     f"trainer.checkpoint_every={10 * steps}", "data.max_eval_frames=1", "tracking.mode=disabled",
                     f"render.backend={self.backend}"]
            cfg = load_train_config("quick", [*overrides, *extra])
            result = train(cfg, tmp, resume=False, progress=False)
        self.times["Lightning run, per step"] = [result.wall_time_s * 1e3 / steps]


STARTUP_PROBE = r"""
import json, sys, tempfile, time
start = time.perf_counter()
if sys.argv[1] == "paused":
    from reflect.startup import freeze_imports, pause_gc
    pause_gc()
import reflect.training, reflect.tracking, wandb  # noqa: E401,F401 - what a CLI run or a worker imports
if sys.argv[1] == "paused":
    freeze_imports()
out = {"imports": time.perf_counter() - start}
if sys.argv[2] == "all":
    import torch
    from reflect.render import rasterization
    torch.set_num_threads(int(sys.argv[3]))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run = wandb.init(mode="offline", dir=tmp, project="bench", settings=wandb.Settings(silent=True))
        run.finish()
        out["wandb"] = time.perf_counter() - t
    gen = torch.Generator().manual_seed(0)
    n = 3000
    means = torch.randn(n, 3, generator=gen) * 0.05 + torch.tensor([0.0, 0.0, 1.0])
    args = (means, torch.randn(n, 4, generator=gen), torch.rand(n, 3, generator=gen) * 0.01,
            torch.rand(n, generator=gen), torch.rand(n, 16, generator=gen), torch.eye(4)[None],
            torch.tensor([[[60.0, 0, 32], [0, 60, 32], [0, 0, 1]]]), 64, 64)
    for key in ("first", "second"):
        t = time.perf_counter()
        rasterization(*args, backend=None)
        out[key] = time.perf_counter() - t
print(json.dumps(out), flush=True)
"""


def startup_costs(threads: int, rounds: int = 3) -> Dict[str, List[float]]:
    """Per-process fixed costs (ms), each in fresh interpreters, ``rounds`` times, the two import modes interleaved."""
    root = Path(__file__).resolve().parents[1]
    times: Dict[str, List[float]] = {}
    for _ in range(rounds):
        for mode, what in (("paused", "all"), ("plain", "imports")):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", STARTUP_PROBE, mode, what, str(threads)], cwd=root,
                                  capture_output=True, text=True, check=True)
            process = time.perf_counter() - start
            inside = json.loads(done.stdout.strip().splitlines()[-1])
            label = "collector paused (CLIs)" if mode == "paused" else "plain"
            times.setdefault(f"import the training stack, {label}", []).append(inside["imports"] * 1e3)
            if what == "imports":  # start-up and exit: the process's wall time beyond what it measured inside
                times.setdefault("  start + exit of that plain process", []).append((process - inside["imports"]) * 1e3)
            else:
                times.setdefault("  start + exit, collector paused", []).append(
                    (process - sum(inside.values())) * 1e3)
                times.setdefault("W&B offline init + finish", []).append(inside["wandb"] * 1e3)
                times.setdefault("render kernels, first call", []).append(inside["first"] * 1e3)
                times.setdefault("  their second call", []).append(inside["second"] * 1e3)
    return times


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per backend (after 5 warm-up steps)")
    parser.add_argument("--harness-steps", type=int, default=60, help="steps of the short Lightning run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-startup", action="store_true", help="skip the per-process fixed costs")
    parser.add_argument("--backends", nargs="+", choices=[b for b in BACKENDS if b != "gsplat"],
                        default=[b for b in ("numba", "torch") if b != "numba" or numba_available()])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warmup = 5
    profiles = [Profile(b, args.overrides, args.steps + warmup) for b in args.backends]
    for i in range(args.steps + warmup):  # interleaved: a slow spell of the machine hits every backend
        for p in profiles:
            p.step(p.batches[i], i)
    for p in profiles:
        p.times = {k: v[warmup:] for k, v in p.times.items()}
        p.occasional()
        p.harness(args.harness_steps, args.overrides)
    first = profiles[0]
    size = f"{first.width}x{first.height}"
    print(f"quick profile, {size}, batch {first.cfg.trainer.batch_size}, "
          f"{first.cfg.model.gaussians.num_gaussians} Gaussians, {torch.get_num_threads()} threads, "
          f"median of {args.steps} steps (ms; share of the bare step)")
    header = f"{'stage':<34}" + "".join(f" | {p.backend + ' ms':>10} {'share':>6}" for p in profiles)
    if len(profiles) > 1:
        header += f" | {profiles[-1].backend + '/' + first.backend:>12}"
    print(header)
    print("-" * len(header))
    medians = [{k: statistics.median(v) for k, v in p.times.items()} for p in profiles]
    stages = [k for k in medians[0] if k.startswith("  ") and "per step" not in k]
    for med in medians:
        med["  rest of the step"] = med["bare step"] - sum(med[k] for k in stages)
        med["  harness beyond the bare step"] = med["Lightning run, per step"] - med["bare step"]
    occasional = [k for k in medians[0] if k not in stages and k != "bare step" and "harness" not in k
                  and k != "  rest of the step" and k != "Lightning run, per step"]
    rows = ["bare step", *stages, "  rest of the step", *occasional,
            "Lightning run, per step", "  harness beyond the bare step"]
    for key in rows:
        line = f"{key:<34}"
        for med in medians:
            line += f" | {med[key]:>10.2f} {100 * med[key] / med['bare step']:>5.0f}%"
        if len(profiles) > 1:
            ratio = medians[-1][key] / medians[0][key] if medians[0][key] > 0 else float("nan")
            line += f" | {ratio:>11.2f}x"
        print(line)
    if not args.no_startup:
        print(f"\nper process, fresh interpreters, median of 3 (ms; {args.threads} threads)")
        costs = startup_costs(args.threads)
        order = ["import the training stack, collector paused (CLIs)", "  start + exit, collector paused",
                 "import the training stack, plain", "  start + exit of that plain process",
                 "W&B offline init + finish", "render kernels, first call", "  their second call"]
        for key in order:
            print(f"{key:<52} | {statistics.median(costs[key]):>8.1f}")


if __name__ == "__main__":
    main()
