"""A software TPM and a run it certified, for tests that need genuine certificates without swtpm.

`SoftTpm` keeps PCRs in memory and signs quotes (TPMS_ATTEST; an ECDSA-SHA256 or, for an RSA AK as
Azure's, an RSASSA-SHA256 TPMT_SIGNATURE) with an AK that a test CA certified; the agent's own recorder measures a run into it and seals it, so
the certificate is exactly what `aicert-agent` would write. `Run.signed_legacy_proof` quotes any
events as an old AICert proof (PCR 16, empty extraData), as any Azure VM's vTPM could.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from aicert.certificate import Assurance
from aicert.digest import hash_tree
from aicert.tpm.pcrs import format_tpm2_tools_pcrs
from aicert_agent.measurement_log import MeasurementLog
from aicert_agent.recorder import AkIdentity, RunRecorder
from tests.pki import Issued, issue

AT = "2026-01-01T00:00:00Z"  # inside the test CA's and AK certificate's validity (tests.pki.NOW)
LEGACY_AT = "2024-06-01T00:00:00Z"  # inside the Azure AK certificate's validity
UID = "3f6d2c1e-0000-4000-8000-000000000001"
LEGACY_PCR = 16  # what old AICert proofs measured into (aicert.legacy.LEGACY_PCR)
Json = dict[str, Any]


def _tpm2b(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


@dataclass
class SoftQuote:
    attest: bytes
    signature: bytes
    pcr_values: dict[int, bytes]


@dataclass
class SoftTpm:
    """PCRs in memory and quotes (TPMS_ATTEST, ECDSA-SHA256 TPMT_SIGNATURE) signed by `key`; an RSA
    `key` signs RSASSA-SHA256 (PKCS#1 v1.5), as Azure's vTPM AK does."""

    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    pcrs: dict[int, bytes] = field(default_factory=lambda: {i: bytes(32) for i in range(24)})
    clock: int = 1000  # TPMS_CLOCK_INFO: milliseconds, one more at each quote
    reset_count: int = 1
    restart_count: int = 0

    def pcr_read(self, indices: Any) -> dict[int, bytes]:
        return {i: self.pcrs[i] for i in indices}

    def pcr_extend(self, index: int, digest: bytes) -> None:
        self.pcrs[index] = hashlib.sha256(self.pcrs[index] + digest).digest()

    def pcr_reset(self, index: int) -> None:
        self.pcrs[index] = bytes(32)

    def quote(self, pcrs: Any, extra_data: bytes) -> SoftQuote:
        selected = sorted(set(pcrs))
        bitmap = bytearray(3)
        for index in selected:
            bitmap[index // 8] |= 1 << (index % 8)
        values = {i: self.pcrs[i] for i in selected}
        self.clock += 1
        attest = (
            struct.pack(">IH", 0xFF544347, 0x8018)
            + _tpm2b(b"soft-tpm")
            + _tpm2b(extra_data)
            + struct.pack(">QIIBQ", self.clock, self.reset_count, self.restart_count, 1, 0)
            + struct.pack(">IHB", 1, 0x000B, 3)
            + bytes(bitmap)
            + _tpm2b(hashlib.sha256(b"".join(values[i] for i in selected)).digest())
        )
        return SoftQuote(attest, self.sign(attest), values)

    def sign_external(self, data: bytes) -> bytes:
        """As a TPM signs external data with a restricted key: only data that does not begin with
        TPM_GENERATED_VALUE (it gives no hash ticket for that), over its sha256."""
        if data[:4] == struct.pack(">I", 0xFF544347):
            raise ValueError("TPM_RC_TICKET: the data begins with TPM_GENERATED_VALUE")
        return self.sign(data)

    def sign(self, attest: bytes) -> bytes:
        """A TPMT_SIGNATURE over `attest` with the AK, whatever `attest` is: RSASSA-SHA256 (PKCS#1
        v1.5) for an RSA AK, as Azure's vTPM AK signs, else ECDSA-SHA256."""
        if isinstance(self.key, rsa.RSAPrivateKey):
            rsassa = self.key.sign(attest, padding.PKCS1v15(), hashes.SHA256())
            return struct.pack(">HH", 0x0014, 0x000B) + _tpm2b(rsassa)
        r, s = decode_dss_signature(self.key.sign(attest, ec.ECDSA(hashes.SHA256())))
        return (
            struct.pack(">HH", 0x0018, 0x000B) + _tpm2b(r.to_bytes(32, "big")) + _tpm2b(s.to_bytes(32, "big"))
        )


@dataclass
class Run:
    ca: Issued
    ca_pem: Path
    ak_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ak_certificate: x509.Certificate
    certificate: Json
    model: Path
    data: Path
    legacy_proof: Json
    azure_root: Path

    def resource(self) -> Json:
        """The Succeeded CertifiedTraining whose status holds this run's certificate, as `kubectl
        aicert verify digits` reads it."""
        outputs = self.certificate["statement"]["predicate"]["outputs"]
        return {
            "metadata": {"name": "digits", "namespace": "default", "uid": UID},
            "status": {
                "phase": "Succeeded",
                "modelDigest": "sha256:" + outputs["root"],
                "certificate": json.dumps(self.certificate),
            },
        }

    def write(self, where: Path, document: Json | str | bytes) -> str:
        if isinstance(document, dict):
            document = json.dumps(document)
        if isinstance(document, str):
            document = document.encode()
        where.write_bytes(document)
        return str(where)

    def verify_argv(self, path: str, *more: str) -> list[str]:
        return ["verify", path, "--trust-bundle", str(self.ca_pem), "--at", AT, *more]

    def legacy_argv(self, path: str, *more: str) -> list[str]:
        return ["verify", path, "--trust-bundle", str(self.azure_root), "--at", LEGACY_AT, *more]

    def signed_legacy_proof(self, events: list[str]) -> Json:
        """An old AICert proof over `events`, genuinely quoted: its hostile events reach every
        check (a proof from any Azure VM could carry them, quoted by its vTPM)."""
        return legacy_proof_over(events, self.ak_key, self.ak_certificate)


TCG_KP_AIK_CERTIFICATE = x509.ObjectIdentifier("2.23.133.8.3")


def certificate_with_key(ca: Issued, public_key: CertificatePublicKeyTypes) -> x509.Certificate:
    """An AK certificate for `public_key`, issued by `ca`."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AK")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca.cert.not_valid_before_utc)
        .not_valid_after(ca.cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([TCG_KP_AIK_CERTIFICATE]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


def pem_key(key: CertificatePublicKeyTypes) -> str:
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def b64_der(certificate: x509.Certificate) -> str:
    return base64.b64encode(certificate.public_bytes(Encoding.DER)).decode()


IMAGE_EVENT = json.dumps(
    {"event_type": "input_image", "content": {"resolved": {"id": "sha256:" + "cd" * 32}}}
)
WEIGHTS_SHA256 = hashlib.sha256(b"weights").hexdigest()  # the soft run's model/weights.bin
OUTPUTS_EVENT = json.dumps(
    {
        "event_type": "outputs",
        "content": [{"spec": {"path": "weights.bin"}, "resolved": {"hash": WEIGHTS_SHA256}}],
    }
)


def certified_run(
    root: Path,
    azure_dir: Path,
    ca: Issued | None = None,
    *,
    ak_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    assurance: Assurance = "dev",
    platform: Json | None = None,
    network: Json | None = None,
    whole_run_network: Json | None = None,
    agent_image: str | None = None,
) -> Run:
    """A run measured into a `SoftTpm` and sealed by the agent's recorder, its model and data
    directories, and the real old AICert proof in tests/assets/azure. `ca` issues the AK
    certificate, valid as long as `ca` is (default: a test CA valid around tests.pki.NOW);
    `ak_key` is the AK (default: a new P-256 key); `assurance` the level claimed, with
    `platform` as `evidence.platform` (level cvm: tests.cvm_vectors' `evidence_platform()`);
    `network`: what the agent found of the pod's network at the gate (the run event), and
    `whole_run_network` from gate to seal (the output event; `predicate.run.network` when given);
    `agent_image`: the pod's gate and seal image (the run event; `predicate.run.agentImage`)."""
    ca = ca or issue("hostile-input test CA")
    ak_key = ak_key or ec.generate_private_key(ec.SECP256R1())
    ak_certificate = certificate_with_key(ca, ak_key.public_key())
    ak_pem = ak_certificate.public_bytes(Encoding.PEM).decode()
    (root / "ca.pem").write_bytes(ca.pem)
    model, data = root / "model", root / "data"
    model.mkdir()
    data.mkdir()
    (model / "weights.bin").write_bytes(b"weights")
    (data / "train.csv").write_text("x,y\n1,2\n")
    tpm = SoftTpm(ak_key)
    log = MeasurementLog(root / "measurements.log", 23)
    log.recover(tpm)
    recorder = RunRecorder(log, tpm, run_id="run-1", salt="ab" * 16)
    recorder.begin(
        node="gpu-1",
        name="digits",
        attempt=0,
        spec={"gpus": 1},
        namespace="default",
        uid=UID,
        network=network,
        agent_image=agent_image,
    )
    recorder.image("registry.local/train@sha256:" + "cd" * 32, "sha256:" + "cd" * 32)
    recorder.input("data", hash_tree(data))
    (root / "labels").mkdir()
    (root / "labels" / "labels.txt").write_text("cat\ndog\n")
    recorder.input("labels", hash_tree(root / "labels"))  # a second input, for partial --data
    recorder.output("model", hash_tree(model), network=whole_run_network)
    identity = AkIdentity(pem_key(ak_key.public_key()), (ak_pem,), platform)
    certificate = recorder.seal(assurance=assurance, ak=identity)
    proof = json.loads((azure_dir / "aicert-proof-sample.json").read_text())
    azure_root = azure_dir / "azure-virtual-tpm-root-ca-2023.crt"
    return Run(ca, root / "ca.pem", ak_key, ak_certificate, certificate, model, data, proof, azure_root)


def legacy_proof_over(
    events: list[str],
    ak_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    ak_certificate: x509.Certificate,
) -> Json:
    """An old AICert proof over `events`, quoted by `ak_key` on a SoftTpm (PCR 16, empty extraData)."""
    tpm = SoftTpm(ak_key)
    for event in events:
        tpm.pcr_extend(LEGACY_PCR, hashlib.sha256(event.encode("utf-8", "surrogatepass")).digest())
    quote = tpm.quote([LEGACY_PCR], b"")
    b64 = base64.b64encode
    return {
        "event_log": events,
        "remote_attestation": {
            "quote": {
                "message": {"base64": b64(quote.attest).decode()},
                "signature": {"base64": b64(quote.signature).decode()},
                "pcr": {"base64": b64(format_tpm2_tools_pcrs(quote.pcr_values)).decode()},
            },
            "cert_chain": [{"base64": b64_der(ak_certificate)}],
        },
    }
