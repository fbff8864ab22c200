"""The Argo CD health check (gitops/argocd/...) run in Argo CD's own Lua runtime, gopher-lua.

The runner (gitops/argocd/healthcheck, Go) is built once from the Go module proxy and cached under
~/.cache/aicert, like the control-plane binaries.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from aicert_contract.status import Reason
from aicert_localcluster.binaries import cached_go_build

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "gitops" / "argocd" / "healthcheck"
CHECK = REPO / "gitops" / "argocd" / "aicert.dev" / "CertifiedTraining"
CRD = REPO / "crds" / "certifiedtrainings.aicert.dev.yaml"


@pytest.fixture(scope="module")
def runner() -> Path:
    return cached_go_build(RUNNER, "argocd-healthcheck")


def run(runner: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(runner), str(directory)], capture_output=True, text=True, timeout=60)


def cases() -> list[dict[str, object]]:
    tests: list[dict[str, object]] = yaml.safe_load((CHECK / "health_test.yaml").read_text())["tests"]
    return tests


def test_every_case_gets_its_expected_health(runner: Path) -> None:
    done = run(runner, CHECK)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(cases())} of {len(cases())} cases as expected" in done.stdout


def test_the_cases_cover_every_phase_and_every_testdata_file() -> None:
    used = {str(c["inputPath"]) for c in cases()}
    assert used == {f"testdata/{p.name}" for p in (CHECK / "testdata").iterdir()}
    crd = yaml.safe_load(CRD.read_text())
    status_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    phases = set(status_schema["properties"]["phase"]["enum"])
    seen = set()
    for path in sorted(used):
        status = (yaml.safe_load((CHECK / path).read_text()) or {}).get("status") or {}
        if "phase" in status:
            assert status["phase"] in phases, path
            seen.add(status["phase"])
        if "reason" in status:
            Reason(status["reason"])  # a documented reason, as the operator writes it
        for condition in status.get("conditions") or []:
            Reason(condition["reason"])
    assert seen == phases
    assert {str(c["healthStatus"]["status"]) for c in cases()} == {"Healthy", "Degraded", "Progressing"}  # type: ignore[index]


def test_a_wrong_expectation_fails(runner: Path, tmp_path: Path) -> None:
    copy = tmp_path / "check"
    shutil.copytree(CHECK, copy)
    text = (copy / "health_test.yaml").read_text()
    (copy / "health_test.yaml").write_text(text.replace("status: Healthy", "status: Progressing", 1))
    done = run(runner, copy)
    assert done.returncode == 1
    assert "FAIL  testdata/succeeded.yaml: got Healthy" in done.stdout


def test_the_runner_opens_only_the_libraries_argo_cd_opens(runner: Path, tmp_path: Path) -> None:
    """Argo CD gives a health customization no string library: a script that used one would fail
    in Argo CD, so it fails here too."""
    copy = tmp_path / "check"
    shutil.copytree(CHECK, copy)
    script = (copy / "health.lua").read_text()
    (copy / "health.lua").write_text(
        script.replace("return hs\n", "return {status = string.upper('x')}\n", 1)
    )
    done = run(runner, copy)
    assert done.returncode == 1
    assert "ERROR" in done.stdout and "string" in done.stdout
