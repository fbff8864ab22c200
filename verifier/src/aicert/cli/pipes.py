"""Ending quietly when the reader of standard output goes away (`aicert hash --json | head`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE, what a Unix filter killed by the signal reports


def quiet_on_closed_pipe(command: Callable[[], int]) -> int:
    """Run `command` and flush stdout; on a closed pipe, return 141 without a traceback."""
    try:
        code = command()
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CLOSED_PIPE
    return code
