"""Delivering the outbox: due rows are claimed, sent by their channel's sender, and recorded.

A row is *due* while it is `pending` and its `next_attempt_at` has come. Each row is **claimed**
with one conditional UPDATE (`attempts + 1`, `next_attempt_at` pushed `outbox_claim_seconds`
ahead, only WHERE it is still pending and due): of two processes that see the same row, the
database lets exactly one claim it, on SQLite and on PostgreSQL alike. The scheduler also runs
delivery under a lease, so normally one process delivers at all; the claim is what makes a
second one (a paused leaseholder waking up) harmless. The outcome is written only while the
claim is still the writer's (same `attempts`).

Outcomes: accepted → `delivered`, and a sealed credential the row carried (an Azure DevOps
check's AuthToken, `token_sealed`) is deleted in the same transaction, from the row and from the
waiting check it came from: it is kept no longer than it is needed; a temporary failure →
`pending` again after an exponential back-off with jitter (`outbox_backoff_seconds *
2**(attempts-1)`, capped, times a random factor in [0.5, 1)), or later if the other side asked
with `Retry-After`; a permanent failure (HTTP 400, SMTP 550, no sender for the channel) or the
last allowed attempt → `failed`. `ica outbox retry` puts failed rows back. A process that dies
between sending and recording leaves the row claimed; it is sent again when the claim runs out
(at least once, never lost).

`notify` rows are not sent themselves: they fan out, in one transaction, into one row per
channel that `ICA_NOTIFY` routes their topic and tenant to (and, for e-mail, one per recipient),
and are then `delivered`.

`last_error` holds the sender's own text (see `adapters/notify`: never a URL, key or address);
for any other exception only its type name is kept.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from azdev_ica.adapters.notify import DeliveryError, check_http_status, find_sender
from azdev_ica.adapters.notify.config import EmailChannel
from azdev_ica.db.tables import OutboxMessage, Person, RoleGrant
from azdev_ica.services.approvals import forget_callback_token
from azdev_ica.services.context import ServiceContext
from azdev_ica.services.outbox import DELIVERED, FAILED, NO_ROUTE, NOTIFY_CHANNEL, PENDING
from azdev_ica.settings import Settings

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 86_400.0
SEALED_TOKEN = "token_sealed"  # noqa: S105 - the name of a payload field


@dataclass
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    fanned_out: int = 0
    skipped: int = 0  # claimed by someone else first
    errors: list[str] = field(default_factory=list)


def backoff_seconds(settings: Settings, attempts: int, jitter: float) -> float:
    """The wait after the `attempts`-th failed attempt; `jitter` in [0, 1)."""
    base: float = settings.outbox_backoff_seconds * 2.0 ** min(max(attempts - 1, 0), 40)
    return min(settings.outbox_backoff_max_seconds, base) * (0.5 + jitter / 2)


def deliver_due(
    ctx: ServiceContext,
    settings: Settings,
    *,
    limit: int | None = None,
    rng: Callable[[], float] = random.random,
) -> DeliveryReport:
    """Deliver what is due now (at most `limit` rows per pass). When `notify` rows fanned out,
    a second pass sends what they became."""
    report = DeliveryReport()
    _pass(ctx, settings, report, limit or settings.outbox_batch_size, rng)
    if report.fanned_out:
        _pass(ctx, settings, report, limit or settings.outbox_batch_size, rng)
    return report


def _pass(
    ctx: ServiceContext,
    settings: Settings,
    report: DeliveryReport,
    limit: int,
    rng: Callable[[], float],
) -> None:
    now = ctx.clock.now()
    with ctx.read() as session:
        due = list(
            session.scalars(
                select(OutboxMessage.id)
                .where(OutboxMessage.state == PENDING, OutboxMessage.next_attempt_at <= now)
                .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
                .limit(limit)
            )
        )
    for message_id in due:
        message = _claim(ctx, settings, message_id)
        if message is None:
            report.skipped += 1
            continue
        if message.channel == NOTIFY_CHANNEL:
            report.fanned_out += _fan_out(ctx, settings, message)
            continue
        _send(ctx, settings, message, report, rng)


def _claim(ctx: ServiceContext, settings: Settings, message_id: int) -> OutboxMessage | None:
    """Claim one row for this process; a detached copy of it, or None if it is not ours."""

    def action(session: Session) -> OutboxMessage | None:
        now = ctx.clock.now()
        claimed = (
            session.connection()
            .execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == message_id,
                    OutboxMessage.state == PENDING,
                    OutboxMessage.next_attempt_at <= now,
                )
                .values(
                    attempts=OutboxMessage.attempts + 1,
                    next_attempt_at=now + timedelta(seconds=settings.outbox_claim_seconds),
                )
            )
            .rowcount
        )
        if not claimed:
            return None
        row = session.get(OutboxMessage, message_id, populate_existing=True)
        if row is not None:
            session.expunge(row)
        return row

    return ctx.run_action(action)


def _record(ctx: ServiceContext, message: OutboxMessage, **values: Any) -> bool:
    """Write an outcome while the claim is still ours; False if it was lost meanwhile."""

    def action(session: Session) -> bool:
        done = (
            session.connection()
            .execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == message.id,
                    OutboxMessage.state == PENDING,
                    OutboxMessage.attempts == message.attempts,
                )
                .values(**values)
            )
            .rowcount
        )
        if done and values.get("state") == DELIVERED and SEALED_TOKEN in message.payload:
            forget_callback_token(session, message.payload)
        return bool(done)

    return ctx.run_action(action)


def _send(
    ctx: ServiceContext,
    settings: Settings,
    message: OutboxMessage,
    report: DeliveryReport,
    rng: Callable[[], float],
) -> None:
    sender = find_sender(message.channel)
    error: DeliveryError | None = None
    if sender is None:
        error = DeliveryError(f"no sender for channel {message.channel!r}", permanent=True)
    else:
        try:
            sender(message, settings)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # a sender's own failure: temporary, and only its type
            error = _classify(exc)
    now = ctx.clock.now()
    if error is None:
        values: dict[str, Any] = {"state": DELIVERED, "delivered_at": now, "last_error": None}
        if SEALED_TOKEN in message.payload:
            values["payload"] = {k: v for k, v in message.payload.items() if k != SEALED_TOKEN}
        if _record(ctx, message, **values):
            report.delivered += 1
        return
    reason = error.reason[:1000]
    report.errors.append(f"outbox {message.id} ({message.channel}): {reason}")
    if error.permanent or message.attempts >= settings.outbox_max_attempts:
        if _record(ctx, message, state=FAILED, last_error=reason):
            report.failed += 1
            log.warning(
                "outbox %s (%s, %s) failed after %s attempts: %s",
                message.id,
                message.channel,
                message.topic,
                message.attempts,
                reason,
            )
        return
    delay = backoff_seconds(settings, message.attempts, rng())
    if error.retry_after is not None:
        delay = max(delay, min(error.retry_after, MAX_RETRY_AFTER))
    if _record(ctx, message, next_attempt_at=now + timedelta(seconds=delay), last_error=reason):
        report.retried += 1
        log.info(
            "outbox %s (%s): %s; next attempt in %.0f s", message.id, message.channel, reason, delay
        )


def _classify(exc: Exception) -> DeliveryError:
    """A sender raised something else: an HTTP status error is judged by its status; any other
    exception is temporary. Only type names and status codes are kept (messages may hold URLs)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        try:
            check_http_status(status, getattr(response, "headers", None), type(exc).__name__)
        except DeliveryError as judged:
            return judged
    return DeliveryError(f"sender raised {type(exc).__name__}")


