"""Fixtures shared by the unit tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.reads import Reads


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Reads]:
    """Every byte os.readv returns while the test runs (tests.reads)."""
    counted = Reads()
    real = os.readv

    def readv(fd: int, buffers: list[memoryview]) -> int:
        n = real(fd, buffers)
        counted.add(n)
        return n

    monkeypatch.setattr(os, "readv", readv)
    yield counted


@pytest.fixture
def kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stand-in kubectl printing $FAKE_RESOURCE, recording its arguments in $FAKE_ARGV.

    Returns the resource file: tests write the resource there."""
    resource = tmp_path / "resource.json"
    script = tmp_path / "kubectl"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "open(os.environ['FAKE_ARGV'], 'w').write(json.dumps(sys.argv[1:]))\n"
        "sys.stdout.write(open(os.environ['FAKE_RESOURCE']).read())\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("KUBECTL", str(script))
    monkeypatch.setenv("FAKE_RESOURCE", str(resource))
    monkeypatch.setenv("FAKE_ARGV", str(tmp_path / "argv.json"))
    yield resource
