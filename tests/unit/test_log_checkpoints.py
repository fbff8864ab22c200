"""A certificate's size does not depend on other runs: it carries its run's entries, each checked
against its own quote (a checkpoint). Every check of a checkpointed log fails, and fails alone, when
exactly its input is tampered with; a whole-epoch certificate of the agent before checkpoints still
verifies by replay.

The certificates are the agent's own (recorder, log) on a `SoftTpm` whose quotes are real
TPMS_ATTEST signed with the node's ECC AK; the tampered quotes are genuine quotes of that AK (or of
another) taken in the state an attacker would need.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tests.soft_node import PCR, Json, SoftNode, soft_node
from tests.soft_tpm import SoftTpm

from aicert.tpm.attest import parse_attest
from aicert.tpm.pcrs import extend
from aicert.trust import TrustStore
from aicert.verify import Check, MalformedError, VerificationError, Verifier

EPOCH_VECTOR = Path(__file__).resolve().parents[1] / "assets" / "epoch"
FOREIGN_BETWEEN = 40  # other runs' entries after each of the run's five measurements: 200 in all


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> SoftNode:
    return soft_node(tmp_path_factory.mktemp("node"))


@pytest.fixture(scope="module")
def crowded(node: SoftNode) -> Json:
    """A run certified while 200 entries of other runs went into the same epoch around it."""
    node.foreign(3)
    return node.certify("run-1", foreign_between=FOREIGN_BETWEEN)


def log(cert: Json) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = cert["evidence"]["eventLog"]
    return entries


def expect(node: SoftNode, cert: Json, check: Check, reason: str) -> None:
    with pytest.raises(VerificationError) as err:
        node.verify(cert)
    assert (err.value.check, reason in err.value.reason) == (check, True), err.value


def expect_malformed(node: SoftNode, cert: Json, reason: str) -> None:
    with pytest.raises(MalformedError) as err:
        node.verify(cert)
    assert (err.value.field, reason in err.value.reason) == ("evidence.eventLog", True), err.value


def clock_of(entry: dict[str, Any]) -> int:
    return parse_attest(base64.b64decode(entry["quote"]["attest"])).clock_info.clock


def genuine_quote(
    tpm: SoftTpm, entry: dict[str, Any], *, pcrs: list[int] | None = None, clock: int | None = None
) -> dict[str, str]:
    """A genuine quote by `tpm`'s AK, in the state the entry's checkpoint needs: PCR 23 holding
    sha256(pcrBefore || digest), extraData the entry's digest; at `clock` (+1) if given."""
    digest = bytes.fromhex(entry["digest"])
    tpm.pcrs[PCR] = extend(bytes.fromhex(entry["pcrBefore"]), digest)
    if clock is not None:
        tpm.clock = clock - 1
    quote = tpm.quote(pcrs or [PCR], digest)
    return {
        "attest": base64.b64encode(quote.attest).decode(),
        "signature": base64.b64encode(quote.signature).decode(),
    }


# --- the attack --------------------------------------------------------------------------------


def test_a_certificate_does_not_grow_with_other_runs(tmp_path: Path, node: SoftNode, crowded: Json) -> None:
    """Before checkpoints, each of those 200 entries was in the certificate (redacted), and a run
    held open kept them coming until the certificate no longer fitted in the status."""
    alone = soft_node(tmp_path).certify("run-1")
    assert node.foreign_entries >= 5 * FOREIGN_BETWEEN
    assert abs(len(json.dumps(crowded)) - len(json.dumps(alone))) <= 16  # a timestamp's last digits
    assert [e["type"] for e in log(crowded)] == [e["type"] for e in log(alone)]


def test_the_checkpointed_certificate_verifies_with_its_own_entries_only(
    node: SoftNode, crowded: Json
) -> None:
    result = node.verify(crowded)
    assert crowded["evidence"]["eventLogFormat"] == "checkpointed"
    assert {e["content"]["run"] for e in log(crowded)} == {"run-1"}
    assert "redacted" not in json.dumps(crowded)
    assert Check.LOG_CHECKPOINTS in result.passed and Check.LOG_CLOCK in result.passed
    assert dict(result.skipped)[Check.EVENT_REPLAY].startswith("the log is checkpointed")
    # numbered among the run's entries: the node's numbers would tell how much others measured
    assert [e["seq"] for e in log(crowded)] == list(range(6))


# --- each check, tampered with exactly its input ---------------------------------------------------


def _swap_quotes(cert: Json) -> None:
    log(cert)[2]["quote"] = log(cert)[3]["quote"]


def _swap_image_and_input(cert: Json) -> None:
    """The image and the first input in the other order, renumbered: the statement does not care
    which came first, only the clocks tell."""
    entries = log(cert)
    entries[1], entries[2] = entries[2], entries[1]
    entries[1]["seq"], entries[2]["seq"] = entries[2]["seq"], entries[1]["seq"]


