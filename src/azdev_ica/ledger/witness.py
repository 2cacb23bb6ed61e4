"""A small transparency-log witness (C2SP tlog-witness, https://c2sp.org/tlog-witness), meant to
run under somebody else's control than the log's: another team, account or region.

It keeps, per log origin, the latest checkpoint it cosigned, in its own SQLite file (never the
log's database), and cosigns a new checkpoint only when a consistency proof shows that it
extends that one. A log that rewinds its database and its checkpoint store can sign a second
history with its genuine key, but the witness refuses to cosign it: the fork becomes evident
to anybody who requires the witness's cosignature.

HTTP interface
--------------
``POST /add-checkpoint`` (tlog-witness): body ``old <size>\\n``, up to 63 base64 consistency-
proof lines, an empty line, then the signed checkpoint. Answers:

- 200 with the cosignature line(s) (``cosignature/v1``, Ed25519, timestamped);
- 400 malformed request, or old size larger than the checkpoint's;
- 403 no valid signature by a key the witness trusts for that origin;
- 404 unknown origin;
- 409 the old size is not the size the witness last cosigned (``text/x.tlog.size`` body: that
  size, so the log can retry with the right proof);
- 422 the checkpoint is not consistent with what the witness cosigned before (bad proof,
  another root for the same size, an empty tree with a non-empty root, or, for yearly shards,
  an origin that does not chain to the previous one): never cosigned.

Yearly shards (an ICA extension)
--------------------------------
ICA shards its log by year: origin ``<prefix>/<year>``; entry 0 of each year (``ledger.open``)
embeds the previous year's final signed checkpoint. A log configured with such a prefix is
one *family*: once the witness has cosigned a checkpoint of year Y, a later year's origin is
accepted only after ``POST /open-origin`` proved that its entry 0 chains to the checkpoint of
Y the witness cosigned last (body: a ``c2sp.org/tlog-proof@v1`` of entry 0, with the entry's
bytes as ``extra``, in a signed checkpoint of the new origin). A rewound log that opens a fresh
year is refused like one that rewinds within a year; an earlier year than the last one seen
is refused, and a year that a later one succeeded accepts no growth.

Requests are checked and the state updated under one lock and one SQLite write transaction,
so two concurrent submissions cannot roll the state back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .cosignature import Cosigner
from .entry import EntryError, parse_entry
from .merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion
from .note import Checkpoint, NoteError, Verifier, open_note, parse_note

__all__ = [
    "MAX_BODY",
    "MAX_PROOF_LINES",
    "PROOF_HEADER",
    "LogFamily",
    "Response",
    "Witness",
    "WitnessHTTPServer",
    "add_checkpoint_body",
    "open_origin_body",
    "read_cosigner",
    "write_cosigner",
]

MAX_PROOF_LINES = 63
MAX_BODY = 1 << 20
PROOF_HEADER = "c2sp.org/tlog-proof@v1"
EMPTY_ROOT = hashlib.sha256(b"").digest()
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_YEAR = re.compile(r"[0-9]{4}")
log = logging.getLogger("azdev_ica.witness")


class _Refused(Exception):
    def __init__(self, status: int, reason: str, *, record: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.record = record


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class LogFamily:
    """A log the witness serves: its origin (or, for yearly shards, the origin prefix that is
    followed by ``/<year>``) and the log's verifier keys (several while a key rotates)."""

    prefix: str
    keys: tuple[Verifier, ...]

    def year(self, origin: str) -> int | None:
        """The shard year of ``origin`` if it belongs to this family (None: the plain log)."""
        rest = origin[len(self.prefix) + 1 :]
        return int(rest) if _YEAR.fullmatch(rest) else None

    def owns(self, origin: str) -> bool:
        if origin == self.prefix:
            return True
        return origin.startswith(self.prefix + "/") and self.year(origin) is not None


