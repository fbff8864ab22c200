"""Step 6 of docs/verification.md: the measurement log against the quotes, in either format.

`epoch` (every certificate made before checkpoints, and old AICert proofs): every entry since the
measurement PCR was last reset, other runs' entries redacted. Replaying them from 32 zero bytes
must give the quoted PCR (`event-replay`). Such a log grows with everything measured on the node
since the reset, whoever measured it.

`checkpointed`: the run's own entries only. Right after extending each entry the agent quoted the
measurement PCR alone, with the entry's digest as extraData, and the entry carries that quote and
`pcrBefore`, the PCR just before the extend. Each quote must be genuine (the same AK, made by a
TPM, of that PCR alone) and attest the value `sha256(pcrBefore || digest)`; the last entry, the
seal, is checkpointed by the final quote itself (`log-checkpoints`). The quotes' TPM clocks must
strictly increase in log order, the final quote's last, all in the final quote's boot and TPM
restart (`log-clock`): the entries were measured in this order, in the boot whose PCRs the final
quote attests. The statement check (step 7) then requires them to be exactly the run's events.

`check_event_log` picks the format's checks, one switch, and reports the other format's checks as
skipped with why: a check that did not run is never listed as passed.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from aicert.certificate import REDACTED
from aicert.tpm.attest import ALG_SHA256, HASH_NAMES, TPM_GENERATED_VALUE, Attest, ClockInfo, parse_attest
from aicert.tpm.pcrs import extend, replay
from aicert.tpm.reader import StructureError
from aicert.tpm.signature import parse_signature, signature_problem
from aicert.verify.checklog import CheckLog
from aicert.verify.errors import Check, VerificationError
from aicert.verify.evidence import LoggedEvent, QuoteEvidence

NOT_AN_EPOCH = (
    "the log is checkpointed: each entry is checked against its own quote (log-checkpoints), "
    "not replayed from zero"
)
NOT_CHECKPOINTED = (
    "the log is a whole epoch, replayed from zero (event-replay): it carries no checkpoint quotes"
)


def check_event_log(ev: QuoteEvidence, ak: PublicKeyTypes, final: Attest, log: CheckLog[Check]) -> None:
    """Step 6 for `ev`'s log format; `ak` signed `final`, the quote that binds the statement. Each
    check records itself in `log` as it passes; the other format's are recorded skipped, with why."""
    if ev.log_format == "checkpointed":
        check_checkpointed_log(ev, ak, final, log)
        log.skipped(Check.EVENT_REPLAY, NOT_AN_EPOCH)
        return
    check_epoch_log(ev, log)
    log.skipped(Check.LOG_CHECKPOINTS, NOT_CHECKPOINTED)
    log.skipped(Check.LOG_CLOCK, NOT_CHECKPOINTED)


def _label(event: LoggedEvent) -> str:
    return f"entry seq {event.seq} ({event.type})"


def _check_digests(events: Sequence[LoggedEvent], *, redacted_allowed: bool) -> None:
    for event in events:
        label = _label(event)
        if event.type == REDACTED and redacted_allowed:
            if event.content is not None:
                raise VerificationError(Check.EVENT_DIGEST, f"{label} is redacted but carries content")
            continue
        if event.preimage is None and event.type == REDACTED:
            raise VerificationError(
                Check.EVENT_DIGEST, f"{label}: a checkpointed log carries the run's own entries only, in full"
            )
        if event.preimage is None:
            raise VerificationError(Check.EVENT_DIGEST, f"{label} has no content and is not marked redacted")
        if hashlib.sha256(event.preimage).digest() != event.digest:
            raise VerificationError(Check.EVENT_DIGEST, f"{label}: the digest does not match the content")
        if event.declared_type != event.type:
            raise VerificationError(
                Check.EVENT_DIGEST, f"{label}: the content says type {event.declared_type!r}"
            )


def _check_sequence(events: Sequence[LoggedEvent]) -> None:
    """`seq` is each entry's place in the log the certificate carries: 0, 1, 2, …"""
    for position, event in enumerate(events):
        if event.seq != position:
            raise VerificationError(
                Check.EVENT_SEQUENCE,
                f"entry {position} has seq {event.seq}, expected {position}: an entry is missing or out of order",
            )


def check_epoch_log(ev: QuoteEvidence, log: CheckLog[Check]) -> None:
    """`event-sequence`, `event-digest`, `event-replay` (from zero to the quoted PCR)."""
    _check_sequence(ev.events)
    log.passed(Check.EVENT_SEQUENCE)  # (6)
    _check_digests(ev.events, redacted_allowed=True)
    log.passed(Check.EVENT_DIGEST)  # (6)
    value = replay(e.digest for e in ev.events)
    quoted = ev.pcr_values[ev.measurement_pcr]
    if value != quoted:
        raise VerificationError(
            Check.EVENT_REPLAY,
            f"replaying {len(ev.events)} entries gives PCR {ev.measurement_pcr} = {value.hex()}, "
            f"the quote says {quoted.hex()}",
        )
    log.passed(Check.EVENT_REPLAY)  # (6)


