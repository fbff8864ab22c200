"""`model.sig` (OpenSSF Model Signing v1.0) from the agent's code: the stock `model_signing` library
reads it as its own, whatever the file names' order, and verifies it with its certificate method
against the CA; the real TPM and the stock command line are in tests/integration/test_model_sig_stock_tool.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from model_signing import verifying
from tests.soft_tpm import Run, SoftTpm, certificate_with_key, certified_run

from aicert.digest import OUTPUT_EXCLUDED, FileEntry, Manifest, hash_tree
from aicert.model_signature import oms_payload
from aicert_agent.bundling import BundleError, sign_model


def with_key_usage(run: Run) -> str:
    """The run's AK certificate re-issued with the digitalSignature key usage, which model_signing
    requires of a signing certificate (the dev CA's and Azure's AK certificates carry it)."""
    plain = certificate_with_key(run.ca, run.ak_key.public_key())
    usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    builder = (
        x509.CertificateBuilder()
        .subject_name(plain.subject)
        .issuer_name(plain.issuer)
        .public_key(run.ak_key.public_key())
        .serial_number(plain.serial_number)
        .not_valid_before(plain.not_valid_before_utc)
        .not_valid_after(plain.not_valid_after_utc)
    )
    for extension in plain.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    certificate = builder.add_extension(usage, critical=True).sign(run.ca.key, hashes.SHA256())
    return certificate.public_bytes(Encoding.PEM).decode()


def test_the_stock_library_verifies_nested_files_in_its_own_order(tmp_path: Path, azure_dir: Path) -> None:
    """model_signing orders resources by path components (`a/b` before `a-b`), aicert's manifest by
    path text; model.sig lists them, and digests them into its subject, in model_signing's order."""
    (tmp_path / "run").mkdir()
    run = certified_run(tmp_path / "run", azure_dir)
    model = tmp_path / "model"
    (model / "a").mkdir(parents=True)
    (model / "a" / "b").write_bytes(b"nested")
    (model / "a-b").write_bytes(b"dashed")
    (model / "weights.bin").write_bytes(b"weights")
    manifest = hash_tree(model, exclude=OUTPUT_EXCLUDED)
    assert [f.path for f in manifest.files] == ["a-b", "a/b", "weights.bin"]
    certificate = json.loads(json.dumps(run.certificate))
    certificate["statement"]["predicate"]["outputs"]["root"] = manifest.root  # only compared with
    certificate["evidence"]["ak"]["certificateChain"] = [with_key_usage(run)]
    signature = sign_model(certificate, manifest, SoftTpm(run.ak_key))
    (model / "model.sig").write_text(json.dumps(signature))
    payload = json.loads(base64.b64decode(signature["dsseEnvelope"]["payload"]))
    assert [r["name"] for r in payload["predicate"]["resources"]] == ["a/b", "a-b", "weights.bin"]
    (model / "aicert-certificate.json").write_text("{}")  # left out: in the signature's ignore_paths
    config = verifying.Config().use_certificate_verifier(certificate_chain=[run.ca_pem])
    config.verify(model, model / "model.sig")
    (model / "a" / "b").write_bytes(b"nested, changed")
    with pytest.raises(ValueError, match="Signature mismatch"):
        config.verify(model, model / "model.sig")


def test_no_model_sig_for_another_output_or_a_recorded_symlink(tmp_path: Path, azure_dir: Path) -> None:
    (tmp_path / "run").mkdir()
    run = certified_run(tmp_path / "run", azure_dir)
    other = Manifest.from_files([FileEntry("weights.bin", 3, "ab" * 32)])
    with pytest.raises(BundleError, match="is not the certified one"):
        sign_model(run.certificate, other, SoftTpm(run.ak_key))
    with pytest.raises(ValueError, match="recorded symlinks"):
        oms_payload([FileEntry("link", 3, "ab" * 32, symlink=True)], "model", OUTPUT_EXCLUDED)
