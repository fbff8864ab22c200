"""The gate and seal containers: how they end, and that they start without loading the agent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aicert_agent.markers import wait_gate, wait_seal, write_marker
from aicert_contract.markers import (
    GATE_TIMEOUT_EXIT,
    MARKER_GATE,
    MARKER_REFUSED,
    MARKER_SEALED,
    SEAL_REFUSED_EXIT,
)


def test_gate_opens_on_the_marker(tmp_path: Path) -> None:
    write_marker(tmp_path, MARKER_GATE)
    assert wait_gate(tmp_path, timeout=5) == 0


def test_gate_stops_when_the_agent_refused_the_pod(tmp_path: Path) -> None:
    write_marker(tmp_path, MARKER_REFUSED, "ForeignPod: not the training's pod")
    assert wait_gate(tmp_path, timeout=5) == SEAL_REFUSED_EXIT


def test_gate_gives_up_when_nothing_happens(tmp_path: Path) -> None:
    assert wait_gate(tmp_path, timeout=0.3) == GATE_TIMEOUT_EXIT


def test_seal_ends_on_either_marker(tmp_path: Path) -> None:
    write_marker(tmp_path, MARKER_SEALED)
    assert wait_seal(tmp_path) == 0
    (tmp_path / MARKER_SEALED).unlink()
    write_marker(tmp_path, MARKER_REFUSED, "InputsChanged: …")
    assert wait_seal(tmp_path) == SEAL_REFUSED_EXIT


def test_the_waiters_load_neither_pydantic_nor_the_tpm_library(tmp_path: Path) -> None:
    write_marker(tmp_path, MARKER_GATE)
    probe = (
        "import runpy, sys; sys.argv = ['aicert_agent', 'gate', '--control', sys.argv[1]];\n"
        "try:\n    runpy.run_module('aicert_agent', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'tpm2_pytss', 'kubernetes', 'cryptography'))\n"
        "    print(e.code, heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "0 []"
