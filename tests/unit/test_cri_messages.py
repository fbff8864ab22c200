"""The CRI messages the agent decodes by hand: what containerd sends decodes; a hostile or garbled
answer (truncated varints, lengths past the end, huge lengths, groups, duplicate fields, bad UTF-8)
is a clear WireError naming the field, never a hang, a crash or a silent default."""

from __future__ import annotations

import random

import pytest

from aicert_agent.cri import (
    RuntimeContainer,
    RuntimeImage,
    container_status_request,
    image_status_request,
    parse_container_status,
    parse_image_status,
    runtime_container_id,
)
from aicert_agent.protowire import (
    MAX_FIELDS,
    Message,
    WireError,
    encode_bool,
    encode_bytes,
    encode_string,
    encode_varint,
    fields,
)

MANIFEST = "sha256:" + "a" * 64
CONFIG = "sha256:" + "c" * 64
CID = "0123456789abcdef" * 4
REF = f"registry.example/team/train@{MANIFEST}"
POD_UID = "5f0c6a9e-0000-4000-8000-000000000001"


def varint_field(number: int, value: int) -> bytes:
    return encode_varint(number << 3) + encode_varint(value)


def container_status_response(
    *,
    cid: str = CID,
    name: str = "train",
    image: str = CONFIG,
    image_ref: str = REF,
    image_id: str = CONFIG,
    extra: bytes = b"",
) -> bytes:
    """As containerd sends it: fields this agent skips (state, times, exit code, labels, a log
    path, the info map) around the ones it reads."""
    status = (
        encode_string(1, cid)
        + encode_bytes(2, encode_string(1, name) + varint_field(2, 0))
        + varint_field(3, 2)  # CONTAINER_EXITED
        + varint_field(4, 1_700_000_000_000_000_000)
        + varint_field(7, 0)
        + encode_bytes(8, encode_string(1, image) + encode_string(18, "registry.example/team/train"))
        + encode_string(9, image_ref)
        + encode_string(10, "Completed")
        + encode_bytes(12, encode_string(1, "io.kubernetes.pod.name") + encode_string(2, "run-0"))
        + encode_bytes(12, encode_string(1, "io.kubernetes.pod.uid") + encode_string(2, POD_UID))
        + encode_string(15, "/var/log/pods/x/train/0.log")
        + encode_string(17, image_id)
        + extra
    )
    return encode_bytes(1, status) + encode_bytes(2, encode_string(1, "info") + encode_string(2, "{}"))


def image_status_response(*, image_id: str = CONFIG, digests: tuple[str, ...] = (REF,)) -> bytes:
    image = (
        encode_string(1, image_id)
        + b"".join(encode_string(3, d) for d in digests)
        + varint_field(4, 2_000_000)
        + encode_bytes(7, encode_string(1, image_id))
        + varint_field(8, 0)
    )
    return encode_bytes(1, image)


# --- what a runtime sends --------------------------------------------------------------------------


def test_a_container_status_decodes() -> None:
    assert parse_container_status(container_status_response()) == RuntimeContainer(
        id=CID, name="train", image=CONFIG, image_ref=REF, image_id=CONFIG, pod_uid=POD_UID
    )


def test_an_old_runtime_without_image_id_decodes_with_it_empty() -> None:
    data = container_status_response(image_id="")
    assert parse_container_status(data).image_id == ""


def test_an_image_status_decodes_and_an_absent_image_is_none() -> None:
    assert parse_image_status(image_status_response()) == RuntimeImage(CONFIG, (), (REF,))
    assert parse_image_status(b"") is None  # the CRI's answer for an image it does not hold
    assert parse_image_status(encode_bytes(1, b"")) is None


def test_requests_encode_as_protobuf() -> None:
    assert container_status_request(CID) == b"\x0a\x40" + CID.encode()
    assert (
        image_status_request(REF)
        == b"\x0a" + bytes([len(REF) + 2]) + b"\x0a" + bytes([len(REF)]) + REF.encode()
    )
    assert Message(image_status_request(REF), "r").message(1, "image").string(1, "image") == REF  # type: ignore[union-attr]


def test_varints_round_trip_at_their_bounds() -> None:
    for value in (0, 1, 127, 128, 300, 2**32, 2**64 - 1):
        (found,) = fields(varint_field(1, value), "m")
        assert found.value == value
    with pytest.raises(ValueError):
        encode_varint(2**64)
    assert fields(encode_bool(2, True), "m")[0].value == 1


