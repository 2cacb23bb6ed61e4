"""The pipeline client ICA serves as a zipapp: stdlib only, Python 3.8 syntax and library,
the same bytes every time, runnable without installing anything."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import azdev_ica
from azdev_ica import client_zipapp

NAME = f"ica-{azdev_ica.__version__}.pyz"


def sources() -> dict[str, str]:
    data = client_zipapp.build()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


def test_served_at_a_versioned_url_with_its_sha256(client):
    served = client.get(f"/client/{NAME}")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/zip"
    assert served.content.startswith(b"#!/usr/bin/env python3\n")
    digest = client.get(f"/client/{NAME}.sha256")
    assert digest.status_code == 200
    assert digest.text == f"{hashlib.sha256(served.content).hexdigest()}  {NAME}\n"
    assert client.get("/client/ica-0.0.1.pyz").status_code == 404
    assert client.get("/client/ica-0.0.1.pyz").json()["status"] == 404


def test_the_same_bytes_on_every_build():
    first = client_zipapp.build()
    client_zipapp.build.cache_clear()
    assert client_zipapp.build() == first


def test_only_the_standard_library_and_itself():
    for name, text in sources().items():
        for node in ast.walk(ast.parse(text)):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            for module in modules:
                top = module.split(".")[0]
                assert top in sys.stdlib_module_names or top == "azdev_ica", (name, module)
                if top == "azdev_ica":
                    path = module.replace(".", "/")
                    assert f"{path}.py" in sources() or f"{path}/__init__.py" in sources(), (
                        name,
                        module,
                    )


class _Runtime38(ast.NodeVisitor):
    """What `from __future__ import annotations` does not cover: subscripted builtins and
    collections.abc types, and `X | Y`, evaluated at run time (3.9 and 3.10 features)."""

    GENERIC = frozenset({"dict", "list", "tuple", "set", "frozenset", "type", "Callable",
                         "Mapping", "Sequence", "Iterator", "Iterable"})  # fmt: skip
    TYPES = frozenset({"int", "str", "bytes", "float", "bool", "None"})

    def __init__(self) -> None:
        self.found: list[str] = []

    def visit_arg(self, node: ast.arg) -> None:
        return None  # annotations are strings under the __future__ import

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for child in node.body + node.decorator_list:
            self.visit(child)
        for default in node.args.defaults + node.args.kw_defaults:
            if default is not None:
                self.visit(default)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.value, ast.Name) and node.value.id in self.GENERIC:
            self.found.append(f"line {node.lineno}: {node.value.id}[...] at run time")
        self.generic_visit(node)

    def _type_like(self, side: ast.expr) -> bool:
        if isinstance(side, ast.Constant):
            return side.value is None
        return isinstance(side, ast.Name) and (side.id in self.TYPES or side.id[:1].isupper())

    def visit_BinOp(self, node: ast.BinOp) -> None:
        sides = (node.left, node.right)
        if isinstance(node.op, ast.BitOr) and all(self._type_like(side) for side in sides):
            self.found.append(f"line {node.lineno}: a type union at run time")
        self.generic_visit(node)


@pytest.mark.parametrize("name", sorted(sources()))
def test_python_38_syntax_and_runtime(name):
    text = sources()[name]
    tree = ast.parse(text, feature_version=(3, 8))  # syntax: no match, no walrus-in-comprehension
    if "def " in text:  # annotations stay strings: `X | None` and `dict[...]` never run
        assert "from __future__ import annotations" in text
    visitor = _Runtime38()
    visitor.visit(tree)
    assert visitor.found == []


def test_vermin_finds_nothing_newer_than_38(tmp_path):
    vermin = Path(sys.executable).parent / "vermin"
    for name, text in sources().items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    done = subprocess.run(
        [str(vermin), "-t=3.8-", "--no-tips", "--violations", "--eval-annotations=no",
         "--no-parse-comments", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def ica_url() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            answer = json.dumps(
                {
                    "event": {"event_id": "e9", "phase": body["phase"], "attempt": 1},
                    "run": {"run_key": body["run_key"]},
                }
            ).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_runs_with_the_system_python_and_nothing_installed(tmp_path, ica_url):
    pyz = tmp_path / NAME
    pyz.write_bytes(client_zipapp.build())
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    env = {"PATH": "/usr/bin:/bin", "ICA_URL": ica_url, "ICA_TOKEN": "k", "HOME": str(tmp_path)}
    argv = [python, "-I", str(pyz)]  # isolated: no site-packages, no PYTHONPATH
    done = subprocess.run([*argv, "run", "event", "build", "--run-key", "ado:p:1"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "event e9 (build, attempt 1) recorded on ado:p:1" in done.stdout
    helped = subprocess.run([*argv, "--help"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert helped.returncode == 0
    assert "approval" in helped.stdout
    assert "gate" in helped.stdout
    assert "serve" not in helped.stdout  # the server's commands are not in the client
    version = subprocess.run([*argv, "--version"], env=env, capture_output=True, text=True,
                             timeout=60, check=False)  # fmt: skip
    assert version.stdout.strip() == f"ica {azdev_ica.__version__}"
