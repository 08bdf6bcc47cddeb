"""How a Reflect process starts: the heavy imports without CPython's cyclic garbage collector.

Importing torch, Lightning (which imports torchmetrics, torchvision and torch._dynamo), W&B and numba makes
about two million Python objects that live as long as the process. The cyclic collector's full collections
walk all of them: measured on a 2-core machine, 7 full collections during those imports took 0.65 s, and the
last one at interpreter exit another 1.1 s (``python -c "import pytorch_lightning"`` takes 4.1 s, 2.9 s of
it without that exit collection), in every CLI run and every worker process, before and after any training.

So a command-line process pauses the collector while it imports (``pause_gc``), then moves every object that
exists into the permanent generation and collects again as usual (``freeze_imports``, i.e. ``gc.freeze``).
Objects made afterwards (autograd graphs, trainers, batches) are collected as before; the import-time
objects are never scanned again. The price: cyclic garbage made during the imports (the collections there
found 10 to 164 objects each) is never freed. Library callers (tests, notebooks) never call ``pause_gc``, so
``freeze_imports`` leaves their collector alone.

Who pauses: ``python -m reflect.{train,ablate,sweep,mirror}`` (a guard at the top of each module, which also
covers the worker processes ``ablate`` and ``sweep`` spawn, since a spawned child imports its parent's main
module first), the worker entry points themselves, and the console scripts (``reflect-train`` ... point at
the wrappers below).
"""
from __future__ import annotations

import gc
import importlib
import os
from typing import Any, Callable, Optional

_paused = False


def pause_gc() -> None:
    """Pause the cyclic collector for this process's imports; call first thing in a CLI process."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def freeze_imports() -> None:
    """After the heavy imports: freeze what exists and resume collecting (a no-op unless ``pause_gc`` ran)."""
    global _paused
    if not _paused:
        return
    gc.freeze()
    gc.enable()
    _paused = False


def _stop_with_parent() -> None:
    """Linux: have the kernel send this process SIGTERM when its parent dies, even by SIGKILL.

    SIGTERM stops a trial at a step boundary with that step's checkpoint and an ``interrupted`` record, so a
    killed ``reflect.ablate`` or ``reflect.sweep`` leaves no orphan worker training on; elsewhere (no
    ``prctl``) nothing changes.
    """
    import ctypes
    import multiprocessing
    import signal

    parent = multiprocessing.parent_process()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent.pid:  # the parent died before prctl took effect
        raise SystemExit(130)


def run_spawned_worker(stack: str, target: Callable[..., Any], *args: Any) -> None:
    """A spawned worker process's whole life: ``target(*args)`` after importing ``stack`` without the collector.

    Args:
        stack: the module that imports the training stack (imported before the collector resumes).
        target, args: the worker's loop.
    The worker gets SIGTERM if its parent dies (``_stop_with_parent``). A signal that stops it (Ctrl-C reaches
    the terminal's whole group; the parent forwards what it alone receives) ends it with exit code 130 and no
    traceback: its trial is recorded as interrupted, with the step's checkpoint, and the parent reports once.
    """
    pause_gc()
    try:
        _stop_with_parent()
        importlib.import_module(stack)
        freeze_imports()
        target(*args)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _console_script(module: str) -> Optional[int]:
    pause_gc()
    try:
        return importlib.import_module(module).main()
    finally:
        freeze_imports()  # whatever happened: never leave the collector paused


def train_main() -> Optional[int]:
    """The ``reflect-train`` console script: ``python -m reflect.train``."""
    return _console_script("reflect.train")


def ablate_main() -> Optional[int]:
    """The ``reflect-ablate`` console script: ``python -m reflect.ablate``."""
    return _console_script("reflect.ablate")


def sweep_main() -> Optional[int]:
    """The ``reflect-sweep`` console script: ``python -m reflect.sweep``."""
    return _console_script("reflect.sweep")
