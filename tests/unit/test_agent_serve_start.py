"""`aicert-agent serve` without a way to the API server says so in one line (exit 2), no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_serve_without_kubeconfig_or_service_account_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")} | {
        "HOME": str(tmp_path),
        "AICERT_TPM": "swtpm:host=127.0.0.1,port=1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "aicert_agent", "serve", "--node", "gpu-1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "cannot reach the API server" in done.stderr


def test_seal_attempts_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from aicert_agent.cli import build_parser

    monkeypatch.delenv("AICERT_SEAL_ATTEMPTS", raising=False)
    assert build_parser().parse_args(["serve"]).seal_attempts == 8
    assert build_parser().parse_args(["serve", "--seal-attempts", "3"]).seal_attempts == 3
    monkeypatch.setenv("AICERT_SEAL_ATTEMPTS", "5")
    assert build_parser().parse_args(["serve"]).seal_attempts == 5


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_seal_attempts_below_one_are_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    from aicert_agent.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--seal-attempts", value])
    assert exited.value.code == 2 and "--seal-attempts" in capsys.readouterr().err


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_serve_refuses_a_paravisor_list_that_does_not_read_in_one_line(tmp_path: Path) -> None:
    """`--paravisor-measurements FILE` is read as `aicert trust install paravisor` reads it: a bad
    line stops the agent before it touches the TPM or labels the node (exit 2, no traceback)."""
    from tests.pki import issue

    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    (tmp_path / "root.pem").write_bytes(issue("agent root").pem)
    (tmp_path / "paravisor.txt").write_text("cafe  # not 48 bytes\n")
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"} | {
        "HOME": str(tmp_path),
        "KUBECONFIG": str(tmp_path / "kubeconfig"),
        "AICERT_TPM": "swtpm:host=127.0.0.1,port=1",
    }
    argv = ["serve", "--node", "gpu-1", "--assurance", "cvm", "--trust-bundle", str(tmp_path / "root.pem")]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "aicert_agent",
            *argv,
            "--paravisor-measurements",
            str(tmp_path / "paravisor.txt"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{tmp_path / 'paravisor.txt'} line 1 is not 96 hex digits" in done.stderr


def test_the_cri_socket_is_off_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from aicert_agent.cli import build_parser

    monkeypatch.delenv("AICERT_CRI_SOCKET", raising=False)
    assert build_parser().parse_args(["serve"]).cri_socket is None
    given = build_parser().parse_args(["serve", "--cri-socket", "/run/containerd/containerd.sock"])
    assert given.cri_socket == Path("/run/containerd/containerd.sock")
    monkeypatch.setenv("AICERT_CRI_SOCKET", "/run/k3s/containerd/containerd.sock")
    assert build_parser().parse_args(["serve"]).cri_socket == Path("/run/k3s/containerd/containerd.sock")


def test_serve_refuses_a_cri_socket_that_is_not_one_in_one_line(tmp_path: Path) -> None:
    """A --cri-socket that names no socket (the runtime's directory not mounted) stops the agent at
    start (exit 2): the check it asks for is never silently left out."""
    from tests.pki import issue

    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    (tmp_path / "root.pem").write_bytes(issue("agent root").pem)
    (tmp_path / "containerd.sock").write_text("")  # a file, not a socket
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"} | {
        "HOME": str(tmp_path),
        "KUBECONFIG": str(tmp_path / "kubeconfig"),
        "AICERT_TPM": "swtpm:host=127.0.0.1,port=1",
        "AICERT_AGENT_IMAGE": "registry.example/aicert/agent@sha256:" + "b" * 64,
    }
    argv = ["serve", "--node", "gpu-1", "--trust-bundle", str(tmp_path / "root.pem")]
    for socket in (tmp_path / "containerd.sock", tmp_path / "absent.sock"):
        done = subprocess.run(
            [sys.executable, "-m", "aicert_agent", *argv, "--cri-socket", str(socket)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert f"--cri-socket {socket} is not a socket" in done.stderr
