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


def test_a_cli_process_freezes_its_imports_and_still_collects_later_cycles():
    script = textwrap.dedent("""
        import gc
        from reflect.startup import freeze_imports, pause_gc
        pause_gc()
        import torch  # noqa: F401
        paused = not gc.isenabled()
        freeze_imports()
        frozen = gc.get_freeze_count()

        class Node:
            pass

        for _ in range(1000):  # cycles made after start-up are garbage the collector must still find
            a, b = Node(), Node()
            a.other, b.other = b, a
        del a, b
        gc.collect()
        print(paused, gc.isenabled(), frozen, sum(isinstance(o, Node) for o in gc.get_objects()))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    paused, enabled, frozen, left = out.stdout.split()
    assert paused == "True" and enabled == "True"
    assert int(frozen) > 100_000  # torch's import-time objects, never scanned again
    assert int(left) == 0  # every cycle made after start-up was collected