@pytest.mark.parametrize(
    ("container_id", "runtime_id"),
    [
        (f"containerd://{CID}", CID),
        (f"cri-o://{CID}", CID),
        (CID, None),
        ("", None),
        (f"containerd://{CID}/../x", None),
        (f"containerd://{CID}\n", None),
        ("containerd://", None),
    ],
)
def test_the_runtime_id_of_a_pod_status_container_id(container_id: str, runtime_id: str | None) -> None:
    assert runtime_container_id(container_id) == runtime_id


# --- hostile answers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x0a", "varint runs past the end"),  # a key, then no length
        (b"\x0a\x80", "varint runs past the end"),  # a length cut in its middle
        (b"\x0a\x05abc", "length 5 runs past the end"),
        (b"\x0a" + encode_varint(2**63) + b"x", "runs past the end"),  # huge length
        (b"\x0a" + b"\xff" * 11, "longer than 10 bytes"),
        (b"\x08" + b"\xff" * 9 + b"\x7f", "larger than 64 bits"),
        (b"\x09abc", "8 bytes run past the end"),
        (b"\x0b\x0c", "wire type 3"),  # a group
        (b"\x0e", "wire type 6"),
        (b"\x02\x00", "field number 0"),
    ],
)
def test_a_garbled_message_is_a_clear_error(data: bytes, error: str) -> None:
    with pytest.raises(WireError, match=error):
        parse_container_status(data)


def test_a_status_with_garbage_inside_names_the_field() -> None:
    inner = encode_string(1, CID) + b"\x4a\x7f"  # image_ref (9) says 127 bytes, none follow
    with pytest.raises(WireError, match=r"ContainerStatusResponse.status field 9: its length 127"):
        parse_container_status(encode_bytes(1, inner))


def test_a_field_twice_is_refused_not_last_wins() -> None:
    """Protobuf lets a later copy win: a forged second image_ref must not override the first."""
    data = container_status_response(extra=encode_string(9, f"other.example/x@{MANIFEST}"))
    with pytest.raises(WireError, match=r"status.image_ref \(field 9\) appears 2 times"):
        parse_container_status(data)


def test_a_field_of_the_wrong_type_is_refused() -> None:
    data = encode_bytes(1, encode_string(1, CID) + varint_field(9, 5))
    with pytest.raises(WireError, match=r"status.image_ref \(field 9\) has wire type 0"):
        parse_container_status(data)
    with pytest.raises(WireError, match="repo_digests"):
        parse_image_status(encode_bytes(1, encode_string(1, CONFIG) + varint_field(3, 1)))


def test_text_that_is_not_utf8_is_refused() -> None:
    data = encode_bytes(1, encode_bytes(9, b"registry\xff"))
    with pytest.raises(WireError, match=r"status\.image_ref is not valid UTF-8"):
        parse_container_status(data)


def test_a_label_twice_is_refused() -> None:
    """Two io.kubernetes.pod.uid labels: which pod the container belongs to is not one answer."""
    twice = encode_bytes(12, encode_string(1, "io.kubernetes.pod.uid") + encode_string(2, "other"))
    with pytest.raises(WireError, match=r"status.labels has the key 'io.kubernetes.pod.uid' twice"):
        parse_container_status(container_status_response(extra=twice))


def test_a_response_without_a_status_is_refused() -> None:
    with pytest.raises(WireError, match="no status"):
        parse_container_status(b"")


def test_random_corruptions_only_ever_raise_wire_errors() -> None:
    """Truncations and byte flips of a real answer: each decodes or raises WireError."""
    rng = random.Random(17)
    good = container_status_response()
    outcomes = set()
    for cut in range(len(good)):
        try:
            parse_container_status(good[:cut])
            outcomes.add("decoded")
        except WireError:
            outcomes.add("refused")
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            parse_container_status(bytes(data))
            outcomes.add("decoded")
        except WireError:
            outcomes.add("refused")
    assert outcomes == {"decoded", "refused"}


def test_a_message_of_too_many_fields_is_refused() -> None:
    """A hostile runtime's 4 MiB of 2-byte fields would be two million of them: at most MAX_FIELDS
    are kept; up to that, many small fields decode without recursion."""
    data = encode_bytes(1, encode_string(1, CID) + varint_field(20, 1) * (MAX_FIELDS - 1))
    assert parse_container_status(data).id == CID
    with pytest.raises(WireError, match=f"ContainerStatusResponse.status has more than {MAX_FIELDS} fields"):
        parse_container_status(encode_bytes(1, encode_string(1, CID) + varint_field(20, 1) * MAX_FIELDS))
