"""A throwaway PostgreSQL server started from the machine's binaries.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user via
`runuser`, with its data directory in a temporary directory that user can enter.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def _bin_dir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise RuntimeError(
            "PostgreSQL server binaries not found: `make test` installs them (package postgresql)"
        )
    return Path(candidates[-1]).parent


def _memory_dir() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgServer:
    root: Path
    port: int
    bin_dir: Path
    options: str = ""

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)

    @classmethod
    def start(cls, *, durable: bool = False) -> PgServer:
        """Start a server; `durable` keeps fsync on (benchmarks), tests run without it.

        A test server keeps its data directory in memory (`/dev/shm`, when the machine has
        it): `CREATE DATABASE ... TEMPLATE`, which every storage test runs, then takes a
        tenth of the time it takes on disk even with fsync off."""
        root = Path(tempfile.mkdtemp(prefix="ica-pg-", dir=None if durable else _memory_dir()))
        server = cls(root=root, port=_free_port(), bin_dir=_bin_dir())
        server.data.mkdir()
        if os.geteuid() == 0:
            os.chmod(root, 0o755)  # noqa: S103 - the postgres user must enter it
            shutil.chown(server.data, "postgres", "postgres")
        server._run("initdb", "-D", str(server.data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = (
            f"-p {server.port} -k {server.data} -c listen_addresses=127.0.0.1 "
            "-c max_connections=300"
        )
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        for attempt in range(3):
            try:
                server.options = options
                server._pg_ctl_start()
                return server
            except subprocess.CalledProcessError:
                if attempt == 2:
                    raise
                # The port may have been taken between choosing and binding it.
                server.port = _free_port()
                options = options.replace(options.split()[1], str(server.port), 1)
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def _pg_ctl_start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.data / "log"),
            "-o", self.options, "-w", "start",
        )  # fmt: skip

    def restart(self, *, down_seconds: float) -> None:
        """Stop the server as an operator's restart does (fast: sessions are ended, their
        transactions rolled back), stay down `down_seconds`, and start it on the same port."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        time.sleep(down_seconds)
        self._pg_ctl_start()

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
