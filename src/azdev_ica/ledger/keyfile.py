"""The ledger's signing key file: one signer key per line, oldest first, mode 0600.

Each line is a signer key in the Go ``note`` format (``PRIVATE+KEY+<name>+<id>+<base64>``);
blank lines and lines starting with ``#`` are ignored. ``ica keys init`` writes the first key;
``ica keys rotate`` appends a new one (the database says which key is valid when). Every
replica mounts the same file; none ever creates a key on its own.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .note import NoteError, Signer

__all__ = ["KeyFileError", "add_signer", "create_key_file", "read_signers"]


class KeyFileError(RuntimeError):
    """The key file is missing, unreadable, malformed, or too widely readable."""


def read_signers(path: Path) -> list[Signer]:
    """Return the signers in ``path``, oldest first."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(
            f"no ledger signing key: {path} does not exist (run `ica keys init`)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read the ledger key file {path}: {exc.strerror}") from None
    if os.name == "posix" and stat.S_IMODE(mode) & 0o077:
        raise KeyFileError(
            f"the ledger key file {path} is readable by others (mode "
            f"{stat.S_IMODE(mode):04o}): chmod 600 it"
        )
    signers = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            signers.append(Signer.from_key_string(line))
        except NoteError as exc:
            raise KeyFileError(f"{path}:{number}: {exc}") from None
    if not signers:
        raise KeyFileError(f"the ledger key file {path} holds no key")
    return signers


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` with ``text``, mode 0600; fail if it exists (O_EXCL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def create_key_file(path: Path, name: str) -> Signer | None:
    """Write a new key named ``name`` to ``path``; None (and no change) if the file exists."""
    if path.exists():
        return None
    signer = Signer.generate(name)
    try:
        _write_new(path, _header() + signer.key_string() + "\n")
    except FileExistsError:
        return None
    return signer


def add_signer(path: Path, name: str) -> Signer:
    """Append a new key to the existing key file ``path`` (atomically replaced, mode 0600)."""
    existing = path.read_text(encoding="utf-8")
    signer = Signer.generate(name)
    if existing and not existing.endswith("\n"):
        existing += "\n"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _write_new(temporary, existing + signer.key_string() + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return signer


def _header() -> str:
    return (
        "# ICA audit ledger signing keys, oldest first (secret: mode 0600, back it up).\n"
        "# `ica keys rotate` appends a key; `ica keys list` shows which one is valid when.\n"
    )
