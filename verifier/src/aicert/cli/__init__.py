"""`aicert` command line: a thin shell over the library.

Each sub-command lives in its own module with `register(subparsers)`; the parser it adds sets
`func(args) -> int`. Exit codes across all commands: 0 success, 1 verification failed,
2 unusable input or usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aicert import __version__
from aicert.cli.pipes import quiet_on_closed_pipe


def build_parser() -> argparse.ArgumentParser:
    from aicert.cli import hash as hash_cmd
    from aicert.cli import trust, verify

    parser = argparse.ArgumentParser(
        prog="aicert", description="Hash models and verify AICert training certificates."
    )
    parser.add_argument("--version", action="version", version=f"aicert {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (hash_cmd, verify, trust):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits 2 on usage errors, as documented
    code: int = quiet_on_closed_pipe(lambda: args.func(args))
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
