"""Synthetic Azure confidential-VM evidence (level `cvm`), made with `cryptography`, to tamper with.

What a real Azure SEV-SNP confidential VM provides, rebuilt with test keys:

- a test ARK and ASK (RSA, self-signed ARK, ASK issued by it, both signing with RSASSA-PSS,
  SHA-384, MGF1-SHA-384, salt 48, as AMD's do); RSA-2048 by default, to keep key generation quick
  (AMD's are RSA-4096, which the verifier reads the same way: `amd_test_roots(key_size=4096)`);
- a VCEK (ECDSA P-384) issued by the ASK with AMD's KDS extensions: productName (IA5String),
  blSPL/teeSPL/snpSPL/ucodeSPL (DER INTEGERs) and hwID (the 64-byte chip id as the bare extension
  value, as AMD's KDS encodes it; `hwid_octet_string=True` wraps it in an OCTET STRING);
- an SEV-SNP report, version 2 by default, laid out field by field at the offsets of AMD's SEV-SNP
  firmware ABI (56860, Table 21; aicert.cvm.snp's table), its bytes 0x000-0x29F signed by the VCEK
  with r and s stored little-endian, 72 bytes each, at 0x2A0 and 0x2E8;
- an HCL report as Azure's paravisor writes it to NV index 0x01400001: the 32-byte header
  ("HCLA", version, report_size, request_type 2, status, reserved), the SNP report at 0x020, the
  IGVM request data at 0x4C0 (data_size, version 1, report_type 2, report_data_hash_type,
  variable_data_size) and the runtime data JSON at 0x4D4 with the AK as JWK `HCLAkPub`, padded
  with zeros to the 2048 bytes of Azure's index; report_data[0:32] = sha256(runtime data).

tests/unit/test_cvm_parsing.py checks that the same parser reads the real Azure HCL report and the
real SEV-SNP report in tests/assets/cvm, so the two formats are one.

`make_vector()` is the genuine vector; each keyword changes exactly one input (debug bit,
report_data, chip id, TCB, measurement, AK, signature, chain order, validity, ARK fingerprints,
the known-good measurements).

The known-good paravisor measurements a vector is verified against are explicit: `KNOWN_GOOD`
lists the synthetic `MEASUREMENT` only, never a real Azure value, and is given to the verifier as
an operator's `aicert trust install paravisor` list would be.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from aicert.cvm import PlatformFacts, TcbVersion, verify_platform
from aicert.trust.measurements import KnownMeasurement, KnownMeasurements

AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # tests.pki.NOW
CHIP_ID = bytes(range(0x40, 0x80))
TCB = TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)  # the levels of the real Azure report
MEASUREMENT = hashlib.sha384(b"aicert synthetic launch measurement").digest()
KNOWN_GOOD = KnownMeasurements(
    (KnownMeasurement(MEASUREMENT.hex(), "tests/cvm_vectors.py: the synthetic paravisor"),),
    "the test vectors' known-good list",
)
GUEST_POLICY = 0x3001F  # the real Azure report's: ABI 0.31, SMT allowed, reserved bit 17 set
DEBUG_BIT = 1 << 19
AZURE_NV_SIZE = 2048
PSS_SHA384 = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
KDS = "1.3.6.1.4.1.3704.1"
SIGNATURE_OFFSET = 0x2A0


def amd_name(common_name: str) -> x509.Name:
    """AMD's subject layout, with an organisation that says these are not AMD's keys."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "AICert synthetic test vector, not AMD"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_certificate(
    subject: x509.Name, key: rsa.RSAPrivateKey, issuer: x509.Name, signer: rsa.RSAPrivateKey, root: bool
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(AT - dt.timedelta(days=5 * 365))
        .not_valid_after(AT + dt.timedelta(days=20 * 365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None if root else 0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, root, False, False), critical=True
        )
        .sign(signer, hashes.SHA384(), rsa_padding=PSS_SHA384)
    )


@dataclass(frozen=True)
class AmdTestRoots:
    """A test ARK and the ASK it issued, and their keys."""

    product: str
    ark_key: rsa.RSAPrivateKey
    ark: x509.Certificate
    ask_key: rsa.RSAPrivateKey
    ask: x509.Certificate

    @property
    def ark_fingerprint(self) -> str:
        return self.ark.fingerprint(hashes.SHA256()).hex()

    def ask_signed_by_another_key(self) -> x509.Certificate:
        """The ASK's name and key, signed by a key that is not the ARK's (under the ARK's name)."""
        impostor = rsa.generate_private_key(65537, self.ark_key.key_size)
        return _ca_certificate(self.ask.subject, self.ask_key, self.ark.subject, impostor, root=False)