def _unrenumbered_swap(cert: Json) -> None:
    entries = log(cert)
    entries[1], entries[2] = entries[2], entries[1]


def _drop_renumbered(cert: Json, index: int) -> None:
    log(cert).pop(index)
    for position, entry in enumerate(log(cert)):
        entry["seq"] = position


def _set(index: int, field: str, value: Any) -> Callable[[Json], None]:
    return lambda cert: log(cert)[index].update({field: value})


TAMPERS: list[tuple[str, Callable[[Json], None], Check, str]] = [
    ("quote of another entry", _swap_quotes, Check.LOG_CHECKPOINTS, "not the entry's digest"),
    ("pcrBefore changed", _set(2, "pcrBefore", "00" * 32), Check.LOG_CHECKPOINTS, "does not attest PCR 23"),
    (
        "seal's pcrBefore changed",
        _set(-1, "pcrBefore", "00" * 32),
        Check.LOG_CHECKPOINTS,
        "the final quote says",
    ),
    (
        "unreadable quote signature",
        lambda c: log(c)[1]["quote"].update(signature=base64.b64encode(b"\x00\x18").decode()),
        Check.LOG_CHECKPOINTS,
        "its quote: TPMT_SIGNATURE",
    ),
    (
        "clock order swapped",
        _swap_image_and_input,
        Check.LOG_CLOCK,
        "the quotes were not taken in the log's order",
    ),
    ("entries out of seq order", _unrenumbered_swap, Check.EVENT_SEQUENCE, "has seq 2, expected 1"),
    ("seq renumbered", lambda c: log(c)[3].update(seq=4), Check.EVENT_SEQUENCE, "has seq 4, expected 3"),
    ("input dropped", lambda c: _drop_renumbered(c, 3), Check.STATEMENT, "statement.predicate.inputs"),
    ("image dropped", lambda c: _drop_renumbered(c, 1), Check.STATEMENT, "statement.predicate.image"),
    ("entry dropped, not renumbered", lambda c: log(c).pop(3), Check.EVENT_SEQUENCE, "has seq 4, expected 3"),
    (
        "content changed",
        lambda c: log(c)[2]["content"].update(files=9),
        Check.EVENT_DIGEST,
        "the digest does not match the content",
    ),
]


@pytest.mark.parametrize(("what", "tamper", "check", "reason"), TAMPERS, ids=[t[0] for t in TAMPERS])
def test_a_tampered_log_fails_exactly_its_check(
    node: SoftNode, crowded: Json, what: str, tamper: Callable[[Json], None], check: Check, reason: str
) -> None:
    cert = copy.deepcopy(crowded)
    tamper(cert)
    expect(node, cert, check, reason)


def test_a_checkpoint_by_another_ak(node: SoftNode, crowded: Json) -> None:
    cert = copy.deepcopy(crowded)
    stranger = SoftTpm(ec.generate_private_key(ec.SECP256R1()))
    log(cert)[2]["quote"] = genuine_quote(stranger, log(cert)[2], clock=clock_of(log(cert)[2]))
    expect(node, cert, Check.LOG_CHECKPOINTS, "does not verify with the AK")


def test_a_checkpoint_of_more_pcrs(node: SoftNode, crowded: Json) -> None:
    cert = copy.deepcopy(crowded)
    again = SoftTpm(node.ak_key)
    log(cert)[2]["quote"] = genuine_quote(again, log(cert)[2], pcrs=[0, PCR], clock=clock_of(log(cert)[2]))
    expect(node, cert, Check.LOG_CHECKPOINTS, "not sha256 PCR 23 alone")


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (3, 0x46, "a TPM did not make it"),  # magic: TPM2_Sign of outside data, not a TPM's attestation
        (5, 0x14, "not TPM_ST_ATTEST_QUOTE"),  # type: TPM_ST_ATTEST_CERTIFY, not a quote
    ],
    ids=["magic", "type"],
)
def test_a_checkpoint_that_is_no_tpm_quote(
    node: SoftNode, crowded: Json, offset: int, value: int, reason: str
) -> None:
    """Signed by the AK's key, but not a quote the TPM made."""
    cert = copy.deepcopy(crowded)
    attest = bytearray(base64.b64decode(log(cert)[2]["quote"]["attest"]))
    attest[offset] = value
    log(cert)[2]["quote"] = {
        "attest": base64.b64encode(bytes(attest)).decode(),
        "signature": base64.b64encode(SoftTpm(node.ak_key).sign(bytes(attest))).decode(),
    }
    expect(node, cert, Check.LOG_CHECKPOINTS, reason)


