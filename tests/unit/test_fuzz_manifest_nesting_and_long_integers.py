"""Found by fuzzing: `Manifest.read` let through two errors other than `ManifestError`: a
RecursionError for arrays nested deeper than the interpreter's stack (`[[[…`), and a plain
ValueError for an integer of more than 4300 digits. The first reached `aicert verify --model DIR`
through the `manifest.json` beside the weights, which anyone handing over a model can write: a
traceback instead of a verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.soft_tpm import Run, certified_run

from aicert.cli import main as aicert_main
from aicert.digest import FileEntry, Manifest, ManifestError

HEX = "ab" * 32


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_a_deeply_nested_manifest_is_a_manifest_error(depth: int, tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("[" * depth + "]" * depth)
    with pytest.raises(ManifestError, match="nested too deeply"):
        Manifest.read(tmp_path / "manifest.json")


@pytest.mark.parametrize("digits", [17, 4_301, 100_000])
def test_a_manifest_with_a_long_integer_is_a_manifest_error(digits: int, tmp_path: Path) -> None:
    entry = {"path": "a", "size": "@@SIZE@@", "sha256": HEX}
    text = json.dumps({"root": HEX, "files": [entry]}).replace('"@@SIZE@@"', "9" * digits)
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(ManifestError, match=f"an integer of {digits} digits is out of range"):
        Manifest.read(tmp_path / "manifest.json")


def test_the_largest_size_still_reads(tmp_path: Path) -> None:
    largest = Manifest.from_files([FileEntry("a", 2**53 - 1, HEX)])
    largest.write(tmp_path / "manifest.json")
    assert Manifest.read(tmp_path / "manifest.json") == largest


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> Run:
    return certified_run(tmp_path_factory.mktemp("certified"), azure_dir)


def test_a_deeply_nested_manifest_beside_the_weights_does_not_stop_verification(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run.model / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    try:
        path = run.write(tmp_path / "certificate.json", json.dumps(run.certificate))
        code = aicert_main(run.verify_argv(path, "--model", str(run.model)))
    finally:
        (run.model / "manifest.json").unlink()
    output = capsys.readouterr().out
    assert code == 0 and output.startswith("VERIFIED"), output
