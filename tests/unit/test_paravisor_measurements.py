"""The `paravisor` trust store: the known-good launch measurements of Azure's paravisor that level
`cvm` requires (check `cvm-measurement`), one per line as `<96 hex digits>  # source`.

The file is read strictly: a line that is not a measurement with its source, a measurement given
twice or a file with none is refused, naming the line; installing keeps exactly what was read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from tests.pki import issue

from aicert.cli import main
from aicert.trust import TrustError
from aicert.trust.measurements import (
    install_paravisor_measurements,
    load_paravisor_measurements,
    parse_known_measurements,
    read_paravisor_measurements,
)

FIRST = hashlib.sha384(b"paravisor 1").hexdigest()
SECOND = hashlib.sha384(b"paravisor 2").hexdigest()
LIST = (
    f"# Azure paravisor launch measurements\n\n{FIRST}  # Azure published list, paravisor 1\n"
    f"{SECOND.upper()} # paravisor 2, seen on our DCasv5 pool\n"
).encode()


@pytest.fixture(autouse=True)
def own_trust_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    trust_dir = tmp_path / "trust"
    monkeypatch.setenv("AICERT_TRUST_DIR", str(trust_dir))
    return trust_dir


def test_each_line_is_a_measurement_and_its_source() -> None:
    known = parse_known_measurements(LIST, "list.txt")
    assert [(e.measurement, e.source) for e in known.entries] == [
        (FIRST, "Azure published list, paravisor 1"),
        (SECOND, "paravisor 2, seen on our DCasv5 pool"),
    ]
    assert known.source_of(SECOND) == "paravisor 2, seen on our DCasv5 pool"
    assert known.source_of(hashlib.sha384(b"other").hexdigest()) is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"{FIRST[:-2]}  # one byte short", "is not 96 hex digits"),
        (f"{FIRST}00  # one byte long", "is not 96 hex digits"),
        (f"{FIRST[:-1]}g  # not hex", "is not 96 hex digits"),
        (FIRST, "has no source: write `<measurement>  # where it comes from`"),
        (f"{FIRST}  #   ", "has no source"),
        (f"{FIRST}  # \x1b[2Jcleared", "its source holds control characters"),
        (f"{FIRST} {SECOND}  # two on a line", "is not 96 hex digits"),
        ("sha384:" + FIRST + "  # prefixed", "is not 96 hex digits"),
    ],
)
def test_a_line_that_is_not_one_measurement_with_its_source_is_refused(line: str, reason: str) -> None:
    with pytest.raises(TrustError) as caught:
        parse_known_measurements(f"# header\n{line}\n".encode(), "list.txt")
    assert "list.txt line 2" in str(caught.value) and reason in str(caught.value)


def test_a_measurement_listed_twice_is_refused() -> None:
    with pytest.raises(TrustError, match="line 3 repeats the measurement of line 1"):
        parse_known_measurements(f"{FIRST}  # a\n\n{FIRST.upper()}  # b\n".encode(), "list.txt")


def test_a_list_without_a_measurement_is_refused() -> None:
    with pytest.raises(TrustError, match="holds no measurement"):
        parse_known_measurements(b"# nothing yet\n\n", "list.txt")


def test_a_list_that_is_not_utf8_text_is_refused() -> None:
    with pytest.raises(TrustError, match="not UTF-8 text"):
        parse_known_measurements(b"\xff\xfe" + FIRST.encode(), "list.txt")


def test_not_installed_is_an_empty_list_that_says_how_to_install_it(own_trust_dir: Path) -> None:
    known = load_paravisor_measurements(own_trust_dir)
    assert known.entries == ()
    assert "aicert trust install paravisor --from" in known.origin


def test_install_then_load_gives_the_same_list(own_trust_dir: Path, tmp_path: Path) -> None:
    path = install_paravisor_measurements(LIST, "list.txt", own_trust_dir)
    assert path.is_relative_to(own_trust_dir)
    loaded = load_paravisor_measurements(own_trust_dir)
    assert loaded.entries == parse_known_measurements(LIST, "list.txt").entries
    assert str(path) in loaded.origin
    (tmp_path / "direct.txt").write_bytes(LIST)
    assert read_paravisor_measurements(tmp_path / "direct.txt").entries == loaded.entries


def test_a_damaged_installed_list_is_a_usage_error_not_an_empty_list(own_trust_dir: Path) -> None:
    path = install_paravisor_measurements(LIST, "list.txt", own_trust_dir)
    path.write_text(f"{FIRST[:10]}  # cut\n")
    with pytest.raises(TrustError, match="line 1"):
        load_paravisor_measurements(own_trust_dir)


def test_a_refused_list_leaves_the_installed_one_alone(own_trust_dir: Path) -> None:
    install_paravisor_measurements(LIST, "list.txt", own_trust_dir)
    with pytest.raises(TrustError):
        install_paravisor_measurements(b"not a measurement\n", "bad.txt", own_trust_dir)
    assert len(load_paravisor_measurements(own_trust_dir).entries) == 2


def test_aicert_trust_installs_and_shows_the_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "paravisor.txt"
    source.write_bytes(LIST)
    assert main(["trust", "install", "paravisor", "--from", str(source)]) == 0
    assert "installed trust store 'paravisor'" in capsys.readouterr().out
    assert main(["trust", "show"]) == 0
    shown = capsys.readouterr().out
    assert f"paravisor: {FIRST}  # Azure published list, paravisor 1" in shown
    assert f"paravisor: {SECOND}  # paravisor 2, seen on our DCasv5 pool" in shown


def test_aicert_trust_refuses_a_bad_list_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "paravisor.txt"
    source.write_text("cafe  # too short\n")
    assert main(["trust", "install", "paravisor", "--from", str(source)]) == 2
    assert "line 1" in capsys.readouterr().err


def test_aicert_verify_refuses_to_run_on_a_damaged_installed_list(
    own_trust_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`aicert verify` reads the installed list: damaged, it is unusable input (exit 2), never an
    empty list that would fail every cvm certificate for a reason it does not say."""
    path = install_paravisor_measurements(LIST, "list.txt", own_trust_dir)
    path.write_text("cafe  # cut\n")
    certificate = tmp_path / "certificate.json"
    certificate.write_text("{}")
    root = tmp_path / "root.pem"
    root.write_bytes(issue("some root").pem)
    assert main(["verify", str(certificate), "--trust-bundle", str(root)]) == 2
    assert "paravisor" in capsys.readouterr().err


def test_kubectl_aicert_verify_reads_the_same_installed_list(
    own_trust_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kubectl aicert verify NAME` builds its Verifier as `aicert verify` does: a damaged
    installed list is unusable input before any trip to the cluster."""
    from aicert.cli import kubectl_plugin

    path = install_paravisor_measurements(LIST, "list.txt", own_trust_dir)
    path.write_text("cafe  # cut\n")
    root = tmp_path / "root.pem"
    root.write_bytes(issue("some root").pem)
    assert kubectl_plugin.main(["verify", "digits", "--trust-bundle", str(root)]) == 2
    assert "paravisor" in capsys.readouterr().err
