"""`python -m aicert_operator` on an install without the "operator" extra names the extra in one
line (exit 2) instead of a ModuleNotFoundError traceback; with it, the operator starts."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from tests.without_modules import run_without

from aicert_operator.__main__ import MISSING_EXTRA, OPERATOR_EXTRA_MODULES

REPO = Path(__file__).resolve().parents[2]


def test_the_message_names_the_command_and_the_extra() -> None:
    assert (
        MISSING_EXTRA
        == "python -m aicert_operator needs the \"operator\" extra: pip install 'aicert-k8s[operator]'"
    )


@pytest.mark.parametrize("missing", OPERATOR_EXTRA_MODULES)
def test_without_the_extra_the_operator_names_it_in_one_line(missing: str) -> None:
    done = run_without({missing}, "aicert_operator")
    assert (done.returncode, done.stderr, done.stdout) == (2, MISSING_EXTRA + "\n", "")


def test_with_the_extra_it_goes_on_to_the_operator() -> None:
    # no cluster to reach: the operator itself (not the guard) fails, on its settings or kubeconfig
    done = run_without(set(), "aicert_operator")
    assert MISSING_EXTRA not in done.stderr
    assert done.returncode != 0


def test_the_modules_are_the_operator_extras_requirements() -> None:
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "operator"
    ]
    names = {requirement.split(">")[0].split("=")[0].replace("-", "_") for requirement in extra}
    assert names == set(OPERATOR_EXTRA_MODULES)
