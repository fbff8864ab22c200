"""A directory where `aicert verify` or `kubectl aicert verify` expects a file: exit 2, one line.

The certificate, `--policy`, `--trust-bundle`, `--tsa-bundle` and an installed store's bundle are
read as regular files (aicert.boundedfile); a directory given for one of them is unusable input
naming the argument, never a traceback (it was: `IsADirectoryError` from opening it as a stream).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.soft_tpm import Run, certified_run

from aicert.cli import kubectl_plugin
from aicert.cli import main as aicert_main


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> Run:
    return certified_run(tmp_path_factory.mktemp("certified"), azure_dir)


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    (tmp_path / "a-directory").mkdir()
    return tmp_path / "a-directory"


def only_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def aicert(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = aicert_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_directory_as_the_certificate(
    run: Run, directory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = aicert(run.verify_argv(str(directory)), capsys)
    assert (code, out) == (2, "")
    assert (
        only_line(err)
        == f"aicert verify: unusable input: FILE: {directory} is not a regular file (a directory)"
    )


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--policy", "--policy: {} is not a regular file (a directory)"),
        ("--trust-bundle", "trust bundle: {} is not a regular file (a directory)"),
        ("--tsa-bundle", "trust bundle: {} is not a regular file (a directory)"),
    ],
)
def test_a_directory_for_a_file_flag(
    run: Run, tmp_path: Path, directory: Path, capsys: pytest.CaptureFixture[str], flag: str, message: str
) -> None:
    argv = run.verify_argv(run.write(tmp_path / "c.json", run.certificate), flag, str(directory))
    code, out, err = aicert(argv, capsys)
    assert (code, out) == (2, "")
    assert only_line(err) == "aicert verify: unusable input: " + message.format(directory)
    code, out, err = aicert([*argv, "--json"], capsys)
    assert code == 2 and json.loads(out)["error"] == "unusable-input"
    assert only_line(err) == "aicert verify: unusable input: " + message.format(directory)


def test_an_installed_store_whose_bundle_is_a_directory(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "trust" / "dev" / "bundle.pem").mkdir(parents=True)
    monkeypatch.setenv("AICERT_TRUST_DIR", str(tmp_path / "trust"))
    certificate = run.write(tmp_path / "c.json", run.certificate)
    code, out, err = aicert(["verify", certificate, "--trust", "dev"], capsys)
    assert (code, out) == (2, "")
    assert "is not a regular file (a directory)" in only_line(err)


def test_trust_install_from_a_directory(
    directory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = aicert(["trust", "install", "dev", "--from", str(directory)], capsys)
    assert code == 2 and f"{directory} is not a regular file (a directory)" in only_line(err)


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--policy", "kubectl aicert: --policy: {} is not a regular file (a directory)"),
        ("--trust-bundle", "kubectl aicert: trust bundle: {} is not a regular file (a directory)"),
        ("--tsa-bundle", "kubectl aicert: trust bundle: {} is not a regular file (a directory)"),
    ],
)
def test_kubectl_aicert_a_directory_for_a_file_flag(
    run: Run,
    tmp_path: Path,
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    message: str,
) -> None:
    """Refused before the cluster is asked: the kubectl here fails loudly if it is run."""
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(f"#!{sys.executable}\nimport sys\nsys.exit('kubectl must not be run')\n")
    kubectl.chmod(0o755)
    monkeypatch.setenv("KUBECTL", str(kubectl))
    argv = ["verify", "digits", "--trust-bundle", str(run.ca_pem), flag, str(directory)]
    code = kubectl_plugin.main(argv)
    captured = capsys.readouterr()
    assert (code, captured.out) == (2, "")
    assert only_line(captured.err) == message.format(directory)
