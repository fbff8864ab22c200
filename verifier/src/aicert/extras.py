"""The distribution's optional extras, for entry points that need one: `pip install aicert-k8s`
installs the verifier and every script; the agent's and the operator's libraries come with the
`agent` and `operator` extras. Without them, those commands say which extra to install in one line
(exit 2), not a ModuleNotFoundError traceback.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

DISTRIBUTION = "aicert-k8s"  # pyproject.toml's [project] name; a test keeps the two equal
EXIT_MISSING_EXTRA = 2


def is_installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (kubernetes alone takes a second)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder refused it, or a None placeholder in sys.modules
        return False


def all_installed(modules: Iterable[str]) -> bool:
    return all(is_installed(m) for m in modules)


def missing_extra_message(command: str, extra: str) -> str:
    return f"{command} needs the \"{extra}\" extra: pip install '{DISTRIBUTION}[{extra}]'"
