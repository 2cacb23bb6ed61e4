"""The deploy artifacts (Dockerfile, Compose, Kustomize, nginx) and the tools that check them,
which the dev extra installs next to the interpreter (hadolint, kubectl, check-jsonschema,
kubernetes-validate): a missing tool fails the test, it never skips it."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is missing: run `make install-dev`"
    return str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
