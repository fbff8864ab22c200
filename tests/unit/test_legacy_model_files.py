"""`--model DIR` against an old AICert proof's `outputs` event: paths stay inside DIR, the file sets
are equal, `--ignore` leaves out extra files only.

The real proof in tests/assets cannot be edited without breaking its quote, so these hostile
`outputs` events go straight to `check_legacy_model` (what `Verifier` calls once the quote and
the replay have passed); tests/unit/test_legacy_proof.py covers the same path through `Verifier`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from aicert.verify import Check, MalformedError, VerificationError
from aicert.verify.local_files import check_legacy_model, ignore_patterns


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def outputs(*files: tuple[Any, Any]) -> list[dict[str, Any]]:
    """The events of a proof whose `outputs` event names these (path, hash) pairs."""
    return [
        {"event_type": "input_image", "content": {"resolved": {"id": "sha256:" + "0" * 64}}},
        {
            "event_type": "outputs",
            "content": [{"spec": {"path": path}, "resolved": {"hash": digest}} for path, digest in files],
        },
    ]


def refused(directory: Path, events: list[dict[str, Any]], *patterns: str) -> str:
    with pytest.raises(VerificationError) as err:
        check_legacy_model(directory, events, ignore_patterns(patterns))
    assert err.value.check is Check.MODEL_FILES
    return err.value.reason


@pytest.fixture
def model(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    (directory / "sub").mkdir(parents=True)
    (directory / "weights.bin").write_bytes(b"weights")
    (directory / "sub" / "config.json").write_bytes(b"{}")
    return directory


CERTIFIED = (("weights.bin", sha256(b"weights")), ("sub/config.json", sha256(b"{}")))


def test_the_certified_files_verify(model: Path) -> None:
    check_legacy_model(model, outputs(*CERTIFIED))


def test_absolute_output_path_is_refused(model: Path, tmp_path: Path) -> None:
    # the attack: the proof names a file outside DIR that the verifier's machine happens to hold
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    reason = refused(model, outputs((str(outside), sha256(b"secret"))))
    assert f"the proof names output {str(outside)!r}, not a path inside --model DIR" in reason


@pytest.mark.parametrize(
    "path", ["../outside.bin", "sub/../../outside.bin", "./weights.bin", "sub//config.json"]
)
def test_unnormalised_output_path_is_refused(model: Path, tmp_path: Path, path: str) -> None:
    (tmp_path / "outside.bin").write_bytes(b"secret")
    reason = refused(model, outputs((path, sha256(b"secret"))))
    assert f"the proof names output {path!r}, not a path inside --model DIR" in reason


def test_output_behind_a_symlinked_directory_is_refused(model: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "w.bin").write_bytes(b"w")
    (model / "linked").symlink_to(tmp_path / "elsewhere")
    reason = refused(model, outputs(*CERTIFIED, ("linked/w.bin", sha256(b"w"))))
    assert f"{model / 'linked'}: is a symlink" in reason


def test_symlinked_output_file_is_refused_even_when_a_pattern_matches_it(model: Path) -> None:
    os.symlink("weights.bin", model / "copy.bin")
    reason = refused(model, outputs(*CERTIFIED, ("copy.bin", sha256(b"weights"))), "*.bin")
    assert f"{model / 'copy.bin'}: is a symlink" in reason


def test_extra_and_missing_files_are_named(model: Path) -> None:
    (model / "README.md").write_text("notes")
    reason = refused(model, outputs(*CERTIFIED, ("tokenizer.json", sha256(b"t"))))
    assert "missing: tokenizer.json" in reason and "extra: README.md" in reason


def test_changed_file_is_named(model: Path) -> None:
    (model / "weights.bin").write_bytes(b"tampered")
    reason = refused(model, outputs(*CERTIFIED))
    assert f"weights.bin hashes to {sha256(b'tampered')}, the proof certifies {sha256(b'weights')}" in reason


def test_ignored_extra_files_are_left_out(model: Path) -> None:
    (model / "README.md").write_text("notes")
    (model / ".git" / "objects").mkdir(parents=True)
    (model / ".git" / "objects" / "ab").write_bytes(b"blob")
    os.symlink("objects", model / ".git" / "link")
    os.mkfifo(model / ".git" / "fifo")
    check_legacy_model(model, outputs(*CERTIFIED), ignore_patterns(["README.md", ".git/**"]))
    # not ignored, the special file is refused, and once it is gone the extra files are named
    assert ".git/fifo: is a FIFO" in refused(model, outputs(*CERTIFIED), "README.md", ".git/objects/**")
    (model / ".git" / "fifo").unlink()
    (model / ".git" / "link").unlink()
    assert "extra: .git/objects/ab, README.md" in refused(model, outputs(*CERTIFIED))


def test_a_pattern_never_hides_a_certified_file(model: Path) -> None:
    (model / "weights.bin").write_bytes(b"tampered")
    reason = refused(model, outputs(*CERTIFIED), "*.bin", "**")
    assert "weights.bin hashes to" in reason
    (model / "weights.bin").unlink()
    assert "missing: weights.bin" in refused(model, outputs(*CERTIFIED), "*.bin")


def test_model_may_name_the_single_certified_file(model: Path) -> None:
    check_legacy_model(model / "weights.bin", outputs(("out/weights.bin", sha256(b"weights"))))
    reason = refused(model / "weights.bin", outputs(("out/model.zip", sha256(b"weights"))))
    assert "missing: out/model.zip" in reason and "extra: weights.bin" in reason


def test_an_output_named_twice_is_refused(model: Path) -> None:
    reason = refused(model, outputs(*CERTIFIED, CERTIFIED[0]))
    assert "the proof names output 'weights.bin' twice" in reason


def test_no_outputs_is_refused(model: Path) -> None:
    assert "the proof records no outputs" in refused(model, outputs())


@pytest.mark.parametrize(
    ("files", "field"),
    [
        (((7, sha256(b"x")),), "event_log[1].content[0].spec.path"),
        ((("weights.bin", None),), "event_log[1].content[0].resolved.hash"),
    ],
    ids=["path-not-a-string", "no-hash"],
)
def test_malformed_outputs_event_names_the_field(
    model: Path, files: tuple[tuple[Any, Any], ...], field: str
) -> None:
    with pytest.raises(MalformedError) as err:
        check_legacy_model(model, outputs(*files))
    assert err.value.field == field


def test_outputs_content_that_is_not_a_list_names_the_field(model: Path) -> None:
    events: list[dict[str, Any]] = [{"event_type": "outputs", "content": {"path": "weights.bin"}}]
    with pytest.raises(MalformedError) as err:
        check_legacy_model(model, events)
    assert err.value.field == "event_log[0].content"
