"""The agent writes into volumes a training could have written: it never follows a planted link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aicert_agent import markers
from aicert_agent.markers import write_atomic


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "host-file"
    victim.write_text("untouched")
    out = tmp_path / "output"
    out.mkdir()
    (out / ".aicert-certificate.json.tmp").symlink_to(victim)
    write_atomic(out / "aicert-certificate.json", b"{}\n")
    assert victim.read_text() == "untouched"
    assert (out / "aicert-certificate.json").read_bytes() == b"{}\n"
    assert (out / ".aicert-certificate.json.tmp").is_symlink()  # not a name the agent uses: left alone


def test_a_link_at_the_final_name_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "host-file"
    victim.write_text("untouched")
    out = tmp_path / "output"
    out.mkdir()
    (out / "aicert-certificate.json").symlink_to(victim)
    write_atomic(out / "aicert-certificate.json", b"{}\n")
    assert victim.read_text() == "untouched"
    assert not (out / "aicert-certificate.json").is_symlink()


# --- no name a training could prepare ------------------------------------------------------------------


@pytest.fixture(params=["unnamed", "named"])
def writer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of writing: an O_TMPFILE file linked into place, and (on a filesystem without
    O_TMPFILE) a file created under a random name."""
    if request.param == "named":
        monkeypatch.setattr(markers, "_UNNAMED", False)
    return str(request.param)


def test_a_directory_at_the_old_temporary_name_does_not_stop_the_write(tmp_path: Path, writer: str) -> None:
    """The training can create `.aicert-certificate.json.tmp/` in its output: the agent used that
    fixed name, failed to remove the directory and quoted again and again until the run's deadline."""
    planted = tmp_path / ".aicert-certificate.json.tmp"
    planted.mkdir()
    (planted / "inside").write_text("kept")
    write_atomic(tmp_path / "aicert-certificate.json", b"{}\n")
    assert (tmp_path / "aicert-certificate.json").read_bytes() == b"{}\n"
    assert (planted / "inside").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".aicert-certificate.json.tmp",
        "aicert-certificate.json",
    ]


@pytest.mark.parametrize("planted", ["fifo", "dangling-link", "file"])
def test_nothing_planted_at_a_fixed_name_is_opened(tmp_path: Path, writer: str, planted: str) -> None:
    fixed = tmp_path / ".manifest.json.tmp"
    if planted == "fifo":
        os.mkfifo(fixed)  # opening it for writing would block the agent
    elif planted == "dangling-link":
        fixed.symlink_to(tmp_path / "elsewhere")
    else:
        fixed.write_text("training's")
    write_atomic(tmp_path / "manifest.json", b"[]\n")
    assert (tmp_path / "manifest.json").read_bytes() == b"[]\n"
    assert not (tmp_path / "elsewhere").exists()
    assert os.path.lexists(fixed)  # left alone, neither opened nor removed


def test_a_directory_at_the_final_name_fails_and_leaves_nothing_behind(tmp_path: Path, writer: str) -> None:
    (tmp_path / "aicert-certificate.json").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "aicert-certificate.json", b"{}\n")
    assert [p.name for p in tmp_path.iterdir()] == ["aicert-certificate.json"]


def test_the_file_is_written_whole_with_its_mode(tmp_path: Path, writer: str) -> None:
    data = os.urandom(3 << 20)
    write_atomic(tmp_path / "weights.bin", data)
    assert (tmp_path / "weights.bin").read_bytes() == data
    assert (tmp_path / "weights.bin").stat().st_mode & 0o777 == 0o644
    write_atomic(tmp_path / "weights.bin", b"again")  # replaces
    assert (tmp_path / "weights.bin").read_bytes() == b"again"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]
