"""The pipeline client as one file: a stdlib-only zipapp (PEP 441) ICA serves to build agents.

`python3 ica-<version>.pyz run event build` works with any Python 3.8 or later and installs
nothing: an agent fetches it from ICA at a versioned URL and checks it against a SHA-256 the
pipeline pins in its own parameters (the kit does both; README "Install the pipeline
client"). The archive is built from this package's own pipeline-client modules, byte for
byte the same on every server of one version (sorted entries, fixed timestamps), so the
pinned hash holds across replicas and restarts.
"""

from __future__ import annotations

import functools
import hashlib
import io
import zipfile
from importlib import resources

import azdev_ica

# The pipeline client: standard library only (tests/cli/test_zipapp.py checks that they keep
# to Python 3.8 and import nothing else).
MODULES = (
    "__init__.py",
    "cli/__init__.py",
    "cli/main.py",
    "cli/parsing.py",
    "cli/pipeline.py",
    "cli/approvals.py",
    "cli/gate_client.py",
    "cli/http.py",
    "cli/fastjson.py",
    "cli/wire.py",
    "cli/identity.py",
    "cli/formats.py",
    "cli/listing.py",
)

# Run as the archive (`python3 ica.pyz`) or, as the kit runs it, extracted and compiled once
# (`python3 -S app/__main__.py`: the modules' bytecode is then cached, where from inside the
# archive every call compiles them again); either way its own folder holds the package.
# It exits without the interpreter's teardown once the command is done and its output
# flushed (nothing registered with atexit on the client's path, no file left open).
MAIN = """\
import os
import sys

if sys.version_info < (3, 8):
    sys.exit("ica: the pipeline client needs Python 3.8 or later")

here = os.path.dirname(os.path.abspath(__file__))
if here not in sys.path:
    sys.path.insert(0, here)

from azdev_ica.cli.main import main

code = main(pipeline_only=True)
# Done: what is left is the interpreter's teardown, freeing what the process exits with
# anyway (a millisecond or two of a call that costs tens). Flushed, then gone.
try:
    sys.stdout.flush()
    sys.stderr.flush()
except Exception:  # a closed pipe: let the ordinary exit say so
    sys.exit(code)
os._exit(code)
"""

_EPOCH = (1980, 1, 1, 0, 0, 0)


def file_name(version: str | None = None) -> str:
    return f"ica-{version or azdev_ica.__version__}.pyz"


@functools.lru_cache(maxsize=1)
def build() -> bytes:
    """The zipapp's bytes (a `#!/usr/bin/env python3` line, then the zip archive)."""
    root = resources.files("azdev_ica")
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        entries = [("__main__.py", MAIN.encode())]
        for module in MODULES:
            source = root.joinpath(*module.split("/")).read_bytes()
            entries.append((f"azdev_ica/{module}", source))
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def sha256() -> str:
    return hashlib.sha256(build()).hexdigest()
