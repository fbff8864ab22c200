"""Faults a real node can have, done to a running RealNode for the e2e tests:

- `crash_and_restart(node, "kubelet" | "containerd")`: SIGKILL the one process (nothing flushed) and
  start it again, as systemd would; the containers and their shims keep running;
- `reboot(node, while_off=...)`: every process of the node killed at once (kubelet, containerd, the
  shims, every container), what lives in /run on a real node emptied (containerd's state, the
  agent's state directory, the pods' network namespaces), `while_off` called (the stack restarts the
  node's TPM there: its PCRs reset as on a power cycle), then containerd and kubelet started again
  on what persists (/var/lib: images, kubelet's pod directories, the CNI allocations).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from . import host
from .node import RealNode, RealNodeError


def crash_and_restart(node: RealNode, component: str, timeout: float = 120) -> None:
    """SIGKILL kubelet or containerd and start it again; returns once it serves (kubelet: the Node
    Ready)."""
    if component not in ("kubelet", "containerd"):
        raise ValueError(f"not a node component: {component!r}")
    deadline = time.monotonic() + timeout
    node._stop_process(component, sig=signal.SIGKILL)
    if component == "containerd":
        node._start_containerd(deadline)
    else:
        node._start_kubelet()
        node.wait_ready(max(deadline - time.monotonic(), 1.0))


def _pod_network_namespaces(node: RealNode) -> set[str]:
    """The names under /run/netns of the network namespaces this node's pods run in."""
    names = set()
    for pid in host.pids_in_cgroup(node.layout.cgroup_root):
        done = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True)
        names.update(done.stdout.split())
    return names


def _empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def reboot(node: RealNode, *, while_off: Callable[[], None] = lambda: None, timeout: float = 180) -> None:
    """Power the node off and on again (see the module docstring); returns once it is Ready."""
    deadline = time.monotonic() + timeout
    namespaces = _pod_network_namespaces(node)
    node._stop_process("kubelet", sig=signal.SIGKILL)
    node._stop_process("containerd", sig=signal.SIGKILL)
    holder = node._holder.pid if node._holder is not None else -1
    problems = node._kill_until_gone("container", lambda: host.pids_in_cgroup(node.layout.cgroup_root))
    problems += node._kill_until_gone(
        "shim", lambda: [p for p in host.pids_in_namespace("mnt", node.mount_namespace) if p != holder]
    )
    if problems:
        raise RealNodeError(f"node {node.name}: could not power off: {'; '.join(problems)}")
    for name in namespaces:  # the veths go with them
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["ip", "netns", "delete", name], check=True, capture_output=True)
    for tmpfs in (node.layout.run, node.layout.agent_state_dir):
        _empty(tmpfs)
    while_off()
    node._start_containerd(deadline)
    node._start_kubelet()
    node.wait_ready(max(deadline - time.monotonic(), 1.0))
