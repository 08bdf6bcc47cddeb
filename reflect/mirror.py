"""``python -m reflect.mirror TRIAL.json [key=value ...] [--out DIR] [--frames N]``: a trained trial seen from the
virtual mirror viewpoint, as the display would show it.

On a capture no camera sits at the mirror viewpoint (``reflect.data.mirror``), so there is no ground truth and
no PSNR: this renders the held-out frames of the display's camera from the mirror camera, flipped left to right
as a mirror shows them, and writes them for the roadmap's "no visible artifacts" sign-off
(``python -m reflect.signoff 4 mirror_artifacts ...``). On the synthetic head the ``mirror`` evaluation split
scores the same view (``eval.splits: [val, test, mirror]``, as ``ablations/mirror_view.yaml`` does).

Overrides change the trial's recorded config, for a machine where the data lives elsewhere
(``data.root=/data/306``) or another eye point (``eval.mirror_eye_m=[0,0.03,0.08]``).
"""
from __future__ import annotations

if __name__ == "__main__":  # the CLI process: its heavy imports without the cyclic GC (reflect.startup)
    from reflect.startup import pause_gc

    pause_gc()

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from reflect.cli_errors import exit_on_user_error
from reflect.config_loading import ConfigError
from reflect.startup import freeze_imports


def render_mirror_views(record_path: str | Path, overrides: Sequence[str] = (), out: Optional[str | Path] = None,
                        frames: int = 8) -> list[Path]:
    """Render a finished trial's held-out display-camera frames from the mirror viewpoint.

    Args:
        record_path: the trial's record (``runs/<ablation>/trials/<key>.json``); its config and checkpoint are used.
        overrides: ``key=value`` changes to the recorded config (data location, mirror geometry).
        out: where the PNGs go (default: ``mirror/`` beside the checkpoint's work folder).
        frames: at most this many frames, evenly spaced over the val split's display-camera frames.
    Returns:
        The written PNG paths (``<frame>_mirror.png``, flipped left to right as the display shows them).
    Raises:
        ConfigError naming the record when it cannot be used (unreadable, no checkpoint, another model).
    """
    from reflect.config import load_train_config
    from reflect.data.mirror import head_point_world, mirror_camera
    from reflect.training import build_module, trial_splits

    record_path = Path(record_path)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(str(record_path), f"cannot read the trial record ({exc})") from None
    if not record.get("config") or not record.get("checkpoint"):
        raise ConfigError(str(record_path), "the record has no config or checkpoint (a trial that never finished "
                          "training: run it first)")
    checkpoint = Path(record["checkpoint"])
    if not checkpoint.is_file():
        raise ConfigError(str(record_path), f"its checkpoint {checkpoint} does not exist on this machine")
    cfg = load_train_config(record["config"], overrides)
    splits = trial_splits(cfg, ["train", "val"])
    val = splits["val"]
    module, _ = build_module(cfg, splits)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    missing, unexpected = module.load_state_dict(state, strict=False)
    if [k for k in missing if not k.startswith("lpips")] or unexpected:
        raise ConfigError(str(record_path), f"its checkpoint does not fit the recorded model (missing "
                          f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    module.eval()
    cameras = val.camera_indices()
    display = cfg.eval.mirror_display_camera
    if display is None:
        display = int(np.bincount(cameras).argmax())  # the held-out camera: the display's on the synthetic head
    chosen = np.flatnonzero(cameras == display)
    if len(chosen) == 0:
        raise ConfigError(str(record_path), f"the val split has no frame of camera {display} "
                          f"(it has cameras {sorted(set(cameras.tolist()))}): set eval.mirror_display_camera")
    chosen = chosen[np.unique(np.linspace(0, len(chosen) - 1, min(frames, len(chosen))).round().astype(int))]
    folder = Path(out) if out is not None else checkpoint.parent.parent / "mirror"
    folder.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    written = []
    with torch.no_grad():
        for index in chosen:
            item = val[int(index)]
            eye = head_point_world(cfg.eval.mirror_eye_m, item["rotation"].numpy(), item["neck_pose"].numpy(),
                                   item["translation"].numpy())
            viewmat, K = mirror_camera(item["viewmat"].numpy(), item["K"].numpy(), eye)
            batch = {k: v[None] for k, v in item.items() if isinstance(v, torch.Tensor)}
            batch["viewmat"] = torch.as_tensor(viewmat, dtype=torch.float32)[None]
            batch["K"] = torch.as_tensor(K, dtype=torch.float32)[None]
            batch["cam_center"] = -batch["viewmat"][:, :3, :3].transpose(1, 2) @ batch["viewmat"][:, :3, 3:]
            batch["cam_center"] = batch["cam_center"][..., 0]
            rgb = module.model(batch, val.width, val.height)["rgb"][0].clamp(0, 1)
            shown = torch.flip(rgb, dims=[2])  # a mirror shows the scene left to right reversed
            pixels = (shown.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            path = folder / f"{item['frame_id'].replace('/', '_')}_mirror.png"
            Image.fromarray(pixels, "RGB").save(path)
            written.append(path)
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m reflect.mirror RECORD [--frames N] [--out DIR]``: render a trained trial from the mirror
    viewpoint, flipped as the display shows it.

    Args:
        argv: the command line after the program name (None: ``sys.argv[1:]``); ``--help`` lists it.
    Returns:
        0 when the images were written; a user error (unreadable record, missing checkpoint or data) exits 2.
    """
    p = argparse.ArgumentParser(prog="python -m reflect.mirror", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("record", help="a trial record: runs/<ablation>/trials/<key>.json")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--out", help="where the PNGs go (default: <trial work folder>/mirror)")
    p.add_argument("--frames", type=int, default=8, help="how many held-out frames (default 8)")
    args = p.parse_intermixed_args(argv)  # options and key=value in any order (cpython#59317)
    import reflect.training  # noqa: F401 - the training stack, imported before the collector resumes

    freeze_imports()
    with exit_on_user_error("reflect.mirror"):
        written = render_mirror_views(args.record, tuple(args.overrides), args.out, args.frames)
        print(f"rendered {len(written)} mirror views to {written[0].parent if written else args.out} "
              "(flipped as the display shows them). No camera sits at the mirror viewpoint on a capture, so "
              "there is no PSNR here: look at them, then sign off with python -m reflect.signoff 4 "
              "mirror_artifacts --by NAME --note ...")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    finally:  # the collector resumes on every way out (reflect.startup)
        freeze_imports()
