"""Checks that did not run are reported as skipped, with why, never listed as passed.

Without --policy the four policy checks did not run; a policy field left out skips its check;
without --model or --data the file checks did not run; an old AICert proof cannot take ak-key,
quote-binding, statement or data-files. `aicert verify` and `kubectl aicert verify` say so in a
`skipped` line and in `"skipped"` of --json, and `"checks"` lists only what ran.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.soft_tpm import AT, IMAGE_EVENT, OUTPUTS_EVENT, Json, Run, certified_run

from aicert.cli import kubectl_plugin
from aicert.cli import main as aicert_main
from aicert.verify import Check


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> Run:
    return certified_run(tmp_path_factory.mktemp("certified"), azure_dir)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = aicert_main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def verify_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Json:
    code, output = run_cli([*argv, "--json"], capsys)
    assert code == 0, output
    document: Json = json.loads(output)
    return document


def test_the_genuine_certificate_verifies(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The base every hostile certificate above is made from is accepted as it is."""
    doc = verify_json(run.verify_argv(run.write(tmp_path / "c.json", run.certificate)), capsys)
    assert doc["verified"] is True and doc["assurance"] == "dev"


def test_the_genuine_soft_old_proof_verifies(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The base of the hostile old proofs above is accepted as it is, its model file included."""
    proof = run.signed_legacy_proof([IMAGE_EVENT, OUTPUTS_EVENT])
    doc = verify_json(
        run.verify_argv(run.write(tmp_path / "p.json", proof), "--model", str(run.model)), capsys
    )
    assert doc["verified"] is True and doc["format"] == "aicert-legacy" and "model-files" in doc["checks"]


NO_POLICY = [
    {"check": "policy-assurance", "reason": "no policy given"},
    {"check": "policy-boot-pcrs", "reason": "no policy given"},
    {"check": "policy-image", "reason": "no policy given"},
    {"check": "policy-egress", "reason": "no policy given"},
    {"check": "policy-tcb", "reason": "no policy given"},
    {"check": "policy-measurement", "reason": "no policy given"},
]
CVM = (
    "cvm-chain",
    "cvm-report-signature",
    "cvm-vmpl",
    "cvm-report-data",
    "cvm-ak",
    "cvm-debug",
    "cvm-measurement",
)
NOT_CVM = [{"check": check, "reason": "the certificate claims dev, not cvm"} for check in CVM]
NO_MODEL = {"check": "model-files", "reason": "no model directory given (--model)"}
NO_TIMESTAMP = {
    "check": "timestamp",
    "reason": "the certificate carries no timestamp: the AK certificate is checked at --at or now",
}
NO_DATA = {"check": "data-files", "reason": "no input directory given (--data)"}
NO_ENVELOPE = {
    "check": "envelope-signature",
    "reason": "the input is not a Sigstore bundle: it carries no DSSE envelope to check",
}
NO_TLOG = {
    "check": "tlog-inclusion",
    "reason": "the input is not a Sigstore bundle: it carries no transparency log entry",
}
NOT_AN_EPOCH = {
    "check": "event-replay",
    "reason": "the log is checkpointed: each entry is checked against its own quote (log-checkpoints), "
    "not replayed from zero",
}


def test_without_policy_model_or_data_those_checks_are_skipped(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = verify_json(run.verify_argv(run.write(tmp_path / "c.json", run.certificate)), capsys)
    assert doc["skipped"] == [
        NO_TIMESTAMP,
        NO_ENVELOPE,
        NO_TLOG,
        *NOT_CVM,
        NOT_AN_EPOCH,
        *NO_POLICY,
        NO_MODEL,
        NO_DATA,
    ]
    assert doc["checks"] == [
        c
        for c in map(str, Check)
        if not c.startswith(("policy-", "cvm-"))
        and c
        not in (
            "model-files",
            "data-files",
            "timestamp",
            "envelope-signature",
            "tlog-inclusion",
            "event-replay",
        )
    ]


def test_with_a_full_policy_model_and_data_every_check_runs(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = {
        "minAssurance": "dev",
        "bootPcrs": {"0": "00" * 32},
        "allowedImages": ["sha256:" + "cd" * 32],
        "egress": "none",
    }
    argv = run.verify_argv(
        run.write(tmp_path / "c.json", run.certificate),
        "--policy",
        run.write(tmp_path / "policy.json", policy),
        "--model",
        str(run.model),
        "--data",
        f"data={run.data}",
    )
    # the run recorded no network (no Kubernetes): egress none fails, so it ran
    code, output = run_cli(argv, capsys)
    assert (code, output.strip()) == (1, output.strip()) and "check policy-egress failed" in output
    del policy["egress"]
    run.write(tmp_path / "policy.json", policy)
    doc = verify_json(argv, capsys)
    not_run = {
        "timestamp",
        "envelope-signature",
        "tlog-inclusion",
        *CVM,
        "event-replay",
        "policy-egress",
        "policy-tcb",
        "policy-measurement",
    }
    assert doc["checks"] == [str(c) for c in Check if c not in not_run]
    assert doc["skipped"] == [
        NO_TIMESTAMP,
        NO_ENVELOPE,
        NO_TLOG,
        *NOT_CVM,
        NOT_AN_EPOCH,
        {"check": "policy-egress", "reason": "the policy sets no egress"},
        {"check": "policy-tcb", "reason": "the policy sets no minimumTcb"},
        {"check": "policy-measurement", "reason": "the policy lists no allowedMeasurements"},
    ]


def test_a_policy_without_a_field_skips_that_check(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = run.verify_argv(
        run.write(tmp_path / "c.json", run.certificate),
        "--policy",
        run.write(tmp_path / "p.json", {"minAssurance": "dev"}),
    )
    skipped = {s["check"]: s["reason"] for s in verify_json(argv, capsys)["skipped"]}
    assert "policy-assurance" not in skipped
    assert skipped["policy-boot-pcrs"] == "the policy pins no boot PCRs"
    assert skipped["policy-image"] == "the policy lists no allowedImages"


def test_the_summary_prints_a_skipped_line(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = run_cli(
        run.verify_argv(run.write(tmp_path / "c.json", run.certificate), "--model", str(run.model)),
        capsys,
    )
    assert code == 0
    assert (
        "  skipped  timestamp: the certificate carries no timestamp: the AK certificate is checked at --at "
        "or now; envelope-signature: the input is not a Sigstore bundle: it carries no DSSE envelope to "
        "check; tlog-inclusion: the input is not a Sigstore bundle: it carries no transparency log entry; "
        "cvm-chain, cvm-report-signature, cvm-vmpl, cvm-report-data, cvm-ak, cvm-debug, "
        "cvm-measurement: the certificate claims dev, not cvm; event-replay: the log is checkpointed: each "
        "entry is checked against its own quote (log-checkpoints), not replayed from zero; "
        "policy-assurance, policy-boot-pcrs, policy-image, policy-egress, policy-tcb, "
        "policy-measurement: no policy given; "
        "data-files: no input directory given (--data)\n" in output
    )
    checks = next(line for line in output.splitlines() if line.startswith("  checks"))
    assert "policy-" not in checks and "data-files" not in checks and "model-files" in checks


def test_an_old_proof_reports_the_checks_its_format_cannot_take(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = verify_json(run.legacy_argv(run.write(tmp_path / "p.json", run.legacy_proof)), capsys)
    skipped = [s["check"] for s in doc["skipped"]]
    assert skipped == [
        "timestamp",
        "ak-key",
        "envelope-signature",
        "tlog-inclusion",
        *CVM,
        "quote-binding",
        "log-checkpoints",
        "log-clock",
        "statement",
        "policy-assurance",
        "policy-boot-pcrs",
        "policy-image",
        "policy-egress",
        "policy-tcb",
        "policy-measurement",
        "model-files",
        "data-files",
    ]
    assert not set(skipped) & set(doc["checks"])
    assert set(skipped) | set(doc["checks"]) == {str(c) for c in Check}


def test_kubectl_aicert_reports_skipped_checks_too(
    run: Run, kubectl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubectl.write_text(json.dumps(run.resource()))
    code = kubectl_plugin.main(["verify", "digits", "--trust-bundle", str(run.ca_pem), "--at", AT, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["skipped"] == [
        NO_TIMESTAMP,
        NO_ENVELOPE,
        NO_TLOG,
        *NOT_CVM,
        NOT_AN_EPOCH,
        *NO_POLICY,
        NO_MODEL,
        NO_DATA,
    ]
    assert doc["checks"][-3:] == ["resource-identity", "resource-model-digest", "resource-phase"]
    assert not {s["check"] for s in doc["skipped"]} & set(doc["checks"])


def test_kubectl_aicert_with_require_tlog_fails_the_status_has_no_log_entry(
    run: Run, kubectl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The status holds the certificate, never a transparency log entry: requiring one fails."""
    kubectl.write_text(json.dumps(run.resource()))
    argv = ["verify", "digits", "--trust-bundle", str(run.ca_pem), "--at", AT, "--json", "--require-tlog"]
    assert kubectl_plugin.main(argv) == 1
    assert json.loads(capsys.readouterr().out)["check"] == "tlog-inclusion"


def test_data_files_for_some_inputs_says_which_were_not_re_hashed(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certificate = run.write(tmp_path / "c.json", run.certificate)
    doc = verify_json(run.verify_argv(certificate, "--data", f"data={run.data}"), capsys)
    assert "data-files" in doc["checks"]
    assert any("not re-hashed: labels" in note for note in doc["notes"])
    both = verify_json(
        run.verify_argv(
            certificate, "--data", f"data={run.data}", "--data", f"labels={run.data.parent / 'labels'}"
        ),
        capsys,
    )
    assert not any("not re-hashed" in note for note in both["notes"])
