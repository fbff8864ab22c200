"""A verifier-only install (`pip install aicert-k8s`, no extras) still installs `aicert-agent`: it
must name the extra to install in one line, not crash with a traceback."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from aicert_agent.entry_point import AGENT_EXTRA_MODULES, DISTRIBUTION, MISSING_EXTRA

REPO = Path(__file__).resolve().parents[2]

# Runs the entry point with some modules made uninstallable, as on a machine without them.
WITHOUT = """
import sys
blocked = set(sys.argv[1].split(","))

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
if sys.argv[2] == "python -m aicert_agent":
    import runpy
    sys.argv = ["aicert_agent", *sys.argv[3:]]
    runpy.run_module("aicert_agent", run_name="__main__")
from aicert_agent.entry_point import main
sys.exit(main(sys.argv[2:]))
"""


def agent_without(modules: set[str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, ",".join(sorted(modules)), *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_message_names_the_extra_and_the_distribution() -> None:
    assert MISSING_EXTRA == "aicert-agent needs the \"agent\" extra: pip install 'aicert-k8s[agent]'"


@pytest.mark.parametrize("missing", AGENT_EXTRA_MODULES)
@pytest.mark.parametrize(
    "argv",
    [["dev-provision", "--ca-dir", "ca"], ["serve", "--node", "n"], ["run", "--outputs", "o", "--", "true"]],
)
def test_without_the_extra_the_agent_names_it_in_one_line(missing: str, argv: list[str]) -> None:
    done = agent_without({missing}, *argv)
    assert done.returncode == 2
    assert done.stderr == MISSING_EXTRA + "\n"
    assert done.stdout == ""


def test_the_gate_and_seal_waiters_need_no_extra() -> None:
    # They run in the training pod's containers and only watch marker files.
    done = agent_without(set(AGENT_EXTRA_MODULES), "gate", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: aicert-agent gate")


def test_with_the_extra_the_agent_runs_its_command() -> None:
    done = agent_without(set(), "--help")
    assert done.returncode == 0, done.stderr
    assert "dev-provision" in done.stdout


def test_the_script_and_the_message_match_the_distribution() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION
    assert project["scripts"]["aicert-agent"] == "aicert_agent.entry_point:main"
    assert {"tpm2-pytss", "kubernetes", "prometheus-client", "pydantic"} <= {
        requirement.split(">")[0].split("=")[0] for requirement in project["optional-dependencies"]["agent"]
    }
    assert set(AGENT_EXTRA_MODULES) == {"tpm2_pytss", "kubernetes", "prometheus_client", "pydantic"}


def test_python_m_aicert_agent_goes_through_the_same_guard() -> None:
    done = agent_without({"tpm2_pytss"}, "python -m aicert_agent", "dev-provision", "--ca-dir", "ca")
    assert (done.returncode, done.stderr) == (2, MISSING_EXTRA + "\n")
