"""The operator refuses to start on a Kubernetes too old for its admission policies and tokens."""

from __future__ import annotations

import pytest

from aicert_operator.compat import version_problem


@pytest.mark.parametrize(("major", "minor"), [("1", "32"), ("1", "37"), ("1", "33+"), ("2", "0")])
def test_supported_versions(major: str, minor: str) -> None:
    assert version_problem(major, minor) is None


@pytest.mark.parametrize(("major", "minor"), [("1", "31"), ("1", "30+"), ("0", "99")])
def test_older_versions_are_refused_with_the_version_named(major: str, minor: str) -> None:
    problem = version_problem(major, minor)
    assert problem is not None and "1.32 or later" in problem and f"{major}.{minor}" in problem


@pytest.mark.parametrize(("major", "minor"), [("", "32"), ("v1", "32"), ("1", ""), ("1", "x")])
def test_an_unreadable_version_is_refused(major: str, minor: str) -> None:
    problem = version_problem(major, minor)
    assert problem is not None and "cannot read" in problem
