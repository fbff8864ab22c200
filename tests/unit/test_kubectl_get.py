"""`kubectl aicert get NAME`: the certificate in the status, written whole, never over another file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.soft_tpm import SoftTpm, certified_run
from tests.unit.test_kubectl_binding import resource_json

from aicert.cli import kubectl_plugin
from aicert.cli import main as aicert_main
from aicert_agent.bundling import sign_bundle

CERTIFICATE = '{"statement":{"_type":"x"},"evidence":{}}'


def get(tmp_path: Path, resource: Path, body: dict[str, Any], *extra: str) -> int:
    resource.write_text(json.dumps(body))
    return kubectl_plugin.main(["get", "digits", "--dir", str(tmp_path / "weights"), *extra])


def test_the_certificate_is_written_as_the_status_holds_it(
    tmp_path: Path, kubectl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert get(tmp_path, kubectl, resource_json(CERTIFICATE)) == 0
    written = tmp_path / "weights" / "aicert-certificate.json"
    assert written.read_text() == CERTIFICATE + "\n"
    assert capsys.readouterr().out.strip() == str(written)
    assert [p.name for p in written.parent.iterdir()] == ["aicert-certificate.json"]  # no temporary left


def test_no_certificate_yet_is_exit_2_and_writes_nothing(
    tmp_path: Path, kubectl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = resource_json(CERTIFICATE)
    body["status"] = {"phase": "Training"}
    assert get(tmp_path, kubectl, body) == 2
    assert "has no certificate (phase Training)" in capsys.readouterr().err
    assert not (tmp_path / "weights").exists()


def test_a_different_file_in_the_way_is_kept_unless_forced(
    tmp_path: Path, kubectl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "weights" / "aicert-certificate.json"
    target.parent.mkdir()
    target.write_text("another run's certificate\n")
    assert get(tmp_path, kubectl, resource_json(CERTIFICATE)) == 2
    assert "holds something else; --force replaces it" in capsys.readouterr().err
    assert target.read_text() == "another run's certificate\n"
    assert get(tmp_path, kubectl, resource_json(CERTIFICATE), "--force") == 0
    assert target.read_text() == CERTIFICATE + "\n"


def test_the_same_certificate_already_there_is_fine(tmp_path: Path, kubectl: Path) -> None:
    assert get(tmp_path, kubectl, resource_json(CERTIFICATE)) == 0
    assert get(tmp_path, kubectl, resource_json(CERTIFICATE)) == 0


def test_a_symlink_in_the_way_is_not_followed(tmp_path: Path, kubectl: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(CERTIFICATE + "\n")
    target = tmp_path / "weights" / "aicert-certificate.json"
    target.parent.mkdir()
    target.symlink_to(elsewhere)
    assert get(tmp_path, kubectl, resource_json(CERTIFICATE)) == 2
    assert target.is_symlink()


def test_kubectl_failing_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECTL", str(tmp_path / "no-such-kubectl"))
    assert kubectl_plugin.main(["get", "digits", "--dir", str(tmp_path)]) == 2


def test_the_bundle_is_rebuilt_from_the_status_byte_for_byte(
    tmp_path: Path, kubectl: Path, azure_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The status holds the certificate and the envelope's signature; the bundle written is the one
    the agent wrote beside the weights, and it verifies."""
    (tmp_path / "run").mkdir()
    run = certified_run(tmp_path / "run", azure_dir)
    bundle = sign_bundle(run.certificate, SoftTpm(run.ak_key))
    body = resource_json(json.dumps(run.certificate, separators=(",", ":")))
    body["status"]["envelopeSignature"] = bundle["dsseEnvelope"]["signatures"][0]["sig"]
    assert get(tmp_path, kubectl, body) == 0
    written = tmp_path / "weights" / "aicert.sigstore.json"
    assert written.read_text() == json.dumps(bundle, separators=(",", ":")) + "\n"
    assert str(written) in capsys.readouterr().out
    assert aicert_main(run.verify_argv(str(written))) == 0


def test_an_unusable_envelope_signature_is_exit_2_and_writes_nothing(
    tmp_path: Path, kubectl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = resource_json(CERTIFICATE)
    body["status"]["envelopeSignature"] = "not base64!"
    assert get(tmp_path, kubectl, body) == 2
    assert "status.envelopeSignature: is not valid base64" in capsys.readouterr().err
    body["status"]["envelopeSignature"] = "AAAA"  # the certificate cannot be carried: no evidence.ak
    assert get(tmp_path, kubectl, body) == 2
    assert "status.certificate: is not a certificate a bundle can carry" in capsys.readouterr().err
    assert not (tmp_path / "weights").exists()


def test_a_status_from_an_agent_before_bundles_writes_the_certificate_alone(
    tmp_path: Path, kubectl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert get(tmp_path, kubectl, resource_json(CERTIFICATE)) == 0
    assert "no aicert.sigstore.json written" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "weights").iterdir()] == ["aicert-certificate.json"]
