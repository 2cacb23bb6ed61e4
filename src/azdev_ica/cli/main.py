"""`ica`: serve, init, db, policy, apikey, user, openapi, audit, keys, and the pipeline client
(`ica run ...`)."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads it so)
if TYPE_CHECKING:  # annotations only: `ica run event` imports no argparse (see main)
    import argparse
    from collections.abc import Iterator, Sequence

# The pipeline client's commands and the one module that registers each: `ica run event`
# builds only its own branch of the tree, so it imports neither the server's commands nor
# the other clients (each module imports what it needs when its handler runs).
PIPELINE_COMMANDS = {
    "run": ("pipeline", "register_run"),
    "approval": ("approvals", "register_alone"),
    "gate": ("gate_client", "register"),
    "lock": ("gate_client", "register"),
    "override": ("gate_client", "register"),
}
ALL_MODULES = (
    "pipeline",
    "admin",
    "ledger",
    "users",
    "gate_client",
    "inventory",
    "promotion",
    "report",
    "witness",
    "health",
    "siem",
    "doctor",
)


def build_parser(
    command: str | None = None, *, pipeline_only: bool = False, action: str | None = None
) -> argparse.ArgumentParser:
    """The command tree: only `command`'s branch when it is a pipeline command (and of `ica
    run`, only `action`), otherwise the whole tree (also used by tests to check commands
    written in pipeline files). `pipeline_only`: the tree of the zipapp ICA serves, which
    holds only the pipeline client."""
    import argparse

    from azdev_ica.cli.parsing import Parser

    only = PIPELINE_COMMANDS.get(command or "")
    if only:
        registrations = [only]
    elif pipeline_only:
        registrations = [("pipeline", "register"), ("gate_client", "register")]
    else:
        registrations = [(name, "register") for name in ALL_MODULES]
    parser = Parser(
        prog="ica",
        description="ICA: deployment governance. Pipelines report runs; deploys wait at gates.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from azdev_ica import __version__

    parser.add_argument("--version", action="version", version=f"ica {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module, function in registrations:
        name = f"azdev_ica.cli.{module}"
        __import__(name)  # (importlib itself is one more import)
        if function == "register_run":
            sys.modules[name].register_run(sub, action)  # `ica run event`: that action alone
        else:
            getattr(sys.modules[name], function)(sub)
    for path, leaf in leaves(parser):
        note = WHERE[where_it_works(path, leaf)]
        leaf.epilog = f"{leaf.epilog}\n\n{note}" if leaf.epilog else note
        if leaf.formatter_class is argparse.HelpFormatter:
            leaf.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


# Where a command works, said in every command's help (`ica X --help`); wrapped at 88
# columns here rather than by `textwrap` (an import `ica run event` does not need).
WHERE = {
    "http": "Works over HTTP: ICA's address in ICA_URL (or --url) and a credential in ICA_TOKEN "
    "(an\nAPI key, or your personal token where a person acts), or a pipeline's workload "
    "identity.",
    "database": "Works on the server's database directly: run it on ICA's host, with the "
    "server's\nsettings (ICA_DATABASE_URL, ICA_DATA_DIR, ...); it needs no ICA_TOKEN.",
    "local": "Works locally: needs neither a running ICA nor its database.",
}
# Commands that touch neither the server nor its database.
LOCAL_COMMANDS = frozenset(
    {
        ("openapi",),
        ("rbac",),
        ("policy", "validate"),
        ("witness", "init"),
        ("witness", "key"),
        ("witness", "serve"),
    }
)


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command of the tree (a parser without subcommands), with its path."""
    import argparse

    branches = [
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    if not branches:
        yield path, parser
        return
    for branch in branches:
        for name, child in branch.choices.items():
            yield from leaves(child, (*path, name))


def where_it_works(path: tuple[str, ...], parser: argparse.ArgumentParser) -> str:
    if path in LOCAL_COMMANDS:
        return "local"
    if any("--url" in action.option_strings for action in parser._actions):
        return "http"
    return "database"


def main(argv: Sequence[str] | None = None, *, pipeline_only: bool = False) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:2] == ["run", "event"]:  # the pipelines' most frequent call
        from azdev_ica.cli.pipeline import quick_event

        quick = quick_event(arguments)
        if quick is not None:
            done: int = quick.func(quick)
            return done
    words = [item for item in arguments[:2] if not item.startswith("-")]
    command = words[0] if words else None
    action = words[1] if len(words) == 2 else None  # `ica run event ...`: builds `event` only
    parser = build_parser(command, pipeline_only=pipeline_only, action=action)
    args = parser.parse_args(arguments)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
