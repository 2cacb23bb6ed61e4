"""`ica`: serve, init, db, policy, apikey, user, openapi, audit, keys, and the pipeline client
(`ica run ...`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EX_USAGE = 64


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; 2 means "still pending" for some commands, so use 64."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (also used by tests to check commands written in pipeline files)."""
    from azdev_ica.cli import (
        admin,
        gate_client,
        ledger,
        pipeline,
        promotion,
        report,
        users,
        witness,
    )
    from azdev_ica.cli import inventory as inventory_client

    parser = _Parser(
        prog="ica",
        description="ICA: deployment governance. Pipelines report runs; deploys wait at gates.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from azdev_ica import __version__

    parser.add_argument("--version", action="version", version=f"ica {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    pipeline.register(sub)
    admin.register(sub)
    ledger.register(sub)
    users.register(sub)
    gate_client.register(sub)
    inventory_client.register(sub)
    promotion.register(sub)
    report.register(sub)
    witness.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
