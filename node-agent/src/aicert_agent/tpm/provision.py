"""Make a swtpm look like an Azure vTPM: an AK at 0x81000003 and its certificate in NV 0x01C101D0.

The AK is created as a child of a transient owner-hierarchy storage key (the TCG "SRK" template),
not as a primary key. A child key is generated from the TPM's random number generator, so a forced
re-provisioning rotates the AK; a primary key would be derived from the owner seed and the template,
so the same template would give the same key back until the owner hierarchy is cleared. Once the AK
is persistent the parent is no longer needed (a persistent object is usable without its parent
loaded), so the storage key is flushed, not persisted.

The AK certificate comes from the local `DevCA`; verifiers reject it unless they trust the dev CA
explicitly (assurance level ``dev``). Never run this against a production TPM: with ``force=True``
it deletes whatever AK and certificate are there.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_ECC,
    TPM2_PT_NV,
    TPMA_NV,
    TPMA_OBJECT,
)
from tpm2_pytss.types import (
    TPM2B_NV_PUBLIC,
    TPM2B_PUBLIC,
    TPMS_NV_PUBLIC,
    TPMT_PUBLIC,
)

from aicert.trust import TCG_KP_AIK_CERTIFICATE, ak_certificate_problem

from .client import AK_CERT_NV_INDEX, AK_PERSISTENT_HANDLE, Tpm, TpmError
from .devca import DevCA

KeyType = Literal["ecc", "rsa"]

REQUIRED_AK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
)
"""A restricted signing key the TPM generated and never lets leave: what makes a quote key an AK."""

AK_ATTRIBUTES = REQUIRED_AK_ATTRIBUTES | TPMA_OBJECT.NODA
"""What dev provisioning creates. NODA because the AK's auth value is empty, so dictionary-attack
protection guards nothing, while every unorderly TPM restart (a killed swtpm, a crashed node) counts
as a failure: after TPM2_PT_MAX_AUTH_FAIL (3 on swtpm) of them a DA-protected AK would be refused
with TPM_RC_LOCKOUT."""

SRK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.NODA
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.DECRYPT
)

AK_CERT_NV_ATTRIBUTES = (
    TPMA_NV.OWNERWRITE | TPMA_NV.AUTHWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHREAD | TPMA_NV.NO_DA
)
"""An ordinary NV index readable and writable with owner or (empty) index authorization."""


class ProvisionError(TpmError):
    """The TPM already holds an AK or certificate that dev provisioning must not silently replace."""


@dataclass(frozen=True)
class ProvisionResult:
    ak_handle: int
    ak_public_pem: str
    certificate: x509.Certificate
    key_type: KeyType
    created_ak: bool
    """False when an AK was already at the persistent handle and was kept."""
    issued_certificate: bool
    """False when a certificate from this CA that verifiers accept was already in NV and was kept."""

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


def dev_provision(
    tpm: Tpm,
    ca: DevCA,
    *,
    key_type: KeyType = "ecc",
    force: bool = False,
) -> ProvisionResult:
    """Create and persist a restricted signing AK and store a dev-CA certificate for it in NV.

    Idempotent: if the AK is there with a certificate from `ca` for it that a verifier accepts now,
    that is returned unchanged. If an AK is there without a certificate, or with a certificate from
    `ca` for it that a verifier would refuse (expired), or that is not in the form the dev CA issues
    today (issued before it carried the TCG AIK extended key usage), it is certified anew and the
    AK is kept. Anything else
    that is already there (another CA's certificate, an AK of another type, a certificate without
    AK) is replaced only with ``force=True``; otherwise `ProvisionError` says what is there.
    """
    if key_type not in ("ecc", "rsa"):
        raise ValueError(f"key_type must be 'ecc' or 'rsa', got {key_type!r}")
    has_ak = tpm.has_persistent(AK_PERSISTENT_HANDLE)
    has_cert = tpm.has_nv_index(AK_CERT_NV_INDEX)

    if force:
        if has_ak:
            evict_ak(tpm)
        if has_cert:
            undefine_ak_certificate(tpm)
    elif has_ak:
        problem = _ak_problem(tpm.ak_public().publicArea, key_type)
        if problem:
            raise ProvisionError(f"existing AK at 0x{AK_PERSISTENT_HANDLE:08x} {problem}; pass force=True")
        ak_pem = tpm.ak_public_pem()
        if has_cert:
            certificate = _load_certificate(tpm)
            cert_problem = _certificate_problem(certificate, ca, ak_pem)
            if cert_problem:
                raise ProvisionError(
                    f"NV index 0x{AK_CERT_NV_INDEX:08x} holds a certificate that {cert_problem}; "
                    "pass force=True to replace the AK and its certificate"
                )
            if _current_form_problem(certificate) is None:
                return ProvisionResult(AK_PERSISTENT_HANDLE, ak_pem, certificate, key_type, False, False)
        certificate = _certify(tpm, ca, ak_pem)
        return ProvisionResult(AK_PERSISTENT_HANDLE, ak_pem, certificate, key_type, False, True)
    elif has_cert:
        raise ProvisionError(
            f"NV index 0x{AK_CERT_NV_INDEX:08x} holds a certificate but there is no AK at "
            f"0x{AK_PERSISTENT_HANDLE:08x}; pass force=True to replace it"
        )

    create_persistent_ak(tpm, key_type)
    ak_pem = tpm.ak_public_pem()
    certificate = _certify(tpm, ca, ak_pem)
    return ProvisionResult(AK_PERSISTENT_HANDLE, ak_pem, certificate, key_type, True, True)


# -- templates ---------------------------------------------------------------------------------


def srk_template() -> Any:
    """TCG storage root key template: ECC P-256, AES-128-CFB, restricted decrypt, no DA."""
    public = TPMT_PUBLIC(type=TPM2_ALG.ECC, nameAlg=TPM2_ALG.SHA256, objectAttributes=SRK_ATTRIBUTES)
    params = public.parameters.eccDetail
    params.symmetric.algorithm = TPM2_ALG.AES
    params.symmetric.keyBits.aes = 128
    params.symmetric.mode.aes = TPM2_ALG.CFB
    params.scheme.scheme = TPM2_ALG.NULL
    params.curveID = TPM2_ECC.NIST_P256
    params.kdf.scheme = TPM2_ALG.NULL
    return TPM2B_PUBLIC(publicArea=public)


def ak_template(key_type: KeyType) -> Any:
    """Restricted signing AK: ECC P-256 with ECDSA-SHA256, or RSA 2048 with RSASSA-SHA256."""
    public = TPMT_PUBLIC(nameAlg=TPM2_ALG.SHA256, objectAttributes=AK_ATTRIBUTES)
    if key_type == "ecc":
        public.type = TPM2_ALG.ECC
        ecc = public.parameters.eccDetail
        ecc.symmetric.algorithm = TPM2_ALG.NULL
        ecc.scheme.scheme = TPM2_ALG.ECDSA
        ecc.scheme.details.ecdsa.hashAlg = TPM2_ALG.SHA256
        ecc.curveID = TPM2_ECC.NIST_P256
        ecc.kdf.scheme = TPM2_ALG.NULL
    else:
        public.type = TPM2_ALG.RSA
        rsa_params = public.parameters.rsaDetail
        rsa_params.symmetric.algorithm = TPM2_ALG.NULL
        rsa_params.scheme.scheme = TPM2_ALG.RSASSA
        rsa_params.scheme.details.rsassa.hashAlg = TPM2_ALG.SHA256
        rsa_params.keyBits = 2048
        rsa_params.exponent = 0
    return TPM2B_PUBLIC(publicArea=public)


def _ak_problem(public_area: Any, key_type: KeyType) -> str | None:
    """Why an existing key is not an AK of `key_type` as dev provisioning makes it, or None."""
    attributes = int(public_area.objectAttributes)
    required = int(REQUIRED_AK_ATTRIBUTES)
    if attributes & required != required or attributes & int(TPMA_OBJECT.DECRYPT):
        return f"is not a restricted signing key (attributes 0x{attributes:08x})"
    actual = int(public_area.type)
    if key_type == "ecc":
        if actual != int(TPM2_ALG.ECC):
            return "is not an ECC key but key_type='ecc' was requested"
        if int(public_area.parameters.eccDetail.curveID) != int(TPM2_ECC.NIST_P256):
            return "is not on curve P-256"
    elif actual != int(TPM2_ALG.RSA):
        return "is not an RSA key but key_type='rsa' was requested"
    return None


# -- TPM operations ----------------------------------------------------------------------------


def create_persistent_ak(tpm: Tpm, key_type: KeyType) -> None:
    """Create an AK under a transient SRK and make it persistent at `AK_PERSISTENT_HANDLE`.

    Both transient objects are flushed, whatever happens.
    """
    esys = tpm.esapi
    srk = esys.create_primary(None, srk_template(), ESYS_TR.OWNER)[0]
    with tpm.flushing(srk):
        private, public = esys.create(srk, None, ak_template(key_type))[:2]
        ak = esys.load(srk, private, public)
        with tpm.flushing(ak):
            persistent = esys.evict_control(ESYS_TR.OWNER, ak, AK_PERSISTENT_HANDLE)
            tpm.tr_close(persistent)


def evict_ak(tpm: Tpm) -> None:
    """Remove the persistent AK (TPM2_EvictControl on the persistent handle)."""
    esys = tpm.esapi
    # Unlike NV undefine, evicting a persistent object leaves its ESYS_TR behind (and a stale one
    # makes a later Esys_TR_FromTPMPublic of the same handle fail with "Name mismatch"): close it.
    with tpm.tr_from_handle(AK_PERSISTENT_HANDLE) as ak:
        esys.evict_control(ESYS_TR.OWNER, ak, AK_PERSISTENT_HANDLE)


def undefine_ak_certificate(tpm: Tpm) -> None:
    """Delete NV index `AK_CERT_NV_INDEX` (owner authorization)."""
    esys = tpm.esapi
    nv = esys.tr_from_tpmpublic(AK_CERT_NV_INDEX)
    # ESYS deletes the ESYS_TR of an undefined index itself (closing it again fails); close it
    # only when the undefine failed.
    try:
        esys.nv_undefine_space(nv, ESYS_TR.OWNER)
    except BaseException:
        tpm.tr_close(nv)
        raise


def store_ak_certificate(tpm: Tpm, data: bytes, *, replace: bool = False) -> None:
    """Define `AK_CERT_NV_INDEX` sized exactly to `data` and write it, in chunks the TPM accepts.

    `data` is normally the DER certificate; tests append padding to mimic Azure's layout.
    """
    if not data:
        raise ValueError("no certificate data to store")
    index_max = tpm.get_property(int(TPM2_PT_NV.INDEX_MAX))
    if len(data) > index_max:
        raise TpmError(f"certificate is {len(data)} bytes; this TPM's NV indices hold at most {index_max}")
    if tpm.has_nv_index(AK_CERT_NV_INDEX):
        if not replace:
            raise ProvisionError(f"NV index 0x{AK_CERT_NV_INDEX:08x} is already defined")
        undefine_ak_certificate(tpm)
    esys = tpm.esapi
    public = TPM2B_NV_PUBLIC(
        nvPublic=TPMS_NV_PUBLIC(
            nvIndex=AK_CERT_NV_INDEX,
            nameAlg=TPM2_ALG.SHA256,
            attributes=AK_CERT_NV_ATTRIBUTES,
            dataSize=len(data),
        )
    )
    nv = esys.nv_define_space(None, public, ESYS_TR.OWNER)
    try:
        step = tpm.nv_buffer_max
        for offset in range(0, len(data), step):
            esys.nv_write(nv, data[offset : offset + step], offset, auth_handle=ESYS_TR.OWNER)
    finally:
        tpm.tr_close(nv)


# -- certificates ------------------------------------------------------------------------------


def ak_common_name(ak_public_pem: str) -> str:
    """``aicert dev AK <first 16 hex of sha256(SubjectPublicKeyInfo DER)>``."""
    spki = serialization.load_pem_public_key(ak_public_pem.encode("ascii")).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"aicert dev AK {hashlib.sha256(spki).hexdigest()[:16]}"


def _certify(tpm: Tpm, ca: DevCA, ak_pem: str) -> x509.Certificate:
    public_key = serialization.load_pem_public_key(ak_pem.encode("ascii"))
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TpmError(f"AK public key is of unsupported type {type(public_key).__name__}")
    certificate = ca.issue_ak_certificate(public_key, ak_common_name(ak_pem))
    der = certificate.public_bytes(serialization.Encoding.DER)
    store_ak_certificate(tpm, der, replace=True)
    if tpm.ak_certificate_der() != der:
        raise TpmError("AK certificate read back from NV differs from the one written")
    return certificate


def _load_certificate(tpm: Tpm) -> x509.Certificate:
    der = tpm.ak_certificate_der()
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as e:
        raise ProvisionError(
            f"NV index 0x{AK_CERT_NV_INDEX:08x} does not hold a parsable X.509 certificate ({e}); "
            "pass force=True to replace it"
        ) from e


def _current_form_problem(certificate: x509.Certificate) -> str | None:
    """Why the dev CA's own certificate in NV is re-issued, or None: a verifier refuses it, or it
    lacks the TCG AIK extended key usage every dev certificate carries today (verifiers accept an
    AK certificate without any extended key usage, as Azure issued in 2023; the dev CA does not
    keep issuing that form)."""
    problem = ak_certificate_problem(certificate, datetime.datetime.now(datetime.UTC))
    if problem:
        return problem
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    if TCG_KP_AIK_CERTIFICATE not in usages:
        return "lacks the TCG AIK extended key usage the dev CA issues today"
    return None


def _certificate_problem(certificate: x509.Certificate, ca: DevCA, ak_pem: str) -> str | None:
    """Why the certificate in NV is not this CA's for this AK (then only force replaces it), or None.

    A certificate that is this CA's for this AK but that verifiers refuse or in an older form
    (`_current_form_problem`: expired, no AIK extended key usage) is no problem here: it is
    re-issued, the AK kept.
    """
    if not ca.issued(certificate):
        return f"was not issued by this dev CA (issuer: {certificate.issuer.rfc4514_string()})"
    if certificate.public_key() != serialization.load_pem_public_key(ak_pem.encode("ascii")):
        return "certifies another public key than the AK's"
    return None
