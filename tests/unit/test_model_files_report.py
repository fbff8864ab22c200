"""`model-files` refuses to leave out a directory.

The manifest.json and aicert-certificate.json aicert writes beside the outputs are left out of the
output's root by name; a *directory* of either name would take every file in it out of the
comparison unseen, so it fails `model-files` (exit 1), as any other content of --model DIR that
cannot be the certified output does (a FIFO, a symlink).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.soft_tpm import Run, certified_run

from aicert.cli import main as aicert_main


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> Run:
    return certified_run(tmp_path_factory.mktemp("certified"), azure_dir)


@pytest.fixture
def model(run: Run, tmp_path: Path) -> Path:
    """A copy of the certified model directory, to add files to."""
    return Path(shutil.copytree(run.model, tmp_path / "model"))


def aicert(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = aicert_main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("name", ["manifest.json", "aicert-certificate.json"])
def test_a_directory_named_as_a_file_aicert_writes_fails_model_files(
    run: Run, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """The attack: files hidden from the comparison under a name the root leaves out."""
    (model / name).mkdir()
    (model / name / "payload.bin").write_bytes(b"never hashed")
    certificate = run.write(tmp_path / "c.json", run.certificate)
    code, output = aicert(run.verify_argv(certificate, "--model", str(model)), capsys)
    assert code == 1
    assert output.strip() == (
        f"NOT VERIFIED  check model-files failed: {model / name} is a directory: aicert writes {name} "
        "beside the outputs as a file, and a directory there would leave the files in it out of the comparison"
    )


def test_a_manifest_directory_deeper_down_is_hashed_like_any_other(
    run: Run, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the top-level names are left out of the root: elsewhere the files are compared."""
    (model / "sub" / "manifest.json").mkdir(parents=True)
    (model / "sub" / "manifest.json" / "payload.bin").write_bytes(b"hashed")
    certificate = run.write(tmp_path / "c.json", run.certificate)
    code, output = aicert(run.verify_argv(certificate, "--model", str(model)), capsys)
    assert code == 1 and "check model-files failed" in output and "(2 files)" in output