@cache
def amd_test_roots(product: str = "Milan", key_size: int = 2048) -> AmdTestRoots:
    ark_key = rsa.generate_private_key(65537, key_size)
    ask_key = rsa.generate_private_key(65537, key_size)
    ark_name, ask_name = amd_name(f"ARK-{product}"), amd_name(f"SEV-{product}")
    ark = _ca_certificate(ark_name, ark_key, ark_name, ark_key, root=True)
    ask = _ca_certificate(ask_name, ask_key, ark_name, ark_key, root=False)
    return AmdTestRoots(product, ark_key, ark, ask_key, ask)


@cache
def rsa_key(number: int = 0) -> rsa.RSAPrivateKey:
    """Test RSA-2048 keys: 0 the vTPM AK, 1 another AK, 2 the EK."""
    return rsa.generate_private_key(65537, 2048)


@cache
def vcek_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _der_integer(value: int) -> bytes:
    content = value.to_bytes(1 + value.bit_length() // 8, "big")
    return bytes([0x02, len(content)]) + content


def vcek_certificate(
    roots: AmdTestRoots,
    *,
    chip_id: bytes = CHIP_ID,
    tcb: TcbVersion = TCB,
    product_name: str = "Milan-B0",
    not_before: dt.datetime = AT - dt.timedelta(days=365),
    not_after: dt.datetime = AT + dt.timedelta(days=6 * 365),
    hwid_octet_string: bool = False,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> x509.Certificate:
    """A VCEK for `chip_id` at `tcb`, issued by the ASK, with AMD's KDS extensions."""
    name_value = bytes([0x16, len(product_name)]) + product_name.encode("ascii")
    hwid = bytes([0x04, len(chip_id)]) + chip_id if hwid_octet_string else chip_id
    spl_arcs = {"bootloader": 1, "tee": 2, "snp": 3, "microcode": 8}
    extensions = [
        (f"{KDS}.1", _der_integer(0)),  # structVersion
        (f"{KDS}.2", name_value),  # productName
        *((f"{KDS}.3.{arc}", _der_integer(getattr(tcb, name))) for name, arc in spl_arcs.items()),
        *((f"{KDS}.3.{arc}", _der_integer(0)) for arc in (4, 5, 6, 7)),  # reserved SPLs
        (f"{KDS}.4", hwid),  # hwID
    ]
    builder = (
        x509.CertificateBuilder()
        .subject_name(amd_name("SEV-VCEK"))
        .issuer_name(roots.ask.subject)
        .public_key((key or vcek_key()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for oid, value in extensions:
        builder = builder.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), False)
    return builder.sign(roots.ask_key, hashes.SHA384(), rsa_padding=PSS_SHA384)


def _b64url(value: int) -> str:
    return (
        base64.urlsafe_b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
    )


def rsa_jwk(key: rsa.RSAPublicKey, kid: str, key_ops: Sequence[str]) -> dict[str, Any]:
    numbers = key.public_numbers()
    return {
        "kid": kid,
        "key_ops": list(key_ops),
        "kty": "RSA",
        "e": _b64url(numbers.e),
        "n": _b64url(numbers.n),
    }


def runtime_data(ak: rsa.RSAPublicKey, *, include_ek: bool = False, kid: str = "HCLAkPub") -> bytes:
    """The runtime claims JSON as Azure's paravisor writes them (compact, in its key order)."""
    keys = [rsa_jwk(ak, kid, ["sign"])]
    if include_ek:
        keys.append(rsa_jwk(rsa_key(2).public_key(), "HCLEkPub", ["encrypt"]))
    claims = {
        "keys": keys,
        "vm-configuration": {
            "console-enabled": False,
            "current-time": int(AT.timestamp()),
            "secure-boot": True,
            "tpm-enabled": True,
            "vmUniqueId": "00000000-0000-4000-8000-00000000ae01",
        },
    }
    return json.dumps(claims, separators=(",", ":")).encode()


@dataclass(frozen=True)
class SnpFields:
    """Every field of an SEV-SNP report the generator sets; the rest is reserved, zero."""

    report_data: bytes
    version: int = 2
    guest_svn: int = 0
    policy: int = GUEST_POLICY
    family_id: bytes = bytes(16)
    image_id: bytes = bytes(16)
    vmpl: int = 0
    signature_algo: int = 1
    current_tcb: TcbVersion = TCB
    platform_info: int = 1
    signer_info: int = 0  # signing_key 0: the VCEK
    measurement: bytes = MEASUREMENT
    host_data: bytes = bytes(32)
    id_key_digest: bytes = bytes(48)
    author_key_digest: bytes = bytes(48)
    report_id: bytes = hashlib.sha256(b"report id").digest()
    report_id_ma: bytes = b"\xff" * 32
    reported_tcb: TcbVersion = TCB
    cpuid: tuple[int, int, int] = (0x19, 0x01, 0x01)  # Milan; written for version 3 and later
    chip_id: bytes = CHIP_ID
    committed_tcb: TcbVersion = TCB
    launch_tcb: TcbVersion = TCB


def snp_report_bytes(fields: SnpFields) -> bytearray:
    """The 1184-byte report, unsigned (signature zero)."""
    raw = bytearray(0x4A0)
    struct.pack_into("<IIQ", raw, 0x000, fields.version, fields.guest_svn, fields.policy)
    raw[0x010:0x020] = fields.family_id
    raw[0x020:0x030] = fields.image_id
    struct.pack_into("<II", raw, 0x030, fields.vmpl, fields.signature_algo)
    raw[0x038:0x040] = fields.current_tcb.to_bytes()
    struct.pack_into("<QI", raw, 0x040, fields.platform_info, fields.signer_info)
    for offset, value, size in (
        (0x050, fields.report_data, 64),
        (0x090, fields.measurement, 48),
        (0x0C0, fields.host_data, 32),
        (0x0E0, fields.id_key_digest, 48),
        (0x110, fields.author_key_digest, 48),
        (0x140, fields.report_id, 32),
        (0x160, fields.report_id_ma, 32),
        (0x180, fields.reported_tcb.to_bytes(), 8),
        (0x1A0, fields.chip_id, 64),
        (0x1E0, fields.committed_tcb.to_bytes(), 8),
        (0x1F0, fields.launch_tcb.to_bytes(), 8),
    ):
        if len(value) != size:
            raise ValueError(f"field at {offset:#x} needs {size} bytes, got {len(value)}")
        raw[offset : offset + size] = value
    if fields.version >= 3:
        raw[0x188:0x18B] = bytes(fields.cpuid)
    return raw


def sign_snp_report(unsigned: bytearray, key: ec.EllipticCurvePrivateKey) -> bytes:
    """Sign bytes 0x000-0x29F with ECDSA P-384/SHA-384; r and s little-endian at 0x2A0 and 0x2E8."""
    r, s = decode_dss_signature(key.sign(bytes(unsigned[:SIGNATURE_OFFSET]), ec.ECDSA(hashes.SHA384())))
    signed = bytearray(unsigned)
    signed[SIGNATURE_OFFSET : SIGNATURE_OFFSET + 72] = r.to_bytes(72, "little")
    signed[SIGNATURE_OFFSET + 72 : SIGNATURE_OFFSET + 144] = s.to_bytes(72, "little")
    return bytes(signed)


def hcl_report_bytes(
    snp_report: bytes,
    runtime: bytes,
    *,
    header_version: int = 1,
    report_type: int = 2,
    hash_type: int = 1,
    nv_size: int | None = AZURE_NV_SIZE,
) -> bytes:
    """Header, SNP report, IGVM request data, runtime data; zero padding up to `nv_size`."""
    used = 0x4D4 + len(runtime)
    header = b"HCLA" + struct.pack("<IIII", header_version, used, 2, 0) + bytes(12)
    request_data = struct.pack("<IIIII", 20 + len(runtime), 1, report_type, hash_type, len(runtime))
    blob = header + snp_report + request_data + runtime
    if nv_size is not None:
        if len(blob) > nv_size:
            raise ValueError(f"the HCL report is {len(blob)} bytes, more than the {nv_size}-byte NV index")
        blob += bytes(nv_size - len(blob))
    return blob


@dataclass(frozen=True)
class CvmVector:
    """One piece of evidence and what verifying it needs."""

    hcl_report: bytes
    snp_report: bytes
    runtime_data: bytes
    certificates: tuple[x509.Certificate, ...]
    ak_spki_der: bytes
    ark_fingerprints: frozenset[str]
    known_measurements: KnownMeasurements = KNOWN_GOOD
    at: dt.datetime = AT
    roots: AmdTestRoots = field(default_factory=amd_test_roots)

    def verify(self) -> PlatformFacts:
        return verify_platform(
            self.hcl_report,
            self.certificates,
            self.ak_spki_der,
            self.at,
            self.ark_fingerprints,
            known_measurements=self.known_measurements,
        )

    def certificate_chain_pem(self) -> list[str]:
        return [c.public_bytes(Encoding.PEM).decode() for c in self.certificates]

    def thim_answer(self, **changes: Any) -> bytes:
        """The JSON Azure's IMDS answers at /metadata/THIM/amd/certification for this chip."""
        chain = self.certificate_chain_pem()
        tcbm = f"{int.from_bytes(self.snp_report[0x180:0x188], 'little'):016X}"  # reported_tcb as hex
        answer = {"vcekCert": chain[0], "certificateChain": "".join(chain[1:]), "tcbm": tcbm}
        return json.dumps({**answer, **changes}).encode()

    def evidence_platform(self) -> dict[str, Any]:
        """`evidence.platform` as the agent writes it."""
        return {
            "hclReport": base64.b64encode(self.hcl_report).decode(),
            "certificateChain": self.certificate_chain_pem(),
        }


def spki_der(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def make_vector(
    *,
    debug: bool = False,
    report_data: bytes | None = None,
    chip_id: bytes = CHIP_ID,
    vcek_chip_id: bytes | None = None,
    reported_tcb: TcbVersion = TCB,
    vcek_tcb: TcbVersion | None = None,
    measurement: bytes = MEASUREMENT,
    runtime_ak: rsa.RSAPublicKey | None = None,
    quote_ak: rsa.RSAPublicKey | None = None,
    flip_signature_byte: int | None = None,
    chain_order: Sequence[str] = ("vcek", "ask", "ark"),
    vcek_not_before: dt.datetime = AT - dt.timedelta(days=365),
    vcek_not_after: dt.datetime = AT + dt.timedelta(days=6 * 365),
    ask: x509.Certificate | None = None,
    ark_fingerprints: frozenset[str] | None = None,
    version: int = 2,
    hash_type: int = 1,
    snp_fields: dict[str, Any] | None = None,
    known_measurements: KnownMeasurements = KNOWN_GOOD,
) -> CvmVector:
    """The genuine vector; each keyword changes one input from what the VM and AMD would give.

    runtime_ak: the key put in the runtime data as HCLAkPub (default: the quote's AK);
    quote_ak: the AK the verifier is given (default: rsa_key(0));
    report_data: the 64 bytes put in the report (default: hash of the runtime data, zero padded);
    vcek_chip_id / vcek_tcb: what the VCEK certifies (default: the report's chip_id and TCB);
    flip_signature_byte: an index into the 144 signature bytes to flip after signing;
    chain_order: names among vcek, ask, ark in the order given ("ark" may be left out);
    ask: another ASK certificate (e.g. `amd_test_roots().ask_signed_by_another_key()`);
    ark_fingerprints: the pinned ARK fingerprints the verifier gets (default: the test ARK's);
    known_measurements: the known-good paravisor measurements it gets (default: `KNOWN_GOOD`).
    `measurement` changes what the report says, `known_measurements` what the verifier trusts."""
    roots = amd_test_roots()
    quote_key = quote_ak or rsa_key(0).public_key()
    runtime = runtime_data(runtime_ak or quote_key)
    digest = hashlib.new({1: "sha256", 2: "sha384", 3: "sha512"}[hash_type], runtime).digest()
    fields = SnpFields(
        report_data=report_data if report_data is not None else digest.ljust(64, b"\0"),
        version=version,
        policy=GUEST_POLICY | DEBUG_BIT if debug else GUEST_POLICY,
        measurement=measurement,
        reported_tcb=reported_tcb,
        chip_id=chip_id,
    )
    fields = replace(fields, **(snp_fields or {}))
    report = bytearray(sign_snp_report(snp_report_bytes(fields), vcek_key()))
    if flip_signature_byte is not None:
        report[SIGNATURE_OFFSET + flip_signature_byte] ^= 0x01
    vcek = vcek_certificate(
        roots,
        chip_id=chip_id if vcek_chip_id is None else vcek_chip_id,
        tcb=vcek_tcb or reported_tcb,
        not_before=vcek_not_before,
        not_after=vcek_not_after,
    )
    by_name = {"vcek": vcek, "ask": ask or roots.ask, "ark": roots.ark}
    return CvmVector(
        hcl_report=hcl_report_bytes(bytes(report), runtime, hash_type=hash_type),
        snp_report=bytes(report),
        runtime_data=runtime,
        certificates=tuple(by_name[name] for name in chain_order),
        ak_spki_der=spki_der(quote_key),
        ark_fingerprints=ark_fingerprints
        if ark_fingerprints is not None
        else frozenset({roots.ark_fingerprint}),
        known_measurements=known_measurements,
        roots=roots,
    )
