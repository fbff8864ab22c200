"""The agent's read-only client of the container runtime's CRI socket (containerd's
/run/containerd/containerd.sock): `ContainerStatus` and `ImageStatus`, nothing else. It never
creates, stops or removes anything. Each call is bounded by a timeout and its answer by a size;
the messages and the decision are in `cri` (pure).
"""

from __future__ import annotations

from pathlib import Path

import grpc

from aicert_agent.cri import (
    CONTAINER_STATUS,
    IMAGE_STATUS,
    RuntimeContainer,
    RuntimeImage,
    container_status_request,
    image_status_request,
    parse_container_status,
    parse_image_status,
)
from aicert_agent.protowire import WireError

CALL_TIMEOUT_SECONDS = 10.0
MAX_RESPONSE_BYTES = 4 << 20  # a status is a few KiB; the CRI's own limit is 16 MiB


class CriError(RuntimeError):
    """The runtime did not answer, refused the call, or answered with a malformed message."""


class CriClient:
    def __init__(self, socket: Path, *, timeout: float = CALL_TIMEOUT_SECONDS) -> None:
        self.socket = socket
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            f"unix://{socket.absolute()}",
            options=[
                ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
                ("grpc.max_send_message_length", 64 << 10),
                ("grpc.enable_retries", 0),
            ],
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, request: bytes) -> bytes:
        call = self._channel.unary_unary(method)  # no (de)serializer: bytes in, bytes out
        try:
            response = call(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            name = code.name if code is not None else "UNKNOWN"
            raise CriError(f"{method} on {self.socket}: {name}: {str(details)[:300]}") from None
        if not isinstance(response, bytes):
            raise CriError(f"{method} on {self.socket}: the answer is not a message")
        return response

    def container_status(self, container_id: str) -> RuntimeContainer:
        data = self._call(CONTAINER_STATUS, container_status_request(container_id))
        try:
            return parse_container_status(data)
        except WireError as exc:
            raise CriError(f"{CONTAINER_STATUS} on {self.socket}: {exc}") from None

    def image_status(self, reference: str) -> RuntimeImage | None:
        data = self._call(IMAGE_STATUS, image_status_request(reference))
        try:
            return parse_image_status(data)
        except WireError as exc:
            raise CriError(f"{IMAGE_STATUS} on {self.socket}: {exc}") from None
