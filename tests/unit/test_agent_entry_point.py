"""A verifier-only install (`pip install aicert-k8s`, no extras) still installs `aicert-agent`: it
must name the extra to install in one line, not crash with a traceback."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
from tests.without_modules import run_without

from aicert_agent.entry_point import AGENT_EXTRA_MODULES, DISTRIBUTION, MISSING_EXTRA

REPO = Path(__file__).resolve().parents[2]


def agent_without(modules: set[str], *argv: str) -> subprocess.CompletedProcess[str]:
    """The `aicert-agent` script (its entry point) without `modules`."""
    return run_without(modules, "aicert_agent.entry_point", *argv)


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
    assert {"tpm2-pytss", "kubernetes", "prometheus-client", "pydantic", "grpcio"} <= {
        requirement.split(">")[0].split("=")[0] for requirement in project["optional-dependencies"]["agent"]
    }
    assert set(AGENT_EXTRA_MODULES) == {"tpm2_pytss", "kubernetes", "prometheus_client", "pydantic", "grpc"}


def test_python_m_aicert_agent_goes_through_the_same_guard() -> None:
    done = run_without({"tpm2_pytss"}, "aicert_agent", "dev-provision", "--ca-dir", "ca")
    assert (done.returncode, done.stderr) == (2, MISSING_EXTRA + "\n")
