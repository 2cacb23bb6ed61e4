"""The factory `ica serve` hands to uvicorn, in a process of its own as a worker runs it."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import gc
from azdev_ica.api.asgi import app_factory
app_factory()
print(gc.get_freeze_count(), len(gc.get_objects()))
"""


def test_the_factory_hides_the_startup_heap_from_the_garbage_collector(tmp_path):
    # Everything built at startup lives as long as the process: frozen, a full collection
    # does not walk it (each walk paused every request in flight for 260-360 ms).
    env = {
        **os.environ,
        "ICA_DATA_DIR": str(tmp_path),
        "ICA_SECRET_KEY": "k" * 48,
        "ICA_DATABASE_URL": f"sqlite:///{tmp_path}/ica.db",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    frozen, tracked = (int(value) for value in done.stdout.split())
    assert frozen > 100_000
    assert tracked < frozen / 10
