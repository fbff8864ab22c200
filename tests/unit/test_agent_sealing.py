"""How a run ends when writes fail: the refusal is decided once, kept, and always finished.

The Kubernetes edge is a stand-in that answers like an API server in trouble (an ApiException with
a status); the files are real. The whole seal path against a real API server and swtpm is in
tests/integration/test_agent_seal_ends.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes.client.exceptions import ApiException

from aicert_agent.kube import AgentKube
from aicert_agent.node_agent import PodContext
from aicert_agent.recorder import AkIdentity
from aicert_agent.sealing import (
    REFUSING,
    RetryPolicy,
    Sealer,
    SealFailures,
    after_failure,
    describe,
)
from aicert_contract.status import Reason
from aicert_contract.training import MARKER_REFUSED, TrainingSpec

SPEC = {"image": "r/t@sha256:" + "a" * 64, "output": {"emptyDir": {}, "mountPath": "/out"}}


class Answering:
    """An API server that answers status writes with `status` (None: accepts them)."""

    def __init__(self, status: int | None) -> None:
        self.status = status
        self.written: list[dict[str, Any]] = []
        self.events: list[str] = []

    def apply_status(
        self, namespace: str, name: str, uid: str, status: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        if self.status is not None:
            raise ApiException(status=self.status, reason="Trouble")
        self.written.append(status)
        return {"metadata": {"name": name, "namespace": namespace, "uid": uid}, "status": status}

    def emit(self, *args: Any) -> None:
        self.events.append(str(args[4]))


def context() -> PodContext:
    pod = {"metadata": {"uid": "pod-1", "name": "run-1", "namespace": "ml", "labels": {}}}
    training = {"metadata": {"name": "run", "namespace": "ml", "uid": "t-1", "generation": 1}}
    return PodContext(pod, training, TrainingSpec.model_validate(SPEC))


def sealer(kube: Answering) -> Sealer:
    return Sealer(cast(AgentKube, kube), "gpu-1", "dev", AkIdentity("", ()))


def test_the_back_off_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(attempts=8, first_seconds=5, max_seconds=300)
    assert [policy.delay(n) for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 300, 300]


def test_failures_are_counted_and_spaced() -> None:
    policy = RetryPolicy(first_seconds=5)
    first = after_failure(None, "the TSA did not answer", 1000.0, policy)
    second = after_failure(first, "again", 1005.0, policy)
    assert (first.count, first.not_before, second.count, second.not_before) == (1, 1005.0, 2, 1015.0)


def test_the_record_survives_in_the_control_volume(tmp_path: Path) -> None:
    record = SealFailures(3, 1234.5, "the API server answered 503 Service Unavailable")
    (tmp_path / "seal-failures").write_bytes(record.to_bytes())
    assert SealFailures.read(tmp_path) == record
    assert SealFailures.read(tmp_path / "absent") is None


def test_a_pod_waits_out_its_back_off_and_no_longer(tmp_path: Path) -> None:
    waiting = sealer(Answering(None))
    waiting.clock = lambda: 1000.0
    (tmp_path / "seal-failures").write_bytes(SealFailures(1, 1005.0, "x").to_bytes())
    assert waiting.waiting(tmp_path)
    waiting.clock = lambda: 1005.0
    assert not waiting.waiting(tmp_path)
    waiting.clock = lambda: 1.0  # the wall clock went back: the wait is not stretched
    assert not waiting.waiting(tmp_path)


def test_an_api_error_is_described_without_its_headers() -> None:
    assert describe(ApiException(status=503, reason="Service Unavailable")) == (
        "the API server answered 503 Service Unavailable"
    )


def test_a_refusal_the_api_server_refuses_for_good_still_stops_the_pod(tmp_path: Path) -> None:
    """A 4xx would be refused again at every try: the pod is stopped without the condition (the
    operator then shows CertificationRefused), never held while the agent loops."""
    kube = Answering(422)
    sealer(kube).refuse(context(), Reason.INPUTS_CHANGED, "input data changed", tmp_path)
    assert (tmp_path / MARKER_REFUSED).read_text() == "InputsChanged: input data changed"
    assert kube.events == ["InputsChanged"]


def test_a_refusal_the_api_server_cannot_take_now_is_finished_later_without_any_step(tmp_path: Path) -> None:
    kube = Answering(503)
    with pytest.raises(ApiException):
        sealer(kube).refuse(context(), Reason.INPUTS_CHANGED, "input data changed", tmp_path)
    assert (tmp_path / REFUSING).exists() and not (tmp_path / MARKER_REFUSED).exists()
    kube.status = None  # the API server is back; the agent may have restarted meanwhile
    assert sealer(kube).finish_refusal(context(), tmp_path)
    (condition,) = kube.written[0]["conditions"]
    assert (condition["status"], condition["reason"], condition["message"]) == (
        "False",
        "InputsChanged",
        "input data changed",
    )
    assert (tmp_path / MARKER_REFUSED).read_text() == "InputsChanged: input data changed"


def test_no_refusal_to_finish_when_none_was_decided(tmp_path: Path) -> None:
    assert not sealer(Answering(None)).finish_refusal(context(), tmp_path)
