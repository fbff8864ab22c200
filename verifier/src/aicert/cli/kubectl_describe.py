"""`kubectl aicert describe NAME`: a CertifiedTraining in a few lines, for a person.

Phase and reason, node, assurance, attempt, the model digest, each condition, and the certificate:
whether it is there and well-formed, when it was quoted, and the validity of its AK certificate
(when it expires, and whether a timestamp lets the certificate outlive it). Nothing cryptographic
is checked here: the last line says how to verify. Every string read from the cluster is printed
with its control characters escaped, so a status cannot drive the terminal. Exit 0: described; 2:
kubectl failed or the resource is not a CertifiedTraining.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Mapping
from typing import Any

from cryptography import x509

from aicert.verify import MalformedError
from aicert.verify.document import load_document

EXIT_OK, EXIT_UNUSABLE = 0, 2
_CONDITION_ORDER = ("Scheduled", "InputsMeasured", "Trained", "Certified", "Finished")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "describe",
        help="show a CertifiedTraining in a few lines",
        description="Show a CertifiedTraining's phase and reason, node, assurance, model digest, "
        "conditions, and its certificate: well-formed or not, and the validity of its AK certificate. "
        "Verifies nothing: `kubectl aicert verify NAME` does. Exit 0: shown; 2: kubectl failed or "
        "the resource is unusable.",
    )
    p.add_argument("name", metavar="NAME", help="the CertifiedTraining's name")
    p.add_argument("-n", "--namespace", help="the CertifiedTraining's namespace (default: the context's)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--kubeconfig", help="kubeconfig file")
    p.set_defaults(json=False)


def printable(value: object) -> str:
    """`value` as text with every control or non-printable character escaped (`\\x1b`)."""
    text = value if isinstance(value, str) else str(value)
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _days(delta: dt.timedelta) -> str:
    days = abs(delta).days
    return "less than a day" if days == 0 else f"{days} day{'s' if days != 1 else ''}"


def _conditions(status: Mapping[str, Any]) -> list[str]:
    listed = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    order = {kind: index for index, kind in enumerate(_CONDITION_ORDER)}
    listed.sort(key=lambda c: order.get(str(c.get("type")), len(order)))
    lines = []
    for c in listed:
        head = f"  {printable(c.get('type', '?'))}={printable(c.get('status', '?'))}"
        reason, message = c.get("reason"), c.get("message")
        lines.append(
            head
            + (f" {printable(reason)}" if reason else "")
            + (f": {printable(message)}" if message else "")
        )
    return lines or ["  (none yet)"]


def certificate_lines(text: str, now: dt.datetime) -> list[str]:
    """What a person wants to know of `status.certificate` before verifying it."""
    size = len(text.encode())
    try:
        document = load_document(text)
    except MalformedError as exc:
        where = f"{exc.field}: " if exc.field else ""
        return [f"certificate: {size} bytes, MALFORMED: {printable(where + exc.reason)}"]
    certificate = document.certificate
    if certificate is None:
        return [f"certificate: {size} bytes, an old AICert proof (legacy)"]
    evidence = certificate.evidence
    lines = [f"certificate: {size} bytes, well-formed, level {evidence.assurance}"]
    try:
        ak = x509.load_pem_x509_certificate(evidence.ak.certificateChain[0].encode())
        subject = ak.subject.rfc4514_string() or "(no subject)"
        issuer = ak.issuer.rfc4514_string() or "(no issuer)"
        not_before, not_after = ak.not_valid_before_utc, ak.not_valid_after_utc
    except ValueError as exc:
        return [*lines, f"AK certificate: unreadable: {printable(exc)}"]
    if now > not_after:
        state = f"EXPIRED {_days(now - not_after)} ago"
    elif now < not_before:
        state = f"not valid for {_days(not_before - now)} yet"
    else:
        state = f"expires in {_days(not_after - now)}"
    lines.append(
        f"AK certificate: {printable(subject)}, issued by {printable(issuer)}, "
        f"valid {_when(not_before)} to {_when(not_after)} ({state})"
    )
    if evidence.timestamp is not None:
        lines.append("timestamped: the certificate verifies after its AK certificate expires")
    elif now > not_after:
        lines.append("no timestamp: verify it with --at a time its AK certificate was valid")
    return lines


def describe(resource: Mapping[str, Any], now: dt.datetime) -> list[str]:
    """The lines of `kubectl aicert describe` for `resource` (the CertifiedTraining as JSON).
    Raises MalformedError when it has no metadata.name."""
    metadata = _mapping(resource.get("metadata"))
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise MalformedError("metadata.name", "is missing")
    status = _mapping(resource.get("status"))
    spec = _mapping(resource.get("spec"))
    phase = printable(status.get("phase") or "not set")
    reason = status.get("reason")
    head = f"{printable(metadata.get('namespace') or '')}/{printable(name)}: {phase}"
    if reason:
        head += f" ({printable(reason)})"
    if status.get("message"):
        head += f": {printable(status['message'])}"
    where = [
        f"node {printable(status.get('node') or 'none yet')}",
        f"assurance {printable(status.get('assurance') or 'not yet')} (needs {printable(spec.get('minAssurance') or 'vtpm')})",
        f"attempt {printable(status.get('attempt') or 0)}",
    ]
    lines = [head, ", ".join(where), f"model: {printable(status.get('modelDigest') or 'none yet')}"]
    lines += ["conditions:", *_conditions(status)]
    certificate = status.get("certificate")
    if isinstance(certificate, str) and certificate:
        lines += certificate_lines(certificate, now)
        lines.append(
            f"verify it: kubectl aicert verify {printable(name)} --trust azure (or --trust-bundle FILE)"
        )
    else:
        lines.append("certificate: none")
    return lines
