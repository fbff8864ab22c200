"""`python -m aicert_operator`: the operator (aicert_operator.run), or, without the "operator"
extra (kopf, kubernetes, prometheus-client, pydantic), one line naming it and exit 2."""

from __future__ import annotations

import sys

from aicert.extras import EXIT_MISSING_EXTRA, all_installed, missing_extra_message

OPERATOR_EXTRA_MODULES = ("kopf", "kubernetes", "prometheus_client", "pydantic")
MISSING_EXTRA = missing_extra_message("python -m aicert_operator", "operator")


def main() -> int:
    if not all_installed(OPERATOR_EXTRA_MODULES):
        print(MISSING_EXTRA, file=sys.stderr)
        return EXIT_MISSING_EXTRA
    from aicert_operator.run import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
