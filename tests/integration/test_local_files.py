"""Local files against a real certificate: inputs are measured whole, `--ignore` leaves out extras only.

One certified run on swtpm (`aicert-agent run`) whose input holds a top-level manifest.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.integration.certified_run import CertifiedRun

from aicert.digest import hash_tree
from aicert.verify import Check, VerificationError, Verifier
from aicert_agent.tpm.swtpm import Swtpm

pytestmark = pytest.mark.integration

WRITE_WEIGHTS = (
    "import pathlib, sys; d = pathlib.Path(sys.argv[1]); "
    "pathlib.Path(sys.argv[2], 'weights.bin').write_bytes((d / 'train.csv').read_bytes()[::-1])"
)


def certify(run: CertifiedRun, name: str, script: str) -> subprocess.CompletedProcess[str]:
    return run.agent(
        "run",
        "--name",
        name,
        "--inputs",
        f"data={run.data}",
        "--outputs",
        str(run.model),
        "--certificate",
        str(run.certificate_path),
        "--",
        sys.executable,
        "-c",
        script,
        str(run.data),
        str(run.model),
        check=False,
    )


@pytest.fixture(scope="module")
def certified(tpm_server: Swtpm, tmp_path_factory: pytest.TempPathFactory) -> CertifiedRun:
    root = tmp_path_factory.mktemp("run")
    data = root / "data"
    data.mkdir()
    (data / "train.csv").write_text("x,y\n1,2\n3,4\n")
    (data / "manifest.json").write_text('{"labels": "as shipped"}')
    run = CertifiedRun(
        root, tpm_server.spec, root / "ca", data, root / "model", root / "out" / "certificate.json"
    )
    run.agent("dev-provision", "--ca-dir", str(run.ca_dir))
    done = certify(run, "local-files", WRITE_WEIGHTS)
    assert done.returncode == 0, done.stderr
    return run


def verify(run: CertifiedRun, **kwargs: Any) -> Any:
    return Verifier(run.trust).verify(json.dumps(run.certificate), **kwargs)


def refused(run: CertifiedRun, check: Check, **kwargs: Any) -> str:
    with pytest.raises(VerificationError) as err:
        verify(run, **kwargs)
    assert err.value.check is check, err.value.reason
    return err.value.reason


def copy_of(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# --- inputs are measured whole ------------------------------------------------------------------


def test_the_input_root_covers_its_manifest_json(certified: CertifiedRun) -> None:
    (recorded,) = certified.certificate["statement"]["predicate"]["inputs"]
    assert (recorded["root"], recorded["files"]) == (hash_tree(certified.data).root, 2)
    beside = json.loads((certified.certificate_path.parent / "input-data.manifest.json").read_text())
    assert [f["path"] for f in beside["files"]] == ["manifest.json", "train.csv"]
    verify(certified, data_dirs={"data": certified.data})


def test_a_changed_manifest_json_in_an_input_fails_data_files(
    certified: CertifiedRun, tmp_path: Path
) -> None:
    data = copy_of(certified.data, tmp_path / "data")
    (data / "manifest.json").write_text('{"labels": "poisoned"}')
    assert "certified input 'data'" in refused(certified, Check.DATA_FILES, data_dirs={"data": data})


def test_an_inputs_manifest_json_changed_during_training_gives_no_certificate(
    certified: CertifiedRun, tmp_path: Path
) -> None:
    run = CertifiedRun(
        certified.root, certified.tpm_spec, certified.ca_dir, copy_of(certified.data, tmp_path / "data"),
        tmp_path / "model", tmp_path / "out" / "certificate.json",
    )  # fmt: skip
    poison = "import pathlib, sys; pathlib.Path(sys.argv[1], 'manifest.json').write_text('{}')"
    done = certify(run, "poisoned", poison)
    assert done.returncode != 0 and "input data changed during training" in done.stderr
    assert not run.certificate_path.exists()


# --- --ignore ---------------------------------------------------------------------------------


@pytest.fixture
def model_with_extras(certified: CertifiedRun, tmp_path: Path) -> Path:
    model = copy_of(certified.model, tmp_path / "model")  # weights.bin and the certified manifest.json
    (model / "README.md").write_text("notes")
    (model / ".git" / "objects").mkdir(parents=True)
    (model / ".git" / "objects" / "ab").write_bytes(b"blob")
    os.symlink("/etc", model / "venv")
    return model


def test_extras_fail_model_files_unless_ignored(certified: CertifiedRun, model_with_extras: Path) -> None:
    assert "venv: is a symlink" in refused(certified, Check.MODEL_FILES, model_dir=model_with_extras)
    reason = refused(certified, Check.MODEL_FILES, model_dir=model_with_extras, ignore=["venv"])
    assert "extra: .git/objects/ab, README.md" in reason
    result = verify(certified, model_dir=model_with_extras, ignore=["README.md", ".git/**", "venv"])
    assert Check.MODEL_FILES in result.passed


def test_a_pattern_never_hides_a_certified_output_file(
    certified: CertifiedRun, model_with_extras: Path
) -> None:
    everything = ["**"]
    assert Check.MODEL_FILES in verify(certified, model_dir=model_with_extras, ignore=everything).passed
    (model_with_extras / "weights.bin").write_bytes(b"tampered")
    reason = refused(certified, Check.MODEL_FILES, model_dir=model_with_extras, ignore=everything)
    assert "changed: weights.bin" in reason
    (model_with_extras / "weights.bin").unlink()
    reason = refused(certified, Check.MODEL_FILES, model_dir=model_with_extras, ignore=everything)
    assert "missing: weights.bin" in reason


def test_ignored_extras_in_an_input_are_left_out(certified: CertifiedRun, tmp_path: Path) -> None:
    data = copy_of(certified.data, tmp_path / "data")
    (data / "README.md").write_text("notes")
    assert "certified input 'data'" in refused(certified, Check.DATA_FILES, data_dirs={"data": data})
    assert Check.DATA_FILES in verify(certified, data_dirs={"data": data}, ignore=["README.md"]).passed


def test_a_pattern_over_a_certified_input_file_fails_and_says_why(certified: CertifiedRun) -> None:
    # an input has no certified file list: leaving train.csv out changes the root, never hides it
    reason = refused(certified, Check.DATA_FILES, data_dirs={"data": certified.data}, ignore=["*.csv"])
    assert "left out by --ignore: train.csv" in reason
    assert "a certified file is never ignored" in reason


def test_cli_ignore(certified: CertifiedRun, model_with_extras: Path) -> None:
    base = [
        sys.executable,
        "-m",
        "aicert.cli",
        "verify",
        str(certified.certificate_path),
        "--trust-bundle",
        str(certified.ca_dir / "dev-ca.pem"),
        "--model",
        str(model_with_extras),
    ]
    ignore = ["--ignore", "README.md", "--ignore", ".git/**", "--ignore", "venv"]
    done = subprocess.run([*base, *ignore], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*base, *ignore[:4]], capture_output=True, text=True, check=False)
    assert (
        done.returncode == 1
        and "check model-files failed" in done.stderr
        and "venv: is a symlink" in done.stderr
    )
