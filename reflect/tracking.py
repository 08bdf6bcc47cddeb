"""W&B as a mirror of the results store: offline automatically when there is no API key."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

from reflect.config import TrackingConfig


def resolve_wandb_mode(cfg: TrackingConfig) -> str:
    """auto → online only with credentials (env var or ~/.netrc entry), else offline."""
    if os.environ.get("WANDB_MODE") == "":
        # An empty WANDB_MODE (``export WANDB_MODE=``) means "unset" to a user, but wandb rejects it when a run
        # starts; drop it so the mode chosen here is the one wandb uses.
        del os.environ["WANDB_MODE"]
    if not cfg.wandb or cfg.mode == "disabled" or os.environ.get("WANDB_MODE") == "disabled":
        return "disabled"
    if cfg.mode != "auto":
        return cfg.mode
    if os.environ.get("WANDB_MODE") in ("offline", "online"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        if "api.wandb.ai" in netrc.read_text():
            return "online"
    except OSError:
        pass
    return "offline"


def make_wandb_logger(cfg: TrackingConfig, *, name: str, save_dir: Path, config: dict[str, Any],
                      group: Optional[str] = None, job_type: Optional[str] = None,
                      tags: Sequence[str] = (), run_id: Optional[str] = None):
    """A Lightning WandbLogger, or None when tracking is off. ``run_id`` lets a resumed trial continue its run."""
    mode = resolve_wandb_mode(cfg)
    if mode == "disabled":
        return None
    from pytorch_lightning.loggers import WandbLogger

    save_dir.mkdir(parents=True, exist_ok=True)
    if mode == "offline":
        os.environ.setdefault("WANDB_SILENT", "true")  # no "anonymous"/sync chatter for local runs
    logger = WandbLogger(
        name=name, project=cfg.project, entity=cfg.entity, save_dir=str(save_dir), mode=mode,
        group=group, job_type=job_type, tags=list(tags), config=config, id=run_id, resume="allow",
        settings={"silent": True, "console": "off"} if mode == "offline" else None,
    )
    # Lightning always passes ``anonymous=None`` to wandb.init, and wandb >= 0.19 warns on every run that the
    # setting "has no effect"; the run is created lazily, so dropping the key here silences a false alarm.
    init_kwargs = getattr(logger, "_wandb_init", None)
    if isinstance(init_kwargs, dict) and init_kwargs.get("anonymous") is None:
        init_kwargs.pop("anonymous", None)
    return logger
