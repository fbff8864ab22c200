"""Trust stores: which roots may vouch for an AK, and at which assurance level at most.

- `azure`: the Azure Virtual TPM Root CA 2023, pinned here by fingerprint. It is not shipped in
  the package; `aicert trust install azure --from FILE|URL` installs it into the user's trust
  directory only when the fingerprint matches, and every load checks the fingerprint again.
  It vouches for `vtpm` (and `cvm` once the HCL report is verified).
- `dev`: a local development CA (swtpm). Only used when named; vouches for `dev` only.
- `tsa`: the roots of the time-stamping authorities you trust to date certificates (RFC 3161).
  Used for `evidence.timestamp` only, never for an AK chain; `aicert verify` reads it when no
  `--tsa-bundle` is given.
- bundle files (PEM, or one DER certificate each): self-signed certificates in them are roots, the
  others intermediates. The files are judged together: unless a named store is trusted too, together
  they must hold a root, and an intermediate from any of them serves every path. A root that is the pinned Azure root vouches
  for `vtpm`; any other root for `dev` only, because nothing here knows what its keys are kept in.

`load_trust_store` is the one choice of what to trust, for `aicert verify` and the node agent alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import msgspec
from cryptography import x509

from aicert.boundedfile import FileRefused, read_regular_file
from aicert.certificate import Assurance
from aicert.trust.pem import colon_hex, fingerprint, load_certificates

AZURE_ROOT_SHA256 = "e6c596b17f8ffefba5c300f714cfb1260c6028704ecf7becc4ab5018efb00e95"
NAMED_STORES = ("azure", "dev", "tsa")
AK_STORES = ("azure", "dev")  # the named stores an AK may chain to (`--trust`)
_INSTALL_HINTS = {
    "azure": "the Azure Virtual TPM Root CA 2023, PEM or DER",
    "dev": "your dev CA's dev-ca.pem",
    "tsa": "your time-stamping authority's root certificate, PEM or DER",
}
_BUNDLE_MAX_BYTES = 1 << 20  # a trust bundle or certificate file, local or downloaded


class TrustError(Exception):
    """A trust store cannot be loaded or installed (a usage problem, exit 2)."""


class TrustAnchor(msgspec.Struct, frozen=True):
    certificate: x509.Certificate
    max_assurance: Assurance
    source: str


class TrustStore(msgspec.Struct, frozen=True):
    anchors: tuple[TrustAnchor, ...] = ()
    intermediates: tuple[x509.Certificate, ...] = ()

    def __add__(self, other: TrustStore) -> TrustStore:
        return TrustStore(self.anchors + other.anchors, self.intermediates + other.intermediates)

    @classmethod
    def from_certificates(cls, certs: list[x509.Certificate], source: str, dev_level: bool) -> TrustStore:
        anchors: list[TrustAnchor] = []
        intermediates: list[x509.Certificate] = []
        for cert in certs:
            if cert.issuer != cert.subject:
                intermediates.append(cert)
                continue
            level: Assurance = "dev" if dev_level or fingerprint(cert) != AZURE_ROOT_SHA256 else "vtpm"
            anchors.append(TrustAnchor(cert, level, source))
        return cls(tuple(anchors), tuple(intermediates))

    @classmethod
    def from_bundle_file(cls, path: Path) -> TrustStore:
        """The roots and intermediates in a PEM bundle or a DER certificate; it may hold no root."""
        try:
            certs = load_certificates(read_regular_file(path, limit=_BUNDLE_MAX_BYTES))
        except FileRefused as exc:
            raise TrustError(f"trust bundle: {exc}") from None
        except ValueError as exc:
            raise TrustError(f"trust bundle {path}: {exc}") from None
        return cls.from_certificates(certs, str(path), dev_level=False)

    @classmethod
    def from_pem_file(cls, path: Path) -> TrustStore:
        """One bundle file (PEM or DER) that must hold a root by itself."""
        store = cls.from_bundle_file(path)
        if not store.anchors:
            raise TrustError(f"trust bundle {path} holds no root (self-signed) certificate")
        return store


def default_trust_dir() -> Path:
    if env := os.environ.get("AICERT_TRUST_DIR"):
        return Path(env)
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "aicert" / "trust"


def _bundle_path(name: str, trust_dir: Path) -> Path:
    if name not in NAMED_STORES:
        raise TrustError(f"unknown trust store {name!r}; known: {', '.join(NAMED_STORES)}")
    return trust_dir / name / "bundle.pem"


def _check_named(name: str, certs: list[x509.Certificate], origin: str) -> None:
    roots = [c for c in certs if c.issuer == c.subject]
    if name == "azure" and not any(fingerprint(c) == AZURE_ROOT_SHA256 for c in roots):
        seen = ", ".join(colon_hex(fingerprint(c)) for c in roots) or "no self-signed certificate"
        raise TrustError(
            f"{origin} does not hold the Azure Virtual TPM Root CA 2023 "
            f"(want SHA-256 {colon_hex(AZURE_ROOT_SHA256)}, found {seen})"
        )
    if not roots:
        raise TrustError(f"{origin} holds no root (self-signed) certificate")


def load_named(name: str, trust_dir: Path | None = None) -> TrustStore:
    path = _bundle_path(name, trust_dir or default_trust_dir())
    try:
        if not path.exists() and not path.is_symlink():
            raise FileNotFoundError(path)
        certs = load_certificates(read_regular_file(path, limit=_BUNDLE_MAX_BYTES))
    except FileNotFoundError:
        flag = "--tsa-bundle" if name == "tsa" else "--trust-bundle"
        raise TrustError(
            f"the {name!r} trust store is not installed ({path} is missing): "
            f"run `aicert trust install {name} --from <{_INSTALL_HINTS[name]}>`, or pass {flag} FILE"
        ) from None
    except (OSError, ValueError) as exc:
        raise TrustError(f"the {name!r} trust store at {path} is unreadable: {exc}") from None
    _check_named(name, certs, str(path))
    if name == "azure":
        certs = [c for c in certs if c.issuer != c.subject or fingerprint(c) == AZURE_ROOT_SHA256]
    return TrustStore.from_certificates(certs, f"trust store {name!r}", dev_level=name == "dev")


def read_source(source: str) -> bytes:
    if source.startswith(("https://", "http://")):
        import urllib.request  # only `aicert trust install … --from URL` needs http and ssl

        try:
            with urllib.request.urlopen(source, timeout=30) as response:
                data: bytes = response.read(_BUNDLE_MAX_BYTES + 1)
        except OSError as exc:
            raise TrustError(f"cannot download {source}: {exc}") from None
        if len(data) > _BUNDLE_MAX_BYTES:
            raise TrustError(f"{source} is larger than {_BUNDLE_MAX_BYTES} bytes; not a certificate")
        return data
    try:
        return read_regular_file(Path(source), limit=_BUNDLE_MAX_BYTES)
    except FileRefused as exc:
        raise TrustError(str(exc)) from None


def install_named(name: str, data: bytes, origin: str, trust_dir: Path | None = None) -> Path:
    """Install a named store from PEM or DER bytes; for `azure` only if the pinned root is in them.

    The store is kept as PEM whatever it was given as."""
    path = _bundle_path(name, trust_dir or default_trust_dir())
    try:
        certs = load_certificates(data)
    except ValueError as exc:
        raise TrustError(f"{origin}: {exc}") from None
    _check_named(name, certs, origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    from cryptography.hazmat.primitives.serialization import Encoding

    tmp.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certs))
    os.replace(tmp, path)
    return path


def load_trust_store(
    named: Sequence[str], bundles: Sequence[Path], trust_dir: Path | None = None
) -> TrustStore:
    """What `--trust NAME` and `--trust-bundle FILE` select for AK chains: only what they name is
    trusted; with neither, the `azure` store. Without a named store the bundle files together must hold at least
    one root (else nothing would be trusted); the intermediates of any of them serve paths to every
    root. Intermediates are never trusted by themselves: they only link an AK to a root."""
    store = TrustStore()
    for name in named or ([] if bundles else ["azure"]):
        if name not in AK_STORES:
            raise TrustError(f"the {name!r} store holds time-stamping authorities, not AK roots")
        store = store + load_named(name, trust_dir)
    from_bundles = TrustStore()
    for bundle in bundles:
        from_bundles = from_bundles + TrustStore.from_bundle_file(bundle)
    if bundles and not named and not from_bundles.anchors:
        files = ", ".join(str(b) for b in bundles)
        raise TrustError(f"the trust bundles ({files}) hold no root (self-signed) certificate")
    return store + from_bundles


def load_tsa_store(bundles: Sequence[Path], trust_dir: Path | None = None) -> TrustStore | None:
    """The time-stamping authorities trusted to date a certificate: the `--tsa-bundle` files when
    given (together they must hold a root), else the installed `tsa` store, else none (None: the
    `timestamp` check is skipped and says why)."""
    if bundles:
        return load_trust_store([], bundles)
    if not _bundle_path("tsa", trust_dir or default_trust_dir()).exists():
        return None
    return load_named("tsa", trust_dir)
