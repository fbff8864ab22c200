"""Which Kubernetes versions the operator runs on. Pure.

Kubernetes 1.32 is the first release where everything aicert relies on is generally available:
ValidatingAdmissionPolicy (1.30), the node name in a pod-bound ServiceAccount token's user info
that scopes each agent to its own node (1.32), and field selectors on custom resources (1.32).
The test suite runs against the version in localcluster/go.mod.
"""

from __future__ import annotations

import re

MINIMUM_KUBERNETES = (1, 32)


def version_problem(major: str, minor: str) -> str | None:
    """None when the API server's version (from GET /version) is supported, else why not. Providers
    append to the minor version (`32+`); anything unreadable is refused rather than guessed."""
    found = f"{major}.{minor}"
    major_digits = re.fullmatch(r"(\d+)", major.strip())
    minor_digits = re.match(r"(\d+)", minor.strip())
    if major_digits is None or minor_digits is None:
        return f"cannot read the API server's version {found!r}"
    if (int(major_digits.group(1)), int(minor_digits.group(1))) < MINIMUM_KUBERNETES:
        wanted = ".".join(str(p) for p in MINIMUM_KUBERNETES)
        return f"aicert needs Kubernetes {wanted} or later; the API server is {found}"
    return None
