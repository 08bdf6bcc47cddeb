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
from typing import Optional

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
