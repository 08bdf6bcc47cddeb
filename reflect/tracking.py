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


def start_service_in_background() -> None:
    """Start W&B's service process now, from a thread, so that it comes up while this process goes on.

    The first ``wandb.init`` of a process waits for the service to start: 0.40 s of a fresh process's first
    offline init, 0.05 s for later ones (measured). ``reflect.train`` starts it before importing Lightning
    (1.4 s), so it is up when Lightning's setup calls ``wandb.init``. On wandb versions whose setup object
    has ``ensure_service`` (it holds a lock while connecting, so a ``wandb.init`` that comes first waits for
    it); elsewhere, or if it fails, ``wandb.init`` starts the service (and reports any problem) as always.
    """
    import threading

    import wandb
    from wandb.sdk import wandb_setup

    if not hasattr(wandb_setup._WandbSetup, "ensure_service"):
        return

    def start() -> None:
        try:
            wandb.setup().ensure_service()
        except Exception:  # noqa: BLE001 - wandb.init starts the service itself and reports what is wrong
            pass

    threading.Thread(target=start, name="wandb-service-start", daemon=True).start()


def make_wandb_logger(cfg: TrackingConfig, *, name: str, save_dir: Path, config: dict[str, Any],
                      group: Optional[str] = None, job_type: Optional[str] = None,
                      tags: Sequence[str] = (), run_id: Optional[str] = None, resuming: bool = False,
                      start_service: bool = False):
    """A Lightning WandbLogger, or None when tracking is off.

    Args:
        cfg: the trial's tracking settings (mode auto/online/offline/disabled, project, entity).
        name, group, job_type, tags, config: the W&B run's labels and config.
        save_dir: where the ``wandb/`` folder goes.
        run_id: the run's id. Online, a resumed trial continues the run with this id (``resume="allow"``).
        resuming: whether the trial resumes a checkpoint. Offline, W&B cannot resume a run, and syncing two
            offline folders with one id makes the second overwrite the first; so a resumed segment gets its
            own id (``<run_id>-resumed-<unix time>``, same name and group) and ``config.resumes_run`` names
            the first.
        start_service: start W&B's service in the background now (``start_service_in_background``), for a
            caller that has slow work to do before the run starts; the ablation's trials start theirs at once.

    Returns:
        The logger (its run starts lazily, on first use of ``logger.experiment``), or None when disabled.
    """
    mode = resolve_wandb_mode(cfg)
    if mode == "disabled":
        return None
    if mode == "offline":
        os.environ.setdefault("WANDB_SILENT", "true")  # no "anonymous"/sync chatter for local runs
    if start_service:
        start_service_in_background()
    from pytorch_lightning.loggers import WandbLogger

    save_dir.mkdir(parents=True, exist_ok=True)
    resume: Optional[str] = "allow"
    if mode == "offline":
        if resuming and run_id:
            import time

            config = {**config, "resumes_run": run_id}
            run_id, resume = f"{run_id}-resumed-{int(time.time())}", None
    logger = WandbLogger(
        name=name, project=cfg.project, entity=cfg.entity, save_dir=str(save_dir), mode=mode,
        group=group, job_type=job_type, tags=list(tags), config=config, id=run_id, resume=resume,
        settings={"silent": True, "console": "off"} if mode == "offline" else None,
    )
    # Lightning always passes ``anonymous=None`` to wandb.init, and wandb >= 0.19 warns on every run that the
    # setting "has no effect"; the run is created lazily, so dropping the key here silences a false alarm.
    init_kwargs = getattr(logger, "_wandb_init", None)
    if isinstance(init_kwargs, dict) and init_kwargs.get("anonymous") is None:
        init_kwargs.pop("anonymous", None)
    return logger
