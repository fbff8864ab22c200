"""The agent writes into volumes a training could have written: it never follows a planted link."""

from __future__ import annotations

from pathlib import Path

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
    assert not (out / ".aicert-certificate.json.tmp").exists()


def test_a_link_at_the_final_name_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "host-file"
    victim.write_text("untouched")
    out = tmp_path / "output"
    out.mkdir()
    (out / "aicert-certificate.json").symlink_to(victim)
    write_atomic(out / "aicert-certificate.json", b"{}\n")
    assert victim.read_text() == "untouched"
    assert not (out / "aicert-certificate.json").is_symlink()
