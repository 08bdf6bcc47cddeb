"""reflect.startup: a CLI process imports without the cyclic GC, then freezes the import-time objects."""
import gc
import subprocess
import sys
import textwrap
from pathlib import Path

from reflect.startup import freeze_imports

ROOT = Path(__file__).resolve().parents[1]


def test_a_library_caller_keeps_its_collector():
    frozen = gc.get_freeze_count()
    freeze_imports()  # pause_gc never ran in this (pytest) process
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen


def run_python(script: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def test_a_cli_process_freezes_its_imports_and_still_collects_later_cycles():
    paused, enabled, frozen, collected = run_python("""
        import gc, weakref
        from reflect.startup import freeze_imports, pause_gc
        pause_gc()
        import torch  # noqa: F401
        paused = not gc.isenabled()
        freeze_imports()
        frozen = gc.get_freeze_count()

        class Node:
            pass

        freed = []
        for i in range(1000):  # cycles made after start-up: only the (automatic) collector can free them
            a, b = Node(), Node()
            a.other, b.other = b, a
            weakref.finalize(a, freed.append, i)
        del a, b
        kept = [[] for _ in range(100_000)]  # new tracked objects: they start the collector's automatic runs
        print(paused, gc.isenabled(), frozen, len(freed))
    """)
    assert paused == "True" and enabled == "True"
    assert int(frozen) > 100_000  # torch's import-time objects, never scanned again
    assert int(collected) >= 900  # by the collector's own runs; left paused, it would free none


def test_a_console_script_resumes_the_collector_when_its_command_fails():
    raised, enabled, frozen = run_python("""
        import gc
        from reflect.startup import _console_script
        raised = False
        try:
            _console_script("reflect.no_such_command")
        except ModuleNotFoundError:
            raised = True
        print(raised, gc.isenabled(), gc.get_freeze_count() > 0)
    """)
    assert raised == "True" and enabled == "True" and frozen == "True"
