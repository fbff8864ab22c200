"""The certificate as a Sigstore bundle (`aicert.sigstore.json`): it verifies as the certificate does,
plus `envelope-signature`, and every tamper fails exactly its check.

The bundle is made by the agent's own code (aicert_agent.bundling) with the soft TPM's AK, which
signs the DSSE PAE as a TPM signs external data; the real TPM path (hash ticket, swtpm) is in
tests/integration/test_sigstore_bundle_tpm.py. `sigstore-models` (Sigstore's own schema, from PyPI)
reads every bundle made here.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from sigstore_models.bundle.v1 import Bundle
from tests.pki import issue
from tests.soft_tpm import AT, Run, SoftTpm, certificate_with_key, certified_run, pem_key
from tests.tsa_tokens import Minted, make_response

from aicert.bundle import (
    BUNDLE_MEDIA_TYPE,
    CERTIFICATE_PREDICATE_TYPE,
    IN_TOTO_PAYLOAD_TYPE,
    assemble_bundle,
    dsse_signature,
    envelope_payload,
    pae,
    rebuild_bundle,
)
from aicert.cli import main as aicert_main
from aicert.trust import TrustStore
from aicert.verify import Check, MalformedError, VerificationError, Verifier
from aicert.verify.envelope import NOT_A_BUNDLE
from aicert_agent.bundling import BundleError, sign_bundle, signing_input

WHEN = dt.datetime.fromisoformat(AT.replace("Z", "+00:00"))
Json = dict[str, Any]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> Run:
    return certified_run(tmp_path_factory.mktemp("bundle"), azure_dir)


@pytest.fixture
def bundle(run: Run) -> Json:
    return sign_bundle(copy.deepcopy(run.certificate), SoftTpm(run.ak_key))


def verify(run: Run, document: Json, **options: Any) -> Any:
    return Verifier(TrustStore.from_pem_file(run.ca_pem)).verify(json.dumps(document), at=WHEN, **options)


def expect(run: Run, document: Json, check: Check, reason: str) -> None:
    with pytest.raises(VerificationError) as caught:
        verify(run, document)
    assert (caught.value.check, reason in caught.value.reason) == (check, True), caught.value.reason


def malformed(run: Run, document: Json) -> MalformedError:
    with pytest.raises(MalformedError) as caught:
        verify(run, document)
    return caught.value


def payload_of(bundle: Json) -> Json:
    loaded: Json = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return loaded


def resigned(run: Run, bundle: Json, payload: Json, key: Any = None) -> Json:
    """`bundle` with `payload`, genuinely signed by the AK (or `key`) over its PAE: what an agent
    whose AK signs anything it is given could make."""
    data = json.dumps(payload).encode()
    signature = dsse_signature(SoftTpm(key or run.ak_key).sign_external(pae(IN_TOTO_PAYLOAD_TYPE, data)))
    forged = copy.deepcopy(bundle)
    forged["dsseEnvelope"]["payload"] = base64.b64encode(data).decode()
    forged["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(signature).decode()
    return forged


# --- genuine --------------------------------------------------------------------------------------


def test_the_bundle_verifies_with_the_same_checks_plus_the_envelope(run: Run, bundle: Json) -> None:
    from_json = verify(run, run.certificate, model_dir=run.model)
    from_bundle = verify(run, bundle, model_dir=run.model)
    assert from_bundle.statement == from_json.statement
    assert (from_bundle.assurance, from_bundle.ak_subject, from_bundle.clock) == (
        from_json.assurance,
        from_json.ak_subject,
        from_json.clock,
    )
    assert Check.ENVELOPE_SIGNATURE in from_bundle.passed
    assert tuple(c for c in from_bundle.passed if c != Check.ENVELOPE_SIGNATURE) == from_json.passed
    assert dict(from_json.skipped)[Check.ENVELOPE_SIGNATURE] == NOT_A_BUNDLE
    assert Check.ENVELOPE_SIGNATURE not in dict(from_bundle.skipped)


def test_sigstore_models_reads_the_bundle(bundle: Json) -> None:
    parsed = Bundle.from_json(json.dumps(bundle))
    assert parsed.media_type == BUNDLE_MEDIA_TYPE == "application/vnd.dev.sigstore.bundle.v0.3+json"
    envelope = parsed.dsse_envelope
    assert envelope is not None and envelope.payload_type == "application/vnd.in-toto+json"
    statement = json.loads(envelope.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == CERTIFICATE_PREDICATE_TYPE
    chain = parsed.verification_material.x509_certificate_chain
    assert chain is not None and len(chain.certificates) == 1
    assert parsed.verification_material.tlog_entries == []


def test_the_payload_carries_the_certificate_and_the_chain_is_in_the_material(run: Run, bundle: Json) -> None:
    payload = payload_of(bundle)
    assert payload["subject"] == run.certificate["statement"]["subject"]
    predicate = payload["predicate"]
    assert predicate["statement"] == run.certificate["statement"]
    assert predicate["evidence"]["quote"] == run.certificate["evidence"]["quote"]
    assert "certificateChain" not in predicate["evidence"]["ak"] and "timestamp" not in predicate["evidence"]
    (leaf,) = bundle["verificationMaterial"]["x509CertificateChain"]["certificates"]
    assert base64.b64decode(leaf["rawBytes"]) == run.ak_certificate.public_bytes(Encoding.DER)


def test_the_pae_begins_with_dssev1_never_with_tpm_generated_value(run: Run) -> None:
    signed = signing_input(envelope_payload(run.certificate))
    assert signed.startswith(b"DSSEv1 28 application/vnd.in-toto+json ")
    assert signed[:4] != b"\xffTCG"
    with pytest.raises(ValueError, match="TPM_GENERATED_VALUE"):  # what the TPM's ticket rule refuses
        SoftTpm(run.ak_key).sign_external(b"\xffTCG" + signed)


def test_kubectl_get_rebuilds_the_same_bytes_from_the_status(run: Run, bundle: Json) -> None:
    text = json.dumps(run.certificate)
    rebuilt = rebuild_bundle(text, bundle["dsseEnvelope"]["signatures"][0]["sig"])
    assert json.dumps(rebuilt, separators=(",", ":")) == json.dumps(bundle, separators=(",", ":"))


def test_the_agent_refuses_a_signer_that_signs_with_another_key(run: Run) -> None:
    with pytest.raises(BundleError, match="does not verify with the AK"):
        sign_bundle(copy.deepcopy(run.certificate), SoftTpm(ec.generate_private_key(ec.SECP256R1())))


# --- tampered: each fails exactly its check ----------------------------------------------------------


def test_one_byte_of_the_payload_changed_fails_the_envelope_signature(run: Run, bundle: Json) -> None:
    data = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    at = data.index(b'"gpu-1"') + 5
    changed = data[:at] + b"2" + data[at + 1 :]  # the node's name, gpu-1 -> gpu-2: still JSON
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(changed).decode()
    expect(run, bundle, Check.ENVELOPE_SIGNATURE, "signature does not verify with the AK certificate's key")


def test_one_byte_of_the_signature_changed_fails_the_envelope_signature(run: Run, bundle: Json) -> None:
    signature = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    signature[-1] ^= 0x01
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(signature)).decode()
    expect(run, bundle, Check.ENVELOPE_SIGNATURE, "signature does not verify")


def test_another_aks_chain_fails_ak_key(run: Run, bundle: Json) -> None:
    """The chain swapped for a genuine chain of another AK (same CA): the AK the signed payload
    names is not the one certified."""
    other = certificate_with_key(run.ca, ec.generate_private_key(ec.SECP256R1()).public_key())
    certificates = bundle["verificationMaterial"]["x509CertificateChain"]["certificates"]
    certificates[0]["rawBytes"] = base64.b64encode(other.public_bytes(Encoding.DER)).decode()
    expect(run, bundle, Check.AK_KEY, "evidence.ak.public is not the key the AK certificate certifies")


def test_another_ak_rewrapping_the_certificate_fails_the_quote_signature(run: Run, bundle: Json) -> None:
    """A genuine AK of another machine signs the whole payload, naming itself: its envelope verifies,
    but the quote inside was not made by it."""
    key = ec.generate_private_key(ec.SECP256R1())
    other = certificate_with_key(run.ca, key.public_key())
    payload = payload_of(bundle)
    payload["predicate"]["evidence"]["ak"]["public"] = pem_key(key.public_key())
    forged = resigned(run, bundle, payload, key)
    forged["verificationMaterial"]["x509CertificateChain"]["certificates"][0]["rawBytes"] = base64.b64encode(
        other.public_bytes(Encoding.DER)
    ).decode()
    expect(run, forged, Check.QUOTE_SIGNATURE, "does not verify with the AK")


def test_a_payload_naming_another_subject_fails_the_envelope_signature(run: Run, bundle: Json) -> None:
    """Signed by the AK, but the subject a Sigstore tool reads is not the one the quote binds."""
    payload = payload_of(bundle)
    payload["subject"] = [{"name": "model", "digest": {"sha256": "ee" * 32}}]
    expect(
        run,
        resigned(run, bundle, payload),
        Check.ENVELOPE_SIGNATURE,
        "but the statement the quote binds names",
    )


def test_a_payload_whose_statement_differs_from_the_quoted_one_fails_quote_binding(
    run: Run, bundle: Json
) -> None:
    payload = payload_of(bundle)
    payload["predicate"]["statement"]["predicate"]["run"]["name"] = "another-run"
    expect(run, resigned(run, bundle, payload), Check.QUOTE_BINDING, "the quote certifies another statement")


def test_a_dropped_timestamp_leaves_an_expired_ak_certificate_unproven(run: Run, tmp_path: Path) -> None:
    """With its token, a certificate whose AK certificate has expired since verifies at the TSA's
    time; the bundle without its token fails ak-chain, as the certificate would."""
    ca = issue(
        "expired CA",
        not_before=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2025, 6, 1, tzinfo=dt.UTC),
    )
    old = certified_run(tmp_path, Path(__file__).resolve().parents[1] / "assets" / "azure", ca)
    minted = Minted()
    signature = base64.b64decode(old.certificate["evidence"]["quote"]["signature"])
    old.certificate["evidence"]["timestamp"] = base64.b64encode(
        make_response(minted.spec(signature))
    ).decode()
    stamped = sign_bundle(copy.deepcopy(old.certificate), SoftTpm(old.ak_key))
    verifier = Verifier(
        TrustStore.from_pem_file(old.ca_pem),
        tsa=TrustStore.from_certificates([minted.tsa.root], "test TSA", dev_level=False),
    )
    result = verifier.verify(json.dumps(stamped))  # no --at: at the token's time
    assert Check.TIMESTAMP in result.passed and Check.ENVELOPE_SIGNATURE in result.passed
    del stamped["verificationMaterial"]["timestampVerificationData"]
    with pytest.raises(VerificationError) as caught:
        verifier.verify(json.dumps(stamped))
    assert caught.value.check == Check.AK_CHAIN and "expired on" in caught.value.reason


# --- malformed: exit 2 naming the bundle's field --------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda b: b.pop("mediaType"), "mediaType"),
        (lambda b: b.update(mediaType="application/vnd.dev.sigstore.bundle+json;version=0.1"), "mediaType"),
        (lambda b: b.update(extra=1), "extra"),
        (
            lambda b: b["verificationMaterial"].pop("x509CertificateChain"),
            "verificationMaterial.x509CertificateChain",
        ),
        (
            lambda b: b["verificationMaterial"]["x509CertificateChain"]["certificates"][0].update(
                rawBytes="AAAA"
            ),
            "verificationMaterial.x509CertificateChain.certificates[0].rawBytes",
        ),
        (lambda b: b["verificationMaterial"].update(tlogEntries=[{}]), "verificationMaterial.tlogEntries"),
        (
            lambda b: b["verificationMaterial"].update(
                timestampVerificationData={"rfc3161Timestamps": [{"signedTimestamp": "not base64!"}]}
            ),
            "verificationMaterial.timestampVerificationData.rfc3161Timestamps[0].signedTimestamp",
        ),
        (
            lambda b: b["verificationMaterial"].update(
                timestampVerificationData={"rfc3161Timestamps": [{"signedTimestamp": "AAAA"}]}
            ),
            "verificationMaterial.timestampVerificationData.rfc3161Timestamps[0].signedTimestamp",
        ),
        (lambda b: b["dsseEnvelope"].update(payloadType="text/plain"), "dsseEnvelope.payloadType"),
        (lambda b: b["dsseEnvelope"].update(signatures=[]), "dsseEnvelope.signatures"),
        (lambda b: b["dsseEnvelope"].update(payload="e30="), "dsseEnvelope.payload._type"),  # {}
        (lambda b: b["dsseEnvelope"].update(payload="bm90IGpzb24="), "dsseEnvelope.payload"),  # not json
    ],
)
def test_a_malformed_bundle_names_its_field(run: Run, bundle: Json, edit: Any, field: str) -> None:
    edit(bundle)
    minted_tsa = Minted()
    verifier = Verifier(
        TrustStore.from_pem_file(run.ca_pem),
        tsa=TrustStore.from_certificates([minted_tsa.tsa.root], "test TSA", dev_level=False),
    )
    with pytest.raises(MalformedError) as caught:
        verifier.verify(json.dumps(bundle), at=WHEN)
    assert caught.value.field.startswith(field), caught.value


def test_a_malformed_certificate_inside_names_its_place_in_the_payload(run: Run, bundle: Json) -> None:
    payload = payload_of(bundle)
    payload["predicate"]["evidence"]["pcr"] = 8
    assert (
        malformed(run, resigned(run, bundle, payload)).field == "dsseEnvelope.payload.predicate.evidence.pcr"
    )
    payload = payload_of(bundle)
    payload["predicate"]["evidence"]["ak"]["certificateChain"] = []
    assert malformed(run, resigned(run, bundle, payload)).field == (
        "dsseEnvelope.payload.predicate.evidence.ak.certificateChain"
    )


def test_the_cli_exits_2_for_a_malformed_bundle_and_1_for_a_forged_one(
    run: Run, bundle: Json, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = run.write(tmp_path / "aicert.sigstore.json", bundle)
    assert aicert_main(run.verify_argv(good)) == 0
    assert "envelope-signature" in capsys.readouterr().out
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(
        b"\x30\x06\x02\x01\x01\x02\x01\x01"
    ).decode()
    forged = run.write(tmp_path / "forged.json", bundle)
    assert aicert_main(run.verify_argv(forged)) == 1
    assert "check envelope-signature failed" in capsys.readouterr().err
    del bundle["dsseEnvelope"]["payloadType"]
    broken = run.write(tmp_path / "broken.json", bundle)
    assert aicert_main(run.verify_argv(broken)) == 2
    assert "dsseEnvelope.payloadType: is missing" in capsys.readouterr().err


def test_a_chain_longer_than_8_is_malformed_and_never_handed_out(run: Run) -> None:
    """The builder's own guard: the bundle it hands out reads back (a chain of 9 does not)."""
    certificate = copy.deepcopy(run.certificate)
    certificate["evidence"]["ak"]["certificateChain"] *= 9
    payload = envelope_payload(certificate)
    signature = dsse_signature(SoftTpm(run.ak_key).sign_external(pae(IN_TOTO_PAYLOAD_TYPE, payload)))
    too_long = assemble_bundle(certificate, payload, signature)
    with pytest.raises(MalformedError, match="has 9 entries"):
        Verifier(TrustStore.from_pem_file(run.ca_pem)).verify(json.dumps(too_long), at=WHEN)
    with pytest.raises(BundleError, match="does not read back"):
        sign_bundle(certificate, SoftTpm(run.ak_key))


