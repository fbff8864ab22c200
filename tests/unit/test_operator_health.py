"""The operator's health decision: alive and ready, for the leader and for a standby, and its HTTP edge."""

from __future__ import annotations

import dataclasses
import threading
import urllib.error
import urllib.request

import pytest

from aicert_operator.health import (
    Facts,
    HealthState,
    Limits,
    Role,
    WedgedError,
    liveness,
    readiness,
    serve,
)

LIMITS = Limits(stall_seconds=30, api_seconds=15)

# a standby 100 s after it started, which polled the Lease and got an answer 2 s ago
STANDBY = Facts(
    now=1100.0,
    started=1000.0,
    role=Role.STANDBY,
    lease_attempted=1098.0,
    api_answered=1098.0,
    leading_since=None,
    kopf_started=False,
    loop_beat=None,
)
# the leader, leading for 50 s, kopf started, its event loop beat 1 s ago, the Lease renewed 2 s ago
LEADER = dataclasses.replace(
    STANDBY, role=Role.LEADER, leading_since=1050.0, kopf_started=True, loop_beat=1099.0
)


@pytest.mark.parametrize("facts", [STANDBY, LEADER], ids=["standby", "leader"])
def test_a_healthy_replica_is_alive_and_ready_whether_it_leads_or_not(facts: Facts) -> None:
    assert liveness(facts, LIMITS).ok
    assert readiness(facts, LIMITS).ok


def test_a_standby_that_never_leads_stays_alive_and_ready() -> None:
    long_after = dataclasses.replace(STANDBY, now=100_000.0, lease_attempted=99_998.0, api_answered=99_998.0)
    assert liveness(long_after, LIMITS).ok
    assert readiness(long_after, LIMITS).ok


@pytest.mark.parametrize("facts", [STANDBY, LEADER], ids=["standby", "leader"])
def test_a_lease_loop_silent_past_the_stall_is_not_alive(facts: Facts) -> None:
    hung = dataclasses.replace(facts, lease_attempted=facts.now - 31)
    verdict = liveness(hung, LIMITS)
    assert not verdict.ok
    assert "lease loop" in verdict.reason
    assert not readiness(hung, LIMITS).ok


def test_a_fresh_process_that_has_not_polled_yet_is_alive_but_not_ready() -> None:
    fresh = dataclasses.replace(STANDBY, now=1005.0, lease_attempted=None, api_answered=None)
    assert liveness(fresh, LIMITS).ok
    verdict = readiness(fresh, LIMITS)
    assert not verdict.ok
    assert "not answered yet" in verdict.reason


def test_a_process_that_never_polls_the_lease_dies_after_the_stall() -> None:
    stuck = dataclasses.replace(STANDBY, now=1031.0, lease_attempted=None, api_answered=None)
    assert not liveness(stuck, LIMITS).ok


def test_a_leader_whose_event_loop_stopped_is_not_alive() -> None:
    wedged = dataclasses.replace(LEADER, loop_beat=LEADER.now - 31)
    verdict = liveness(wedged, LIMITS)
    assert not verdict.ok
    assert "event loop" in verdict.reason
    assert not readiness(wedged, LIMITS).ok


def test_a_leader_whose_event_loop_never_beat_dies_a_stall_after_taking_the_lease() -> None:
    never = dataclasses.replace(LEADER, kopf_started=False, loop_beat=None, leading_since=1090.0)
    assert liveness(never, LIMITS).ok  # just took the lease: kopf is starting
    assert not readiness(never, LIMITS).ok
    assert not liveness(dataclasses.replace(never, now=1121.0, lease_attempted=1120.0), LIMITS).ok


def test_a_standby_has_no_event_loop_to_beat() -> None:
    # a standby's kopf has not started: its missing beat is no failure
    assert liveness(dataclasses.replace(STANDBY, now=5000.0, lease_attempted=4999.0), LIMITS).ok


@pytest.mark.parametrize("facts", [STANDBY, LEADER], ids=["standby", "leader"])
def test_an_api_server_silent_past_the_lease_makes_not_ready_but_alive(facts: Facts) -> None:
    unreachable = dataclasses.replace(facts, api_answered=facts.now - 16)
    assert liveness(unreachable, LIMITS).ok  # a restart would not bring the API server back
    verdict = readiness(unreachable, LIMITS)
    assert not verdict.ok
    assert "API server" in verdict.reason


def test_a_leader_is_not_ready_until_kopf_started() -> None:
    starting = dataclasses.replace(LEADER, kopf_started=False)
    assert liveness(starting, LIMITS).ok
    verdict = readiness(starting, LIMITS)
    assert not verdict.ok
    assert "kopf is starting" in verdict.reason


def test_a_leader_with_kopf_started_but_no_beat_yet_is_not_ready() -> None:
    assert not readiness(dataclasses.replace(LEADER, loop_beat=None, leading_since=1099.0), LIMITS).ok


def test_the_leader_refuses_to_renew_the_lease_once_its_event_loop_stalled() -> None:
    state = HealthState(Limits(stall_seconds=0.2, api_seconds=15))
    state.became_leader()  # and kopf's event loop never beats
    threading.Event().wait(0.3)
    with pytest.raises(WedgedError, match="event loop"):
        state.check_before_renewal()


def test_the_leader_renews_while_its_event_loop_beats() -> None:
    state = HealthState(LIMITS)
    state.became_leader()
    state.beat()
    state.check_before_renewal()  # no exception: renew
    state.renewed()
    assert readiness(state.facts(), LIMITS).ok is False  # kopf not started yet
    state.kopf_ready.set()
    assert readiness(state.facts(), LIMITS).ok


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_server_answers_each_verdict_with_its_status_and_reason() -> None:
    state = HealthState(LIMITS)
    server = serve(state, 0, host="127.0.0.1")
    port = server.server_address[1]
    try:
        assert _get(port, "/healthz") == (200, "standby: alive\n")
        assert _get(port, "/readyz") == (503, "standby: the API server has not answered yet\n")
        state.lease_attempted(answered=True)
        assert _get(port, "/readyz") == (200, "standby: ready\n")
        assert _get(port, "/metrics")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_the_server_answers_503_for_a_wedged_leader() -> None:
    state = HealthState(Limits(stall_seconds=0.2, api_seconds=15))
    state.became_leader()  # and kopf's event loop never beats
    server = serve(state, 0, host="127.0.0.1")
    port = server.server_address[1]
    try:
        threading.Event().wait(0.3)  # past the stall
        state.lease_attempted(answered=True)  # the lease thread still runs
        status, reason = _get(port, "/healthz")
        assert status == 503
        assert "event loop" in reason
    finally:
        server.shutdown()
        server.server_close()
