"""`aicert verify oci://…` and `kubectl aicert push` refuse what does not fit before any registry is
asked (the registry named here does not exist: a request would fail differently)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.test_kubectl_binding import resource_json

from aicert.cli import kubectl_plugin
from aicert.cli import main as aicert_main
from aicert.verify import TrainingResource

NOWHERE = "oci://registry.invalid/models/digits"


def test_verify_oci_refuses_model_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = aicert_main(["verify", f"{NOWHERE}@sha256:{'a' * 64}", "--model", str(tmp_path), "--trust", "dev"])
    assert code == 2
    assert "--model: the weights come from the registry" in capsys.readouterr().err


def test_verify_oci_refuses_a_reference_that_does_not_parse(capsys: pytest.CaptureFixture[str]) -> None:
    assert aicert_main(["verify", "oci://registry.invalid/Models", "--trust-bundle", "/dev/null"]) == 2
    err = capsys.readouterr().err
    assert "unusable input" in err


def test_kubectl_verify_takes_no_registry_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        kubectl_plugin.main(["verify", "digits", "--plain-http"])
    assert exit_.value.code == 2


def test_push_refuses_a_digest_target(
    tmp_path: Path, kubectl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubectl.write_text(json.dumps(resource_json("{}")))
    code = kubectl_plugin.main(["push", "digits", f"{NOWHERE}@sha256:{'a' * 64}", "--model", str(tmp_path)])
    assert code == 2
    assert "push names a tag or none" in capsys.readouterr().err


def test_push_without_a_certificate_is_exit_2(
    tmp_path: Path, kubectl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = resource_json("{}")
    body["status"] = {"phase": "Training"}
    kubectl.write_text(json.dumps(body))
    assert kubectl_plugin.main(["push", "digits", f"{NOWHERE}:v1", "--model", str(tmp_path)]) == 2
    assert "has no certificate (phase Training)" in capsys.readouterr().err


def test_push_of_a_malformed_certificate_names_the_field(
    tmp_path: Path, kubectl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubectl.write_text(json.dumps(resource_json('{"apiVersion": 1}')))
    assert kubectl_plugin.main(["push", "digits", f"{NOWHERE}:v1", "--model", str(tmp_path)]) == 2
    assert "status.certificate" in capsys.readouterr().err


def test_push_refuses_a_model_that_is_not_a_directory(
    tmp_path: Path, kubectl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"w")
    kubectl.write_text(json.dumps(resource_json("{}")))
    assert kubectl_plugin.main(["push", "digits", f"{NOWHERE}:v1", "--model", str(weights)]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_a_file_beside_the_weights_is_read_bounded(tmp_path: Path) -> None:
    from aicert.oci.publish import read_beside_weights
    from aicert.verify import MalformedError

    assert read_beside_weights(tmp_path, "extra.json", field="--model") is None
    (tmp_path / "extra.json").write_bytes(b"{}")
    assert read_beside_weights(tmp_path, "extra.json", field="--model") == b"{}"
    (tmp_path / "extra.json").unlink()
    (tmp_path / "extra.json").mkdir()
    with pytest.raises(MalformedError, match="not a regular file"):
        read_beside_weights(tmp_path, "extra.json", field="--model")


def test_push_attaches_the_certificate_as_the_file_beside_the_weights(tmp_path: Path) -> None:
    """The bytes the agent writes beside the weights (and `kubectl aicert get` writes): the status's
    text and a newline. A later run that reads that file records its sha256, and `aicert verify
    --lineage oci://…` fetches the parent by that digest: the attached bytes must be the same."""
    from aicert.cli.kubectl_get import write_certificate
    from aicert.cli.kubectl_push import ATTACHMENTS

    resource = TrainingResource("ns", "n", "u", "Succeeded", None, '{"compact":"text"}')
    attachment = ATTACHMENTS[0](resource, tmp_path)
    assert attachment is not None
    assert attachment.data == write_certificate(tmp_path, '{"compact":"text"}', force=False).read_bytes()


def test_pull_needs_a_digest_before_any_registry_is_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = aicert_main(["pull", f"{NOWHERE}:v1", str(tmp_path / "out"), "--trust", "dev", "--json"])
    assert code == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["field"] == "REFERENCE" and "names no digest" in doc["reason"]
    assert not (tmp_path / "out").exists()


def test_pull_refuses_a_directory_that_is_not_empty_before_any_registry_is_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "kept.txt").write_text("mine")
    link = tmp_path.parent / f"{tmp_path.name}-link"
    link.symlink_to(tmp_path)
    for target, reason in ((tmp_path, "is not empty"), (link, "is not a directory")):
        code = aicert_main(
            ["pull", f"{NOWHERE}@sha256:{'a' * 64}", str(target), "--trust-bundle", "/dev/null", "--json"]
        )
        assert code == 2
        doc = json.loads(capsys.readouterr().out)
        assert doc["field"] == "DIR" and reason in doc["reason"], doc
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]


def test_verify_oci_lineage_partial_needs_lineage(capsys: pytest.CaptureFixture[str]) -> None:
    code = aicert_main(
        ["verify", f"{NOWHERE}@sha256:{'a' * 64}", "--lineage-partial", "--trust", "dev", "--json"]
    )
    assert code == 2
    assert json.loads(capsys.readouterr().out)["field"] == "--lineage-partial"


@pytest.mark.parametrize("flags", [["--lineage", "/tmp"], ["--lineage", NOWHERE], ["--lineage-partial"]])
def test_kubectl_verify_refuses_lineage_rather_than_ignore_it(
    kubectl: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    """`kubectl aicert verify` shares the verify flags but follows no lineage: asked to, it says so
    (exit 2) instead of printing VERIFIED with the parents unchecked."""
    kubectl.write_text(json.dumps(resource_json("{}")))
    assert kubectl_plugin.main(["verify", "digits", "--trust", "dev", *flags]) == 2
    assert "does not follow lineage" in capsys.readouterr().err
