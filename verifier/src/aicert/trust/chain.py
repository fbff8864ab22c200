"""Build and check the path from an AK certificate to a trust anchor.

The chain a certificate carries may come in any order and may lack intermediates that the trust
store has; we search for a path by issuer name and signature, then check every certificate on it
at the validation time, so that failures name the certificate and the rule that failed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from aicert.trust.store import TrustAnchor, TrustStore

MAX_DEPTH = 6


class ChainError(Exception):
    """No acceptable path from the AK certificate to a trusted root."""


@dataclass(frozen=True)
class CertPath:
    certificates: tuple[x509.Certificate, ...]  # leaf first, anchor last
    anchor: TrustAnchor


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _find(
    cert: x509.Certificate, pool: Sequence[x509.Certificate], anchors: Sequence[TrustAnchor], depth: int
) -> CertPath | None:
    for anchor in anchors:
        if cert == anchor.certificate:
            return CertPath((cert,), anchor)
    for anchor in anchors:
        if _issued_by(cert, anchor.certificate):
            return CertPath((cert, anchor.certificate), anchor)
    if depth >= MAX_DEPTH:
        return None
    for parent in pool:
        if parent != cert and _issued_by(cert, parent):
            rest = _find(parent, [c for c in pool if c != parent], anchors, depth + 1)
            if rest is not None:
                return CertPath((cert, *rest.certificates), rest.anchor)
    return None


def _when(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_validity(path: CertPath, at: dt.datetime) -> None:
    for index, cert in enumerate(path.certificates):
        role = "AK certificate" if index == 0 else f"CA certificate {_subject(cert)}"
        if at < cert.not_valid_before_utc:
            raise ChainError(
                f"the {role} is not valid before {_when(cert.not_valid_before_utc)} (checked at {_when(at)})"
            )
        if at > cert.not_valid_after_utc:
            raise ChainError(
                f"the {role} expired on {_when(cert.not_valid_after_utc)} (checked at {_when(at)})"
            )


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_constraints(path: CertPath) -> None:
    leaf = path.certificates[0]
    leaf_bc = _extension(leaf, x509.BasicConstraints)
    if isinstance(leaf_bc, x509.BasicConstraints) and leaf_bc.ca:
        raise ChainError("the AK certificate is a CA certificate; an attestation key must not be a CA")
    leaf_ku = _extension(leaf, x509.KeyUsage)
    if isinstance(leaf_ku, x509.KeyUsage) and not leaf_ku.digital_signature:
        raise ChainError("the AK certificate's key usage does not allow digital signatures")
    for below, issuer in enumerate(path.certificates[1:]):
        name = _subject(issuer)
        bc = _extension(issuer, x509.BasicConstraints)
        if not isinstance(bc, x509.BasicConstraints) or not bc.ca:
            raise ChainError(f"{name} issues certificates but is not marked as a CA (basicConstraints)")
        if bc.path_length is not None and below > bc.path_length:
            raise ChainError(
                f"{name} allows {bc.path_length} intermediate CAs below it, the path has {below}"
            )
        ku = _extension(issuer, x509.KeyUsage)
        if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
            raise ChainError(f"{name}'s key usage does not allow signing certificates")


def build_path(
    leaf: x509.Certificate, carried: Sequence[x509.Certificate], store: TrustStore, at: dt.datetime
) -> CertPath:
    """The checked path from `leaf` to an anchor of `store`, or ChainError saying why not."""
    if not store.anchors:
        raise ChainError("no trusted root is configured")
    pool = [c for c in [*carried, *store.intermediates] if c != leaf]
    path = _find(leaf, pool, store.anchors, 0)
    if path is None:
        roots = "; ".join(_subject(a.certificate) for a in store.anchors)
        raise ChainError(
            f"no path from the AK certificate ({_subject(leaf)}, issued by {leaf.issuer.rfc4514_string()}) "
            f"to a trusted root (trusted: {roots})"
        )
    _check_validity(path, at)
    _check_constraints(path)
    return path