def check_checkpointed_log(
    ev: QuoteEvidence, ak: PublicKeyTypes, final: Attest, log: CheckLog[Check]
) -> None:
    """`event-sequence`, `event-digest`, `log-checkpoints`, `log-clock`.

    `seq` numbers the run's entries 0, 1, 2, … as in an epoch, not by their place in the node's log:
    no quote covers it, so any other numbering would be a second spelling of the same certificate,
    and the node's numbers would tell how much other runs measured in between."""
    events = ev.events
    _check_sequence(events)
    log.passed(Check.EVENT_SEQUENCE)  # (6)
    _check_digests(events, redacted_allowed=False)
    log.passed(Check.EVENT_DIGEST)  # (6)
    clocks = [_checkpoint_clock(ev, event, ak) for event in events[:-1]]
    _check_seal_checkpoint(ev, events[-1])
    log.passed(Check.LOG_CHECKPOINTS)  # (6)
    _check_clocks(events, clocks, final.clock_info)
    log.passed(Check.LOG_CLOCK)  # (6)


def _checkpoint_clock(ev: QuoteEvidence, event: LoggedEvent, ak: PublicKeyTypes) -> ClockInfo:
    """The TPM clock of `event`'s checkpoint quote, once the quote proves the entry's extend."""
    label, pcr = _label(event), ev.measurement_pcr
    if event.pcr_before is None or event.quote_attest is None or event.quote_signature is None:
        raise VerificationError(Check.LOG_CHECKPOINTS, f"{label} has no pcrBefore or no quote")
    try:  # as the final quote: the signature first, then what it signed
        signature = parse_signature(event.quote_signature)
        problem = signature_problem(signature, ak, event.quote_attest)
        if problem:
            raise VerificationError(Check.LOG_CHECKPOINTS, f"{label}: its quote: {problem}")
        attest = parse_attest(event.quote_attest)
    except StructureError as exc:
        raise VerificationError(Check.LOG_CHECKPOINTS, f"{label}: its quote: {exc}") from None
    if attest.magic != TPM_GENERATED_VALUE:
        raise VerificationError(
            Check.LOG_CHECKPOINTS,
            f"{label}: its quote's magic is {attest.magic:#010x}: a TPM did not make it",
        )
    if attest.extra_data != event.digest:
        raise VerificationError(
            Check.LOG_CHECKPOINTS,
            f"{label}: its quote's extraData is {attest.extra_data.hex() or '(empty)'}, not the entry's "
            "digest: the quote checkpoints another entry",
        )
    banks = {s.hash_alg for s in attest.pcr_select if s.pcrs}
    if banks != {ALG_SHA256} or attest.selected(ALG_SHA256) != (pcr,):
        covered = sorted(
            f"{HASH_NAMES.get(s.hash_alg, hex(s.hash_alg))}:{i}" for s in attest.pcr_select for i in s.pcrs
        )
        raise VerificationError(
            Check.LOG_CHECKPOINTS, f"{label}: its quote covers {covered}, not sha256 PCR {pcr} alone"
        )
    value = extend(event.pcr_before, event.digest)
    if hashlib.new(HASH_NAMES[signature.hash_alg], value).digest() != attest.pcr_digest:
        raise VerificationError(
            Check.LOG_CHECKPOINTS,
            f"{label}: its quote does not attest PCR {pcr} = sha256(pcrBefore || digest) = {value.hex()}: "
            "pcrBefore is not what the PCR held before the entry was extended",
        )
    return attest.clock_info


def _check_seal_checkpoint(ev: QuoteEvidence, seal: LoggedEvent) -> None:
    """The last entry's checkpoint is the final quote: it attests sha256(pcrBefore || digest)."""
    label, pcr = _label(seal), ev.measurement_pcr
    if seal.pcr_before is None or seal.quote_attest is not None:
        raise VerificationError(
            Check.LOG_CHECKPOINTS, f"{label} is the last entry: it has pcrBefore and no quote of its own"
        )
    value, quoted = extend(seal.pcr_before, seal.digest), ev.pcr_values[pcr]
    if value != quoted:
        raise VerificationError(
            Check.LOG_CHECKPOINTS,
            f"{label}: sha256(pcrBefore || digest) is {value.hex()} but the final quote says PCR {pcr} "
            f"is {quoted.hex()}: the last entry is not what the final quote checkpoints",
        )


def _check_clocks(events: Sequence[LoggedEvent], clocks: Sequence[ClockInfo], final: ClockInfo) -> None:
    boot = (final.reset_count, final.restart_count)
    for event, clock in zip(events, clocks, strict=False):
        if (clock.reset_count, clock.restart_count) != boot:
            raise VerificationError(
                Check.LOG_CLOCK,
                f"{_label(event)}: its quote was taken at resetCount {clock.reset_count}, restartCount "
                f"{clock.restart_count}, the final quote at resetCount {boot[0]}, restartCount {boot[1]}: "
                "in another boot or TPM restart",
            )
    labelled = [*((_label(e), c) for e, c in zip(events, clocks, strict=False)), ("the final quote", final)]
    for (before, earlier), (label, later) in itertools.pairwise(labelled):
        if later.clock <= earlier.clock:
            raise VerificationError(
                Check.LOG_CLOCK,
                f"{label}: TPM clock {later.clock}, not after {before}'s {earlier.clock}: "
                "the quotes were not taken in the log's order",
            )
