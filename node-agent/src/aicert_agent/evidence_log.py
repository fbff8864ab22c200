"""A run's measurement log as its certificate carries it (`evidence.eventLog`), in one of two formats.

`checkpointed`, for every run the agent measured with checkpoints (aicert_agent.checkpoints): the
run's own entries only, numbered 0, 1, 2, …, each with `pcrBefore` and, but for the seal, its
checkpoint quote; the seal's checkpoint is the certificate's final quote. Its size does not depend on what else the node
measured meanwhile.

`epoch` (`eventLogFormat` absent), only for a run that has an entry logged by an agent before
checkpoints (an agent upgraded while the run was in flight): every entry of the epoch up to the
seal, other runs' redacted, which the verifier replays from zero to the final quote's PCR value.
The node's next idle re-base ends such epochs.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from aicert.certificate import TrainingCertificate, convert
from aicert.tpm.attest import parse_attest
from aicert.verify.checklog import CheckLog
from aicert.verify.errors import Check, MalformedError, VerificationError
from aicert.verify.event_log import check_event_log
from aicert.verify.verifier import certificate_evidence
from aicert_agent.measurement_log import Entry

CHECKPOINTED = "checkpointed"


def is_checkpointed(entries: Sequence[Entry], run: str) -> bool:
    """Whether every entry of `run` in `entries` has its checkpoint."""
    own = [e for e in entries if e.run == run]
    return bool(own) and all(e.checkpoint is not None for e in own)


def evidence_log(entries: Sequence[Entry], run: str) -> dict[str, Any]:
    """`eventLogFormat` and `eventLog` for `run`, from `entries`: the log up to the run's seal, the
    last entry, whose checkpoint (or, in an epoch, whose final quote) the certificate carries."""
    if is_checkpointed(entries, run):
        own = [e for e in entries if e.run == run]
        return {
            "eventLogFormat": CHECKPOINTED,
            "eventLog": [_checkpointed_entry(e, i, last=e is own[-1]) for i, e in enumerate(own)],
        }
    return {"eventLog": epoch_log(entries, run)}


def _checkpointed_entry(entry: Entry, position: int, *, last: bool) -> dict[str, Any]:
    """`seq` is the entry's place among the run's: the node's numbering is covered by no quote, and
    would tell how much other runs measured in between."""
    assert entry.pcr_before is not None and entry.checkpoint is not None
    shown: dict[str, Any] = {
        "seq": position,
        "digest": entry.digest.hex(),
        "type": entry.type,
        "content": entry.content,
        "pcrBefore": entry.pcr_before.hex(),
    }
    if not last:  # the seal's checkpoint is evidence.quote
        shown["quote"] = {
            "attest": base64.b64encode(entry.checkpoint.attest).decode(),
            "signature": base64.b64encode(entry.checkpoint.signature).decode(),
        }
    return shown


def epoch_log(entries: Sequence[Entry], run: str) -> list[dict[str, Any]]:
    """The epoch's entries as a certificate carries them: this run's in full, others redacted."""
    return [
        {"seq": e.seq, "digest": e.digest.hex(), "type": e.type, "content": e.content}
        if e.run == run
        else e.redacted()
        for e in entries
    ]


def log_problem(certificate: dict[str, Any]) -> str | None:
    """Why a verifier would refuse `certificate`'s log (step 6, with its own AK), or None.

    The agent checks what it is about to hand out: a run whose checkpoints straddle a TPM restart,
    say, is refused rather than certified with a certificate no verifier accepts."""
    parsed = convert(certificate, TrainingCertificate)
    try:
        evidence = certificate_evidence(parsed, certificate["statement"])
        ak = load_pem_public_key(parsed.evidence.ak.public.encode())
        check_event_log(evidence, ak, parse_attest(evidence.attest), CheckLog(Check))  # a record of its own
    except (VerificationError, MalformedError) as exc:
        return str(exc)
    return None
