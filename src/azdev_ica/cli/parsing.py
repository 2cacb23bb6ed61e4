"""The `ica` command's argparse parser class: usage errors exit 64, and help is laid out
without importing `shutil`.

argparse builds a help formatter for every `add_argument` (to check the metavar), and each
formatter asks `shutil.get_terminal_size()` for the width: `shutil` (with `bz2`, `lzma` and
`fnmatch`) is then a good part of what `ica run event` imports. The width is worked out here
the same way (COLUMNS, then the terminal, then 80) with `os` alone. Standard library only,
Python 3.8 syntax: part of the zipapp ICA serves.
"""

from __future__ import annotations

import argparse
import os
import sys

EX_USAGE = 64


def terminal_columns() -> int:
    """shutil.get_terminal_size().columns without importing shutil."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        stdout = sys.__stdout__  # None without a standard output: 80, as shutil answers
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns if stdout else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; 2 means "still pending" for some commands, so use 64."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")

    def _get_formatter(self) -> argparse.HelpFormatter:
        # The width argparse would take (the terminal's less 2), given so it imports no shutil.
        formatter: argparse.HelpFormatter = self.formatter_class(  # type: ignore[call-arg]
            prog=self.prog, width=terminal_columns() - 2
        )
        return formatter
