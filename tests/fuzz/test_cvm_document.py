"""Property tests on a whole `cvm` certificate: `evidence.platform.hclReport` and its AMD chain as
`Verifier.verify` reads them, from a genuine one.

The genuine certificate is what `aicert-agent` writes on an Azure confidential VM: a run recorded
by the agent's own `RunRecorder` into a soft TPM whose AK is RSA (as Azure's vTPM AK is), sealed
at level cvm with the synthetic platform evidence of tests.cvm_vectors (an HCL report naming that
AK, a VCEK chain to a test ARK). It verifies at `cvm` against a root given the `vtpm` ceiling, the
test ARK and the vectors' known-good paravisor measurement.

Every mutation (of the JSON, or of the bytes inside the base64 HCL report and the PEM certificates)
ends as `aicert verify` may end: exit 1 or 2, or verified, and verified only when it means what the
genuine certificate means (tests.fuzz.genuine.meaning: the HCL report's header and padding, and the
order and spelling of the AMD certificates, mean nothing).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import event, given, settings
from hypothesis import strategies as st

from aicert.trust import TrustAnchor, TrustStore
from aicert.verify import Document, MalformedError, VerificationError, Verifier, load_document
from tests.cvm_vectors import AT, make_vector, rsa_key
from tests.fuzz.genuine import CA_KEY, Finding, ca_certificate, meaning
from tests.fuzz.strategies import edited_bytes, examples, mutated_document

pytestmark = pytest.mark.fuzz

AK = rsa_key(0)
VECTOR = make_vector(quote_ak=AK.public_key())


def cvm_certificate() -> bytes:
    """A run sealed at level cvm by the agent's recorder, on a soft TPM with an RSA AK."""
    from aicert.digest import FileEntry, Manifest
    from aicert_agent.measurement_log import MeasurementLog
    from aicert_agent.recorder import AkIdentity, RunRecorder
    from tests.pki import Issued
    from tests.soft_tpm import SoftTpm, certificate_with_key, pem_key

    certificate = certificate_with_key(Issued(ca_certificate(), CA_KEY), AK.public_key())
    ak = AkIdentity(
        pem_key(AK.public_key()),
        (certificate.public_bytes(Encoding.PEM).decode(),),
        VECTOR.evidence_platform(),
    )
    tpm = SoftTpm(AK)
    with tempfile.TemporaryDirectory(prefix="aicert-fuzz-cvm-") as tmp:
        log = MeasurementLog(Path(tmp) / "measurements.log", 23)
        log.recover(tpm)
        run = RunRecorder(log, tpm, run_id="run-cvm", salt="ef" * 16)
        run.begin(node="cvm-1", name="digits", attempt=0, spec={"gpus": 1})
        run.input("data", Manifest.from_files([FileEntry("train.csv", 8, "12" * 32)]))
        run.output("model", Manifest.from_files([FileEntry("weights.bin", 7, "56" * 32)]))
        return json.dumps(run.seal(assurance="cvm", ak=ak), indent=1).encode()


GENUINE = cvm_certificate()
VERIFIER = Verifier(
    TrustStore((TrustAnchor(ca_certificate(), "vtpm", "fuzz vTPM root"),)),
    ark_fingerprints=VECTOR.ark_fingerprints,
    paravisor_measurements=VECTOR.known_measurements,
)


def exit_code(data: bytes) -> int:
    """The exit code `aicert verify` would give; Finding for a crash or a document that verifies
    but does not mean what the genuine one means."""
    try:
        document = load_document(data)
    except MalformedError:
        return 2
    try:
        result = VERIFIER.verify(document, at=AT)
    except VerificationError:
        return 1
    except MalformedError:
        return 2
    if meaning(document) != GENUINE_MEANING or result.assurance != "cvm":
        raise Finding(f"a cvm certificate that the genuine one does not mean verified: {data[:3000]!r}")
    return 0


def _genuine_meaning() -> object:
    parsed = load_document(GENUINE)
    assert isinstance(parsed, Document)
    return meaning(parsed)


GENUINE_MEANING = _genuine_meaning()


def test_the_genuine_cvm_certificate_verifies_at_cvm() -> None:
    assert VERIFIER.verify(GENUINE, at=AT).assurance == "cvm"
    assert exit_code(GENUINE) == 0


@settings(max_examples=examples(300), deadline=None)
@given(document=mutated_document(GENUINE))
def test_a_mutated_cvm_certificate_verifies_only_if_it_means_the_same(document: bytes) -> None:
    event(f"exit {exit_code(document)}")


@settings(max_examples=examples(300), deadline=None)
@given(report=edited_bytes(VECTOR.hcl_report, max_edits=6) | st.binary(max_size=3000))
def test_any_hcl_report_in_the_certificate_ends_in_exit_0_1_or_2(report: bytes) -> None:
    import base64

    document = json.loads(GENUINE)
    document["evidence"]["platform"]["hclReport"] = base64.b64encode(report).decode()
    event(f"exit {exit_code(json.dumps(document).encode())}")
