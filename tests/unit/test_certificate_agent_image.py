"""The certificate says which agent image gated and sealed the run (`predicate.run.agentImage`):
measured in the run event at the gate, so a rewritten claim fails the quote's binding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.soft_tpm import Run, certified_run

from aicert.cli import main as aicert_main

PREVIOUS = "registry.example/aicert/agent@sha256:" + "b" * 64
CURRENT = "registry.example/aicert/agent@sha256:" + "c" * 64


def verify(run: Run, tmp_path: Path, certificate: Any, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = aicert_main(run.verify_argv(run.write(tmp_path / "c.json", certificate)))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> Run:
    return certified_run(tmp_path_factory.mktemp("agent-image"), azure_dir, agent_image=PREVIOUS)


def test_the_agent_image_of_the_gate_and_seal_is_certified(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run.certificate["statement"]["predicate"]["run"]["agentImage"] == PREVIOUS
    code, output = verify(run, tmp_path, run.certificate, capsys)
    assert code == 0, output


def test_a_rewritten_agent_image_fails_the_quote_binding(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    forged = json.loads(json.dumps(run.certificate))
    forged["statement"]["predicate"]["run"]["agentImage"] = CURRENT
    code, output = verify(run, tmp_path, forged, capsys)
    assert code == 1 and "check quote-binding failed" in output, output


def test_a_dropped_agent_image_fails_the_quote_binding(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    forged = json.loads(json.dumps(run.certificate))
    del forged["statement"]["predicate"]["run"]["agentImage"]
    code, output = verify(run, tmp_path, forged, capsys)
    assert code == 1 and "check quote-binding failed" in output, output


def test_an_agent_image_not_pinned_by_digest_is_malformed(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    forged = json.loads(json.dumps(run.certificate))
    forged["statement"]["predicate"]["run"]["agentImage"] = "registry.example/aicert/agent:latest"
    code, output = verify(run, tmp_path, forged, capsys)
    assert code == 2 and "agentImage" in output, output


def test_a_run_without_a_recorded_agent_image_still_verifies(
    tmp_path_factory: pytest.TempPathFactory,
    azure_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Certificates of agents that did not record it (and `aicert-agent run`) carry none."""
    plain = certified_run(tmp_path_factory.mktemp("no-agent-image"), azure_dir)
    assert "agentImage" not in plain.certificate["statement"]["predicate"]["run"]
    code, output = verify(plain, tmp_path, plain.certificate, capsys)
    assert code == 0, output
