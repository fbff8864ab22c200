"""`Verifier`: the checks of docs/verification.md, in order, failing closed.

The plan is every `Check`, in order. Each check either raises `VerificationError(check, reason)`
or records itself in the verification's `CheckLog` where it has just passed (`log.passed`, marked
`# (n)` below with its step); where a check does not run (no timestamp, no policy, no --model or
--data, a level below cvm, or one an old proof's format cannot take) the code that decides so
records why (`log.skipped`). The result lists that record (aicert.verify.checklog): a planned check
that neither ran nor was skipped fails the verification. Nothing is logged and let through.
Old AICert proofs are reduced to the same `QuoteEvidence` as ours and go through the same chain,
signature, quote and replay code.
"""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from aicert.bundle import bundle_field
from aicert.certificate import (
    ASSURANCE_ORDER,
    BOOT_PCRS,
    REDACTED,
    Assurance,
    Statement,
    VerifiedAssurance,
    root_level,
)
from aicert.events import SEAL, EventError, statement_from_events
from aicert.tpm.attest import ALG_SHA256, HASH_NAMES, TPM_GENERATED_VALUE, Attest, parse_attest
from aicert.tpm.reader import StructureError
from aicert.tpm.signature import parse_signature, signature_problem
from aicert.trust.chain import CertPath, ChainError, build_path
from aicert.trust.measurements import KnownMeasurements
from aicert.trust.store import TrustStore
from aicert.verify.checklog import CheckLog
from aicert.verify.document import Document, certificate_evidence, load_document
from aicert.verify.envelope import check_envelope, check_tlog
from aicert.verify.errors import Check, MalformedError, VerificationError
from aicert.verify.event_log import check_event_log
from aicert.verify.evidence import QuoteEvidence
from aicert.verify.keys import load_public_key, readable_certificates
from aicert.verify.platform import check_platform, not_claimed
from aicert.verify.policy import Policy, check_policy, skip_policy
from aicert.verify.result import IgnoredFiles, VerifiedTraining

if TYPE_CHECKING:  # loaded when needed: aicert.cvm for level cvm, aicert.digest for --model/--data,
    # aicert.legacy for an old AICert proof, aicert.verify.timestamp for a timestamped certificate
    from aicert.cvm import PlatformFacts
    from aicert.digest import PathPatterns
    from aicert.legacy import LegacyProof
    from aicert.verify.timestamp import Timestamped

__all__ = ["Document", "Verifier", "certificate_evidence", "load_document"]


PLAN = tuple(Check)  # every check, in the order of docs/verification.md: each runs or says why not
NO_MODEL_DIR = "no model directory given (--model)"
NO_DATA_DIRS = "no input directory given (--data)"
# Why `timestamp` did not run (aicert.verify.timestamp, the check, loads only when it runs).
NO_TSA_ROOT = (
    "no trusted TSA root (--tsa-bundle, or the tsa store): the AK certificate is checked at --at or now"
)
NO_TOKEN = "the certificate carries no timestamp: the AK certificate is checked at --at or now"


