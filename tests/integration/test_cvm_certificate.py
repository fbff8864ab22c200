"""Level cvm end to end: `aicert-agent run --assurance cvm` on a swtpm whose NV index 0x01400001
holds an HCL report naming its AK (as Azure's paravisor writes it), the VCEK chain served over HTTP
as Azure's IMDS serves it, and the `Verifier` granting cvm only when every cvm check passes.

The AMD roots are a test ARK (`tests.cvm_vectors`), given to the Verifier as the library allows;
the AK's root is given the `vtpm` ceiling the Azure vTPM root has. Attacks first: a certificate
that claims cvm with no platform, with another VM's report, under a dev root, or under AMD's real
roots (which did not sign this chip) is refused, each by its own check.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from tests.cvm_vectors import MEASUREMENT, TCB, CvmVector, make_vector, rsa_key
from tests.integration.certified_run import CertifiedRun
from tests.integration.test_cvm_platform import write_nv_index
from tests.local_http import serving

from aicert.certificate import convert
from aicert.trust import TrustAnchor, TrustStore
from aicert.trust.measurements import KnownMeasurement, KnownMeasurements
from aicert.verify import Check, Policy, VerificationError, Verifier
from aicert_agent.platform import HCL_REPORT_NV_INDEX
from aicert_agent.tpm.client import Tpm
from aicert_agent.tpm.swtpm import Swtpm

pytestmark = pytest.mark.integration


@dataclass
class CvmRun:
    run: CertifiedRun
    vector: CvmVector

    @property
    def certificate(self) -> dict[str, Any]:
        return self.run.certificate

    def vtpm_root(self) -> TrustStore:
        """The dev CA standing in for the Azure vTPM root: vouching for vtpm, as that root does."""
        root = x509.load_pem_x509_certificate((self.run.ca_dir / "dev-ca.pem").read_bytes())
        return TrustStore((TrustAnchor(root, "vtpm", "test vTPM root"),))

    def verifier(
        self,
        policy: Policy | None = None,
        trust: TrustStore | None = None,
        known: KnownMeasurements | None = None,
    ) -> Verifier:
        return Verifier(
            trust or self.vtpm_root(),
            policy,
            ark_fingerprints=self.vector.ark_fingerprints,
            paravisor_measurements=known or self.vector.known_measurements,
        )


@pytest.fixture(scope="module")
def swtpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swtpm]:
    instance = Swtpm(tmp_path_factory.mktemp("swtpm"))
    instance.start()
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture(scope="module")
def cvm(swtpm: Swtpm, tmp_path_factory: pytest.TempPathFactory) -> CvmRun:
    root = tmp_path_factory.mktemp("cvm-run")
    run = CertifiedRun(
        root, swtpm.spec, root / "ca", root / "data", root / "model", root / "certificate.json"
    )
    run.data.mkdir()
    (run.data / "train.csv").write_text("x,y\n1,2\n")
    run.agent("dev-provision", "--ca-dir", str(run.ca_dir), "--key-type", "rsa")  # Azure's AKs are RSA
    with Tpm(swtpm.spec) as tpm:
        ak = load_pem_public_key(tpm.ak_public_pem().encode())
        assert isinstance(ak, rsa.RSAPublicKey)
        vector = make_vector(quote_ak=ak)
        write_nv_index(tpm, HCL_REPORT_NV_INDEX, vector.hcl_report)
    with serving() as imds:
        imds.body = vector.thim_answer()
        script = "import pathlib,sys; pathlib.Path(sys.argv[1], 'weights.bin').write_bytes(b'w')"
        run.agent(
            *("run", "--assurance", "cvm", "--thim-url", imds.url, "--inputs", f"data={run.data}"),
            *("--outputs", str(run.model), "--certificate", str(run.certificate_path)),
            *("--", "python3", "-c", script, str(run.model)),
        )
    return CvmRun(run, vector)


def refused(verifier: Verifier, certificate: dict[str, Any]) -> VerificationError:
    with pytest.raises(VerificationError) as caught:
        verifier.verify(json.dumps(certificate))
    return caught.value


def test_the_agent_puts_the_nv_report_and_the_imds_chain_in_the_evidence(cvm: CvmRun) -> None:
    evidence = cvm.certificate["evidence"]
    assert evidence["assurance"] == "cvm"
    assert evidence["platform"] == cvm.vector.evidence_platform()


def test_a_cvm_certificate_verifies_at_cvm_after_every_cvm_check(cvm: CvmRun) -> None:
    result = cvm.verifier().verify(json.dumps(cvm.certificate), model_dir=cvm.run.model)
    assert result.assurance == "cvm"
    cvm_checks = [c for c in result.passed if str(c).startswith("cvm-")]
    assert cvm_checks == [
        Check.CVM_CHAIN,
        Check.CVM_REPORT_SIGNATURE,
        Check.CVM_VMPL,
        Check.CVM_REPORT_DATA,
        Check.CVM_AK,
        Check.CVM_DEBUG,
        Check.CVM_MEASUREMENT,
    ]


def test_a_verifier_given_no_known_good_paravisor_grants_no_cvm(cvm: CvmRun) -> None:
    """Fail closed: a Verifier built without the `paravisor` list cannot tell Azure's paravisor
    from any other VMPL 0 firmware, so it refuses cvm and says what is missing."""
    verifier = Verifier(cvm.vtpm_root(), ark_fingerprints=cvm.vector.ark_fingerprints)
    error = refused(verifier, cvm.certificate)
    assert error.check == Check.CVM_MEASUREMENT and "aicert trust install paravisor" in error.reason


def test_a_cvm_certificate_from_firmware_not_on_the_list_fails_cvm_measurement(cvm: CvmRun) -> None:
    other = KnownMeasurements((KnownMeasurement("00" * 48, "another paravisor release"),), "list.txt")
    error = refused(cvm.verifier(known=other), cvm.certificate)
    assert error.check == Check.CVM_MEASUREMENT and MEASUREMENT.hex() in error.reason


def test_claiming_cvm_without_platform_evidence_fails_assurance(cvm: CvmRun) -> None:
    certificate = copy.deepcopy(cvm.certificate)
    del certificate["evidence"]["platform"]  # not in the statement: the quote still verifies
    error = refused(cvm.verifier(), certificate)
    assert error.check == Check.ASSURANCE and "carries no evidence.platform" in error.reason


def test_claiming_cvm_under_a_root_that_vouches_for_dev_fails_assurance(cvm: CvmRun) -> None:
    dev = TrustStore.from_pem_file(cvm.run.ca_dir / "dev-ca.pem")
    error = refused(cvm.verifier(trust=dev), cvm.certificate)
    assert error.check == Check.ASSURANCE and "vouches for dev at most" in error.reason


def test_another_vms_report_fails_cvm_ak(cvm: CvmRun) -> None:
    """Attack: a genuine report and chain from another confidential VM (whose vTPM holds another
    AK) pasted into this certificate."""
    certificate = copy.deepcopy(cvm.certificate)
    other = make_vector(quote_ak=rsa_key(7).public_key())
    certificate["evidence"]["platform"] = other.evidence_platform()
    assert refused(cvm.verifier(), certificate).check == Check.CVM_AK


def test_amds_real_roots_did_not_sign_this_chip(cvm: CvmRun) -> None:
    """The pinned AMD ARKs (the default) refuse the test ARK: cvm-chain, not a pass."""
    verifier = Verifier(cvm.vtpm_root(), paravisor_measurements=cvm.vector.known_measurements)
    assert refused(verifier, cvm.certificate).check == Check.CVM_CHAIN


def test_a_report_edited_in_the_certificate_fails_its_signature(cvm: CvmRun) -> None:
    certificate = copy.deepcopy(cvm.certificate)
    report = bytearray(base64.b64decode(certificate["evidence"]["platform"]["hclReport"]))
    report[0x20 + 0x90] ^= 0x01  # a byte of the SNP report's launch measurement
    certificate["evidence"]["platform"]["hclReport"] = base64.b64encode(bytes(report)).decode()
    assert refused(cvm.verifier(), certificate).check == Check.CVM_REPORT_SIGNATURE


def test_the_policy_holds_a_cvm_run_to_its_tcb_and_measurement(cvm: CvmRun) -> None:
    document = json.dumps(cvm.certificate)
    allowed = {
        "minAssurance": "cvm",
        "minimumTcb": TCB.as_dict(),
        "allowedMeasurements": [MEASUREMENT.hex()],
    }
    passed = cvm.verifier(policy_from(allowed)).verify(document).passed
    assert Check.POLICY_TCB in passed and Check.POLICY_MEASUREMENT in passed
    newer = {**TCB.as_dict(), "snp": TCB.snp + 1}
    error = refused(cvm.verifier(policy_from({**allowed, "minimumTcb": newer})), cvm.certificate)
    assert error.check == Check.POLICY_TCB and "snp below" in error.reason
    error = refused(
        cvm.verifier(policy_from({**allowed, "allowedMeasurements": ["00" * 48]})), cvm.certificate
    )
    assert error.check == Check.POLICY_MEASUREMENT


def test_a_tcb_policy_refuses_a_run_below_cvm(cvm: CvmRun, tmp_path: Path) -> None:
    """A policy that pins the AMD firmware cannot be met by a run without an SNP report."""
    certificate = copy.deepcopy(cvm.certificate)
    dev = TrustStore.from_pem_file(cvm.run.ca_dir / "dev-ca.pem")
    policy = policy_from({"minimumTcb": TCB.as_dict()})
    assert refused(cvm.verifier(policy, trust=dev), certificate).check == Check.ASSURANCE  # claims cvm
    stripped = policy_from({"allowedMeasurements": [MEASUREMENT.hex()]})
    plain = Verifier(TrustStore.from_pem_file(cvm.run.ca_dir / "dev-ca.pem"), stripped)
    dev_run = tmp_path / "dev"
    dev_run.mkdir()
    # a dev certificate of this same TPM: sealed by the agent without --assurance cvm
    dev_cert = tmp_path / "dev.json"
    cvm.run.agent(
        *("run", "--inputs", f"data={cvm.run.data}", "--outputs", str(dev_run)),
        *("--certificate", str(dev_cert), "--", "python3", "-c", "pass"),
    )
    with pytest.raises(VerificationError) as caught:
        plain.verify(dev_cert.read_bytes())
    assert caught.value.check == Check.POLICY_MEASUREMENT and "no SEV-SNP report" in caught.value.reason


def policy_from(document: dict[str, Any]) -> Policy:
    return convert(document, Policy)
