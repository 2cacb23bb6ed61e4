"""prometheus-client's multiprocess mode, as `ica serve` runs it.

Each worker process writes its counters and histograms to memory-mapped files in one
directory (`PROMETHEUS_MULTIPROC_DIR`); the worker that answers a scrape adds them up. The
directory must be set before prometheus-client is first imported (the client picks its value
store at import), so `ica serve` sets it in its own environment before uvicorn starts the
workers, which inherit it. Files left from an earlier run would be added to this run's
counts, so `ica serve` empties the directory at start. A worker that ends (or dies and is
replaced by uvicorn) is marked dead: its live gauges are dropped, its counters stay.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID_FILE = re.compile(r"_(\d+)\.db$")


def directory() -> Path | None:
    """The multiprocess directory of this process, or None (single-process registry)."""
    value = os.environ.get(ENV, "").strip()
    return Path(value) if value else None


def prepare(parent: Path) -> Path:
    """Create (mode 0700) and empty the multiprocess directory of a new server run and put it
    in the environment. `PROMETHEUS_MULTIPROC_DIR` when set (only the client's own `*.db`
    files are removed from it); else `<parent>/serve-<pid>`, one per `ica serve`, so replicas
    that share a data directory never mix (or wipe) each other's counts; the directories of
    runs that have ended are removed."""
    import shutil

    path = directory()
    if path is None:
        parent.mkdir(parents=True, exist_ok=True)
        for old in parent.glob("serve-*"):
            run = old.name.removeprefix("serve-")
            if old.is_dir() and run.isdigit() and not _alive(int(run)):
                shutil.rmtree(old, ignore_errors=True)
        path = parent / f"serve-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    for leftover in path.glob("*.db"):
        leftover.unlink(missing_ok=True)
    os.environ[ENV] = str(path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def mark_dead_workers(path: Path) -> list[int]:
    """Mark every process with files in `path` that no longer runs as dead (its live gauges
    stop counting); return their ids."""
    from prometheus_client import multiprocess

    dead = set()
    for item in path.glob("gauge_live*.db"):
        match = _PID_FILE.search(item.name)
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in sorted(dead):
        multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    return sorted(dead)


def mark_self_dead() -> None:
    """Called when a worker shuts down."""
    path = directory()
    if path is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), str(path))  # type: ignore[no-untyped-call]