def _spki(key_owner: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # level cvm only

    return key_owner.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _leaf(certificates: tuple[x509.Certificate, ...]) -> x509.Certificate:
    """The certificate no other one in the chain was issued by (the chain may come in any order)."""
    if not certificates:
        raise VerificationError(Check.AK_CHAIN, "the evidence carries no AK certificate")
    leaves = [
        c
        for c in certificates
        if c.issuer != c.subject and not any(o is not c and o.issuer == c.subject for o in certificates)
    ]
    return leaves[0] if len(leaves) == 1 else certificates[0]


class QuoteFacts(msgspec.Struct, frozen=True):
    """What steps 2 to 6 established, whatever the format."""

    path: CertPath
    attest: Attest
    assurance: Assurance  # what the chain (and, for cvm, the platform) vouches for; old proofs: `legacy`
    platform: PlatformFacts | None  # the confidential VM, at level cvm

    def result(
        self,
        format: Literal["aicert.dev/v1alpha1", "aicert-legacy"],
        statement: Statement | None,
        events: list[dict[str, Any]],
        log: CheckLog[Check],
        notes: tuple[str, ...] = (),
        assurance: VerifiedAssurance | None = None,
        ignored: tuple[IgnoredFiles, ...] = (),
    ) -> VerifiedTraining:
        """The result, from what `log` recorded: raises IncompleteVerification if a planned check
        neither ran nor was skipped."""
        passed, skipped = log.finish()
        return VerifiedTraining(
            format=format,
            assurance=assurance or self.assurance,
            statement=statement,
            events=tuple(events),
            ak_subject=self.path.certificates[0].subject.rfc4514_string(),
            trust_root=self.path.anchor.certificate.subject.rfc4514_string(),
            trust_source=self.path.anchor.source,
            clock=self.attest.clock_info,
            passed=passed,
            notes=notes,
            skipped=skipped,
            ignored=ignored,
        )


def check_chain(
    ev: QuoteEvidence, trust: TrustStore, at: dt.datetime, log: CheckLog[Check], *, timestamped: bool = False
) -> tuple[CertPath, Assurance]:
    leaf = _leaf(ev.certificates)
    try:
        path = build_path(leaf, ev.certificates, trust, at)
    except ChainError as exc:
        reason = str(exc)
        if "expired on" in reason and not timestamped:
            reason += (
                "; to check it at a time it was valid give --at, or seal certificates with an RFC 3161 "
                "timestamp (the agent's --tsa-url) and trust the TSA with --tsa-bundle"
            )
        raise VerificationError(Check.AK_CHAIN, reason) from None
    log.passed(Check.AK_CHAIN)  # (2)
    ceiling = path.anchor.max_assurance
    claimed = ev.claimed_assurance or ceiling
    if ASSURANCE_ORDER[root_level(claimed)] > ASSURANCE_ORDER[ceiling]:
        reason = f"the certificate claims level {claimed} but its AK chains to {path.anchor.source}, which vouches for {ceiling} at most"
        if claimed == "cvm":
            reason += "; cvm needs an AK certified by the Azure vTPM root and a verified SEV-SNP report"
        raise VerificationError(Check.ASSURANCE, reason)
    if claimed != "cvm":  # for cvm, the platform checks (after ak-key) decide the rest: check_platform
        log.passed(Check.ASSURANCE)  # (2)
    return path, claimed


def check_ak_key(ev: QuoteEvidence, path: CertPath, log: CheckLog[Check]) -> None:
    if ev.ak_public_pem is None:  # an old proof: its format said why ak-key does not apply
        return
    # Keys are equal when their numbers are (RSA n and e; EC curve and point), which is when the
    # DER SubjectPublicKeyInfo `cryptography` writes for them is (it has one encoding per key).
    if load_public_key(ev.ak_public_pem, ev.certificates) != path.certificates[0].public_key():
        raise VerificationError(
            Check.AK_KEY, "evidence.ak.public is not the key the AK certificate certifies"
        )
    log.passed(Check.AK_KEY)  # (3)


def check_signature(ev: QuoteEvidence, path: CertPath, log: CheckLog[Check]) -> int:
    try:
        signature = parse_signature(ev.signature)
    except StructureError as exc:
        raise VerificationError(Check.QUOTE_SIGNATURE, str(exc)) from None
    problem = signature_problem(signature, path.certificates[0].public_key(), ev.attest)
    if problem:
        raise VerificationError(Check.QUOTE_SIGNATURE, problem)
    log.passed(Check.QUOTE_SIGNATURE)  # (4)
    return signature.hash_alg


def check_attest(ev: QuoteEvidence, digest_alg: int, log: CheckLog[Check]) -> Attest:
    try:
        attest = parse_attest(ev.attest)
    except StructureError as exc:
        raise VerificationError(Check.QUOTE_STRUCTURE, str(exc)) from None
    if attest.magic != TPM_GENERATED_VALUE:
        raise VerificationError(
            Check.QUOTE_STRUCTURE,
            f"magic is {attest.magic:#010x}, not TPM_GENERATED_VALUE: a TPM did not make it",
        )
    log.passed(Check.QUOTE_STRUCTURE)  # (5)
    if ev.expected_extra_data is not None:  # None: an old proof, whose format said why
        if attest.extra_data != ev.expected_extra_data:
            raise VerificationError(
                Check.QUOTE_BINDING,
                f"the quote's extraData is {attest.extra_data.hex() or '(empty)'}, but "
                f"sha256(JCS(statement)) is {ev.expected_extra_data.hex()}: the quote certifies another statement",
            )
        log.passed(Check.QUOTE_BINDING)  # (5)
    other_banks = sorted(
        {
            HASH_NAMES.get(s.hash_alg, hex(s.hash_alg))
            for s in attest.pcr_select
            if s.hash_alg != ALG_SHA256 and s.pcrs
        }
    )
    if other_banks:
        raise VerificationError(
            Check.PCR_SELECTION,
            f"the quote also covers the {', '.join(other_banks)} bank, which is not listed",
        )
    selected = attest.selected(ALG_SHA256)
    listed = tuple(sorted(ev.pcr_values))
    if selected != listed:
        raise VerificationError(
            Check.PCR_SELECTION,
            f"the quote covers sha256 PCRs {list(selected)} but the evidence lists {list(listed)}",
        )
    missing = [i for i in (*ev.required_pcrs, ev.measurement_pcr) if i not in selected]
    if missing:
        raise VerificationError(Check.PCR_SELECTION, f"the quote does not cover PCR(s) {missing}")
    log.passed(Check.PCR_SELECTION)  # (5)
    algorithm = HASH_NAMES.get(digest_alg, "sha256")
    computed = hashlib.new(algorithm, b"".join(ev.pcr_values[i] for i in listed)).digest()
    if computed != attest.pcr_digest:
        raise VerificationError(
            Check.PCR_DIGEST, "the listed PCR values do not hash to the quote's pcrDigest"
        )
    log.passed(Check.PCR_DIGEST)  # (5)
    return attest


def verify_quote_evidence(
    ev: QuoteEvidence,
    trust: TrustStore,
    at: dt.datetime,
    log: CheckLog[Check],
    *,
    timestamped: bool = False,
    ark_fingerprints: Collection[str] | None = None,
    paravisor_measurements: KnownMeasurements | None = None,
    tlog_keys: Collection[PublicKeyTypes] = (),
    require_tlog: bool = False,
) -> QuoteFacts:
    """Steps 2 to 6, shared by every format. `timestamped`: `at` is a trusted TSA's time;
    `ark_fingerprints` and `paravisor_measurements`: the AMD roots and the known-good paravisor
    launch measurements trusted for level cvm."""
    path, assurance = check_chain(ev, trust, at, log, timestamped=timestamped)
    check_ak_key(ev, path, log)
    check_envelope(ev.envelope, path.certificates[0].public_key(), ev.bound_subject, log)
    check_tlog(ev.envelope, path.certificates[0].public_key(), list(tlog_keys), log, required=require_tlog)
    platform = None
    if assurance == "cvm":  # (3) cvm-*, then assurance
        platform = check_platform(
            ev.platform,
            ev.platform_certificates,
            ak_spki_der=_spki(path.certificates[0]),
            at=at,
            log=log,
            ark_fingerprints=ark_fingerprints,
            known_measurements=paravisor_measurements,
        )
    else:
        for check, reason in not_claimed(ev.claimed_assurance):  # None: an old proof
            log.skipped(check, reason)
    digest_alg = check_signature(ev, path, log)
    attest = check_attest(ev, digest_alg, log)
    check_event_log(ev, path.certificates[0].public_key(), attest, log)  # (6) in the log's format
    return QuoteFacts(path, attest, assurance, platform)


def _first_difference(given: Any, expected: Any, where: str = "statement") -> tuple[str, Any, Any] | None:
    if isinstance(given, dict) and isinstance(expected, dict):
        for key in sorted(set(given) | set(expected)):
            found = _first_difference(given.get(key), expected.get(key), f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(given, list) and isinstance(expected, list) and len(given) == len(expected):
        for index, (g, e) in enumerate(zip(given, expected, strict=True)):
            found = _first_difference(g, e, f"{where}[{index}]")
            if found:
                return found
        return None
    return None if given == expected else (where, given, expected)


def check_statement(
    ev: QuoteEvidence, statement: Statement, assurance: Assurance, log: CheckLog[Check]
) -> list[dict[str, Any]]:
    own = [e.content for e in ev.events if e.type != REDACTED and isinstance(e.content, dict)]
    if not own or own[-1].get("type") != SEAL:
        raise VerificationError(Check.STATEMENT, "the run's last event is not its aicert.seal event")
    seal = own[-1]
    if ev.expected_extra_data is None or seal.get("statement") != ev.expected_extra_data.hex():
        raise VerificationError(Check.STATEMENT, "the aicert.seal event seals another statement")
    try:
        expected = statement_from_events(
            own[:-1], assurance=assurance, boot_pcrs={i: ev.pcr_values[i] for i in BOOT_PCRS}
        )
    except EventError as exc:
        raise VerificationError(Check.STATEMENT, f"the event log is not one well-formed run: {exc}") from None
    difference = _first_difference(statement.to_json(), expected.to_json())
    if difference:
        where, given, wanted = difference
        raise VerificationError(
            Check.STATEMENT,
            f"{where} is {json.dumps(given)} but the measured events say {json.dumps(wanted)}",
        )
    log.passed(Check.STATEMENT)  # (7)
    return own


def _legacy_images(events: list[dict[str, Any]]) -> list[str]:
    images = []
    for event in events:
        if event.get("event_type") == "input_image":
            resolved = event.get("content", {}).get("resolved", {})
            images.append(str(resolved.get("id", "")))
    return images


class Verifier:
    """Verify training certificates against a trust store and a policy.

    >>> Verifier(trust=TrustStore.from_pem_file(Path("dev-ca.pem"))).verify(Path("cert.json").read_bytes())
    """

    def __init__(
        self,
        trust: TrustStore,
        policy: Policy | None = None,
        tsa: TrustStore | None = None,
        ark_fingerprints: Collection[str] | None = None,
        paravisor_measurements: KnownMeasurements | None = None,
        tlog_keys: Collection[PublicKeyTypes] = (),
        require_tlog: bool = False,
    ) -> None:
        self.trust = trust
        # pinned transparency log keys (`--tlog-key`); `require_tlog`: a bundle without a checked
        # entry fails tlog-inclusion instead of skipping it
        self.tlog_keys = tuple(tlog_keys)
        self.require_tlog = require_tlog
        self.policy = policy  # None: the policy checks are skipped (reported as such)
        self.tsa = tsa  # trusted time-stamping authorities; None or no root: `timestamp` is skipped
        self.ark_fingerprints = ark_fingerprints  # AMD roots for level cvm (None: AMD's own, pinned)
        # known-good paravisor launch measurements for level cvm (None: none, cvm-measurement fails)
        self.paravisor_measurements = paravisor_measurements

    def verify(
        self,
        document: bytes | str | Document,
        *,
        model_dir: Path | None = None,
        data_dirs: Mapping[str, Path] | None = None,
        at: dt.datetime | None = None,
        ignore: Iterable[str] = (),
    ) -> VerifiedTraining:
        """`ignore`: glob patterns of extra local files under `model_dir` and `data_dirs` to leave
        out of the comparison (`--ignore`); a file the certificate covers is never left out."""
        patterns = None
        if ignore or model_dir is not None or data_dirs:  # the hashing code loads only to compare files
            from aicert.verify.local_files import ignore_patterns

            patterns = ignore_patterns(ignore)
        if patterns and model_dir is None and not data_dirs:
            raise MalformedError("--ignore", "leaves local files out of --model and --data; neither is given")
        parsed = document if isinstance(document, Document) else load_document(document)
        log = CheckLog(PLAN)
        if parsed.legacy is not None:
            when = at or dt.datetime.now(dt.UTC)
            return self._verify_legacy(parsed.legacy, model_dir, data_dirs, when, patterns, log)
        assert parsed.certificate is not None and parsed.raw_statement is not None
        try:
            return self._verify_certificate(parsed, model_dir, data_dirs, at, patterns, log)
        except MalformedError as exc:
            if parsed.envelope is None:
                raise
            raise MalformedError(bundle_field(exc.field), exc.reason) from None

    def _timestamp(
        self, token: str | None, quote_signature: bytes, at: dt.datetime, log: CheckLog[Check]
    ) -> Timestamped | None:
        """The trusted time of the quote's signature (not after `at`, the verification time), or
        None (and why the `timestamp` check is skipped)."""
        if token is None:
            log.skipped(Check.TIMESTAMP, NO_TOKEN)
            return None
        if self.tsa is None or not self.tsa.anchors:
            log.skipped(Check.TIMESTAMP, NO_TSA_ROOT)
            return None
        from aicert.verify.timestamp import check_timestamp

        stamped = check_timestamp(token, quote_signature, self.tsa, at=at)
        log.passed(Check.TIMESTAMP)  # (2)
        return stamped

    def _verify_certificate(
        self,
        parsed: Document,
        model_dir: Path | None,
        data_dirs: Mapping[str, Path] | None,
        at: dt.datetime | None,
        ignore: PathPatterns | None,
        log: CheckLog[Check],
    ) -> VerifiedTraining:
        certificate, raw_statement = parsed.certificate, parsed.raw_statement
        assert certificate is not None and raw_statement is not None
        try:
            ev = certificate_evidence(certificate, raw_statement, parsed.envelope)
        except (binascii.Error, ValueError) as exc:  # pragma: no cover - the schema checked base64 and hex
            raise MalformedError("evidence", str(exc)) from None
        now = dt.datetime.now(dt.UTC)
        stamped = self._timestamp(certificate.evidence.timestamp, ev.signature, at or now, log)
        # a token's time is a window, genTime ± accuracy: the AK chain must hold at both ends of it
        # (the earlier end here, into a record of its own; ak-chain is recorded at the later end)
        when = at or (stamped.latest if stamped else now)
        if stamped and not at and stamped.accuracy:
            check_chain(ev, self.trust, stamped.earliest, CheckLog(PLAN), timestamped=True)
        facts = verify_quote_evidence(
            ev,
            self.trust,
            when,
            log,
            timestamped=stamped is not None,
            ark_fingerprints=self.ark_fingerprints,
            paravisor_measurements=self.paravisor_measurements,
            tlog_keys=self.tlog_keys,
            require_tlog=self.require_tlog,
        )
        statement = certificate.statement
        own = check_statement(ev, statement, facts.assurance, log)
        predicate = statement.predicate
        if self.policy is None:
            skip_policy(log)
        else:
            check_policy(
                self.policy,
                facts.assurance,
                [predicate.image.digest] if predicate.image else [],
                ev.pcr_values,
                predicate.run.network.egress if predicate.run.network else None,
                facts.platform,
                log,
            )
        ignored: tuple[IgnoredFiles, ...] = ()
        if data_dirs:
            from aicert.verify.local_files import check_data_dirs  # the hashing code: only with files

            ignored = check_data_dirs(data_dirs, predicate.inputs, log, ignore)
        else:
            log.skipped(Check.DATA_FILES, NO_DATA_DIRS)
        notes: tuple[str, ...] = ()
        if stamped is not None:
            notes = (stamped.note(at_given=at is not None),)
        if data_dirs and (unchecked_inputs := sorted({i.name for i in predicate.inputs} - set(data_dirs))):
            # data-files passed for the inputs given; say which were not re-hashed at all
            notes += (
                "data-files covered only the inputs given with --data; not re-hashed: "
                + ", ".join(unchecked_inputs),
            )
        if model_dir is None:
            log.skipped(Check.MODEL_FILES, NO_MODEL_DIR)
        else:
            from aicert.verify.local_files import check_model_dir

            ignored = (*check_model_dir(model_dir, predicate.outputs, log, ignore), *ignored)
        return facts.result("aicert.dev/v1alpha1", statement, own, log, notes=notes, ignored=ignored)

    def _verify_legacy(
        self,
        proof: LegacyProof,
        model_dir: Path | None,
        data_dirs: Mapping[str, Path] | None,
        at: dt.datetime,
        ignore: PathPatterns | None,
        log: CheckLog[Check],
    ) -> VerifiedTraining:
        if data_dirs:
            raise MalformedError(
                "--data", "old AICert proofs record inputs by repository commit; --data cannot check them"
            )
        from aicert.legacy import LEGACY_ASSURANCE, LEGACY_NOT_APPLICABLE, legacy_events, legacy_evidence

        for check, reason in LEGACY_NOT_APPLICABLE:  # the checks its format cannot take
            log.skipped(check, reason)
        log.skipped(Check.TIMESTAMP, "an old AICert proof carries no timestamp")
        ev = legacy_evidence(proof)
        readable_certificates(ev.certificates, "remote_attestation.cert_chain")
        facts = verify_quote_evidence(
            ev,
            self.trust,
            at,
            log,
            ark_fingerprints=self.ark_fingerprints,
            tlog_keys=self.tlog_keys,
            require_tlog=self.require_tlog,
        )
        events = legacy_events(proof)
        if self.policy is None:
            skip_policy(log)
        else:
            check_policy(
                self.policy, LEGACY_ASSURANCE, _legacy_images(events), ev.pcr_values, None, None, log
            )
        ignored: tuple[IgnoredFiles, ...] = ()
        if model_dir is None:
            log.skipped(Check.MODEL_FILES, NO_MODEL_DIR)
        else:
            from aicert.verify.local_files import check_legacy_model

            ignored = check_legacy_model(model_dir, events, ignore, log=log)
        note = (
            "old AICert proof, assurance legacy: the quote carries no statement digest, so it is bound to "
            "these events only through the PCR 16 event log, which anyone with root on the VM can extend, "
            "and nothing proves it is fresh"
        )
        return facts.result(
            "aicert-legacy", None, events, log, notes=(note,), assurance=LEGACY_ASSURANCE, ignored=ignored
        )
