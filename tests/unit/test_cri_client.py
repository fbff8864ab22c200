"""The agent's CRI client against a hostile runtime: a real gRPC server on a unix socket that answers
what each test makes it answer (garbled bytes, an oversized answer, an error, no answer at all). The
client turns each into a CriError naming the call, within its timeout; it only ever calls the two
read-only methods. Against real containerd: tests/integration/test_cri_on_containerd.py."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from aicert_agent.cri import RuntimeContainer
from aicert_agent.cri_client import MAX_RESPONSE_BYTES, CriClient, CriError
from aicert_agent.protowire import encode_bytes, encode_string
from aicert_agent.train_image import train_image_problem
from aicert_contract.status import Reason

MANIFEST = "sha256:" + "a" * 64
CONFIG = "sha256:" + "c" * 64
CID = "0123456789abcdef" * 4
REF = f"registry.example/team/train@{MANIFEST}"
POD_UID = "5f0c6a9e-0000-4000-8000-000000000001"

Handler = Callable[[bytes, Any], bytes]


def status_answer(name: str = "train", image_ref: str = REF) -> bytes:
    status = (
        encode_string(1, CID)
        + encode_bytes(2, encode_string(1, name))
        + encode_bytes(8, encode_string(1, CONFIG))
        + encode_string(9, image_ref)
        + encode_bytes(12, encode_string(1, "io.kubernetes.pod.uid") + encode_string(2, POD_UID))
        + encode_string(17, CONFIG)
    )
    return encode_bytes(1, status)


def image_answer() -> bytes:
    return encode_bytes(1, encode_string(1, CONFIG) + encode_string(3, REF))


@dataclass
class Runtime:
    """A gRPC server on a unix socket, answering the CRI methods as the test sets them."""

    socket: Path
    answers: dict[str, Handler] = field(default_factory=dict)
    calls: list[tuple[str, bytes]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def handler(self, method: str) -> Callable[[bytes, Any], bytes]:
        def answer(request: bytes, context: Any) -> bytes:
            self.calls.append((method, request))
            return self.answers[method](request, context)

        return answer


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    fake = Runtime(tmp_path / "containerd.sock")
    fake.answers = {
        "/runtime.v1.RuntimeService/ContainerStatus": lambda r, c: status_answer(),
        "/runtime.v1.ImageService/ImageStatus": lambda r, c: image_answer(),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    for service, method in (
        ("runtime.v1.RuntimeService", "ContainerStatus"),
        ("runtime.v1.ImageService", "ImageStatus"),
    ):
        handler = grpc.unary_unary_rpc_method_handler(fake.handler(f"/{service}/{method}"))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
    server.add_insecure_port(f"unix://{fake.socket}")
    server.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.stop(grace=None)


def pod(container_id: str = f"containerd://{CID}", image_id: str = REF) -> dict[str, Any]:
    train = {"name": "train", "imageID": image_id, "containerID": container_id, "state": {"terminated": {}}}
    return {"metadata": {"uid": POD_UID}, "status": {"initContainerStatuses": [train]}}


def test_the_client_reads_the_container_and_the_image(runtime: Runtime) -> None:
    with CriClient(runtime.socket) as client:
        assert client.container_status(CID) == RuntimeContainer(CID, "train", CONFIG, REF, CONFIG, POD_UID)
        held = client.image_status(REF)
    assert held is not None and held.repo_digests == (REF,)
    assert [m for m, _ in runtime.calls] == [
        "/runtime.v1.RuntimeService/ContainerStatus",
        "/runtime.v1.ImageService/ImageStatus",
    ]
    assert runtime.calls[0][1] == encode_string(1, CID)


def test_the_agent_check_passes_when_the_runtime_agrees(runtime: Runtime) -> None:
    with CriClient(runtime.socket) as client:
        pinned, problem = train_image_problem(pod(), f"registry.example/team/train:v1@{MANIFEST}", client)
    assert problem is None and pinned.digest == MANIFEST
    assert runtime.calls[-1][1] == encode_bytes(1, encode_string(1, REF))  # asks for the normalised pin


def test_a_status_naming_the_seal_container_as_train_is_refused(runtime: Runtime) -> None:
    runtime.answers["/runtime.v1.RuntimeService/ContainerStatus"] = lambda r, c: status_answer(name="seal")
    with CriClient(runtime.socket) as client:
        _, problem = train_image_problem(pod(), REF, client)
    assert problem is not None and problem.reason is Reason.RUNTIME_IMAGE_MISMATCH


def test_a_status_the_runtime_contradicts_is_refused(runtime: Runtime) -> None:
    runtime.answers["/runtime.v1.RuntimeService/ContainerStatus"] = lambda r, c: status_answer(
        image_ref=CONFIG
    )
    with CriClient(runtime.socket) as client:
        _, problem = train_image_problem(pod(), REF, client)
    assert problem is not None and problem.reason is Reason.IMAGE_NOT_PINNED


def test_a_status_without_a_container_id_is_refused_without_asking(runtime: Runtime) -> None:
    with CriClient(runtime.socket) as client:
        _, problem = train_image_problem(pod(container_id=""), REF, client)
    assert problem is not None and problem.reason is Reason.IMAGE_UNKNOWN
    assert runtime.calls == []


def test_without_a_runtime_the_status_alone_decides() -> None:
    assert train_image_problem(pod(), REF, None)[1] is None
    refused = train_image_problem(pod(image_id=CONFIG), REF, None)[1]
    assert refused is not None and refused.reason is Reason.IMAGE_NOT_PINNED


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (lambda r, c: b"\x0a\x05ab", "ContainerStatus on .*: ContainerStatusResponse field 1: its length 5"),
        (lambda r, c: b"", "ContainerStatus on .*: ContainerStatusResponse has no status"),
        (lambda r, c: b"\x0a" * (MAX_RESPONSE_BYTES + 1), "RESOURCE_EXHAUSTED"),
        (lambda r, c: c.abort(grpc.StatusCode.NOT_FOUND, "no such container " + "x" * 5000), "NOT_FOUND"),
    ],
)
def test_a_hostile_answer_is_a_clear_error(runtime: Runtime, answer: Handler, error: str) -> None:
    runtime.answers["/runtime.v1.RuntimeService/ContainerStatus"] = answer
    with CriClient(runtime.socket) as client, pytest.raises(CriError, match=error) as raised:
        client.container_status(CID)
    assert len(str(raised.value)) < 800


def test_a_runtime_that_never_answers_is_a_deadline_error(runtime: Runtime) -> None:
    def hang(request: bytes, context: Any) -> bytes:
        runtime.release.wait(30)
        return b""

    runtime.answers["/runtime.v1.ImageService/ImageStatus"] = hang
    with CriClient(runtime.socket, timeout=0.5) as client, pytest.raises(CriError, match="DEADLINE_EXCEEDED"):
        client.image_status(REF)


def test_no_runtime_at_the_socket_is_unavailable(tmp_path: Path) -> None:
    with (
        CriClient(tmp_path / "absent.sock", timeout=2) as client,
        pytest.raises(CriError, match="UNAVAILABLE"),
    ):
        client.container_status(CID)