def test_the_sigstore_client_refuses_it_as_docs_verification_md_says(bundle: Json) -> None:
    """sigstore-python's verifier wants, in a v0.3 bundle, the leaf certificate alone (not a chain)
    and one transparency log entry: it reads no aicert bundle, and proves nothing of one anyway
    (docs/verification.md, "What each tool proves")."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle as SigstoreBundle

    with pytest.raises(SigstoreError, match="expected certificate in bundle"):
        SigstoreBundle.from_json(json.dumps(bundle))


def test_a_directory_named_like_the_bundle_in_the_model_fails_model_files(run: Run, tmp_path: Path) -> None:
    """aicert writes aicert.sigstore.json beside the weights and leaves it out of the root: a
    directory of that name would take the files in it out of the comparison unseen."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(run.model, model)
    (model / "aicert.sigstore.json").mkdir()
    (model / "aicert.sigstore.json" / "extra.bin").write_bytes(b"not certified")
    with pytest.raises(VerificationError) as caught:
        verify(run, run.certificate, model_dir=model)
    assert caught.value.check == Check.MODEL_FILES and "is a directory" in caught.value.reason
    (model / "aicert.sigstore.json" / "extra.bin").unlink()
    (model / "aicert.sigstore.json").rmdir()
    (model / "aicert.sigstore.json").write_text("{}")  # a file of that name is left out
    assert Check.MODEL_FILES in verify(run, run.certificate, model_dir=model).passed
