"""`aicert` command line: a thin shell over the library.

Each sub-command lives in its own module with `register(subparsers)`; the parser it adds sets
`func(args) -> int`. Exit codes across all commands: 0 success, 1 verification failed,
2 unusable input or usage error.

Start-up time is part of the interface (`aicert hash` and `aicert verify` run in scripts and
loops): only the chosen sub-command's module is imported, and the other sub-commands are listed
from `COMMANDS` alone. Heavy libraries (cryptography, rich) load only in the code that uses them,
and no command line path loads pydantic; `tests/unit/test_cli_startup.py` keeps them off the paths that do not.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from aicert import __version__
from aicert.cli.pipes import quiet_on_closed_pipe

# name -> (module with register(sub), the one-line help `aicert --help` shows for it).
COMMANDS: dict[str, tuple[str, str]] = {
    "hash": ("aicert.cli.hash", "hash a file or directory tree into a manifest and root digest"),
    "verify": ("aicert.cli.verify", "verify a training certificate offline"),
    "pull": ("aicert.cli.pull", "pull a certified model from a registry into a directory, verified first"),
    "trust": ("aicert.cli.trust", "manage the named trust stores (azure, dev, tsa, paravisor)"),
    "aks": ("aicert.cli.aks", "check or create AKS node pools that can certify trainings"),
}


def chosen_command(argv: Sequence[str]) -> str | None:
    """The sub-command `argv` names, if any. The top-level options (-h, --version) take no
    value, so the sub-command is the first argument that is not an option."""
    for arg in argv:
        if arg.startswith("-"):
            continue
        return arg if arg in COMMANDS else None
    return None


def terminal_columns() -> int:
    """`shutil.get_terminal_size().columns`, the width argparse wraps help to, without importing
    shutil (and the compression modules it imports: a few milliseconds of every command)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    stdout = sys.__stdout__
    if columns <= 0 and stdout is not None:
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help layout, at argparse's width (`terminal_columns`, less 2)."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ) -> None:
        super().__init__(
            prog, indent_increment, max_help_position, terminal_columns() - 2 if width is None else width
        )


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with `HelpFormatter` by default; its sub-command parsers are of this class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for `argv`: the full parser of the sub-command it names, a one-line entry for
    each other sub-command (enough for `aicert --help` and for argparse's usage errors)."""
    chosen = chosen_command(argv)
    parser = ArgumentParser(prog="aicert", description="Hash models and verify AICert training certificates.")
    parser.add_argument("--version", action="version", version=f"aicert {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        if name == chosen:
            importlib.import_module(module_name).register(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)  # argparse exits 2 on usage errors, as documented
    code: int = quiet_on_closed_pipe(lambda: args.func(args))
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
