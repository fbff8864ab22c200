"""The `aicert-agent` command's entry point: one line, not a traceback, without the "agent" extra.

`pip install aicert-k8s` installs the verifier alone, yet installs the `aicert-agent` script too
(a distribution's scripts cannot depend on its extras). The agent's TPM, Kubernetes and metrics
libraries come with `pip install 'aicert-k8s[agent]'`; without them every command but the
gate/seal waiters (marker files only) stops here, naming the extra to install.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from aicert.extras import DISTRIBUTION, EXIT_MISSING_EXTRA, all_installed, missing_extra_message
from aicert_agent.markers import WAITERS

__all__ = ["AGENT_EXTRA_MODULES", "DISTRIBUTION", "MISSING_EXTRA", "main", "missing_extra"]

AGENT_EXTRA_MODULES = ("tpm2_pytss", "kubernetes", "prometheus_client", "pydantic", "grpc")
MISSING_EXTRA = missing_extra_message("aicert-agent", "agent")


def missing_extra(argv: Sequence[str], installed: bool) -> bool:
    """Whether to stop with MISSING_EXTRA: the gate/seal waiters need no extra, all else does."""
    command = argv[0] if argv else None
    return not installed and command not in WAITERS


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if missing_extra(arguments, all_installed(AGENT_EXTRA_MODULES)):
        print(MISSING_EXTRA, file=sys.stderr)
        return EXIT_MISSING_EXTRA
    from aicert_agent.cli import main as agent_main

    return agent_main(arguments)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
