"""The network claim on real nodes: kube-network-policies enforces the run's NetworkPolicy, so a
training certified `egress: none` reaches neither another pod nor its node, and nothing reaches it.
Opening egress meanwhile (a tenant's allow-all policy, a relabel) is refused by the agent's whole-run
ledger: test_run_integrity's red-team tests, which run on this same enforced cluster.

Each test first shows, from a pod the run's policy does not select, that the same targets answer:
a blocked probe means the policy, not a dead target."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aicert_localcluster.stack import Stack

PORT = 8080
PROBE_SCRIPT = """
import json, socket, sys
results = {}
for target in sys.argv[1].split(","):
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        results[target] = "connected"
    except OSError as exc:
        results[target] = f"refused or dropped: {exc}"
print(json.dumps(results, sort_keys=True))
"""
LISTEN_SCRIPT = f"""
import socket
server = socket.create_server(("0.0.0.0", {PORT}))
while True:
    server.accept()[0].close()
"""


def pod(name: str, image: str, node: str, args: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"e2e": "network"}},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [
                {"name": "main", "image": image, "command": ["/opt/venv/bin/python", "-c", *args]}
            ],
        },
    }


def wait_for(stack: Stack, name: str, ready: Any, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = stack.get("pod", name)
        if ready(body):
            return body
        assert time.monotonic() < deadline, f"pod {name}: {body.get('status')}"
        time.sleep(0.3)


def running(body: dict[str, Any]) -> bool:
    status = body.get("status") or {}
    return status.get("phase") == "Running" and bool(status.get("podIP"))


def probe_from_plain_pod(stack: Stack, image: str, node: str, targets: list[str]) -> dict[str, str]:
    """What a pod no policy selects, on `node`, finds at `targets`."""
    name = f"prober-{int(time.monotonic() * 1000)}"
    stack.cluster.kubectl(
        "apply", "-f", "-", input=json.dumps(pod(name, image, node, [PROBE_SCRIPT, ",".join(targets)]))
    )
    wait_for(stack, name, lambda p: (p.get("status") or {}).get("phase") == "Succeeded")
    found: dict[str, str] = json.loads(stack.cluster.kubectl("logs", name).stdout)
    stack.cluster.kubectl("delete", "pod", name, "--wait=false")
    return found


@pytest.fixture(scope="module")
def servers(stack: Stack, image: str) -> Iterator[dict[str, str]]:
    """A TCP server in a pod on each TPM node, and one on each TPM node's own IP: what each target is."""
    targets: dict[str, str] = {}
    listeners = []
    for node in stack.tpm_nodes:
        name = f"server-{node}"
        stack.cluster.kubectl("apply", "-f", "-", input=json.dumps(pod(name, image, node, [LISTEN_SCRIPT])))
        body = wait_for(stack, name, running)
        targets[f"{body['status']['podIP']}:{PORT}"] = f"a pod on {node}"
        listener = socket.create_server((stack.nodes[node].node_ip, 0))
        threading.Thread(
            target=lambda s=listener: [s.accept()[0].close() for _ in iter(int, 1)], daemon=True
        ).start()
        listeners.append(listener)
        targets[f"{stack.nodes[node].node_ip}:{listener.getsockname()[1]}"] = f"node {node} itself"
    yield targets
    for listener in listeners:
        listener.close()
    stack.cluster.kubectl("delete", "pods", "-l", "e2e=network", "--wait=false")


def test_a_training_with_egress_none_reaches_no_pod_and_not_its_node(
    stack: Stack, run: Any, image: str, servers: dict[str, str]
) -> None:
    targets = sorted(servers)
    for node in stack.tpm_nodes:  # the targets answer a pod no policy selects, on either node
        assert set(probe_from_plain_pod(stack, image, node, targets).values()) == {"connected"}
    r = run(env={"PROBE": ",".join(targets)}).apply()
    status = r.wait("Succeeded", "Failed", timeout=180)["status"]
    assert status["phase"] == "Succeeded", status
    certified = json.loads(status["certificate"])["statement"]["predicate"]["run"]["network"]
    assert certified["egress"] == "none"
    found = json.loads((r.output_dir() / "probe.json").read_text())
    reached = {f"{servers[t]} ({t})": v for t, v in found.items() if v == "connected"}
    assert sorted(found) == targets and reached == {}


def test_nothing_reaches_a_training_pod(stack: Stack, run: Any, image: str, servers: dict[str, str]) -> None:
    r = run(env={"WAIT_FOR_RELEASE": "1", "LISTEN": str(PORT)}).apply()
    r.wait_started()
    (training,) = r.pods()
    target = f"{training['status']['podIP']}:{PORT}"
    control = next(t for t, what in servers.items() if what.startswith("a pod"))
    for node in stack.tpm_nodes:
        found = probe_from_plain_pod(stack, image, node, [target, control])
        assert found[control] == "connected"  # the prober reaches a pod no policy isolates
        assert found[target] != "connected", found
    r.release()
    assert r.wait("Succeeded", "Failed")["status"]["phase"] == "Succeeded"