# --- the notify fan-out ------------------------------------------------------------------------


def _fan_out(ctx: ServiceContext, settings: Settings, message: OutboxMessage) -> int:
    """Replace a claimed `notify` row by one row per routed channel (per e-mail recipient)."""
    config = settings.notify
    topic = str(message.payload.get("topic") or message.topic)
    names = config.destinations(topic, message.tenant)

    def action(session: Session) -> int:
        now = ctx.clock.now()
        children: list[OutboxMessage] = []
        for name in names:
            channel = config.channels[name]
            base = {**message.payload, "destination": name, "notify_id": message.id}
            if isinstance(channel, EmailChannel):
                addresses = list(channel.to)
                if channel.to_role_holders:
                    addresses += recipients(
                        session, message.payload.get("roles"), message.tenant, now
                    )
                for address in dict.fromkeys(addresses):
                    children.append(_child(message, channel.type, {**base, "to": address}, now))
            else:
                children.append(_child(message, channel.type, base, now))
        owned = (
            session.connection()
            .execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == message.id,
                    OutboxMessage.state == PENDING,
                    OutboxMessage.attempts == message.attempts,
                )
                # Without a route nobody is told: say so rather than "delivered" (its
                # delivered_at is when that was settled, for retention).
                .values(state=DELIVERED if names else NO_ROUTE, delivered_at=now, last_error=None)
            )
            .rowcount
        )
        if not owned:
            return 0
        session.add_all(children)
        return len(children)

    fanned = ctx.run_action(action)
    if not names:
        log.debug("outbox %s: no notification route for %s", message.id, topic)
    return fanned


def _child(
    parent: OutboxMessage, channel: str, payload: dict[str, Any], now: datetime
) -> OutboxMessage:
    return OutboxMessage(
        created_at=now,
        topic=parent.topic,
        channel=channel,
        tenant=parent.tenant,
        subject_type=parent.subject_type,
        subject_id=parent.subject_id,
        payload=payload,
        state=PENDING,
        attempts=0,
        next_attempt_at=now,
    )


def recipients(session: Session, roles: Any, tenant: str | None, now: datetime) -> list[str]:
    """E-mail addresses of the enabled persons holding one of `roles` for `tenant` at `now`
    (a grant for every tenant counts), in a stable order."""
    wanted = [str(role) for role in roles] if isinstance(roles, list) else []
    if not wanted:
        return []
    tenant_match: ColumnElement[bool] = RoleGrant.tenant.is_(None)
    if tenant is not None:
        tenant_match = or_(tenant_match, RoleGrant.tenant == tenant)
    rows = session.execute(
        select(Person.email)
        .join(RoleGrant, RoleGrant.person_id == Person.id)
        .where(
            RoleGrant.role.in_(wanted),
            tenant_match,
            RoleGrant.revoked_at.is_(None),
            or_(RoleGrant.expires_at.is_(None), RoleGrant.expires_at > now),
            Person.disabled_at.is_(None),
            Person.email.is_not(None),
        )
        .order_by(Person.id)
    ).all()
    return list(dict.fromkeys(str(row[0]) for row in rows if row[0]))
