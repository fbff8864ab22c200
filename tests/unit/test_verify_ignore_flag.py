"""`--ignore PATTERN` on `aicert verify` and `kubectl aicert verify`: passed through, checked early.

The comparisons themselves are tested on real certificates (tests/integration/test_local_files.py)
and on the real old proof (tests/unit/test_legacy_proof.py, test_legacy_model_files.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aicert.cli import kubectl_plugin, main
from aicert.trust import TrustStore
from aicert.verify import Check, VerificationError, Verifier


@pytest.fixture
def sample(azure_dir: Path) -> list[str]:
    """`aicert verify` arguments for the real old proof, at a time its certificates were valid."""
    return [
        str(azure_dir / "aicert-proof-sample.json"),
        "--trust-bundle",
        str(azure_dir / "azure-virtual-tpm-root-ca-2023.crt"),
        "--at",
        "2024-06-01T00:00:00Z",
    ]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_ignore_reaches_the_comparison(
    sample: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "finetuned-model.zip").write_bytes(b"not the model")
    (tmp_path / "README.md").write_text("notes")
    code, err = run_cli(["verify", *sample, "--model", str(tmp_path)], capsys)
    assert code == 1 and "extra: README.md" in err
    code, err = run_cli(["verify", *sample, "--model", str(tmp_path), "--ignore", "README.md"], capsys)
    assert code == 1 and "check model-files failed" in err and "extra:" not in err


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("/etc/**", "is absolute"), ("a/../b", "'..' component"), ("", "empty pattern")],
)
def test_an_unusable_pattern_exits_2_naming_the_flag(
    sample: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], pattern: str, message: str
) -> None:
    code, err = run_cli(["verify", *sample, "--model", str(tmp_path), "--ignore", pattern], capsys)
    assert code == 2 and err.startswith("aicert verify: unusable input: --ignore: ") and message in err


def test_ignore_without_model_or_data_is_a_usage_error(
    sample: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_cli(["verify", *sample, "--ignore", "README.md"], capsys)
    assert code == 2 and "--ignore: leaves local files out of --model and --data; neither is given" in err


# --- kubectl aicert verify ---------------------------------------------------------------------


@pytest.fixture
def kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stand-in kubectl that records that it was asked, then fails (the resource is not needed)."""
    asked = tmp_path / "asked"
    script = tmp_path / "kubectl"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nopen({str(asked)!r}, 'w').write('yes')\nsys.exit(1)\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("KUBECTL", str(script))
    monkeypatch.setattr(kubectl_plugin.verify_cmd, "trust_store", lambda *_: TrustStore())
    yield asked


def test_plugin_refuses_a_bad_pattern_before_asking_the_cluster(
    kubectl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = kubectl_plugin.main(["verify", "digits", "--model", str(tmp_path), "--ignore", "/abs"])
    assert code == 2 and capsys.readouterr().err.startswith("kubectl aicert: --ignore: ")
    assert not kubectl.exists()


def test_plugin_passes_the_patterns_to_the_verifier(
    kubectl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    resource = {
        "metadata": {"name": "digits", "namespace": "default", "uid": "u"},
        "status": {"certificate": "{}", "phase": "Succeeded"},
    }
    kubectl.parent.joinpath("kubectl").write_text(
        f"#!{sys.executable}\nprint({json.dumps(json.dumps(resource))})\n"
    )
    seen: dict[str, Any] = {}

    def verify(self: Verifier, document: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise VerificationError(Check.MODEL_FILES, "stop here")

    monkeypatch.setattr(Verifier, "verify", verify)
    code = kubectl_plugin.main(
        ["verify", "digits", "--model", str(tmp_path), "--ignore", "README.md", "--ignore", ".git/**"]
    )
    assert code == 1 and "check model-files failed: stop here" in capsys.readouterr().err
    assert seen["ignore"] == ["README.md", ".git/**"]
