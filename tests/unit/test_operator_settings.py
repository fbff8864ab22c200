"""The operator's settings from its environment (the chart sets them)."""

from __future__ import annotations

import pytest

from aicert_operator.settings import Settings

IMAGE = {"AICERT_AGENT_IMAGE": "registry.example/aicert/agent@sha256:" + "b" * 64}


def test_no_maximum_deadline_unless_set() -> None:
    assert Settings.from_env(IMAGE).max_deadline_seconds is None
    assert Settings.from_env({**IMAGE, "AICERT_MAX_DEADLINE_SECONDS": ""}).max_deadline_seconds is None


def test_the_maximum_deadline_is_read_in_seconds() -> None:
    settings = Settings.from_env({**IMAGE, "AICERT_MAX_DEADLINE_SECONDS": "86400"})
    assert settings.max_deadline_seconds == 86400


@pytest.mark.parametrize("value", ["0", "-5", "a day"])
def test_a_maximum_deadline_that_is_not_a_positive_number_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        Settings.from_env({**IMAGE, "AICERT_MAX_DEADLINE_SECONDS": value})


def test_a_health_stall_shorter_than_the_lease_is_refused_naming_both() -> None:
    # the standby polls every third of the lease: a shorter stall would call it wedged between polls
    with pytest.raises(ValueError, match=r"AICERT_HEALTH_STALL_SECONDS.*AICERT_LEASE_SECONDS"):
        Settings.from_env({**IMAGE, "AICERT_LEASE_SECONDS": "15", "AICERT_HEALTH_STALL_SECONDS": "10"})


def test_the_health_stall_is_read_in_seconds() -> None:
    settings = Settings.from_env({**IMAGE, "AICERT_HEALTH_STALL_SECONDS": "45"})
    assert settings.health_stall_seconds == 45.0
