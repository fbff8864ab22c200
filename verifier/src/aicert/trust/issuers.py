"""Find the intermediates that link an AK certificate to a trusted root, then check the path.

Azure's vTPM AK certificates come from several hierarchies at once: some issuers name where their
own issuer's certificate is published (the caIssuers URL of the authority information access
extension, AIA), some do not (then only a file shipped with AICert or given by the operator has
it). `assemble_path` walks up from the AK certificate one issuer at a time:

- an issuer is taken from the candidates (shipped intermediates, operator files, the trust store's
  intermediates) when its name matches and its key verifies the certificate below it;
- only when no candidate does, the certificate's caIssuers URLs are fetched with `fetch` (the
  caller's edge: HTTP, bounded, cached); what comes back is only one more candidate, held to the
  same name and signature test, so a hostile or poisoned answer can lead nowhere;
- the walk stops at a trusted root, at a self-signed certificate, or after `MAX_PATH_CERTIFICATES`;
  then `build_path` (the verifier's own path builder and rules) checks the path found.

No issuer found: `MissingIssuer` names the issuer that is missing (its subject and the authority key
identifier of the certificate below it) and what was tried. Nothing here does I/O but `fetch`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Protocol

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

from aicert.trust.chain import (
    MAX_PATH_CERTIFICATES,
    CertPath,
    ChainError,
    build_path,
    issued_by,
    issuer_problem,
)
from aicert.trust.pem import load_certificates
from aicert.trust.store import TrustStore


class Fetch(Protocol):
    """Bytes served at a caIssuers URL (DER or PEM); raises `FetchError` (or OSError) saying why not.
    A fetcher may answer from a cache; `fresh=True` asks it to go to the URL again (the cached answer
    did not issue the certificate, or its issuer has expired and may have been renewed)."""

    def __call__(self, url: str, *, fresh: bool = False) -> bytes: ...


MAX_URLS_PER_CERTIFICATE = 2
"""caIssuers URLs tried per certificate: a hostile certificate cannot make the agent fetch many."""

SHIPPED_SUFFIXES = (".pem", ".crt", ".cer", ".der")


class FetchError(Exception):
    """A caIssuers URL did not give an answer that may be read (refused, too large, too slow)."""


class MissingIssuer(ChainError):
    """No candidate and no caIssuers answer issued `child`: its issuer is missing."""

    def __init__(self, child: x509.Certificate, tried: Sequence[str]) -> None:
        self.child_subject = child.subject.rfc4514_string() or "(empty subject)"
        self.issuer_subject = child.issuer.rfc4514_string() or "(empty subject)"
        self.authority_key_id = authority_key_id(child)
        aki = self.authority_key_id or "none (no authority key identifier)"
        how = (
            "; ".join(tried) if tried else "no caIssuers URL (no AIA extension) and no shipped or given file"
        )
        super().__init__(
            f"the issuer of {self.child_subject} is missing: subject {self.issuer_subject}, "
            f"key identifier {aki}; tried: {how}. Give its certificate with --ak-chain "
            "(agent.akChain in the chart) or add it to the shipped intermediates"
        )


def authority_key_id(cert: x509.Certificate) -> str | None:
    """The key identifier of `cert`'s issuer, as hex, when `cert` carries one."""
    try:
        value = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    return value.key_identifier.hex() if value.key_identifier else None


def ca_issuers_urls(cert: x509.Certificate) -> list[str]:
    """The plain-HTTP caIssuers URLs of `cert`'s AIA extension, at most `MAX_URLS_PER_CERTIFICATE`.

    Only http: is followed (certificates are signed objects; TLS adds nothing and its own chain
    would need this one); ldap:, file:, https: and anything else are ignored."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    urls = [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
        and d.access_location.value.lower().startswith("http://")
    ]
    return urls[:MAX_URLS_PER_CERTIFICATE]


def _issuer_among(
    child: x509.Certificate, candidates: Sequence[x509.Certificate], at: dt.datetime
) -> x509.Certificate | None:
    """A candidate that issued `child`, preferring one that may issue at `at` (build_path then
    names the problem of one that may not)."""
    issuers = [c for c in candidates if c.subject == child.issuer and c != child and issued_by(child, c)]
    acceptable = [c for c in issuers if issuer_problem(c, at) is None]
    chosen = acceptable or issuers
    return chosen[0] if chosen else None


def _fetched_issuer(
    child: x509.Certificate, fetch: Fetch, at: dt.datetime, tried: list[str]
) -> x509.Certificate | None:
    fallback: x509.Certificate | None = None
    for url in ca_issuers_urls(child):
        for fresh in (False, True):  # a cached answer first; the URL again when it does not serve
            try:
                certificates = load_certificates(fetch(url, fresh=fresh))
            except (FetchError, OSError) as exc:
                tried.append(f"{url}: {exc}")
                break
            except ValueError as exc:
                tried.append(f"{url}: not a certificate ({exc})")
                break
            found = _issuer_among(child, certificates, at)
            if found is not None and issuer_problem(found, at) is None:
                return found
            fallback = fallback or found
        else:
            if fallback is None:
                tried.append(f"{url}: served no certificate that issued it")
    return fallback  # an issuer that may not issue at `at`: build_path names its problem


def assemble_path(
    leaf: x509.Certificate,
    candidates: Sequence[x509.Certificate],
    store: TrustStore,
    at: dt.datetime,
    fetch: Fetch | None = None,
) -> CertPath:
    """The checked path from the AK certificate `leaf` to a root of `store`, its intermediates found
    among `candidates` and, where missing, at the caIssuers URLs through `fetch` (None: no fetching).
    Raises `MissingIssuer` when an issuer is nowhere, `ChainError` when the path found is refused."""
    if not store.anchors:
        raise ChainError("no trusted root is configured")
    pool = [*candidates, *store.intermediates]
    found: list[x509.Certificate] = []
    current = leaf
    for _ in range(MAX_PATH_CERTIFICATES - 1):
        if any(issued_by(current, anchor.certificate) for anchor in store.anchors):
            break
        tried: list[str] = []
        issuer = _issuer_among(current, pool, at)
        if fetch is not None and (issuer is None or issuer_problem(issuer, at) is not None):
            fetched = _fetched_issuer(current, fetch, at, tried)  # e.g. a renewal of an expired file
            if fetched is not None and (issuer is None or issuer_problem(fetched, at) is None):
                issuer = fetched
        if issuer is None:
            raise MissingIssuer(current, tried)
        if issuer in found or issuer == leaf or issuer.subject == issuer.issuer:
            break  # a loop, or a root this store does not trust: build_path says so
        found.append(issuer)
        current = issuer
    return build_path(leaf, [*found, *candidates], store, at)


def shipped_intermediates(folder: Traversable | None = None) -> list[x509.Certificate]:
    """The intermediate CA certificates shipped in `aicert/trust/intermediates/` (or `folder`): PEM
    or DER files; each is only a candidate: it links an AK to a root by a verified signature, never
    by itself. ValueError names a damaged file."""
    folder = folder or resources.files("aicert.trust").joinpath("intermediates")
    certificates: list[x509.Certificate] = []
    if not folder.is_dir():
        return certificates
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_file() and entry.name.lower().endswith(SHIPPED_SUFFIXES):
            try:
                certificates += load_certificates(entry.read_bytes())
            except ValueError as exc:
                raise ValueError(f"shipped intermediate {entry.name}: {exc}") from None
    return certificates
