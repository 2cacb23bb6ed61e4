"""One convention across every `ica` command, checked by running each command's `--help` (the
whole argparse tree, walked): `--output json|text`, `--decision approve|reject`, `--timeout`
meaning the retry budget of the calls, and a help that says where the command works (over
HTTP, on the server's database, or locally). HTTP commands say that ICA_TOKEN is missing
before ICA refuses them."""

from __future__ import annotations

import argparse
import re
from typing import Any

import pytest

from azdev_ica.cli.main import WHERE, build_parser, leaves, main, where_it_works
from tests.support.liveserver import LiveServer

COMMANDS = [path for path, _ in leaves(build_parser())]


def help_of(path: tuple[str, ...], capsys: Any) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main([*path, "--help"])
    assert done.value.code == 0
    out: str = capsys.readouterr().out
    return out


def visible_options(path: tuple[str, ...]) -> dict[str, argparse.Action]:
    parser = dict(leaves(build_parser()))[path]
    return {
        option: action
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for option in action.option_strings
    }


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_the_walk_finds_the_whole_tree():
    names = {" ".join(path) for path in COMMANDS}
    assert {"run start", "approval sign", "refresh approve", "audit verify", "openapi"} <= names
    assert len(COMMANDS) > 60


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(path) for path in COMMANDS])
def test_every_command_follows_the_conventions(path, capsys):
    text = help_of(path, capsys)
    options = visible_options(path)
    # Where it works, in words.
    assert sum(flat(note) in flat(text) for note in WHERE.values()) == 1, text
    # One spelling for the output format.
    assert "--json" not in options
    assert "--format" not in options
    assert "--json" not in text
    if "--output" in options:
        choices = set(options["--output"].choices or ())
        assert "json" in choices
        assert choices & {"text", "html"}
    # Decisions are --decision approve|reject.
    assert "--reject" not in options
    assert "--approve" not in options
    if "--decision" in options:
        assert set(options["--decision"].choices or ()) == {"approve", "reject"}
    # --timeout is the time budget of the calls to ICA, never how long to wait for an outcome.
    if "--timeout" in options:
        assert "call" in (options["--timeout"].help or ""), path
        assert "decision" not in (options["--timeout"].help or ""), path
    # A new secret is never a flag.
    assert not {"--token", "--password", "--secret"} & set(options)


def test_http_and_database_commands_are_told_apart():
    parser = build_parser()
    where = {" ".join(path): where_it_works(path, leaf) for path, leaf in leaves(parser)}
    assert where["run start"] == "http"
    assert where["approval sign"] == "http"
    assert where["user add"] == "database"
    assert where["apikey create"] == "database"
    assert where["openapi"] == "local"


def test_old_spellings_still_work_hidden(capsys):
    parser = build_parser()
    assert parser.parse_args(["audit", "verify", "--json"]).output == "json"
    assert parser.parse_args(["audit", "verify"]).output == "text"
    assert parser.parse_args(["refresh", "approve", "3", "--reject"]).decision == "reject"
    assert parser.parse_args(["refresh", "approve", "3"]).decision == "approve"
    assert parser.parse_args(["approval", "wait", "--timeout", "5"]).wait_seconds == 5.0
    assert parser.parse_args(["approval", "wait", "--wait", "7"]).wait_seconds == 7.0
    monthly = parser.parse_args(["report", "monthly", "--month", "2026-10", "--format", "json"])
    assert monthly.output == "json"


def test_an_http_command_says_icatoken_is_missing_before_ica_refuses(
    initialised, monkeypatch, capsys
):
    from azdev_ica.api.app import create_app
    from azdev_ica.settings import Settings

    app = create_app(Settings())
    server = LiveServer(app).start()
    try:
        for name in ("ICA_TOKEN", "ICA_AUDIENCE", "ICA_ENTRA_SCOPE", "ICA_URL"):
            monkeypatch.delenv(name, raising=False)
        capsys.readouterr()
        code = main(["run", "show", "--run-key", "ado:p:1", "--url", server.url])
        err = capsys.readouterr().err
    finally:
        server.stop()
        app.state.ctx.db.dispose()
    assert code == 4
    said = err.index("ICA_TOKEN is not set")
    assert said < err.index("401") if "401" in err else said >= 0
    assert "works over HTTP" in err


def test_the_listing_commands_answer_a_table_or_json(initialised, monkeypatch, capsys):
    import json

    from azdev_ica.api.app import create_app
    from azdev_ica.settings import Settings

    _, key = initialised
    app = create_app(Settings())
    server = LiveServer(app).start()
    try:
        monkeypatch.setenv("ICA_TOKEN", key)
        monkeypatch.setenv("ICA_URL", server.url)
        for name in ("ICA_AUDIENCE", "ICA_ENTRA_SCOPE"):
            monkeypatch.delenv(name, raising=False)
        start = ["run", "start", "--provider", "ado", "--project-id", "p", "--pipeline-name", "ci"]
        for run_id, tenant in (("1", "ws"), ("2", "to")):
            assert main([*start, "--run-id", run_id, "--tenant", tenant, "--stage", "test"]) == 0
        capsys.readouterr()

        assert main(["run", "list", "--tenant", "ws", "--output", "json"]) == 0
        runs = json.loads(capsys.readouterr().out)
        assert [run["run_key"] for run in runs] == ["ado:p:1"]

        assert main(["run", "list", "--limit", "1"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split()[:4] == ["RUN_KEY", "TENANT", "STAGE", "STATUS"]
        assert len(lines) == 2
        assert lines[1].startswith("ado:p:2")

        assert main(["approval", "list", "--open"]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "(none)"

        assert main(["audit", "seal"]) == 0  # the query reads sealed entries (no sealer here)
        capsys.readouterr()
        assert main(["audit", "query", "--action", "run.start", "--output", "json"]) == 0
        entries = json.loads(capsys.readouterr().out)
        assert sorted(entry["subject_id"] for entry in entries) == ["ado:p:1", "ado:p:2"]
        assert main(["audit", "query", "--tenant", "to"]) == 0
        text = capsys.readouterr().out
        assert "ado:p:2" in text
        assert "ado:p:1" not in text
    finally:
        server.stop()
        app.state.ctx.db.dispose()
