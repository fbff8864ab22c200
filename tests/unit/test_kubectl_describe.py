"""`kubectl aicert describe NAME`: the training in a few lines, from the resource kubectl prints."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from aicert.certificate import TrainingCertificate, convert
from aicert.cli import kubectl_plugin
from aicert.cli.kubectl_describe import describe

CERTIFICATE = (
    (Path(__file__).resolve().parents[1] / "assets" / "epoch" / "certificate.json").read_text().strip()
)
DIGEST = "sha256:" + "8e" * 32


def ak_validity() -> tuple[dt.datetime, dt.datetime]:
    certificate = convert(json.loads(CERTIFICATE), TrainingCertificate)
    ak = x509.load_pem_x509_certificate(certificate.evidence.ak.certificateChain[0].encode())
    return ak.not_valid_before_utc, ak.not_valid_after_utc


def resource(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aicert.dev/v1alpha1",
        "kind": "CertifiedTraining",
        "metadata": {"name": "digits", "namespace": "ml", "uid": "u", "generation": 2},
        "spec": {"image": "r/t@sha256:" + "a" * 64, "minAssurance": "dev"},
        "status": {
            "phase": "Succeeded",
            "reason": "Certified",
            "message": "the training's outputs are certified",
            "node": "gpu-1",
            "assurance": "dev",
            "attempt": 1,
            "modelDigest": DIGEST,
            "certificate": CERTIFICATE,
            "conditions": [
                {"type": "Finished", "status": "True", "reason": "Certified", "message": "certified"},
                {"type": "Scheduled", "status": "True", "reason": "Scheduled", "message": "on node gpu-1"},
                {"type": "Certified", "status": "True", "reason": "Certified", "message": "model certified"},
            ],
            **status,
        },
    }


def test_a_certified_run_in_a_few_lines(kubectl: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kubectl.write_text(json.dumps(resource()))
    assert kubectl_plugin.main(["describe", "digits", "-n", "ml"]) == 0
    out = capsys.readouterr().out.splitlines()
    argv = json.loads((kubectl.parent / "argv.json").read_text())
    assert argv == ["get", "certifiedtrainings.aicert.dev", "digits", "-o", "json", "--namespace", "ml"]
    not_before, not_after = ak_validity()
    assert out[:7] == [
        "ml/digits: Succeeded (Certified): the training's outputs are certified",
        "node gpu-1, assurance dev (needs dev), attempt 1",
        f"model: {DIGEST}",
        "conditions:",
        "  Scheduled=True Scheduled: on node gpu-1",  # in the run's order, whatever the status's
        "  Certified=True Certified: model certified",
        "  Finished=True Certified: certified",
    ]
    assert out[7] == f"certificate: {len(CERTIFICATE)} bytes, well-formed, level dev"
    assert out[8].startswith("AK certificate: CN=aicert dev AK ")
    assert f"valid {not_before:%Y-%m-%dT%H:%M:%SZ} to {not_after:%Y-%m-%dT%H:%M:%SZ} (" in out[8]
    assert out[-1] == "verify it: kubectl aicert verify digits --trust azure (or --trust-bundle FILE)"
    assert len(out) <= 12


@pytest.mark.parametrize(
    ("when", "says", "then"),
    [
        (lambda b, a: a - dt.timedelta(days=40, hours=1), "(expires in 40 days)", None),
        (
            lambda b, a: a + dt.timedelta(days=3, hours=1),
            "(EXPIRED 3 days ago)",
            "no timestamp: verify it with --at",
        ),
        (lambda b, a: b - dt.timedelta(hours=2), "(not valid for less than a day yet)", None),
    ],
)
def test_the_ak_certificates_expiry_is_told_against_now(when: Any, says: str, then: str | None) -> None:
    not_before, not_after = ak_validity()
    lines = describe(resource(), when(not_before, not_after))
    [ak] = [line for line in lines if line.startswith("AK certificate:")]
    assert ak.endswith(says)
    following = lines[lines.index(ak) + 1]
    assert following.startswith(then) if then else following.startswith("verify it:")


def test_a_failed_run_shows_why_and_has_no_certificate() -> None:
    failed = resource(
        phase="Failed",
        reason="DeadlineExceeded",
        message="the run did not finish within activeDeadlineSeconds=600",
        certificate=None,
        modelDigest=None,
        assurance=None,
        conditions=[
            {"type": "Certified", "status": "False", "reason": "DeadlineExceeded", "message": "late"},
            {"type": "Finished", "status": "True", "reason": "DeadlineExceeded", "message": "late"},
        ],
    )
    lines = describe(failed, dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    assert lines == [
        "ml/digits: Failed (DeadlineExceeded): the run did not finish within activeDeadlineSeconds=600",
        "node gpu-1, assurance not yet (needs dev), attempt 1",
        "model: none yet",
        "conditions:",
        "  Certified=False DeadlineExceeded: late",
        "  Finished=True DeadlineExceeded: late",
        "certificate: none",
    ]


def test_a_malformed_certificate_is_named_not_a_traceback() -> None:
    broken = json.loads(CERTIFICATE)
    broken["evidence"]["pcr"] = 99
    lines = describe(resource(certificate=json.dumps(broken)), dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    [line] = [x for x in lines if x.startswith("certificate:")]
    assert "MALFORMED: evidence.pcr" in line


def test_control_characters_from_the_status_are_escaped(
    capsys: pytest.CaptureFixture[str], kubectl: Path
) -> None:
    hostile = copy.deepcopy(resource(message="done\x1b[2J\x1b]0;owned\x07", node="gpu-1\rnode-9"))
    hostile["status"]["conditions"][0]["message"] = "\x1b[31mred\nsecond line"
    kubectl.write_text(json.dumps(hostile))
    assert kubectl_plugin.main(["describe", "digits"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out
    assert "done\\x1b[2J\\x1b]0;owned\\x07" in out and "node gpu-1\\rnode-9," in out
    assert "  Finished=True Certified: \\x1b[31mred\\nsecond line" in out


def test_a_resource_without_a_name_is_exit_2(kubectl: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kubectl.write_text(json.dumps({"kind": "CertifiedTraining", "metadata": {}}))
    assert kubectl_plugin.main(["describe", "digits"]) == 2
    assert capsys.readouterr().err.strip() == "kubectl aicert: metadata.name: is missing"


def test_kubectl_printing_no_json_is_exit_2(kubectl: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kubectl.write_text("error: the server doesn't have a resource type")
    assert kubectl_plugin.main(["describe", "digits"]) == 2
    assert "kubectl get -o json did not print JSON" in capsys.readouterr().err
