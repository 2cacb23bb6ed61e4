"""The container image: hadolint finds nothing in the Dockerfile, and the image's own commands
(ENTRYPOINT + CMD, HEALTHCHECK) are `ica` commands that work: they are run here, outside a
container (no Docker engine runs on this machine), with the image's environment and its data
directory moved to a scratch directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from azdev_ica.cli.main import build_parser
from tests.conftest import EXAMPLE_POLICY
from tests.deploy.conftest import DOCKERFILE, free_port, tool
from tests.deploy.dockerfile import Stage, read_stages


@pytest.fixture(scope="module")
def image() -> Stage:
    return read_stages(DOCKERFILE)[-1]


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("hadolint"), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_hadolint_finds_nothing():
    done = hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_is_not_lenient(tmp_path):
    # The check can fail: an unpinned base, a root user and a shell-form command are found.
    lax = tmp_path / "Dockerfile"
    lax.write_text("FROM python:latest\nRUN pip install azdev-ica\nCMD ica serve\n")
    done = hadolint(lax)
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # latest
    assert "DL3013" in done.stdout  # unpinned pip install


def test_every_stage_starts_from_a_pinned_slim_python(image):
    for stage in read_stages(DOCKERFILE):
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+", stage.base), stage.base


def test_the_image_runs_as_a_non_root_user_and_writes_only_its_volume(image):
    user = image.last("USER")
    assert user is not None
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    env = image.env()
    # The one volume is ICA's data directory, also the working directory.
    assert image.last("VOLUME") == f'["{env["ICA_DATA_DIR"]}"]'
    assert image.last("WORKDIR") == env["ICA_DATA_DIR"]
    # Nothing writes bytecode next to the code on the read-only root file system.
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_the_commands_are_ica_commands_the_cli_knows(image):
    entrypoint = image.exec_form("ENTRYPOINT")
    assert entrypoint == ["ica"]
    parser = build_parser()
    serve = parser.parse_args(image.exec_form("CMD"))
    assert serve.func.__name__ == "_serve"
    assert serve.host == "0.0.0.0"  # noqa: S104 - inside the container, behind its network
    _, health = image.healthcheck()
    assert health[0] == "ica"
    probe = parser.parse_args(health[1:])
    assert probe.func.__name__ == "_health"
    # The health check asks the port the server listens on.
    assert probe.url.endswith(f":{serve.port}")


def _localised(command: list[str], port: int) -> list[str]:
    """The image's command for this machine: loopback instead of every interface, and a free
    port instead of 8000; nothing else changes."""
    swapped = [part.replace("8000", str(port)) for part in command]
    return ["127.0.0.1" if part == "0.0.0.0" else part for part in swapped]  # noqa: S104


def test_the_image_commands_serve_and_pass_their_health_check(image, tmp_path, sqlite_template):
    env = image.env()
    data_dir = tmp_path / env["ICA_DATA_DIR"].lstrip("/")
    data_dir.mkdir(parents=True)
    shutil.copyfile(sqlite_template, data_dir / "ica.db")  # migrated once per session
    bin_dir = str(Path(sys.executable).parent)
    environment = {
        **{name: value for name, value in os.environ.items() if not name.startswith("ICA_")},
        **{name: value for name, value in env.items() if name != "PATH"},
        "ICA_DATA_DIR": str(data_dir),
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "ICA_PASSWORD_HASH_PROFILE": "cheapest",
    }
    entrypoint = image.exec_form("ENTRYPOINT")
    # The single-container first start (docs/operate.md): `ica init` in the volume, once.
    init = subprocess.run(
        [*entrypoint, "init", "--policy", str(EXAMPLE_POLICY)],
        cwd=data_dir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    port = free_port()
    _, health = image.healthcheck()
    probe = _localised(health, port)
    # Before the server runs, the health check fails.
    assert subprocess.run(probe, env=environment, capture_output=True, check=False).returncode == 1
    log = (tmp_path / "serve.log").open("w")
    with subprocess.Popen(
        _localised([*entrypoint, *image.exec_form("CMD")], port),
        cwd=data_dir,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    ) as server:
        try:
            answers = []
            for _ in range(240):  # bounded: the server starts within a minute on a busy box
                done = subprocess.run(
                    probe, env=environment, capture_output=True, text=True, check=False
                )
                answers.append(done.returncode)
                if done.returncode == 0 or server.poll() is not None:
                    break
                time.sleep(0.25)
            assert answers[-1] == 0, (tmp_path / "serve.log").read_text()
            assert done.stdout.strip() == f"http://127.0.0.1:{port}/health: 200"
            # The same command with --ready: the policy applied by `ica init` makes it ready.
            ready = subprocess.run([*probe, "--ready"], env=environment, check=False)
            assert ready.returncode == 0
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    # What it wrote stayed in the data directory (the image's only writable place).
    written = {path.name for path in data_dir.iterdir()}
    assert {"ica.db", "ledger.key", "secret.key", "checkpoints"} <= written


def test_ica_health_says_what_the_server_answered(capsys):
    """Exit 0 only on a 200: /ready answering 503 (not ready) fails the probe, /health not."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from azdev_ica.cli.main import main

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert main(["health", "--url", url]) == 0
        assert main(["health", "--url", url + "/", "--ready"]) == 1
        assert f"{url}/ready: 503" in capsys.readouterr().out
        assert main(["health", "--url", "ftp://example"]) == 64
    finally:
        server.shutdown()
        server.server_close()
