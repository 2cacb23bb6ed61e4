"""`ica run event` reads its usual command lines without argparse (cli/pipeline.py,
quick_event): whatever it reads, argparse reads the same; whatever it does not, argparse
reads (and words the error or the help)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azdev_ica.cli.main import build_parser, main
from azdev_ica.cli.pipeline import PHASES, quick_event

OPTIONS = ["--url", "--timeout", "--output", "--run-key", "--attempt", "--event-id", "--data"]
OPTIONS += ["--set", "--sarif"]
ODD = ["--help", "-h", "--run", "--set-", "--", "-", "--version", "--Set", "--phase", "-S"]
VALUES = ["test", "deploy", "bogus", "", "-x", "-1", "0", "2", "007", "1.5", "1e3", "nan"]
VALUES += ["-inf", "inf", "a=b", "x=1", "text", "json", "JSON", "http://h:1", "a b", "-a b"]
VALUES += ["\u00b2", "=", "{}", '{"a": 1}', "scan", "ado:p:1", "  3 ", "1_0"]
PLAIN = ["x", "a=1", "b={}", "ado:p:1", "json", "http://ica:8000", "f.sarif", "a b"]
GOOD = {"--timeout": ["5", "0.5", "60"], "--attempt": ["1", "2"], "--output": ["text", "json"]}


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """Options with values (`--opt VALUE` or `--opt=VALUE`), mostly plausible ones, the phase
    somewhere among them (or not), sometimes a stray word."""
    words: list[str] = []
    for _ in range(draw(st.integers(0, 5))):
        option = draw(st.sampled_from(OPTIONS * 4 + ODD))
        value = draw(st.sampled_from(GOOD.get(option, PLAIN) * 6 + VALUES))
        words += [f"{option}={value}"] if draw(st.booleans()) else [option, value]
    phase = draw(st.sampled_from([*PHASES, *PHASES, "bogus", "", "-", None]))
    if phase is not None:
        words.insert(draw(st.integers(0, len(words))), phase)
    if draw(st.integers(0, 4)) == 0:
        stray = draw(st.sampled_from(OPTIONS + ODD + VALUES))
        words.insert(draw(st.integers(0, len(words))), stray)
    return words


def argparse_reads(argv: list[str]) -> dict[str, object] | None:
    """What argparse makes of `argv`, as main builds it for `ica run event` (None: an error
    or help)."""
    try:
        return vars(build_parser("run", action="event").parse_args(argv))
    except SystemExit:
        return None


@settings(deadline=None, max_examples=400)  # no timing: the machine is shared
@given(words=command_lines())
def test_what_it_reads_argparse_reads_the_same(words):
    argv = ["run", "event", *words]
    quick = quick_event(argv)
    if quick is not None:
        assert vars(quick) == argparse_reads(argv)


@pytest.mark.parametrize(
    "words",
    [
        ["test", "--run-key", "ado:p:1", "--set", "passed=true"],
        ["--run-key=ado:p:1", "deploy", "--attempt", "2", "--set", "a=1", "--set", "b={}"],
        ["scan", "--sarif", "a.sarif", "--sarif", "b.sarif", "--output", "json"],
        ["build", "--data", '{"x": 1}', "--event-id", "e1", "--timeout", "5"],
        ["test", "--url", "http://ica:8000", "--run-key", "k", "--run-key", "k2"],
    ],
)
def test_the_usual_command_lines_are_read_without_argparse(words):
    argv = ["run", "event", *words]
    quick = quick_event(argv)
    assert quick is not None
    assert vars(quick) == argparse_reads(argv)


@pytest.mark.parametrize(
    "words",
    [
        ["test", "--help"],
        ["test", "--run"],  # an abbreviation: argparse decides
        ["test", "--set"],  # no value
        ["test", "--attempt", "0"],
        ["test", "--timeout", "-5"],
        ["test", "test"],
        ["tests"],
        [],
        ["test", "--output", "xml"],
        ["test", "--run-key", "-k"],
        ["test", "--", "x"],
    ],
)
def test_anything_else_is_left_to_argparse(words, capsys):
    argv = ["run", "event", *words]
    assert quick_event(argv) is None
    with pytest.raises(SystemExit) as quick:
        main(argv)
    said = capsys.readouterr()
    with pytest.raises(SystemExit) as full:
        build_parser().parse_args(argv)
    assert (quick.value.code, said) == (full.value.code, capsys.readouterr())
