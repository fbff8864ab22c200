"""A local development CA that certifies swtpm attestation keys (assurance level ``dev``).

It proves nothing about hardware: the verifier rejects its certificates unless the dev CA is
trusted explicitly. Only `cryptography` and `aicert` are used here (no TPM library).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from aicert.trust import TCG_KP_AIK_CERTIFICATE

CA_COMMON_NAME = "AICert Development CA (NOT FOR PRODUCTION)"
CA_CERT_FILE = "dev-ca.pem"
CA_KEY_FILE = "dev-ca.key"
CA_VALIDITY = datetime.timedelta(days=3650)
AK_VALIDITY = datetime.timedelta(days=365)
CLOCK_SKEW = datetime.timedelta(minutes=5)

AkPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class DevCA:
    """A self-signed ECC P-256 root that issues AK certificates; kept as two PEM files."""

    def __init__(self, certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey) -> None:
        if certificate.public_key() != private_key.public_key():
            raise ValueError("dev CA private key does not match its certificate")
        self.certificate = certificate
        self._key = private_key

    @classmethod
    def create(cls, *, now: datetime.datetime | None = None) -> DevCA:
        """A new CA in memory (see `load_or_create` to keep it on disk)."""
        now = now or datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "AICert"),
                x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def load(cls, directory: Path) -> DevCA:
        cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC private key")
        return cls(certificate, key)

    @classmethod
    def load_or_create(cls, directory: Path) -> DevCA:
        """Load ``dev-ca.pem`` + ``dev-ca.key`` from `directory`, or create them (key mode 0600).

        Refuses to overwrite when only one of the two files exists.
        """
        directory = Path(directory)
        cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
        if cert_path.exists() and key_path.exists():
            return cls.load(directory)
        if cert_path.exists() or key_path.exists():
            raise FileExistsError(
                f"{directory} holds only one of {CA_CERT_FILE} and {CA_KEY_FILE}; "
                "remove it or restore the other to continue"
            )
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        ca = cls.create()
        key_pem = ca._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_new(key_path, key_pem, 0o600)
        _write_new(cert_path, ca.certificate_pem.encode("ascii"), 0o644)
        return ca

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def issue_ak_certificate(
        self,
        public_key: AkPublicKey,
        common_name: str,
        *,
        now: datetime.datetime | None = None,
        validity: datetime.timedelta = AK_VALIDITY,
    ) -> x509.Certificate:
        """An end-entity certificate for an attestation key: digitalSignature, CA:false, and the
        TCG AIK extended key usage (tcg-kp-AIKCertificate), the usage TCG gives AK certificates."""
        if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise TypeError(f"AK public key must be EC or RSA, got {type(public_key).__name__}")
        now = now or datetime.datetime.now(datetime.UTC)
        not_after = min(now + validity, self.certificate.not_valid_after_utc)
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([TCG_KP_AIK_CERTIFICATE]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )

    def issued(self, certificate: x509.Certificate) -> bool:
        """Whether `certificate` was signed by this CA (signature and issuer name)."""
        if certificate.issuer != self.certificate.subject:
            return False
        try:
            certificate.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` (never readable by others in between) and write `data`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
