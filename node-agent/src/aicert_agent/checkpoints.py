"""Checkpoints: a quote of the measurement PCR taken right after each entry is extended.

A certificate once carried every entry of the log's epoch, other runs' redacted, so that the
verifier could replay the PCR from zero; one run held open kept the epoch open and every other
certificate on the node grew with every other run. A checkpoint makes each entry provable on its
own: under the log's lock, right after the extend, the agent quotes the PCR, whose value is then
`sha256(pcrBefore || digest)`. A certificate carries its run's entries, each with `pcrBefore` and
its checkpoint, and nothing of any other run (aicert.verify.event_log checks them).

The seal's checkpoint is the certificate's final quote: the boot PCRs and the measurement PCR over
`sha256(JCS(statement))`, which the seal names. Every other entry's covers the measurement PCR
alone, over the entry's digest. The checkpoints of a log are taken in strictly increasing TPM
clock (a quote is taken again until the clock has moved past the previous checkpoint's): the
verifier orders a run's entries by it.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aicert.certificate import BOOT_PCRS
from aicert.events import SEAL
from aicert.tpm.attest import ClockInfo, parse_attest
from aicert.tpm.pcrs import extend

# How long the agent waits for the TPM clock (milliseconds) to move past the previous checkpoint's.
CLOCK_WAIT_SECONDS = 0.001
CLOCK_ATTEMPTS = 200


class CheckpointError(Exception):
    """A checkpoint cannot be taken; the message says why."""


class PcrDevice(Protocol):
    def pcr_read(self, indices: Sequence[int]) -> dict[int, bytes]: ...
    def pcr_extend(self, index: int, digest: bytes) -> None: ...
    def pcr_reset(self, index: int) -> None: ...


class QuoteLike(Protocol):
    @property
    def attest(self) -> bytes: ...
    @property
    def signature(self) -> bytes: ...
    @property
    def pcr_values(self) -> dict[int, bytes]: ...


class QuotingDevice(PcrDevice, Protocol):
    def quote(self, pcrs: Sequence[int], extra_data: bytes) -> QuoteLike: ...


class AttestingDevice(QuotingDevice, Protocol):
    """A TPM whose AK also signs external data (a Sigstore bundle's envelope, aicert_agent.bundling)."""

    def sign_external(self, data: bytes) -> bytes: ...


@dataclass(frozen=True)
class Checkpoint:
    """A quote taken right after an entry was extended, and the PCR values it covers."""

    attest: bytes
    signature: bytes
    pcr_values: dict[int, bytes]

    @property
    def clock(self) -> ClockInfo:
        return parse_attest(self.attest).clock_info

    def to_json(self, seq: int) -> dict[str, Any]:
        """The log line that follows entry `seq`."""
        return {
            "checkpoint": seq,
            "attest": base64.b64encode(self.attest).decode(),
            "signature": base64.b64encode(self.signature).decode(),
            "pcrs": {str(i): v.hex() for i, v in sorted(self.pcr_values.items())},
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Checkpoint:
        """Raises KeyError, ValueError or TypeError when `obj` is not a checkpoint line."""
        return cls(
            base64.b64decode(obj["attest"], validate=True),
            base64.b64decode(obj["signature"], validate=True),
            {int(i): bytes.fromhex(v) for i, v in obj["pcrs"].items()},
        )


def checkpoint_request(
    kind: str, content: Mapping[str, Any], digest: bytes, pcr: int
) -> tuple[list[int], bytes]:
    """The PCRs an entry's checkpoint quotes and its extraData: for the seal, the certificate's final
    quote (boot PCRs and the measurement PCR, over the statement digest the seal names); for any
    other entry, the measurement PCR alone over the entry's digest."""
    if kind == SEAL:
        return [*BOOT_PCRS, pcr], bytes.fromhex(str(content["statement"]))
    return [pcr], digest


def take_checkpoint(
    tpm: QuotingDevice,
    pcr: int,
    *,
    kind: str,
    content: Mapping[str, Any],
    digest: bytes,
    pcr_before: bytes,
    after: ClockInfo | None,
) -> Checkpoint:
    """Quote right after an entry was extended onto `pcr_before`, with nothing extended since (the
    caller holds the log's lock). `after`: the previous checkpoint's clock, which this one's must
    pass (when both are of the same boot and TPM restart)."""
    pcrs, extra_data = checkpoint_request(kind, content, digest, pcr)
    expected = extend(pcr_before, digest)
    for _attempt in range(CLOCK_ATTEMPTS):
        quote = tpm.quote(pcrs, extra_data)
        if quote.pcr_values[pcr] != expected:
            raise CheckpointError(
                f"PCR {pcr} is {quote.pcr_values[pcr].hex()} after the entry was extended, not "
                f"{expected.hex()}: something other than the agent extended the PCR"
            )
        clock = parse_attest(quote.attest).clock_info
        if (
            after is None
            or (clock.reset_count, clock.restart_count) != (after.reset_count, after.restart_count)
            or clock.clock > after.clock
        ):
            return Checkpoint(quote.attest, quote.signature, dict(quote.pcr_values))
        time.sleep(CLOCK_WAIT_SECONDS)
    raise CheckpointError(
        f"the TPM clock did not move past {after.clock if after else 0} ms in {CLOCK_ATTEMPTS} quotes"
    )
