"""`ica keys ...` and `ica audit ...`: the ledger's signing keys, sealing, verification, export,
replay and erasure of personal data. Heavy imports happen inside the handlers."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azdev_ica.cli.admin import (
    EXIT_INVALID,
    EXIT_OK,
    _context,
    _fail,
    _guarded,
    _settings,
    add_output,
)

if TYPE_CHECKING:
    from azdev_ica.services.context import ServiceContext
    from azdev_ica.settings import Settings

EXIT_FAILED = 1  # the ledger failed verification or replay (as `verify.py` exits)
# `ica audit verify`: everything verifies, but the oldest record not sealed yet is older than
# ICA_LEDGER_STALL_AFTER_SECONDS: the ledger is stalled (the report says why).
EXIT_STALLED = 4


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="the audit ledger's signing keys").add_subparsers(
        dest="keys_command", metavar="ACTION", required=True
    )
    init = keys.add_parser(
        "init",
        help="create the ledger signing key file (mode 0600); never overwrites one",
        description="Writes an Ed25519 signing key to ICA_LEDGER_KEY_FILE (default "
        "<data dir>/ledger.key) unless the file exists, and registers its public key when "
        "the database is reachable. Every replica mounts the same file.",
    )
    init.add_argument("--name", help="key name (default: <public host>/audit)")
    init.set_defaults(func=_keys_init)
    rotate = keys.add_parser(
        "rotate",
        help="add a new signing key to the file and make it the current key",
        description="Appends a new key to the key file and registers it, valid from now plus "
        "the grace period (which lets every replica see the new file first); the previous "
        "key stays valid until then and verifies the checkpoints it signed forever.",
    )
    rotate.add_argument("--grace-seconds", type=int, default=60, metavar="N")
    rotate.set_defaults(func=_keys_rotate)
    listing = keys.add_parser("list", help="the registered public keys and their validity")
    listing.add_argument("--output", choices=("text", "json"), default="text")
    listing.set_defaults(func=_keys_list)

    audit = sub.add_parser("audit", help="the tamper-evident audit ledger").add_subparsers(
        dest="audit_command", metavar="ACTION", required=True
    )
    from azdev_ica.cli.listing import register_audit_query
    from azdev_ica.cli.pipeline import common_arguments

    register_audit_query(audit, common_arguments())
    audit.add_parser(
        "seal", help="seal what is pending and sign a checkpoint now (when no server seals)"
    ).set_defaults(func=_audit_seal)
    verify = audit.add_parser(
        "verify",
        help="rebuild the tree from the database and check every checkpoint, inside and out",
        description="Exit 0 when everything verifies, 1 when something does not (the report "
        "names the first bad entry index), 3 when the check could not run, 4 when everything "
        "verifies but the ledger is stalled: the oldest record not sealed yet is older than "
        "ICA_LEDGER_STALL_AFTER_SECONDS (default 60). The report gives the backlog (count, "
        "oldest) and why sealing stopped.",
    )
    _trust_options(verify)
    verify.add_argument(
        "--witness-key",
        action="append",
        default=[],
        metavar="VKEY",
        help="a witness's public key (from its operator; repeatable): each shard's latest "
        "checkpoint must carry its cosignature",
    )
    verify.add_argument(
        "--witness-threshold",
        type=int,
        metavar="K",
        help="require K of the --witness-key cosignatures (default: all)",
    )
    verify.add_argument(
        "--known-checkpoints",
        type=Path,
        metavar="DIR",
        help="a folder of checkpoints you kept: the database must not fork from, or fall "
        "behind, any of them",
    )
    add_output(verify)
    verify.add_argument("--quiet", action="store_true", help="no progress display")
    verify.set_defaults(func=_audit_verify)
    export = audit.add_parser(
        "export", help="write a yearly bundle that verifies offline with its own verify.py"
    )
    export.add_argument("--year", type=int, required=True)
    export.add_argument("--out", type=Path, required=True, help="the .tar.gz to write")
    export.set_defaults(func=_audit_export)
    replay = audit.add_parser(
        "replay",
        help="rebuild runs, events, policies and API keys from the ledger and compare",
        description="Rebuilds every projection from the audit entries into a scratch SQLite "
        "database and compares it with the live tables. Exit 1 on any difference.",
    )
    add_output(replay)
    replay.set_defaults(func=_audit_replay)
    erase = audit.add_parser(
        "erase",
        help="erase a person's value (GDPR): the ledger keeps only an unopenable hash",
        description="Deletes the value's opening (the ledger keeps an unopenable salted hash "
        "and still verifies) and clears every live copy: runs' requester columns; for an "
        "e-mail, the people holding it (e-mail, display name, a login that is the e-mail) and "
        "their approval requests' requester provider id; outbox payloads naming any of these. "
        "`ica audit replay` rebuilds the same erased rows.",
    )
    erase.add_argument("--kind", required=True, choices=("email", "provider_user"))
    erase.add_argument("--value", required=True)
    erase.set_defaults(func=_audit_erase)


def _trust_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-key",
        action="append",
        default=[],
        metavar="VKEY",
        help="only this public key may sign (repeatable; default: the registered keys)",
    )
    parser.add_argument("--trust-keys-file", type=Path, metavar="FILE")


def _key_name(settings: Settings, name: str | None) -> str:
    return name or f"{settings.public_host}/audit"


def ensure_signing_key(settings: Settings, ctx: ServiceContext | None) -> None:
    """Create the key file when absent, and register its key when the ledger has none yet
    (what `ica init` does; `make run` relies on it)."""
    from azdev_ica.ledger.keyfile import create_key_file, read_signers

    path = settings.resolved_ledger_key_file()
    created = create_key_file(path, _key_name(settings, None))
    if created is not None:
        print(
            f"created the ledger signing key {path} (mode 0600): every replica needs this "
            "file; keep it secret, back it up"
        )
    if ctx is None:
        return
    _register_first(ctx, read_signers(path)[-1])


def _register_first(ctx: ServiceContext, signer: Any) -> bool:
    from azdev_ica.cli.admin import _operator
    from azdev_ica.jobs.sealer import registered_keys
    from azdev_ica.services.ledger import register_signing_key

    with ctx.read() as session:
        if registered_keys(session):
            return False
    register_signing_key(ctx, actor=_operator(), verifier=signer.verifier())
    print(f"registered the ledger public key {signer.verifier().key_string()}")
    return True


@_guarded
def _keys_init(args: argparse.Namespace) -> int:
    from azdev_ica.ledger.keyfile import create_key_file

    settings = _settings()
    path = settings.resolved_ledger_key_file()
    signer = create_key_file(path, _key_name(settings, args.name))
    if signer is None:
        return _fail(f"{path} exists: not overwritten (use `ica keys rotate` for a new key)")
    print(f"created the ledger signing key {path} (mode 0600); public key:")
    print(signer.verifier().key_string())
    try:
        with _context(settings) as ctx:
            _register_first(ctx, signer)
    except Exception as exc:  # the database may not exist yet: the sealer registers it later
        print(f"(not registered yet: {type(exc).__name__}; the sealer registers it on first use)")
    return EXIT_OK


@_guarded
def _keys_rotate(args: argparse.Namespace) -> int:
    from azdev_ica.cli.admin import _operator
    from azdev_ica.errors import IcaError
    from azdev_ica.ledger.keyfile import KeyFileError, add_signer, read_signers
    from azdev_ica.services.ledger import register_signing_key

    settings = _settings()
    path = settings.resolved_ledger_key_file()
    try:
        current = read_signers(path)[-1]
    except KeyFileError as exc:
        return _fail(str(exc))
    with _context(settings) as ctx:
        signer = add_signer(path, current.name)
        valid_from = ctx.clock.now() + timedelta(seconds=max(0, args.grace_seconds))
        try:
            register_signing_key(
                ctx, actor=_operator(), verifier=signer.verifier(), valid_from=valid_from
            )
        except IcaError as exc:
            return _fail(exc.detail)
    print(f"added a signing key to {path}, valid from {valid_from:%Y-%m-%d %H:%M:%S} UTC:")
    print(signer.verifier().key_string())
    return EXIT_OK


@_guarded
def _keys_list(args: argparse.Namespace) -> int:
    from azdev_ica.ledger.keyfile import KeyFileError, read_signers
    from azdev_ica.queries.audit import public_keys
    from azdev_ica.services.audit import rfc3339

    settings = _settings()
    try:
        held = {
            s.verifier().key_string() for s in read_signers(settings.resolved_ledger_key_file())
        }
    except KeyFileError:
        held = set()
    with _context(settings) as ctx, ctx.read() as session:
        keys = public_keys(session)
    items = [
        {
            "vkey": k.vkey,
            "valid_from": rfc3339(k.valid_from),
            "valid_until": rfc3339(k.valid_until) if k.valid_until else None,
            "in_key_file": k.vkey in held,
        }
        for k in keys
    ]
    if args.output == "json":
        print(json.dumps(items, indent=2))
        return EXIT_OK
    for item in items:
        until = item["valid_until"] or "now"
        mark = "  (in the key file)" if item["in_key_file"] else ""
        print(f"{item['vkey']}  {item['valid_from']} .. {until}{mark}")
    return EXIT_OK


@_guarded
def _audit_seal(_: argparse.Namespace) -> int:
    from azdev_ica.errors import IcaError
    from azdev_ica.jobs.sealer import seal_now

    try:
        with _context(_settings()) as ctx:
            result = seal_now(ctx)
    except IcaError as exc:
        return _fail(exc.detail)
    print(f"sealed {result.sealed} entries")
    for cp in result.checkpoints:
        print(f"signed {cp.origin} at size {cp.size}")
    return EXIT_OK


def _trusted(args: argparse.Namespace) -> list[Any] | None:
    from azdev_ica.ledger.note import Verifier

    lines = list(args.trust_key)
    if args.trust_keys_file:
        text = args.trust_keys_file.read_text(encoding="utf-8")
        lines += [ln.strip() for ln in text.splitlines() if ln.strip() and ln[0] != "#"]
    return [Verifier.from_key_string(line.strip()) for line in lines] or None


def _progress(stream: Any) -> Callable[[int, int], None]:
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and done < total:
            return
        last[0] = now
        percent = f" ({100 * done / total:5.1f}%)" if total else ""
        stream.write(f"\rverifying: {done} of {total} entries{percent}")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show


@_guarded
def _audit_verify(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from azdev_ica.audit.verify import verify_ledger
    from azdev_ica.audit.witnessed import check_known_checkpoints, check_witnessed
    from azdev_ica.jobs.sealer import checkpoint_store
    from azdev_ica.ledger.cosignature import CosignatureVerifier
    from azdev_ica.ledger.note import NoteError
    from azdev_ica.services.context import LedgerConfig
    from azdev_ica.services.ledger_status import ledger_status

    settings = _settings()
    try:
        trusted = _trusted(args)
    except (OSError, NoteError) as exc:
        return _fail(f"bad --trust-key or --trust-keys-file: {exc}")
    try:
        witnesses = [CosignatureVerifier.from_key_string(k) for k in args.witness_key]
    except NoteError as exc:
        return _fail(f"bad --witness-key: {exc}")
    show = None
    if not args.quiet and args.output != "json" and sys.stderr.isatty():
        show = _progress(sys.stderr)
    known = 0
    with _context(settings) as ctx:
        store = checkpoint_store(LedgerConfig.from_settings(settings))
        report = verify_ledger(ctx.db, store, trusted=trusted, progress=show)
        if witnesses:
            report.findings += check_witnessed(ctx.db, store, witnesses, args.witness_threshold)
        if args.known_checkpoints is not None:
            known, findings = check_known_checkpoints(ctx.db, args.known_checkpoints)
            report.findings += findings
        status = ledger_status(ctx)
    report.sealing = asdict(status)
    assurance = _assurance(bool(trusted), len(witnesses), args.witness_threshold, known)
    if args.output == "json":
        print(json.dumps({**report.as_dict(), "assurance": assurance}, indent=2, default=str))
    else:
        print(report.text())
        print(f"assurance: {assurance}")
    if not report.ok:
        return EXIT_FAILED
    age = status.backlog.oldest_age_seconds
    return EXIT_STALLED if age is not None and age > ctx.ledger.stall_after else EXIT_OK


def _assurance(pinned: bool, witnesses: int, threshold: int | None, known: int) -> str:
    """What `ica audit verify` proved, given what the auditor supplied."""
    if not pinned and not witnesses and not known:
        return (
            "internal consistency only: the keys were the database's own, and no witness key "
            "or kept checkpoint was given; whoever can rewrite the database and the store "
            "could have rewritten all of it"
        )
    parts = []
    if pinned:
        parts.append("signed by the pinned log key")
    if witnesses:
        parts.append(f"cosigned by {threshold or witnesses} of {witnesses} given witnesses")
    if known:
        parts.append(f"consistent with {known} checkpoint(s) you kept")
    return "; ".join(parts)


@_guarded
def _audit_export(args: argparse.Namespace) -> int:
    from azdev_ica.audit.export import export_bundle
    from azdev_ica.errors import IcaError
    from azdev_ica.jobs.sealer import checkpoint_store
    from azdev_ica.services.context import LedgerConfig

    settings = _settings()
    try:
        with _context(settings) as ctx:
            store = checkpoint_store(LedgerConfig.from_settings(settings))
            summary = export_bundle(ctx.db, store, year=args.year, out=args.out)
    except IcaError as exc:
        return _fail(exc.detail)
    except OSError as exc:
        return _fail(f"cannot write {args.out}: {exc.strerror or exc}")
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"wrote {summary.out}: {summary.origin}, {summary.entries} entries, "
        f"{summary.checkpoints} checkpoints (signed size {summary.size})"
    )
    print(f"verify: tar -xzf {summary.out.name} && python3 ica-audit-{args.year}/verify.py "
          f"ica-audit-{args.year}")  # fmt: skip
    return EXIT_OK


@_guarded
def _audit_replay(args: argparse.Namespace) -> int:
    from azdev_ica.audit.replay import replay_ledger

    with _context(_settings()) as ctx:
        report = replay_ledger(ctx.db)
    if args.output == "json":
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        print(report.text())
    return EXIT_OK if report.ok else EXIT_FAILED


@_guarded
def _audit_erase(args: argparse.Namespace) -> int:
    from azdev_ica.cli.admin import _operator
    from azdev_ica.errors import IcaError
    from azdev_ica.services.ledger import erase_personal_data

    try:
        with _context(_settings()) as ctx:
            erased = erase_personal_data(ctx, actor=_operator(), kind=args.kind, value=args.value)
    except IcaError as exc:
        return _fail(exc.detail)
    print(
        f"erased {erased.commitment} ({erased.runs_cleared} runs, {erased.people_cleared} "
        f"people, {erased.approvals_cleared} approval requests cleared; "
        f"{erased.outbox_scrubbed} outbox messages scrubbed)"
    )
    return EXIT_OK


__all__ = ["EXIT_FAILED", "EXIT_INVALID", "EXIT_STALLED", "ensure_signing_key", "register"]