# --- request bodies (also used by the log's client) -------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def add_checkpoint_body(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """The tlog-witness ``add-checkpoint`` request body."""
    lines = [f"old {old_size}", *(_b64(h) for h in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode("utf-8")


def open_origin_body(entry0: bytes, proof: Sequence[bytes], note: str) -> bytes:
    """The ``open-origin`` request body: a tlog-proof@v1 of entry 0 carrying its bytes."""
    lines = [PROOF_HEADER, f"extra {_b64(entry0)}", "index 0", *(_b64(h) for h in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode("utf-8")


def _decode_hash(line: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(line.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise _Refused(400, f"{what} is not base64") from None
    if len(raw) != 32:
        raise _Refused(400, f"{what} is not a 32-byte hash")
    return raw


def _split_head(body: bytes) -> tuple[list[str], str]:
    """The header lines before the empty line, and the note after it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(400, "the body is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise _Refused(400, "the body has no empty line before the checkpoint")
    return head.split("\n"), note


# --- the witness ------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS witness_checkpoint (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT,
    cosigned_at INTEGER NOT NULL,
    opened_from TEXT
);
CREATE TABLE IF NOT EXISTS witness_refusal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    origin TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    request TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class _State:
    origin: str
    size: int
    root: bytes
    opened_from: str | None


class Witness:
    """The witness's checks and state; `WitnessHTTPServer` puts it on HTTP."""

    def __init__(
        self,
        state_file: Path,
        cosigner: Cosigner,
        logs: Iterable[LogFamily],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cosigner = cosigner
        self.logs = list(logs)
        self.clock = clock
        self._lock = threading.Lock()
        state_file.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(state_file, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a cosignature is answered only once stored
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reading the state --

    def _state(self, origin: str) -> _State | None:
        row = self._db.execute(
            "SELECT origin, size, root, opened_from FROM witness_checkpoint WHERE origin = ?",
            (origin,),
        ).fetchone()
        return _State(row[0], row[1], bytes(row[2]), row[3]) if row else None

    def _latest_year(self, family: LogFamily, other_than: str) -> tuple[int, _State] | None:
        best: tuple[int, _State] | None = None
        rows = self._db.execute(
            "SELECT origin FROM witness_checkpoint WHERE origin LIKE ? ESCAPE '\\'",
            (family.prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%",),
        ).fetchall()
        for (origin,) in rows:
            year = family.year(origin)
            if origin == other_than or year is None:
                continue
            state = self._state(origin)
            if state is not None and (best is None or year > best[0]):
                best = (year, state)
        return best

    def latest(self, origin: str) -> tuple[int, str | None] | None:
        """The size and note of the latest checkpoint cosigned for ``origin`` (None: none)."""
        with self._lock:
            row = self._db.execute(
                "SELECT size, note FROM witness_checkpoint WHERE origin = ?", (origin,)
            ).fetchone()
        return (row[0], row[1]) if row else None

    def refusals(self) -> list[tuple[str, int, str]]:
        """Every refused request recorded: origin, status, reason (oldest first)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT origin, status, reason FROM witness_refusal ORDER BY id"
            ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    # -- common checks --

    def _family(self, origin: str) -> LogFamily:
        for family in self.logs:
            if family.owns(origin):
                return family
        raise _Refused(404, f"unknown log origin {origin!r}")

    def _open_checkpoint(self, note: str) -> tuple[Checkpoint, LogFamily]:
        try:
            parsed = parse_note(note)
            checkpoint = Checkpoint.parse(parsed.text)
        except NoteError as exc:
            raise _Refused(400, f"the checkpoint is malformed: {exc}") from None
        family = self._family(checkpoint.origin)
        try:
            open_note(note, family.keys)
        except NoteError as exc:
            raise _Refused(
                403, f"the checkpoint is not signed by a trusted log key: {exc}"
            ) from None
        return checkpoint, family

    def _handle(self, action: Callable[[], Response], request: bytes) -> Response:
        try:
            return action()
        except _Refused as refused:
            if refused.record:
                self._record_refusal(refused, request)
            return Response(refused.status, refused.reason + "\n")

    def _record_refusal(self, refused: _Refused, request: bytes) -> None:
        origin = request.decode("utf-8", "replace").split("\n\n", 1)[-1].split("\n", 1)[0]
        log.warning("witness refused a checkpoint of %s: %s", origin, refused.reason)
        with self._lock:
            self._db.execute(
                "INSERT INTO witness_refusal (at, origin, status, reason, request) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    int(self.clock()),
                    origin,
                    refused.status,
                    refused.reason,
                    request.decode("utf-8", "replace"),
                ),
            )

    # -- add-checkpoint --

    def add_checkpoint(self, body: bytes) -> Response:
        return self._handle(lambda: self._add_checkpoint(body), body)

    def _add_checkpoint(self, body: bytes) -> Response:
        head, note = _split_head(body)
        first = head[0]
        if not first.startswith("old ") or not _DECIMAL.fullmatch(first[4:]):
            raise _Refused(400, "the first line must be 'old <size>'")
        old = int(first[4:])
        proof_lines = head[1:]
        if len(proof_lines) > MAX_PROOF_LINES:
            raise _Refused(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
        proof = [_decode_hash(line, f"proof line {i}") for i, line in enumerate(proof_lines, 1)]
        checkpoint, family = self._open_checkpoint(note)
        if old > checkpoint.size:
            raise _Refused(400, f"old size {old} is larger than the checkpoint size")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                response = self._cosign_locked(checkpoint, family, old, proof, note)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return response

    def _cosign_locked(
        self, cp: Checkpoint, family: LogFamily, old: int, proof: list[bytes], note: str
    ) -> Response:
        state = self._state(cp.origin)
        known = state.size if state is not None else 0
        if old != known:
            return Response(409, f"{known}\n", SIZE_CONTENT_TYPE)
        if cp.size == 0 and cp.root_hash != EMPTY_ROOT:
            raise _Refused(
                422, "a checkpoint of size 0 must have the empty tree's root", record=True
            )
        if old == 0 and proof:
            raise _Refused(422, "old size 0 takes no consistency proof", record=True)
        if state is not None and old > 0:
            try:
                verify_consistency(old, cp.size, proof, state.root, cp.root_hash)
            except ProofError as exc:
                raise _Refused(
                    422,
                    f"{cp.origin} at size {cp.size} is not consistent with the checkpoint of "
                    f"size {old} this witness cosigned: {exc}",
                    record=True,
                ) from None
        self._check_shard_order(cp, family, state)
        timestamp = max(1, int(self.clock()))
        line = self.cosigner.cosign(cp.body(), timestamp)
        self._db.execute(
            "INSERT INTO witness_checkpoint (origin, size, root, note, cosigned_at, opened_from)"
            " VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT (origin) DO UPDATE SET size ="
            " excluded.size, root = excluded.root, note = excluded.note,"
            " cosigned_at = excluded.cosigned_at",
            (cp.origin, cp.size, cp.root_hash, note, timestamp),
        )
        return Response(200, line)

    def _check_shard_order(self, cp: Checkpoint, family: LogFamily, state: _State | None) -> None:
        year = family.year(cp.origin)
        if year is None:
            return
        other = self._latest_year(family, cp.origin)
        if other is None:
            return  # the first year this witness sees of the log: trusted on first use
        other_year, other_state = other
        if other_year > year and (state is None or cp.size != state.size):
            raise _Refused(
                422,
                f"{cp.origin} was succeeded by {other_state.origin}: its history is closed",
                record=True,
            )
        if other_year < year and state is None:
            raise _Refused(
                422,
                f"{cp.origin} does not chain to {other_state.origin}, the last year this witness "
                "cosigned: open it with open-origin (entry 0 embeds the previous final checkpoint)",
                record=True,
            )

    # -- open-origin (yearly shards) --

    def open_origin(self, body: bytes) -> Response:
        return self._handle(lambda: self._open_origin(body), body)

    def _open_origin(self, body: bytes) -> Response:
        head, note = _split_head(body)
        if len(head) < 3 or head[0] != PROOF_HEADER or not head[1].startswith("extra "):
            raise _Refused(400, f"the body must be a {PROOF_HEADER} with 'extra <entry 0>'")
        try:
            entry0 = base64.b64decode(head[1][6:].encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            raise _Refused(400, "extra is not base64") from None
        if head[2] != "index 0":
            raise _Refused(400, "open-origin proves entry 0: 'index 0'")
        proof = [_decode_hash(line, f"proof line {i}") for i, line in enumerate(head[3:], 1)]
        cp, family = self._open_checkpoint(note)
        year = family.year(cp.origin)
        if year is None:
            raise _Refused(400, f"{cp.origin} is not a yearly shard of {family.prefix}")
        try:
            verify_inclusion(leaf_hash(entry0), 0, cp.size, proof, cp.root_hash)
        except ProofError as exc:
            raise _Refused(422, f"entry 0 is not in the checkpoint: {exc}", record=True) from None
        previous_origin, previous_note = self._genesis(entry0, cp.origin)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                response = self._open_locked(cp, family, year, previous_origin, previous_note)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return response

    @staticmethod
    def _genesis(entry0: bytes, origin: str) -> tuple[str | None, str | None]:
        try:
            entry = parse_entry(entry0)
        except EntryError as exc:
            raise _Refused(422, f"entry 0 is not a ledger entry: {exc}", record=True) from None
        body: dict[str, Any] = entry.body
        data = body.get("data")
        if entry.origin != origin or entry.index != 0 or body.get("action") != "ledger.open":
            raise _Refused(422, f"entry 0 is not the ledger.open entry of {origin}", record=True)
        if not isinstance(data, dict):
            raise _Refused(422, "entry 0 has no data", record=True)
        prev_origin, prev_note = data.get("previous_origin"), data.get("previous_checkpoint")
        if not isinstance(prev_origin, str | None) or not isinstance(prev_note, str | None):
            raise _Refused(422, "entry 0's previous checkpoint is malformed", record=True)
        return prev_origin, prev_note

    def _open_locked(
        self,
        cp: Checkpoint,
        family: LogFamily,
        year: int,
        previous_origin: str | None,
        previous_note: str | None,
    ) -> Response:
        if self._state(cp.origin) is not None:
            return Response(200, f"{cp.origin} is open\n")
        other = self._latest_year(family, cp.origin)
        if other is not None:
            other_year, last = other
            if other_year > year:
                raise _Refused(
                    422, f"{cp.origin} is older than {last.origin}, already cosigned", record=True
                )
            if previous_origin != last.origin or previous_note is None:
                raise _Refused(
                    422,
                    f"entry 0 of {cp.origin} chains to {previous_origin!r}, but the last year this "
                    f"witness cosigned is {last.origin}",
                    record=True,
                )
            try:
                previous = Checkpoint.parse(parse_note(previous_note).text)
                open_note(previous_note, family.keys)
            except NoteError as exc:
                raise _Refused(
                    422, f"entry 0's previous checkpoint does not verify: {exc}", record=True
                ) from None
            if (previous.origin, previous.size, previous.root_hash) != (
                last.origin,
                last.size,
                last.root,
            ):
                raise _Refused(
                    422,
                    f"entry 0 of {cp.origin} embeds {previous.origin} at size {previous.size}, "
                    f"but this witness last cosigned it at size {last.size} with another root "
                    "or size: the log was rewound",
                    record=True,
                )
        self._db.execute(
            "INSERT INTO witness_checkpoint (origin, size, root, note, cosigned_at, opened_from)"
            " VALUES (?, 0, ?, NULL, ?, ?)",
            (cp.origin, EMPTY_ROOT, int(self.clock()), previous_origin),
        )
        return Response(200, f"{cp.origin} is open\n")


# --- HTTP -------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: WitnessHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the spec recommends

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, response: Response) -> None:
        data = response.body.encode("utf-8")
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        prefix = self.server.prefix
        routes = {
            f"{prefix}/add-checkpoint": self.server.witness.add_checkpoint,
            f"{prefix}/open-origin": self.server.witness.open_origin,
        }
        action = routes.get(path)
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self.close_connection = True
            self._send(Response(411, "Content-Length is required\n"))
            return
        length = int(length_text)
        if length > MAX_BODY:
            self.close_connection = True
            self._send(Response(413, "the request body is too large\n"))
            return
        body = self.rfile.read(length)
        if action is None:
            self._send(Response(404, "not found\n"))
            return
        try:
            self._send(action(body))
        except Exception:  # never a stack trace to the client
            log.exception("witness request failed")
            self._send(Response(500, "internal error\n"))

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == f"{self.server.prefix}/key":
            self._send(Response(200, self.server.witness.cosigner.verifier().key_string() + "\n"))
        else:
            self._send(Response(404, "not found\n"))


class WitnessHTTPServer(ThreadingHTTPServer):
    """The witness on HTTP: ``POST <prefix>/add-checkpoint``, ``POST <prefix>/open-origin`` and
    ``GET <prefix>/key`` (its verifier key)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], witness: Witness, prefix: str = "") -> None:
        self.witness = witness
        self.prefix = prefix.rstrip("/")
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{self.prefix}"


# --- key files --------------------------------------------------------------------------------


def write_cosigner(path: Path, name: str) -> Cosigner:
    """Create the witness key file (mode 0600); refuse to overwrite one."""
    import os

    cosigner = Cosigner.generate(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(cosigner.key_string() + "\n")
    return cosigner


def read_cosigner(path: Path) -> Cosigner:
    """Read the witness key file; it must not be readable by group or others."""
    mode = path.stat().st_mode & 0o077
    if mode:
        raise NoteError(f"{path} is readable by others (mode {oct(mode)}): chmod 600 it")
    return Cosigner.from_key_string(path.read_text(encoding="utf-8"))


def read_logs(lines: Iterable[str]) -> list[LogFamily]:
    """Parse ``<origin or origin prefix> <log vkey> [<vkey> ...]`` lines (``#`` comments)."""
    families: list[LogFamily] = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        prefix, *vkeys = line.split()
        if not vkeys:
            raise NoteError(f"log line {number}: '<origin prefix> <vkey> [<vkey>...]'")
        families.append(LogFamily(prefix.rstrip("/"), tuple(map(Verifier.from_key_string, vkeys))))
    return families
