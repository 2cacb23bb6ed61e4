"""A log to feed witnesses in tests: a Merkle tree of real ledger entries per yearly origin,
signed checkpoints, and the witness as a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from azdev_ica.ledger.cosignature import Cosigner
from azdev_ica.ledger.entry import compose_entry
from azdev_ica.ledger.merkle import MemoryTree
from azdev_ica.ledger.note import Checkpoint, Signer, sign_checkpoint
from azdev_ica.ledger.witness import (
    LogFamily,
    Witness,
    WitnessHTTPServer,
    add_checkpoint_body,
    open_origin_body,
)

PREFIX = "ica.test/audit"


def _body(action: str, data: dict[str, object]) -> bytes:
    record = {"action": action, "actor": {"id": "sealer", "kind": "system"}, "data": data}
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class Shard:
    """One yearly shard of a log: its entries and the checkpoints signed over them."""

    origin: str
    signer: Signer
    tree: MemoryTree = field(default_factory=MemoryTree)
    entries: list[bytes] = field(default_factory=list)

    @classmethod
    def open(cls, signer: Signer, year: int, previous: str | None, note: str | None) -> Shard:
        shard = cls(f"{PREFIX}/{year}", signer)
        shard.append_body(
            _body("ledger.open", {"previous_origin": previous, "previous_checkpoint": note})
        )
        return shard

    def append_body(self, body: bytes) -> None:
        entry = compose_entry(body, len(self.entries), self.origin)
        self.entries.append(entry)
        self.tree.append(entry)

    def grow(self, count: int, tag: str = "x") -> None:
        for _ in range(count):
            self.append_body(_body("run.report", {"n": len(self.entries), "tag": tag}))

    def note(self, size: int | None = None) -> str:
        size = self.tree.size if size is None else size
        return sign_checkpoint(Checkpoint(self.origin, size, self.tree.root(size)), [self.signer])

    def add_body(self, old: int, size: int | None = None) -> bytes:
        size = self.tree.size if size is None else size
        proof = self.tree.consistency_proof(old, size) if 0 < old < size else []
        return add_checkpoint_body(old, proof, self.note(size))

    def open_body(self) -> bytes:
        size = self.tree.size
        return open_origin_body(
            self.entries[0], self.tree.inclusion_proof(0, size), self.note(size)
        )


def post(url: str, body: bytes) -> tuple[int, str, str]:
    """POST over real HTTP; the status, body and content type (errors included)."""
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers["Content-Type"]


@contextmanager
def serve_witness(
    state: Path, cosigner: Cosigner, logs: list[LogFamily], clock: object = None
) -> Iterator[tuple[str, Witness]]:
    """The witness on an ephemeral loopback port, in a thread."""
    witness = Witness(state, cosigner, logs, **({"clock": clock} if clock else {}))  # type: ignore[arg-type]
    server = WitnessHTTPServer(("127.0.0.1", 0), witness)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url, witness
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        witness.close()
