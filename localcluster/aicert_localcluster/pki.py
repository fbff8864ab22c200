"""The local cluster's PKI, made with `cryptography`: one CA, the API server's serving certificate,
client certificates (the CN is the user name, each O a group, as kube-apiserver reads them) and the
service-account signing key pair. All keys are ECDSA P-256: fast to make, accepted everywhere here.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)
BACKDATE = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


class ClusterPKI:
    """Files under `directory`: ca.crt/ca.key, apiserver.crt/.key, sa.key/sa.pub, clients/<name>.crt/.key,
    servers/<name>.crt/.key."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_cert_file = directory / "ca.crt"
        self.ca_key_file = directory / "ca.key"
        self.sa_key_file = directory / "sa.key"
        self.sa_pub_file = directory / "sa.pub"
        self._ca_key: ec.EllipticCurvePrivateKey | None = None
        self._ca_cert: x509.Certificate | None = None

    @classmethod
    def create(
        cls, directory: Path, *, server_ips: tuple[str, ...], server_names: tuple[str, ...]
    ) -> ClusterPKI:
        """A fresh CA, serving certificate and service-account key pair (overwrites what is there)."""
        pki = cls(directory)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = _new_key()
        ca_name = _name("aicert-localcluster-ca")
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(pki.ca_key_file, _key_pem(ca_key), private=True)
        _write(pki.ca_cert_file, ca_cert.public_bytes(serialization.Encoding.PEM))
        pki._ca_key, pki._ca_cert = ca_key, ca_cert

        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
        pki._issue("apiserver", _name("kube-apiserver"), server=True, sans=sans)

        sa_key = _new_key()
        _write(pki.sa_key_file, _key_pem(sa_key), private=True)
        _write(
            pki.sa_pub_file,
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        return pki

    @property
    def apiserver(self) -> CertPair:
        return CertPair(self.directory / "apiserver.crt", self.directory / "apiserver.key")

    def client(self, file_stem: str, common_name: str, organizations: tuple[str, ...] = ()) -> CertPair:
        """A client certificate: kube-apiserver authenticates it as user `common_name` in `organizations`."""
        return self._issue(f"clients/{file_stem}", _name(common_name, organizations), server=False, sans=[])

    def server(
        self, file_stem: str, common_name: str, ips: tuple[str, ...], names: tuple[str, ...] = ()
    ) -> CertPair:
        """A serving certificate for the given IP addresses and DNS names (a kubelet's, for its node IP)."""
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        return self._issue(f"servers/{file_stem}", _name(common_name), server=True, sans=sans)

    def _load_ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        if self._ca_key is None or self._ca_cert is None:
            key = serialization.load_pem_private_key(self.ca_key_file.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise TypeError(f"{self.ca_key_file} is not an EC key")
            self._ca_key = key
            self._ca_cert = x509.load_pem_x509_certificate(self.ca_cert_file.read_bytes())
        return self._ca_key, self._ca_cert

    def _issue(
        self, stem: str, subject: x509.Name, *, server: bool, sans: list[x509.GeneralName]
    ) -> CertPair:
        ca_key, ca_cert = self._load_ca()
        key = _new_key()
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + VALIDITY)
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
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        pair = CertPair(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        _write(pair.key, _key_pem(key), private=True)
        _write(pair.cert, cert.public_bytes(serialization.Encoding.PEM))
        return pair
