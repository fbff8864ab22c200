"""What can go wrong in verification, by name."""

from __future__ import annotations

from enum import StrEnum


class Check(StrEnum):
    """Every verification check, in the order they run (docs/verification.md)."""

    TIMESTAMP = "timestamp"  # 2. a trusted TSA dated the quote's signature (then: the time for ak-chain)
    AK_CHAIN = "ak-chain"  # 2. AK certificate path to a trusted root, valid at the time
    ASSURANCE = "assurance"  # 2. the claimed level is one the root can vouch for
    AK_KEY = "ak-key"  # 3. the certified key is the evidence's AK
    ENVELOPE_SIGNATURE = "envelope-signature"  # 3. (a Sigstore bundle) the AK signed its DSSE envelope
    TLOG_INCLUSION = "tlog-inclusion"  # 3. (a bundle with a Rekor v2 entry) a pinned log holds that envelope
    CVM_CHAIN = "cvm-chain"  # 3. VCEK -> ASK -> pinned AMD ARK, valid at the time, VCEK TCB/chip = report's
    CVM_REPORT_SIGNATURE = "cvm-report-signature"  # 3. the VCEK signed the SEV-SNP report
    CVM_VMPL = "cvm-vmpl"  # 3. the report was asked for at VMPL 0 (the paravisor, not the guest OS)
    CVM_REPORT_DATA = "cvm-report-data"  # 3. report_data[0:32] == sha256(HCL runtime data)
    CVM_AK = "cvm-ak"  # 3. the runtime data's HCLAkPub is the quote's AK
    CVM_DEBUG = "cvm-debug"  # 3. the guest policy forbids debugging
    CVM_MEASUREMENT = "cvm-measurement"  # 3. the launch measurement is a known-good paravisor's
    QUOTE_SIGNATURE = "quote-signature"  # 4. the AK signed the attestation
    QUOTE_STRUCTURE = "quote-structure"  # 5. magic and type
    QUOTE_BINDING = "quote-binding"  # 5. extraData == sha256(JCS(statement))
    PCR_SELECTION = "pcr-selection"  # 5. the quote covers the listed PCRs and the measurement PCR
    PCR_DIGEST = "pcr-digest"  # 5. pcrDigest == hash of the listed PCR values
    EVENT_SEQUENCE = "event-sequence"  # 6. the log is complete and in order
    EVENT_DIGEST = "event-digest"  # 6. every shown entry's digest matches its content
    EVENT_REPLAY = "event-replay"  # 6. (epoch log) replaying the log from zero gives the quoted PCR value
    LOG_CHECKPOINTS = "log-checkpoints"  # 6. (checkpointed log) each entry's own quote attests its extend
    LOG_CLOCK = "log-clock"  # 6. (checkpointed log) those quotes are in order, all in the final quote's boot
    STATEMENT = "statement"  # 7. the statement is exactly what the run's events say
    POLICY_ASSURANCE = "policy-assurance"  # 8.
    POLICY_BOOT_PCRS = "policy-boot-pcrs"  # 8.
    POLICY_IMAGE = "policy-image"  # 8.
    POLICY_EGRESS = "policy-egress"  # 8. the pod had no network egress
    POLICY_TCB = "policy-tcb"  # 8. the SNP report's reported TCB is at least the policy's minimum
    POLICY_MEASUREMENT = "policy-measurement"  # 8. the SNP launch measurement is allowed
    MODEL_FILES = "model-files"  # 9. --model
    DATA_FILES = "data-files"  # 9. --data


class BindingCheck(StrEnum):
    """`kubectl aicert verify`'s resource checks, in the order they run (after every `Check`):
    does the verified certificate belong to the CertifiedTraining it was read from
    (aicert.verify.binding)."""

    RESOURCE_IDENTITY = "resource-identity"
    RESOURCE_MODEL_DIGEST = "resource-model-digest"
    RESOURCE_PHASE = "resource-phase"


class LineageCheck(StrEnum):
    """`aicert verify --lineage`'s checks of the chain of earlier runs, after every `Check` of the
    certificate given (aicert.verify.lineage), for each parent a run records."""

    LINEAGE_BOUNDS = "lineage-bounds"  # no cycle; the chain no deeper, nor larger, than its bounds
    LINEAGE_COMPLETE = "lineage-complete"  # the parent's certificate is in a --lineage directory
    LINEAGE_DIGEST = "lineage-digest"  # its bytes hash to the digest the run recorded
    LINEAGE_PARENT = "lineage-parent"  # it verifies on its own (every Check, its own level)
    LINEAGE_SUBJECT = "lineage-subject"  # it certifies the model the run recorded as that input's


CVM_CHECKS = (
    Check.CVM_CHAIN,
    Check.CVM_REPORT_SIGNATURE,
    Check.CVM_VMPL,
    Check.CVM_REPORT_DATA,
    Check.CVM_AK,
    Check.CVM_DEBUG,
    Check.CVM_MEASUREMENT,
)


class VerificationError(Exception):
    """The certificate is well-formed but a check failed: it proves nothing (exit 1)."""

    def __init__(self, check: Check | BindingCheck | LineageCheck, reason: str) -> None:
        super().__init__(f"{check}: {reason}")
        self.check = check
        self.reason = reason


class IncompleteVerification(VerificationError):
    """The record of the checks does not add up (aicert.verify.checklog): a planned check neither
    ran nor was skipped, or one was recorded twice, outside the plan, or skipped without a reason.
    A bug in the verifier, never a verified result: it fails like a check (exit 1), naming `check`."""


class MalformedError(Exception):
    """The input cannot be read as a certificate; `field` says where (exit 2)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason
