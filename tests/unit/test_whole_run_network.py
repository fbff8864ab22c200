"""The certificate's network claim is the whole run's: the output event's record (gate to seal)
is what `predicate.run.network` certifies, and a verifier's `egress: none` policy accepts only `none`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.soft_tpm import Json, Run, certified_run

from aicert.cli import main as aicert_main

DENY = {"name": "run-1", "spec": "ab" * 32}
AT_GATE: Json = {"egress": "none", "policies": [DENY]}
UNKNOWN: Json = {
    "egress": "unknown",
    "policies": [DENY],
    "unknown": ["CiliumNetworkPolicy team-a/open could select the pod and aicert cannot evaluate it"],
}
OPENED: Json = {"egress": "allowed", "policies": [DENY, {"name": "brief", "spec": "cd" * 32}]}


def made(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path, whole: Json) -> Run:
    return certified_run(tmp_path_factory.mktemp("net"), azure_dir, network=AT_GATE, whole_run_network=whole)


def verify(
    run: Run, tmp_path: Path, certificate: Any, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"egress": "none"}))
    code = aicert_main(
        [*run.verify_argv(run.write(tmp_path / "c.json", certificate)), "--policy", str(policy), *extra]
    )
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_whole_runs_record_is_what_the_statement_certifies(
    tmp_path_factory: pytest.TempPathFactory, azure_dir: Path
) -> None:
    run = made(tmp_path_factory, azure_dir, UNKNOWN)
    assert run.certificate["statement"]["predicate"]["run"]["network"] == UNKNOWN


@pytest.mark.parametrize("whole", [UNKNOWN, OPENED], ids=["unknown", "allowed"])
def test_egress_none_is_refused_unless_the_whole_run_was_none(
    tmp_path_factory: pytest.TempPathFactory,
    azure_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    whole: Json,
) -> None:
    run = made(tmp_path_factory, azure_dir, whole)
    code, output = verify(run, tmp_path, run.certificate, capsys)
    assert code == 1 and "policy-egress" in output, output
    assert f"had network egress {whole['egress']!r}" in output


def test_a_whole_run_of_none_passes_and_says_so(
    tmp_path_factory: pytest.TempPathFactory,
    azure_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = made(tmp_path_factory, azure_dir, AT_GATE)
    code, output = verify(run, tmp_path, run.certificate, capsys)
    assert code == 0 and "network  egress none  (run-1)" in output, output


def test_the_summary_says_why_egress_is_unknown(
    tmp_path_factory: pytest.TempPathFactory,
    azure_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = made(tmp_path_factory, azure_dir, UNKNOWN)
    code = aicert_main(run.verify_argv(run.write(tmp_path / "c.json", run.certificate)))
    output = capsys.readouterr().out
    assert code == 0
    assert "network  egress unknown  (run-1)" in output
    assert "unknown: CiliumNetworkPolicy team-a/open could select the pod" in output


def opened_output_event_says_none(certificate: Json) -> Json:
    forged: Json = json.loads(json.dumps(certificate))
    for entry in forged["evidence"]["eventLog"]:
        if entry.get("type") == "aicert.output":
            entry["content"]["network"] = AT_GATE
    return forged


def test_an_output_event_rewritten_to_none_fails_its_digest(
    tmp_path_factory: pytest.TempPathFactory,
    azure_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = made(tmp_path_factory, azure_dir, OPENED)
    code, output = verify(run, tmp_path, opened_output_event_says_none(run.certificate), capsys)
    assert code == 1 and "check event-digest failed" in output, output


def test_a_statement_rewritten_to_none_fails_the_quote_binding(
    tmp_path_factory: pytest.TempPathFactory,
    azure_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = made(tmp_path_factory, azure_dir, OPENED)
    forged = json.loads(json.dumps(run.certificate))
    forged["statement"]["predicate"]["run"]["network"] = AT_GATE
    code, output = verify(run, tmp_path, forged, capsys)
    assert code == 1 and "check quote-binding failed" in output, output
