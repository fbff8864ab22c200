"""`Verifier`: the checks of docs/verification.md, in order, failing closed.

Every check either passes or raises `VerificationError(check, reason)`; nothing is logged and
let through. A check that does not run (no policy, no --model or --data, or one an old proof's
format cannot take) is reported in `VerifiedTraining.skipped` with the reason, never as passed.
Old AICert proofs are reduced to the same `QuoteEvidence` as ours and go through the same chain,
signature, quote and replay code.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aicert.certificate import (
    ASSURANCE_ORDER,
    BOOT_PCRS,
    REDACTED,
    Assurance,
    FormatError,
    Statement,
    TrainingCertificate,
    VerifiedAssurance,
    convert,
    root_level,
)
from aicert.events import SEAL, EventError, statement_from_events
from aicert.jcs import canonical, sha256_jcs
from aicert.tpm.attest import ALG_SHA256, HASH_NAMES, TPM_GENERATED_VALUE, Attest, parse_attest
from aicert.tpm.reader import StructureError
from aicert.tpm.signature import parse_signature, signature_problem
from aicert.trust.chain import CertPath, ChainError, build_path
from aicert.trust.store import TrustStore
from aicert.verify.errors import Check, MalformedError, VerificationError
from aicert.verify.event_log import check_event_log
from aicert.verify.evidence import LoggedEvent, QuoteEvidence
from aicert.verify.jsonload import CERTIFICATE_MAX_BYTES, loads_strict
from aicert.verify.keys import load_public_key, readable_certificates, with_usable_key
from aicert.verify.platform import check_platform, not_claimed, platform_certificates
from aicert.verify.policy import Policy, check_policy, unchecked
from aicert.verify.result import VerifiedTraining

if TYPE_CHECKING:  # loaded when needed: aicert.cvm for level cvm, aicert.digest for --model/--data,
    # aicert.legacy for an old AICert proof, aicert.verify.timestamp for a timestamped certificate
    from aicert.cvm import PlatformFacts
    from aicert.digest import PathPatterns
    from aicert.legacy import LegacyProof
    from aicert.verify.timestamp import Timestamped


class Document(msgspec.Struct, frozen=True):
    """A parsed input: our certificate (with the statement as it was signed) or an old proof."""

    certificate: TrainingCertificate | None
    raw_statement: dict[str, Any] | None
    legacy: LegacyProof | None


NO_MODEL_DIR = "no model directory given (--model)"
NO_DATA_DIRS = "no input directory given (--data)"
# Why `timestamp` did not run (aicert.verify.timestamp, the check, loads only when it runs).
NO_TSA_ROOT = (
    "no trusted TSA root (--tsa-bundle, or the tsa store): the AK certificate is checked at --at or now"
)
NO_TOKEN = "the certificate carries no timestamp: the AK certificate is checked at --at or now"


def looks_legacy(document: Any) -> bool:
    """Whether `document` is an old AICert proof (aicert.legacy) rather than a certificate."""
    return isinstance(document, dict) and "remote_attestation" in document and "apiVersion" not in document


def load_document(data: bytes | str) -> Document:
    """Step 1: parse and schema-check. Raises MalformedError naming the field.

    At most 16 MiB of strict JSON (jsonload): no duplicate keys, no number JCS cannot encode, no
    lone surrogate, no nesting deeper than 64 levels."""
    raw = loads_strict(data, what="the certificate", max_bytes=CERTIFICATE_MAX_BYTES)
    if not isinstance(raw, dict):
        raise MalformedError("", "a certificate is a JSON object")
    try:
        if looks_legacy(raw):
            from aicert.legacy import LegacyProof

            return Document(None, None, convert(raw, LegacyProof))
        certificate = convert(raw, TrainingCertificate)
    except FormatError as exc:
        raise MalformedError(exc.field, exc.reason) from None
    return Document(certificate, raw["statement"], None)


def certificate_evidence(certificate: TrainingCertificate, raw_statement: dict[str, Any]) -> QuoteEvidence:
    ev = certificate.evidence
    certificates = []
    for index, pem in enumerate(ev.ak.certificateChain):
        try:
            certificates.append(with_usable_key(x509.load_pem_x509_certificate(pem.encode())))
        except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:  # a version not 1 or 3
            raise MalformedError(
                f"evidence.ak.certificateChain[{index}]", f"unreadable certificate: {exc}"
            ) from None
    readable_certificates(certificates, "evidence.ak.certificateChain")
    platform_certs = platform_certificates(ev.platform) if ev.platform else ()
    readable_certificates(platform_certs, "evidence.platform.certificateChain")
    try:
        ak_public = load_public_key(ev.ak.public.encode(), certificates)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise MalformedError("evidence.ak.public", f"unreadable public key: {exc}") from None
    if not isinstance(ak_public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise MalformedError(
            "evidence.ak.public",
            f"key type {type(ak_public).__name__.removesuffix('PublicKey')}: a TPM attestation key is RSA or ECC",
        )
    events = tuple(
        LoggedEvent(
            seq=entry.seq,
            type=entry.type,
            digest=bytes.fromhex(entry.digest),
            preimage=None if entry.content is None else canonical(entry.content),
            content=entry.content,
            declared_type=None if entry.content is None else str(entry.content.get("type")),
            pcr_before=None if entry.pcrBefore is None else bytes.fromhex(entry.pcrBefore),
            quote_attest=None if entry.quote is None else base64.b64decode(entry.quote.attest),
            quote_signature=None if entry.quote is None else base64.b64decode(entry.quote.signature),
        )
        for entry in ev.eventLog
    )
    return QuoteEvidence(
        attest=base64.b64decode(ev.quote.attest),
        signature=base64.b64decode(ev.quote.signature),
        pcr_values={int(k): bytes.fromhex(v) for k, v in ev.quote.pcrs.items()},
        measurement_pcr=ev.pcr,
        ak_public_pem=ev.ak.public.encode(),
        certificates=tuple(certificates),
        events=events,
        expected_extra_data=sha256_jcs(raw_statement),
        claimed_assurance=ev.assurance,
        required_pcrs=BOOT_PCRS,
        platform=ev.platform,
        platform_certificates=platform_certs,
        log_format=ev.eventLogFormat,
    )


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
    # the checks the evidence's form leaves out: the other log format's, the cvm checks when it claims less
    platform_skipped: list[tuple[Check, str]]

    def result(
        self,
        format: Literal["aicert.dev/v1alpha1", "aicert-legacy"],
        statement: Statement | None,
        events: list[dict[str, Any]],
        skipped: list[tuple[Check, str]],
        notes: tuple[str, ...] = (),
        assurance: VerifiedAssurance | None = None,
    ) -> VerifiedTraining:
        """Called once every check that ran has passed: those are all the checks but `skipped`."""
        skipped = [*self.platform_skipped, *skipped]
        not_run = {check for check, _ in skipped}
        return VerifiedTraining(
            format=format,
            assurance=assurance or self.assurance,
            statement=statement,
            events=tuple(events),
            ak_subject=self.path.certificates[0].subject.rfc4514_string(),
            trust_root=self.path.anchor.certificate.subject.rfc4514_string(),
            trust_source=self.path.anchor.source,
            clock=self.attest.clock_info,
            passed=tuple(c for c in Check if c not in not_run),
            notes=notes,
            skipped=tuple(sorted(skipped, key=lambda item: list(Check).index(item[0]))),
        )


def check_chain(
    ev: QuoteEvidence, trust: TrustStore, at: dt.datetime, *, timestamped: bool = False
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
    ceiling = path.anchor.max_assurance
    claimed = ev.claimed_assurance or ceiling
    if ASSURANCE_ORDER[root_level(claimed)] > ASSURANCE_ORDER[ceiling]:
        reason = f"the certificate claims level {claimed} but its AK chains to {path.anchor.source}, which vouches for {ceiling} at most"
        if claimed == "cvm":
            reason += "; cvm needs an AK certified by the Azure vTPM root and a verified SEV-SNP report"
        raise VerificationError(Check.ASSURANCE, reason)
    return path, claimed  # for cvm, the platform checks (after ak-key) decide the rest


def check_ak_key(ev: QuoteEvidence, path: CertPath) -> None:
    if ev.ak_public_pem is None:
        return
    # Keys are equal when their numbers are (RSA n and e; EC curve and point), which is when the
    # DER SubjectPublicKeyInfo `cryptography` writes for them is (it has one encoding per key).
    if load_public_key(ev.ak_public_pem, ev.certificates) != path.certificates[0].public_key():
        raise VerificationError(
            Check.AK_KEY, "evidence.ak.public is not the key the AK certificate certifies"
        )


def check_signature(ev: QuoteEvidence, path: CertPath) -> int:
    try:
        signature = parse_signature(ev.signature)
    except StructureError as exc:
        raise VerificationError(Check.QUOTE_SIGNATURE, str(exc)) from None
    problem = signature_problem(signature, path.certificates[0].public_key(), ev.attest)
    if problem:
        raise VerificationError(Check.QUOTE_SIGNATURE, problem)
    return signature.hash_alg


def check_attest(ev: QuoteEvidence, digest_alg: int) -> Attest:
    try:
        attest = parse_attest(ev.attest)
    except StructureError as exc:
        raise VerificationError(Check.QUOTE_STRUCTURE, str(exc)) from None
    if attest.magic != TPM_GENERATED_VALUE:
        raise VerificationError(
            Check.QUOTE_STRUCTURE,
            f"magic is {attest.magic:#010x}, not TPM_GENERATED_VALUE: a TPM did not make it",
        )
    if ev.expected_extra_data is not None and attest.extra_data != ev.expected_extra_data:
        raise VerificationError(
            Check.QUOTE_BINDING,
            f"the quote's extraData is {attest.extra_data.hex() or '(empty)'}, "
            f"but sha256(JCS(statement)) is {ev.expected_extra_data.hex()}: the quote certifies another statement",
        )
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
    algorithm = HASH_NAMES.get(digest_alg, "sha256")
    computed = hashlib.new(algorithm, b"".join(ev.pcr_values[i] for i in listed)).digest()
    if computed != attest.pcr_digest:
        raise VerificationError(
            Check.PCR_DIGEST, "the listed PCR values do not hash to the quote's pcrDigest"
        )
    return attest


def verify_quote_evidence(
    ev: QuoteEvidence,
    trust: TrustStore,
    at: dt.datetime,
    *,
    timestamped: bool = False,
    ark_fingerprints: Collection[str] | None = None,
) -> QuoteFacts:
    """Steps 2 to 6, shared by every format. `timestamped`: `at` is a trusted TSA's time;
    `ark_fingerprints`: the AMD roots trusted for level cvm."""
    path, assurance = check_chain(ev, trust, at, timestamped=timestamped)
    check_ak_key(ev, path)
    platform = None
    if assurance == "cvm":
        platform = check_platform(
            ev.platform,
            ev.platform_certificates,
            ak_spki_der=_spki(path.certificates[0]),
            at=at,
            ark_fingerprints=ark_fingerprints,
        )
    digest_alg = check_signature(ev, path)
    attest = check_attest(ev, digest_alg)
    skipped = check_event_log(ev, path.certificates[0].public_key(), attest)  # the other format's
    skipped += [] if platform else not_claimed(ev.claimed_assurance)  # None: an old proof
    return QuoteFacts(path, attest, assurance, platform, skipped)


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


def check_statement(ev: QuoteEvidence, statement: Statement, assurance: Assurance) -> list[dict[str, Any]]:
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
    ) -> None:
        self.trust = trust
        self.policy = policy  # None: the policy checks are skipped (reported as such)
        self.tsa = tsa  # trusted time-stamping authorities; None or no root: `timestamp` is skipped
        self.ark_fingerprints = ark_fingerprints  # AMD roots for level cvm (None: AMD's own, pinned)

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
        if parsed.legacy is not None:
            when = at or dt.datetime.now(dt.UTC)
            return self._verify_legacy(parsed.legacy, model_dir, data_dirs, when, patterns)
        assert parsed.certificate is not None and parsed.raw_statement is not None
        return self._verify_certificate(
            parsed.certificate, parsed.raw_statement, model_dir, data_dirs, at, patterns
        )

    def _timestamp(
        self, token: str | None, quote_signature: bytes
    ) -> tuple[Timestamped | None, list[tuple[Check, str]]]:
        """The trusted time of the quote's signature, or why the `timestamp` check is skipped."""
        if token is None:
            return None, [(Check.TIMESTAMP, NO_TOKEN)]
        if self.tsa is None or not self.tsa.anchors:
            return None, [(Check.TIMESTAMP, NO_TSA_ROOT)]
        from aicert.verify.timestamp import check_timestamp

        return check_timestamp(token, quote_signature, self.tsa), []

    def _verify_certificate(
        self,
        certificate: TrainingCertificate,
        raw_statement: dict[str, Any],
        model_dir: Path | None,
        data_dirs: Mapping[str, Path] | None,
        at: dt.datetime | None,
        ignore: PathPatterns | None,
    ) -> VerifiedTraining:
        try:
            ev = certificate_evidence(certificate, raw_statement)
        except (binascii.Error, ValueError) as exc:  # pragma: no cover - the schema checked base64 and hex
            raise MalformedError("evidence", str(exc)) from None
        stamped, skipped_timestamp = self._timestamp(certificate.evidence.timestamp, ev.signature)
        when = at or (stamped.time if stamped else dt.datetime.now(dt.UTC))
        facts = verify_quote_evidence(
            ev, self.trust, when, timestamped=stamped is not None, ark_fingerprints=self.ark_fingerprints
        )
        statement = certificate.statement
        own = check_statement(ev, statement, facts.assurance)
        predicate = statement.predicate
        if self.policy is not None:
            check_policy(
                self.policy,
                facts.assurance,
                [predicate.image.digest] if predicate.image else [],
                ev.pcr_values,
                predicate.run.network.egress if predicate.run.network else None,
                facts.platform,
            )
        skipped = [*skipped_timestamp, *unchecked(self.policy)]
        inputs = {i.name: i for i in predicate.inputs}
        if data_dirs or model_dir is not None:
            from aicert.digest import INPUT_EXCLUDED, OUTPUT_EXCLUDED
            from aicert.verify.local_files import certified_listing, check_local_dir

        for name, directory in (data_dirs or {}).items():
            if name not in inputs:
                known = ", ".join(sorted(inputs)) or "none"
                raise MalformedError(
                    "--data", f"the certificate has no input named {name!r} (inputs: {known})"
                )
            check_local_dir(
                directory,
                inputs[name].root,
                inputs[name].files,
                Check.DATA_FILES,
                "--data",
                f"input {name!r}",
                exclude=INPUT_EXCLUDED,
                ignore=ignore,
            )
        notes: tuple[str, ...] = ()
        if stamped is not None:
            checked_at = "--at" if at else "that time"
            notes = (
                f"timestamp: {stamped.time:%Y-%m-%dT%H:%M:%SZ} by {stamped.tsa}; "
                f"the AK certificate was checked at {checked_at}",
            )
        if not data_dirs:
            skipped.append((Check.DATA_FILES, NO_DATA_DIRS))
        elif unchecked_inputs := sorted(set(inputs) - set(data_dirs)):
            # data-files passed for the inputs given; say which were not re-hashed at all
            notes += (
                f"data-files covered only the inputs given with --data; not re-hashed: {', '.join(unchecked_inputs)}",
            )
        if model_dir is None:
            skipped.append((Check.MODEL_FILES, NO_MODEL_DIR))
        else:
            outputs = predicate.outputs
            check_local_dir(
                model_dir,
                outputs.root,
                outputs.files,
                Check.MODEL_FILES,
                "--model",
                "output",
                exclude=OUTPUT_EXCLUDED,
                listing=certified_listing(model_dir, outputs.root),
                ignore=ignore,
            )
        return facts.result("aicert.dev/v1alpha1", statement, own, skipped, notes=notes)

    def _verify_legacy(
        self,
        proof: LegacyProof,
        model_dir: Path | None,
        data_dirs: Mapping[str, Path] | None,
        at: dt.datetime,
        ignore: PathPatterns | None,
    ) -> VerifiedTraining:
        if data_dirs:
            raise MalformedError(
                "--data", "old AICert proofs record inputs by repository commit; --data cannot check them"
            )
        from aicert.legacy import LEGACY_ASSURANCE, LEGACY_NOT_APPLICABLE, legacy_events, legacy_evidence

        ev = legacy_evidence(proof)
        readable_certificates(ev.certificates, "remote_attestation.cert_chain")
        facts = verify_quote_evidence(ev, self.trust, at, ark_fingerprints=self.ark_fingerprints)
        events = legacy_events(proof)
        if self.policy is not None:
            check_policy(self.policy, LEGACY_ASSURANCE, _legacy_images(events), ev.pcr_values, None, None)
        skipped = [
            *LEGACY_NOT_APPLICABLE,
            (Check.TIMESTAMP, "an old AICert proof carries no timestamp"),
            *unchecked(self.policy),
        ]
        if model_dir is None:
            skipped.append((Check.MODEL_FILES, NO_MODEL_DIR))
        else:
            from aicert.verify.local_files import check_legacy_model

            check_legacy_model(model_dir, events, ignore)
        note = (
            "old AICert proof, assurance legacy: the quote carries no statement digest, so it is bound to "
            "these events only through the PCR 16 event log, which anyone with root on the VM can extend, "
            "and nothing proves it is fresh"
        )
        return facts.result("aicert-legacy", None, events, skipped, notes=(note,), assurance=LEGACY_ASSURANCE)
