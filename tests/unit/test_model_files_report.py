"""`model-files` and `data-files` say what they left out, and refuse to leave out a directory.

Files `--ignore` left out were neither hashed nor compared: the result names them (text: an
`ignored` line per directory; --json: `"ignored"`, at most 20 names with the count). The
manifest.json and aicert-certificate.json aicert writes beside the outputs are left out of the
output's root by name; a *directory* of either name would take every file in it out of the
comparison unseen, so it fails `model-files` (exit 1), as any other content of --model DIR that
cannot be the certified output does (a FIFO, a symlink).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.soft_tpm import IMAGE_EVENT, OUTPUTS_EVENT, Json, Run, certified_run

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


def verified_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Json:
    code, output = aicert([*argv, "--json"], capsys)
    assert code == 0, output
    document: Json = json.loads(output)
    return document


def test_the_ignored_files_are_listed(
    run: Run, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (model / "README.md").write_text("notes")
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    certificate = run.write(tmp_path / "c.json", run.certificate)
    argv = run.verify_argv(certificate, "--model", str(model), "--ignore", "README.md", "--ignore", ".git/**")
    code, output = aicert(argv, capsys)
    assert code == 0, output
    assert f"  ignored  model-files {model}: .git/HEAD, README.md (2 files left out by --ignore)\n" in output
    assert verified_json(argv, capsys)["ignored"] == [
        {"check": "model-files", "directory": str(model), "count": 2, "files": [".git/HEAD", "README.md"]}
    ]


def test_many_ignored_files_are_listed_bounded_with_their_count(
    run: Run, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (model / "logs").mkdir()
    for index in range(30):
        (model / "logs" / f"{index:02d}.log").write_text(str(index))
    argv = run.verify_argv(
        run.write(tmp_path / "c.json", run.certificate), "--model", str(model), "--ignore", "logs/*"
    )
    [entry] = verified_json(argv, capsys)["ignored"]
    assert entry["count"] == 30
    assert entry["files"] == [f"logs/{index:02d}.log" for index in range(20)]
    code, output = aicert(argv, capsys)
    shown = ", ".join(f"logs/{index:02d}.log" for index in range(5))
    assert (
        code == 0 and f"  ignored  model-files {model}: {shown} … (30 files left out by --ignore)\n" in output
    )


def test_the_files_ignored_in_an_input_are_listed(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = Path(shutil.copytree(run.data, tmp_path / "data"))
    (data / "README.md").write_text("where the data came from")
    argv = run.verify_argv(
        run.write(tmp_path / "c.json", run.certificate), "--data", f"data={data}", "--ignore", "README.md"
    )
    assert verified_json(argv, capsys)["ignored"] == [
        {"check": "data-files", "directory": str(data), "count": 1, "files": ["README.md"]}
    ]


def test_the_files_ignored_beside_an_old_proofs_outputs_are_listed(
    run: Run, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (model / "README.md").write_text("notes")
    proof = run.write(tmp_path / "p.json", run.signed_legacy_proof([IMAGE_EVENT, OUTPUTS_EVENT]))
    argv = run.verify_argv(proof, "--model", str(model), "--ignore", "README.md")
    assert verified_json(argv, capsys)["ignored"] == [
        {"check": "model-files", "directory": str(model), "count": 1, "files": ["README.md"]}
    ]


def test_nothing_ignored_lists_nothing(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = run.verify_argv(run.write(tmp_path / "c.json", run.certificate), "--model", str(run.model))
    assert verified_json(argv, capsys)["ignored"] == []
    code, output = aicert(argv, capsys)
    assert code == 0 and "ignored" not in output


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
