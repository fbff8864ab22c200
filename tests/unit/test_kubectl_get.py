"""`kubectl aicert get NAME`: the certificate in the status, written whole, never over another file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.soft_tpm import Run, SoftTpm, certified_run
from tests.unit.test_kubectl_binding import resource_json
from tests.unit.test_tlog_inclusion import Log, envelope_entry_body

from aicert.cli import kubectl_plugin
from aicert.cli import main as aicert_main
from aicert_agent.bundling import sign_bundle
from aicert_agent.transparency import entry_status_text

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


# --- the bundle's transparency log entry (status.transparencyLogEntry) ----------------------------


def logged_status(tmp_path: Path, azure_dir: Path) -> tuple[Run, Log, dict[str, Any], dict[str, Any]]:
    """A certified run whose bundle a log (built here, as rekor-tiles makes entries) took, and the
    resource whose status holds what the agent writes: certificate, signature, entry."""
    (tmp_path / "run").mkdir()
    run = certified_run(tmp_path / "run", azure_dir)
    log = Log()
    bundle = sign_bundle(run.certificate, SoftTpm(run.ak_key))
    entry = log.add(envelope_entry_body(run, bundle))
    bundle["verificationMaterial"]["tlogEntries"] = [entry]
    body = resource_json(json.dumps(run.certificate, separators=(",", ":")))
    body["status"]["envelopeSignature"] = bundle["dsseEnvelope"]["signatures"][0]["sig"]
    body["status"]["transparencyLogEntry"] = entry_status_text(entry)
    return run, log, bundle, body


def test_the_log_entry_in_the_status_goes_back_into_the_bundle_and_is_checked(
    tmp_path: Path, kubectl: Path, azure_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, log, bundle, body = logged_status(tmp_path, azure_dir)
    assert get(tmp_path, kubectl, body) == 0
    written = tmp_path / "weights" / "aicert.sigstore.json"
    assert written.read_text() == json.dumps(bundle, separators=(",", ":")) + "\n"  # the agent's bytes
    capsys.readouterr()
    key = log.pem(tmp_path / "log.pem")
    assert aicert_main(run.verify_argv(str(written), "--tlog-key", key, "--require-tlog", "--json")) == 0
    assert "tlog-inclusion" in json.loads(capsys.readouterr().out)["checks"]


def test_a_tampered_log_entry_in_the_status_fails_tlog_inclusion(
    tmp_path: Path, kubectl: Path, azure_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One hash of the entry's inclusion proof changed in the status: the rebuilt bundle is written
    (kubectl aicert get checks nothing cryptographic) and fails exactly tlog-inclusion."""
    run, log, _, body = logged_status(tmp_path, azure_dir)
    entry = json.loads(body["status"]["transparencyLogEntry"])
    hashes = entry["inclusionProof"]["hashes"]
    hashes[0] = ("B" if hashes[0][0] == "A" else "A") + hashes[0][1:]
    body["status"]["transparencyLogEntry"] = entry_status_text(entry)
    assert get(tmp_path, kubectl, body) == 0
    written = tmp_path / "weights" / "aicert.sigstore.json"
    capsys.readouterr()
    key = log.pem(tmp_path / "log.pem")
    assert aicert_main(run.verify_argv(str(written), "--tlog-key", key, "--json")) == 1
    failure = json.loads(capsys.readouterr().out)
    assert failure["check"] == "tlog-inclusion"
    assert "does not lead from the entry's leaf hash to the checkpoint's root hash" in failure["reason"]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("{not json", "status.transparencyLogEntry: the transparency log entry is not JSON"),
        ("[]", "status.transparencyLogEntry: is not a JSON object"),
        (
            '{"a":"' + "x" * 32 * 1024 + '"}',
            "status.transparencyLogEntry: the transparency log entry is larger",
        ),
    ],
)
def test_an_unreadable_log_entry_in_the_status_is_exit_2_and_writes_nothing(
    tmp_path: Path,
    kubectl: Path,
    azure_dir: Path,
    capsys: pytest.CaptureFixture[str],
    entry: str,
    problem: str,
) -> None:
    _, _, _, body = logged_status(tmp_path, azure_dir)
    body["status"]["transparencyLogEntry"] = entry
    assert get(tmp_path, kubectl, body) == 2
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "weights").exists()


def test_kubectl_aicert_push_attaches_the_bundle_with_its_log_entry(tmp_path: Path, azure_dir: Path) -> None:
    """`kubectl aicert push` rebuilds the same bundle from the status: the entry included."""
    from aicert.cli import kubectl_push
    from aicert.verify import TrainingResource

    _, _, bundle, body = logged_status(tmp_path, azure_dir)
    attachment = kubectl_push._sigstore_bundle(TrainingResource.from_json(body), tmp_path)
    assert attachment is not None
    assert attachment.data == (json.dumps(bundle, separators=(",", ":")) + "\n").encode()
