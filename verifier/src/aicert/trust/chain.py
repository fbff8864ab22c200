"""Build and check the path from an AK certificate to a trust anchor.

The chain a certificate carries may come in any order and may lack intermediates that the trust
store has. The path is searched breadth first, and the search is bounded whatever the chain holds:

- a candidate issuer is followed only when its name matches and its signature verifies the child
  (checked while building, so a certificate that merely claims a name leads nowhere), and only
  when it is acceptable as an issuer at the validation time (valid, a CA, allowed to sign
  certificates);
- every certificate is visited at most once, so no path reuses one, and every (child, issuer)
  signature is checked at most once: at most n * (n + anchors) signature checks for n certificates;
- a path holds at most `MAX_PATH_CERTIFICATES` certificates, AK and root included;
- the search stops at the first (shortest) path that reaches a trusted root.

Failures name the certificate and the rule that failed.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Sequence

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ObjectIdentifier

from aicert.trust.store import TrustAnchor, TrustStore

MAX_PATH_CERTIFICATES = 8
"""The longest path considered: the AK certificate, up to six intermediates, the root."""

TCG_KP_AIK_CERTIFICATE = ObjectIdentifier("2.23.133.8.3")
"""tcg-kp-AIKCertificate: the extended key usage TCG gives attestation key certificates. Today's Azure
AK certificates carry it (beside Microsoft's), and so do the dev CA's."""

MICROSOFT_AK_USAGE = ObjectIdentifier("1.3.6.1.4.1.311.10.3.12")
"""The extended key usage Microsoft puts on Azure vTPM AK certificates; some 2023-2024 Azure AK
certificates carry it alone."""

AK_USAGES = (TCG_KP_AIK_CERTIFICATE, MICROSOFT_AK_USAGE)
"""An AK certificate with an extended key usage extension must list one of these; one without the
extension at all (Azure's 2023 AK certificates) is accepted too. Any other set (TLS, code signing,
the TCG EK usage, anyExtendedKeyUsage) is refused, so that a certificate the CA issued for another
purpose cannot pass as an AK's."""


class ChainError(Exception):
    """No acceptable path from the AK certificate to a trusted root."""


class CertPath(msgspec.Struct, frozen=True):
    certificates: tuple[x509.Certificate, ...]  # leaf first, anchor last
    anchor: TrustAnchor


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Whether `parent`'s name is `child`'s issuer and `parent`'s key signed `child`."""
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Whether `parent`'s name is `child`'s issuer and `parent`'s key signed `child`."""
    return _issued_by(child, parent)


def _when(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def validity_problem(cert: x509.Certificate, role: str, at: dt.datetime) -> str | None:
    if at < cert.not_valid_before_utc:
        return f"the {role} is not valid before {_when(cert.not_valid_before_utc)} (checked at {_when(at)})"
    if at > cert.not_valid_after_utc:
        return f"the {role} expired on {_when(cert.not_valid_after_utc)} (checked at {_when(at)})"
    return None


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def issuer_problem(cert: x509.Certificate, at: dt.datetime) -> str | None:
    """Why `cert` may not issue certificates on a path checked at `at`, or None."""
    name = _subject(cert)
    expired = validity_problem(cert, f"CA certificate {name}", at)
    if expired:
        return expired
    bc = _extension(cert, x509.BasicConstraints)
    if not isinstance(bc, x509.BasicConstraints) or not bc.ca:
        return f"{name} issues certificates but is not marked as a CA (basicConstraints)"
    ku = _extension(cert, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
        return f"{name}'s key usage does not allow signing certificates"
    return None


def ak_certificate_problem(cert: x509.Certificate, at: dt.datetime) -> str | None:
    """Why `cert` is not acceptable as an AK certificate at `at`, or None.

    The extended key usage rule (`AK_USAGES`) holds on every path, whatever level its root vouches
    for: no extension, or one listing the TCG AIK usage or Microsoft's AK usage.
    """
    expired = validity_problem(cert, "AK certificate", at)
    if expired:
        return expired
    bc = _extension(cert, x509.BasicConstraints)
    if isinstance(bc, x509.BasicConstraints) and bc.ca:
        return "the AK certificate is a CA certificate; an attestation key must not be a CA"
    ku = _extension(cert, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.digital_signature:
        return "the AK certificate's key usage does not allow digital signatures"
    return _ak_usage_problem(cert)


def _ak_usage_problem(cert: x509.Certificate) -> str | None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None  # Azure's 2023 AK certificates carry no extended key usage at all
    if any(usage in eku for usage in AK_USAGES):
        return None
    listed = ", ".join(usage.dotted_string for usage in eku) or "empty"
    return (
        f"the AK certificate's extended key usage ({listed}) lists neither the TCG AIK usage "
        f"(tcg-kp-AIKCertificate, {TCG_KP_AIK_CERTIFICATE.dotted_string}) nor Microsoft's AK usage "
        f"({MICROSOFT_AK_USAGE.dotted_string})"
    )


def _path_length_problem(path: CertPath) -> str | None:
    for below, issuer in enumerate(path.certificates[1:]):
        bc = _extension(issuer, x509.BasicConstraints)
        if isinstance(bc, x509.BasicConstraints) and bc.path_length is not None and below > bc.path_length:
            return (
                f"{_subject(issuer)} allows {bc.path_length} intermediate CAs below it, the path has {below}"
            )
    return None


class _Search(msgspec.Struct):
    """One breadth-first search; `problems` keeps why matching issuers were refused, in order."""

    pool: list[x509.Certificate]
    anchors: Sequence[TrustAnchor]
    at: dt.datetime
    problems: list[str]
    cut_by_length: bool = False

    def acceptable_issuer(self, cert: x509.Certificate, verdicts: dict[int, str | None], key: int) -> bool:
        if key not in verdicts:
            verdicts[key] = issuer_problem(cert, self.at)
            if verdicts[key]:
                self.problems.append(str(verdicts[key]))
        return verdicts[key] is None

    def run(self, leaf: x509.Certificate) -> CertPath | None:
        for anchor in self.anchors:
            if leaf == anchor.certificate:
                return CertPath((leaf,), anchor)
        parent_of: dict[int, int] = {}  # pool index -> pool index, or -1 for the leaf
        anchor_verdicts: dict[int, str | None] = {}
        pool_verdicts: dict[int, str | None] = {}
        queue: deque[tuple[int, int]] = deque([(-1, 1)])  # (pool index or -1 for the leaf, path length)
        while queue:
            node, length = queue.popleft()
            cert = leaf if node < 0 else self.pool[node]
            for index, anchor in enumerate(self.anchors):
                if _issued_by(cert, anchor.certificate) and self.acceptable_issuer(
                    anchor.certificate, anchor_verdicts, index
                ):
                    return CertPath((*self._trace(leaf, node, parent_of), anchor.certificate), anchor)
            if length + 2 > MAX_PATH_CERTIFICATES:  # a further issuer would need one more for the root
                self.cut_by_length = self.cut_by_length or any(
                    i not in parent_of and p.subject == cert.issuer for i, p in enumerate(self.pool)
                )
                continue
            for index, candidate in enumerate(self.pool):
                if index in parent_of or candidate.subject != cert.issuer:
                    continue
                if _issued_by(cert, candidate) and self.acceptable_issuer(candidate, pool_verdicts, index):
                    parent_of[index] = node
                    queue.append((index, length + 1))
        return None

    def _trace(self, leaf: x509.Certificate, node: int, parent_of: dict[int, int]) -> list[x509.Certificate]:
        chain: list[x509.Certificate] = []
        while node >= 0:
            chain.append(self.pool[node])
            node = parent_of[node]
        return [leaf, *reversed(chain)]


LeafProblem = Callable[[x509.Certificate, dt.datetime], str | None]


def build_path(
    leaf: x509.Certificate,
    carried: Sequence[x509.Certificate],
    store: TrustStore,
    at: dt.datetime,
    *,
    leaf_problem: LeafProblem = ak_certificate_problem,
    role: str = "AK certificate",
) -> CertPath:
    """The checked path from `leaf` to an anchor of `store`, or ChainError saying why not.

    `leaf_problem` says why `leaf` itself is not acceptable (default: as an AK certificate);
    `role` names it in messages. The issuers are held to the same rules whatever the leaf is."""
    if not store.anchors:
        raise ChainError("no trusted root is configured")
    anchor_certs = [a.certificate for a in store.anchors]
    pool: list[x509.Certificate] = []
    for cert in [*carried, *store.intermediates]:
        if cert != leaf and cert not in anchor_certs and cert not in pool:
            pool.append(cert)
    search = _Search(pool, store.anchors, at, [])
    path = search.run(leaf)
    if path is None:
        if search.problems:  # the leaf does chain to a root, through an issuer refused here
            raise ChainError(leaf_problem(leaf, at) or search.problems[0])
        roots = "; ".join(_subject(a.certificate) for a in store.anchors)
        limit = f" within {MAX_PATH_CERTIFICATES} certificates" if search.cut_by_length else ""
        raise ChainError(
            f"no path{limit} from the {role} ({_subject(leaf)}, issued by "
            f"{leaf.issuer.rfc4514_string()}) to a trusted root (trusted: {roots})"
        )
    problem = leaf_problem(leaf, at) or _path_length_problem(path)
    if problem:
        raise ChainError(problem)
    return path
