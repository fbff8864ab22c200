"""`aicert-agent run`: a failed or tampered run yields no certificate and says why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.integration.certified_run import CertifiedRun, make_run

from aicert_agent.local_run import exclusive_run
from aicert_agent.tpm.swtpm import Swtpm

pytestmark = pytest.mark.integration


@pytest.fixture
def run(swtpm: Swtpm, tmp_path: Path) -> CertifiedRun:
    return make_run(tmp_path, swtpm.spec)  # provisions and makes one good run first


def attempt(run: CertifiedRun, script: str, *extra: str, outputs: str = "model2") -> tuple[int, str, Path]:
    certificate = run.root / "out2" / "certificate.json"
    done = run.agent(
        "run",
        "--inputs",
        f"data={run.data}",
        "--outputs",
        str(run.root / outputs),
        "--certificate",
        str(certificate),
        *extra,
        "--",
        sys.executable,
        "-c",
        script,
        check=False,
    )
    return done.returncode, done.stderr, certificate


def test_failing_command_gives_no_certificate(run: CertifiedRun) -> None:
    code, err, certificate = attempt(run, "import sys; sys.exit(7)")
    assert code == 1 and "the command exited with 7; no certificate" in err
    assert not certificate.exists() and not (run.root / "model2" / "manifest.json").exists()


def test_input_changed_during_training_gives_no_certificate(run: CertifiedRun) -> None:
    script = f"open({str(run.data / 'train.csv')!r}, 'a').write('5,6\\n')"
    code, err, certificate = attempt(run, script)
    assert code == 3 and "input data changed during training" in err
    assert not certificate.exists()


@pytest.mark.parametrize(
    "reserved", ["manifest.json", "aicert-certificate.json", "aicert.sigstore.json", "model.sig"]
)
def test_command_may_not_write_a_file_aicert_writes_beside_the_outputs(
    run: CertifiedRun, reserved: str
) -> None:
    """These names are left out of the output root: a training that wrote one would have put a file
    into the output that the certificate does not cover."""
    script = f"open({str(run.root / 'model2' / reserved)!r}, 'w').write('{{}}')"
    code, err, certificate = attempt(run, script)
    assert code == 3 and f"{reserved}, a name aicert reserves" in err
    assert not certificate.exists()


def test_the_certificate_travels_with_the_weights(run: CertifiedRun) -> None:
    code, err, certificate = attempt(run, "pass")
    assert code == 0, err
    beside = run.root / "model2" / "aicert-certificate.json"
    assert json.loads(beside.read_text()) == json.loads(certificate.read_text())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "aicert.cli",
            "verify",
            str(beside),
            "--trust-bundle",
            str(run.ca_dir / "dev-ca.pem"),
            "--model",
            str(run.root / "model2"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_one_run_at_a_time_per_state_dir(run: CertifiedRun) -> None:
    with exclusive_run(run.root / "state"):
        code, err, certificate = attempt(run, "pass")
    assert code == 3 and "another `aicert-agent run` is using" in err
    assert not certificate.exists()


def test_unreachable_tpm_is_a_clear_refusal(run: CertifiedRun, tmp_path: Path) -> None:
    dead = CertifiedRun(
        run.root, "swtpm:host=127.0.0.1,port=9", run.ca_dir, run.data, run.model, run.certificate_path
    )
    code, err, certificate = attempt(dead, "pass")
    assert code == 3 and "refused, no certificate" in err and "Traceback" not in err
    assert not certificate.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--image-ref", "x@sha256:" + "1" * 64], "--image-ref and --image-digest go together"),
    ],
)
def test_usage_errors(run: CertifiedRun, extra: list[str], message: str) -> None:
    code, err, _ = attempt(run, "pass", *extra)
    assert code == 2 and message in err


def test_no_command_is_a_usage_error(run: CertifiedRun) -> None:
    done = run.agent("run", "--outputs", str(run.root / "m3"), check=False)
    assert done.returncode == 2 and "give the training command after --" in done.stderr
