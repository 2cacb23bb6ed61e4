"""`ica witness ...`: a transparency-log witness (C2SP tlog-witness) for ICA's audit ledger, to
run under somebody else's control. It needs no ICA database and no ICA settings: only its own
key file and its own state file."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from azdev_ica.cli.admin import EXIT_INVALID, EXIT_OK, _fail, _guarded, add_output


def register(sub: Any) -> None:
    witness = sub.add_parser(
        "witness",
        help="run a witness that cosigns the ledger's checkpoints (another team's service)",
        description="A C2SP tlog-witness: it cosigns a checkpoint only when it is consistent "
        "with the last one it cosigned for that log, so a rewound ledger cannot get a "
        "cosignature. Run it where ICA's database administrators cannot reach its key or state.",
    ).add_subparsers(dest="witness_command", metavar="ACTION", required=True)
    init = witness.add_parser(
        "init",
        help="create the witness's key file (mode 0600); never overwrites one",
        description="Writes an Ed25519 cosignature key (type 0x04) and prints its verifier "
        "key, the line ICA's ICA_WITNESSES and auditors' --witness-key take.",
    )
    init.add_argument("--key", type=Path, required=True, help="the key file to create")
    init.add_argument("--name", required=True, help="the witness's name, e.g. witness.example/w1")
    init.set_defaults(func=_init)
    key = witness.add_parser("key", help="print the witness's verifier key")
    key.add_argument("--key", type=Path, required=True, help="the witness's key file")
    key.set_defaults(func=_key)
    serve = witness.add_parser(
        "serve",
        help="serve POST /add-checkpoint (and /open-origin for yearly shards) on HTTP",
        description="Logs are given as '<origin prefix> <log vkey>': ICA's log is "
        "'<ICA_PUBLIC_HOST>/audit' with the key `ica keys list` prints; its yearly origins "
        "<prefix>/<year> must chain to each other. State (the last checkpoint cosigned per "
        "origin, and the refusals) goes to --state, a SQLite file of its own.",
    )
    serve.add_argument("--key", type=Path, required=True, help="the witness's key file")
    serve.add_argument("--state", type=Path, required=True, help="the witness's SQLite file")
    serve.add_argument(
        "--log",
        nargs=2,
        action="append",
        default=[],
        metavar=("PREFIX", "VKEY"),
        help="a log to witness: its origin (prefix) and a verifier key of it (repeatable)",
    )
    serve.add_argument(
        "--logs-file", type=Path, help="a file of '<origin prefix> <vkey> [<vkey>...]' lines"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8470)
    serve.add_argument("--prefix", default="", help="URL path prefix, e.g. /witness")
    serve.set_defaults(func=_serve)
    submit = witness.add_parser(
        "submit",
        help="send the latest checkpoints to the witnesses of ICA_WITNESSES now (on ICA's side)",
        description="What the server's `witness` job does at every pass: exit 0, or 1 when a "
        "witness refused (history was rewritten; the sealer stops).",
    )
    submit.set_defaults(func=_submit)
    status = witness.add_parser(
        "status",
        help="ICA's witnesses: answering or failing since when, last cosigned, refusals",
        description="Exit 0, or 1 while a refusal is unresolved (the sealer is stopped).",
    )
    add_output(status)
    status.set_defaults(func=_status)
    resolve = witness.add_parser(
        "resolve",
        help="after a witness refused a checkpoint: let the sealer resume (on ICA's side)",
        description="A witness's refusal stops ICA's sealer (history was rewritten: a "
        "restored or edited database). Once the genuine history is back (e.g. the newest "
        "backup restored, and `ica audit verify --witness-key ...` passes), mark the "
        "refusals resolved; this is recorded in the audit ledger.",
    )
    resolve.add_argument("--note", required=True, help="what was done (kept in the ledger)")
    resolve.set_defaults(func=_resolve)


@_guarded
def _submit(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from azdev_ica.cli.admin import _context, _settings
    from azdev_ica.jobs.witness import WitnessTarget, submit_all

    settings = _settings()
    if not settings.witnesses:
        return _fail("no witness is configured (ICA_WITNESSES)")
    targets = [WitnessTarget.from_setting(w.url, w.vkey) for w in settings.witnesses]
    with _context(settings) as ctx:
        result = submit_all(
            ctx,
            targets,
            alert_after=timedelta(minutes=settings.witness_alert_minutes),
            timeout=settings.witness_timeout_seconds,
        )
    for name, origin, _ in result.cosigned:
        print(f"{name} cosigned the latest checkpoint of {origin}")
    for name, error in result.failed:
        print(f"{name}: not reached ({error}); retried later", file=sys.stderr)
    for name, reason in result.refused:
        print(f"{name} REFUSED: {reason}; the sealer is stopped", file=sys.stderr)
    return 1 if result.refused else EXIT_OK


@_guarded
def _status(args: argparse.Namespace) -> int:
    import json

    from sqlalchemy import func, select

    from azdev_ica.cli.admin import _context, _settings
    from azdev_ica.db.tables import WitnessCosignature, WitnessRefusal, WitnessStatus
    from azdev_ica.ledger.cosignature import CosignatureVerifier

    settings = _settings()
    names = [CosignatureVerifier.from_key_string(w.vkey).name for w in settings.witnesses]
    rows = []
    with _context(settings) as ctx, ctx.read() as session:
        for witness in sorted(set(names) | set(session.scalars(select(WitnessStatus.witness)))):
            status = session.get(WitnessStatus, witness)
            last = session.execute(
                select(WitnessCosignature.year, func.max(WitnessCosignature.size))
                .where(WitnessCosignature.witness == witness)
                .group_by(WitnessCosignature.year)
                .order_by(WitnessCosignature.year.desc())
                .limit(1)
            ).first()
            rows.append(
                {
                    "witness": witness,
                    "configured": witness in names,
                    "last_cosigned": f"{last[0]}:{last[1]}" if last else None,
                    "failing_since": status.failing_since.isoformat()
                    if status and status.failing_since
                    else None,
                    "last_error": status.last_error if status else None,
                }
            )
        refusals = [
            {"witness": r.witness, "origin": r.origin, "size": r.size, "reason": r.reason}
            for r in session.scalars(
                select(WitnessRefusal).where(WitnessRefusal.resolved_at.is_(None))
            )
        ]
    if args.output == "json":
        print(json.dumps({"witnesses": rows, "unresolved_refusals": refusals}, indent=2))
    else:
        for row in rows:
            state = f"failing since {row['failing_since']}" if row["failing_since"] else "ok"
            print(
                f"{row['witness']}: {state}; last cosigned (year:size) {row['last_cosigned']}"
                + ("" if row["configured"] else " (no longer configured)")
            )
        for refusal in refusals:
            print(
                f"REFUSED by {refusal['witness']}: {refusal['origin']} at size "
                f"{refusal['size']}: {refusal['reason']} (sealing is stopped)"
            )
    return 1 if refusals else EXIT_OK


@_guarded
def _resolve(args: argparse.Namespace) -> int:
    from azdev_ica.cli.admin import _context, _operator, _settings
    from azdev_ica.services.witnesses import resolve_refusals

    with _context(_settings()) as ctx:
        count = resolve_refusals(ctx, actor=_operator(), note=args.note, at=ctx.clock.now())
    if not count:
        print("no unresolved witness refusal")
        return EXIT_OK
    print(
        f"resolved {count} witness refusal(s): the sealer resumes. If the database still "
        "holds a rewritten history, the witness refuses again at the next checkpoint."
    )
    return EXIT_OK


def _init(args: argparse.Namespace) -> int:
    from azdev_ica.ledger.note import NoteError
    from azdev_ica.ledger.witness import write_cosigner

    try:
        cosigner = write_cosigner(args.key, args.name)
    except FileExistsError:
        return _fail(f"{args.key} exists; the witness key is never overwritten")
    except NoteError as exc:
        return _fail(str(exc))
    print(cosigner.verifier().key_string())
    return EXIT_OK


def _key(args: argparse.Namespace) -> int:
    from azdev_ica.ledger.note import NoteError
    from azdev_ica.ledger.witness import read_cosigner

    try:
        print(read_cosigner(args.key).verifier().key_string())
    except (OSError, NoteError) as exc:
        return _fail(f"cannot read the witness key {args.key}: {exc}")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    import logging

    from azdev_ica.ledger.note import NoteError
    from azdev_ica.ledger.witness import Witness, WitnessHTTPServer, read_cosigner, read_logs

    try:
        cosigner = read_cosigner(args.key)
        lines = [f"{prefix} {vkey}" for prefix, vkey in args.log]
        if args.logs_file:
            lines += args.logs_file.read_text(encoding="utf-8").splitlines()
        logs = read_logs(lines)
    except (OSError, NoteError) as exc:
        return _fail(str(exc))
    if not logs:
        return _fail("no log to witness: give --log PREFIX VKEY or --logs-file")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    witness = Witness(args.state, cosigner, logs)
    try:
        server = WitnessHTTPServer((args.host, args.port), witness, args.prefix)
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"witness {cosigner.name} listening on {server.url}", flush=True)
    print(cosigner.verifier().key_string(), flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
        witness.close()
    return EXIT_OK if logs else EXIT_INVALID
