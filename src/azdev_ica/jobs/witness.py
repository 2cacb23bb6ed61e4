"""Submitting signed checkpoints to witnesses (C2SP tlog-witness) and keeping their
cosignatures (the scheduler's `witness` job, every `ICA_JOBS_INTERVAL_SECONDS`).

For each witness of `ICA_WITNESSES`, for each yearly shard in order, the latest signed
checkpoint goes to ``POST <url>/add-checkpoint`` with the consistency proof from the size that
witness last cosigned (as far as the database knows; a 409 answer names the witness's real
size, and the request is made again from there). A shard that follows another is first opened
at the witness (``POST <url>/open-origin``: entry 0, which embeds the previous shard's final
checkpoint, with its inclusion proof) so the witness can check that the years chain.

The answer's cosignature lines are verified with the witness's key before they are stored and
published: the cosigned note (the log's signature plus every cosignature) replaces the note in
the outside checkpoint store, and the API and the yearly export serve it.

What goes wrong, and what happens (`services/witnesses.py` records it):

- the witness is unreachable, slow, or answers something unexpected: retried at the next pass;
  a warning alert once it has failed for `ICA_WITNESS_ALERT_MINUTES`; signing goes on;
- the witness refuses (422: not consistent with what it cosigned), or says it has cosigned a
  larger tree than the log has now: history was rewritten; the refusal is stored, a critical
  alert raised, and the sealer stops until an operator resolves it.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select

from azdev_ica.adapters.checkpoint_store import CheckpointStoreError
from azdev_ica.db.tables import AuditCheckpoint, AuditEntry, AuditShard, WitnessCosignature
from azdev_ica.db.types import stored_bytes
from azdev_ica.jobs.sealer import checkpoint_store, node_reader
from azdev_ica.ledger.cosignature import CosignatureVerifier, append_cosignatures
from azdev_ica.ledger.merkle import consistency_proof, inclusion_proof
from azdev_ica.ledger.note import NoteError, parse_note
from azdev_ica.ledger.witness import add_checkpoint_body, open_origin_body
from azdev_ica.services import witnesses as records
from azdev_ica.services.context import ServiceContext

__all__ = ["PassResult", "WitnessTarget", "submit_all"]

log = logging.getLogger("azdev_ica.ledger")


@dataclass(frozen=True)
class WitnessTarget:
    """A witness ICA submits to: its name (the key's), URL prefix and verifier key."""

    url: str
    verifier: CosignatureVerifier

    @property
    def name(self) -> str:
        return self.verifier.name

    @classmethod
    def from_setting(cls, url: str, vkey: str) -> WitnessTarget:
        return cls(url.rstrip("/"), CosignatureVerifier.from_key_string(vkey))


@dataclass
class PassResult:
    cosigned: list[tuple[str, str, int]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


class _Unreachable(Exception):
    pass


class _Refusal(Exception):
    def __init__(self, origin: str, size: int, status: int, reason: str) -> None:
        super().__init__(reason)
        self.origin, self.size, self.status, self.reason = origin, size, status, reason


def _post(url: str, body: bytes, timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(  # noqa: S310 - the operator's configured witness URL
        url, data=body, method="POST", headers={"Content-Type": "text/plain; charset=utf-8"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(65536).decode("utf-8", "replace")
    except (OSError, ValueError) as exc:  # refused, reset, timed out, bad URL
        raise _Unreachable(f"{type(exc).__name__}: {exc}") from None


def _cosignature_lines(ctx: ServiceContext, year: int, size: int) -> list[str]:
    with ctx.read() as session:
        return list(
            session.scalars(
                select(WitnessCosignature.line)
                .where(WitnessCosignature.year == year, WitnessCosignature.size == size)
                .order_by(WitnessCosignature.witness)
            )
        )


def _submit_shard(
    ctx: ServiceContext, target: WitnessTarget, shard: AuditShard, previous: bool, timeout: float
) -> bool:
    """Get ``target``'s cosignature on the shard's latest checkpoint; True when new."""
    with ctx.read() as session:
        checkpoint = session.scalars(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.year == shard.year)
            .order_by(AuditCheckpoint.size.desc())
            .limit(1)
        ).first()
        if checkpoint is None:
            return False
        if session.get(WitnessCosignature, (shard.year, checkpoint.size, target.name)):
            return False
        old = session.scalar(
            select(func.max(WitnessCosignature.size)).where(
                WitnessCosignature.year == shard.year, WitnessCosignature.witness == target.name
            )
        )
        size, note, signed_at = checkpoint.size, checkpoint.note, checkpoint.signed_at
        get_nodes = node_reader(session, shard.year)
        opening = None
        if previous and old is None:
            entry0 = session.scalar(
                select(AuditEntry.entry).where(AuditEntry.year == shard.year, AuditEntry.idx == 0)
            )
            if entry0 is not None:
                opening = open_origin_body(
                    stored_bytes(entry0), inclusion_proof(0, size, get_nodes), note
                )
    if opening is not None:
        status, text = _post(f"{target.url}/open-origin", opening, timeout)
        if status == 422:
            raise _Refusal(shard.origin, size, status, text.strip())
        if status != 200:
            raise _Unreachable(f"open-origin answered {status}: {text.strip()[:200]}")
    known = old or 0
    for _ in range(3):
        with ctx.read() as session:
            proof = (
                consistency_proof(known, size, node_reader(session, shard.year))
                if 0 < known < size
                else []
            )
        status, text = _post(
            f"{target.url}/add-checkpoint", add_checkpoint_body(known, proof, note), timeout
        )
        if status == 409:
            hint = text.strip()
            if not hint.isdigit():
                raise _Unreachable(f"add-checkpoint answered 409 without a size: {hint[:100]}")
            if int(hint) > size:
                raise _Refusal(
                    shard.origin,
                    size,
                    status,
                    f"the witness has cosigned {shard.origin} at size {hint}, but the log's "
                    f"tree has only {size} entries: the log was rewound",
                )
            known = int(hint)
            continue
        if status == 422:
            raise _Refusal(shard.origin, size, status, text.strip()[:1000])
        if status != 200:
            raise _Unreachable(f"add-checkpoint answered {status}: {text.strip()[:200]}")
        return _keep(ctx, target, shard, size, note, text, signed_at)
    raise _Unreachable("the witness's size kept changing (409 three times)")


def _keep(
    ctx: ServiceContext,
    target: WitnessTarget,
    shard: AuditShard,
    size: int,
    note: str,
    text: str,
    signed_at: datetime,
) -> bool:
    try:
        checkpoint_text = parse_note(note).text
        lines = [ln for ln in text.splitlines() if ln]
        found = None
        for line in lines:
            signature = parse_note(checkpoint_text + "\n" + line + "\n").signatures[0]
            if target.verifier.matches(signature):
                found = target.verifier.verify(checkpoint_text, signature)
                break
    except NoteError as exc:
        raise _Unreachable(f"the witness answered an invalid cosignature: {exc}") from None
    if found is None:
        raise _Unreachable("the witness answered no cosignature by its configured key")
    now = ctx.clock.now()
    if found.timestamp > now.timestamp() + 600:
        raise _Unreachable(f"the cosignature's time {found.timestamp} lies in the future")
    new = records.store_cosignature(ctx, year=shard.year, size=size, cosignature=found, at=now)
    store = checkpoint_store(ctx.ledger)
    if store is not None:
        full = append_cosignatures(note, _cosignature_lines(ctx, shard.year, size))
        try:
            store.put(shard.origin, size, full, signed_at)
        except CheckpointStoreError as exc:  # published at the next pass
            log.warning("could not publish the cosigned checkpoint: %s", exc)
    return new


def submit_all(
    ctx: ServiceContext,
    targets: Sequence[WitnessTarget],
    *,
    alert_after: timedelta = timedelta(minutes=15),
    timeout: float = 5.0,
) -> PassResult:
    """One pass over every witness (see the module docstring)."""
    result = PassResult()
    if not targets:
        return result
    with ctx.read() as session:
        if records.unresolved_refusal(session) is not None:
            return result  # the sealer is stopped; nothing new is signed
        shards = list(session.scalars(select(AuditShard).order_by(AuditShard.year)))
        for shard in shards:
            session.expunge(shard)
    for target in targets:
        try:
            for position, shard in enumerate(shards):
                if _submit_shard(ctx, target, shard, position > 0, timeout):
                    result.cosigned.append((target.name, shard.origin, shard.year))
        except _Unreachable as exc:
            error = str(exc)
            log.warning("witness %s: %s", target.name, error)
            records.record_failure(ctx, target.name, error, ctx.clock.now(), alert_after)
            result.failed.append((target.name, error))
            continue
        except _Refusal as refusal:
            log.critical("witness %s refused: %s", target.name, refusal.reason)
            records.record_refusal(
                ctx,
                witness=target.name,
                origin=refusal.origin,
                size=refusal.size,
                status=refusal.status,
                reason=refusal.reason,
                at=ctx.clock.now(),
            )
            result.refused.append((target.name, refusal.reason))
            continue
        records.record_success(ctx, target.name, ctx.clock.now())
    return result
