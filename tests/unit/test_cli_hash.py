"""`aicert hash`: output formats and exit codes, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aicert.cli import main
from aicert.digest import INPUT_EXCLUDED, OUTPUT_EXCLUDED, SymlinkPolicy, hash_tree


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "weights").mkdir(parents=True)
    (root / "config.json").write_text('{"layers": 2}\n')
    (root / "weights" / "w.bin").write_bytes(bytes(range(256)) * 5000)
    (root / "empty").write_bytes(b"")
    return root


def test_json_output_is_the_manifest(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash", str(model), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == hash_tree(model).to_json()
    assert set(json.loads(out)) == {"root", "files"}
    assert err == ""


def test_json_output_with_workers_and_single_file(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash", str(model / "weights" / "w.bin"), "--json", "--workers", "1"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert [f["path"] for f in obj["files"]] == ["w.bin"]
    assert obj == hash_tree(model / "weights" / "w.bin").to_json()


def test_summary_output(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash", str(model)]) == 0
    out = capsys.readouterr().out
    manifest = hash_tree(model)
    assert manifest.root in out
    assert "files    3" in out
    assert f"{manifest.total_bytes:,}" in out
    assert "/s" in out


def test_missing_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["hash", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"aicert hash: error: {missing}: no such file or directory"


def test_symlink_policy_flag(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (model / "latest").symlink_to("weights/w.bin")
    assert main(["hash", str(model), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"aicert hash: error: {model / 'latest'}: ")
    assert main(["hash", str(model), "--json", "--symlinks", "record"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj == hash_tree(model, symlinks=SymlinkPolicy.RECORD).to_json()
    assert {"path": "latest", "type": "symlink"}.items() <= next(
        f for f in obj["files"] if f["path"] == "latest"
    ).items()


@pytest.mark.parametrize("argv", [["--workers", "0"], ["--symlinks", "follow"], []])
def test_usage_errors_exit_2(model: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["hash", *argv] + ([str(model)] if argv else [])
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_aicerts_own_manifest_is_left_out_as_in_certificates(
    model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = hash_tree(model)
    before.write(model / "manifest.json")
    assert main(["hash", str(model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["root"] == before.root
    assert main(["hash", str(model), "--json", "--include-manifest"]) == 0
    with_manifest = json.loads(capsys.readouterr().out)
    assert "manifest.json" in [f["path"] for f in with_manifest["files"]]
    assert with_manifest["root"] != before.root


def test_include_manifest_gives_the_root_a_certificate_names_for_an_input(
    model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (model / "manifest.json").write_text('{"labels": "data the training reads"}')
    assert main(["hash", str(model), "--json", "--include-manifest"]) == 0
    assert json.loads(capsys.readouterr().out)["root"] == hash_tree(model, exclude=INPUT_EXCLUDED).root
    assert main(["hash", str(model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["root"] == hash_tree(model, exclude=OUTPUT_EXCLUDED).root


def test_closed_pipe_ends_quietly(model: Path) -> None:
    import subprocess
    import sys

    for i in range(3000):
        (model / f"f{i}").write_text(str(i))
    reader = subprocess.Popen(
        [sys.executable, "-m", "aicert.cli", "hash", str(model), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.read(10)
    reader.stdout.close()  # the reader goes away, like `| head`
    err = reader.stderr.read().decode()
    assert reader.wait() == 141
    assert "Traceback" not in err