@pytest.mark.parametrize(
    ("counts", "reason"),
    [
        ({"reset_count": 2}, "resetCount 2, restartCount 0"),
        ({"restart_count": 1}, "resetCount 1, restartCount 1"),
    ],
    ids=["another boot", "another TPM restart"],
)
def test_a_checkpoint_from_another_boot(
    node: SoftNode, crowded: Json, counts: dict[str, int], reason: str
) -> None:
    """A genuine quote of the entry's PCR value, but taken in another boot (or TPM restart) than the
    final quote, at a clock that would fit between its neighbours'."""
    cert = copy.deepcopy(crowded)
    other_boot = SoftTpm(node.ak_key, **counts)
    log(cert)[2]["quote"] = genuine_quote(other_boot, log(cert)[2], clock=clock_of(log(cert)[2]))
    expect(node, cert, Check.LOG_CLOCK, reason)


def test_a_checkpoint_taken_after_the_seal(node: SoftNode, crowded: Json) -> None:
    cert = copy.deepcopy(crowded)
    final_clock = parse_attest(base64.b64decode(cert["evidence"]["quote"]["attest"])).clock_info.clock
    log(cert)[4]["quote"] = genuine_quote(SoftTpm(node.ak_key), log(cert)[4], clock=final_clock + 10)
    expect(node, cert, Check.LOG_CLOCK, f"the final quote: TPM clock {final_clock}, not after entry seq")


# --- the shape of each format: unusable input, exit 2 ---------------------------------------------------

SHAPES: list[tuple[str, Callable[[Json], None], str]] = [
    (
        "another run's entry, redacted",
        lambda c: log(c).insert(1, {"seq": 1, "digest": "ab" * 32, "type": "redacted"}),
        "is redacted or has no content: a checkpointed log carries the run's own entries only",
    ),
    ("pcrBefore left out", lambda c: log(c)[2].pop("pcrBefore"), "has no pcrBefore"),
    ("quote left out", lambda c: log(c)[2].pop("quote"), "has no quote"),
    ("seal with a quote", lambda c: log(c)[-1].update(quote=log(c)[2]["quote"]), "carries a quote"),
    ("seal dropped", lambda c: log(c).pop(), "is the last (the seal) and carries a quote"),
    (
        "format label dropped",
        lambda c: c["evidence"].pop("eventLogFormat"),
        "carries pcrBefore or quote, which only a checkpointed log has",
    ),
]


@pytest.mark.parametrize(("what", "tamper", "reason"), SHAPES, ids=[s[0] for s in SHAPES])
def test_a_log_not_of_its_format_is_unusable(
    node: SoftNode, crowded: Json, what: str, tamper: Callable[[Json], None], reason: str
) -> None:
    cert = copy.deepcopy(crowded)
    tamper(cert)
    expect_malformed(node, cert, reason)


def test_a_checkpointed_log_cannot_pass_for_an_epoch(node: SoftNode, crowded: Json) -> None:
    """Stripped of its checkpoints and relabelled, the run's entries are not a whole epoch."""
    cert = copy.deepcopy(crowded)
    del cert["evidence"]["eventLogFormat"]
    for entry in log(cert):
        entry.pop("pcrBefore")
        entry.pop("quote", None)
    expect(node, cert, Check.EVENT_REPLAY, "replaying 6 entries gives PCR 23")


# --- the previous format ---------------------------------------------------------------------------


def epoch_verifier() -> Verifier:
    return Verifier(TrustStore.from_pem_file(EPOCH_VECTOR / "dev-ca.pem"))


EPOCH_AT = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def test_a_whole_epoch_certificate_still_verifies_by_replay() -> None:
    """Made by the agent before checkpoints on a swtpm, two runs interleaved (tests/assets/epoch)."""
    cert = json.loads((EPOCH_VECTOR / "certificate.json").read_text())
    assert "eventLogFormat" not in cert["evidence"] and "redacted" in json.dumps(cert)
    result = epoch_verifier().verify(json.dumps(cert), at=EPOCH_AT)
    assert Check.EVENT_REPLAY in result.passed
    skipped = dict(result.skipped)
    assert skipped[Check.LOG_CHECKPOINTS] == skipped[Check.LOG_CLOCK]
    assert skipped[Check.LOG_CLOCK].startswith("the log is a whole epoch, replayed from zero")


def test_a_whole_epoch_is_still_replayed() -> None:
    cert = json.loads((EPOCH_VECTOR / "certificate.json").read_text())
    redacted = next(e for e in log(cert) if e["type"] == "redacted")
    redacted["digest"] = "00" * 32
    with pytest.raises(VerificationError) as err:
        epoch_verifier().verify(json.dumps(cert), at=EPOCH_AT)
    assert err.value.check is Check.EVENT_REPLAY


def test_a_whole_epoch_relabelled_checkpointed_is_unusable() -> None:
    cert = json.loads((EPOCH_VECTOR / "certificate.json").read_text())
    cert["evidence"]["eventLogFormat"] = "checkpointed"
    with pytest.raises(MalformedError) as err:
        epoch_verifier().verify(json.dumps(cert), at=EPOCH_AT)
    assert err.value.field == "evidence.eventLog" and "entry 0 (seq 0) has no pcrBefore" in err.value.reason
