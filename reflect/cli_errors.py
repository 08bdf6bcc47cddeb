"""One place that turns the errors users cause into a message and an exit code (no tracebacks)."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.markup import escape

from reflect.config_loading import ConfigError

err_console = Console(stderr=True)


def user_error_types() -> tuple[type[BaseException], ...]:
    """Errors caused by input (configs, data, missing weights, divergence), not by bugs."""
    from reflect.data.errors import DatasetError
    from reflect.lightning.module import DivergenceError
    from reflect.losses.lpips_loader import LpipsUnavailable
    from reflect.model.flame import FlameModelError

    return (ConfigError, DatasetError, LpipsUnavailable, DivergenceError, FlameModelError)


def user_message(exc: BaseException) -> str:
    """The error's own message; for one re-raised from a DataLoader worker process, without the worker's
    traceback that PyTorch folds into the text ("Caught X in DataLoader worker ... Original Traceback ...")."""
    msg = str(exc)
    if "Original Traceback" in msg:
        last = msg.rstrip().splitlines()[-1]
        prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
        msg = last[len(prefix):] if last.startswith(prefix) else last.split(": ", 1)[-1]
    return msg


@contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    try:
        yield
    except user_error_types() as exc:
        err_console.print(f"[bold red]{prog}: error:[/] {escape(user_message(exc))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print(f"{prog}: interrupted; finished work and checkpoints are kept, rerun to resume.")
        sys.exit(130)
