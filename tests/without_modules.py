"""Run a module as `python -m` would, on a machine where some packages are not installed: what a
verifier-only install (`pip install aicert-k8s`, no extras) sees."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import runpy, sys
blocked = set(filter(None, sys.argv[1].split(",")))

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_module(sys.argv[0], run_name="__main__")
"""


def run_without(modules: set[str], module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """`python -m module argv...` with `modules` (top-level names) made uninstallable."""
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, ",".join(sorted(modules)), module, *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
