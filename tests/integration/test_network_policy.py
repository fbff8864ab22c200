"""NetworkPolicies enforced on a real node by kube-network-policies (aicert_localcluster.realnode.netpol):
what the certified `egress: none` rests on. One LocalCluster, one RealNode, busybox pods: a server
(httpd), a client and another pod; the test also listens on the node IP (10.244.N.1) on the host.

(a) without a policy the client reaches the server pod and the host socket (the probe can see success);
without the enforcer a default-deny egress policy changes nothing (what these tests would see if the
enforcer were off); (b) a pod created under a default-deny egress policy reaches neither the server pod
nor the node IP; (c) with an ingress deny-all on the server, another pod cannot connect to it; (d) a
policy created while the client runs takes effect; stop() deletes the enforcer's table and the host is
as before; an enforcer killed outright fails closed (its table stays and drops the policed traffic)
until stop() removes it.

Needs root, the node binaries (localcluster/build.py --node) and Debian's busybox-static. Every wait
polls with a deadline; nothing asserts on timing (figures are printed with [figures]: pytest -s).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.integration.realnode_tools import eventually

from aicert_localcluster import KubectlError, LocalCluster
from aicert_localcluster.images import ImageStore
from aicert_localcluster.realnode import RealNode, free_node_index, host
from aicert_localcluster.realnode.netpol import (
    BRIDGE_NF6_SYSCTL,
    BRIDGE_NF_SYSCTL,
    CHAIN,
    QUEUE,
    NetworkPolicyEnforcer,
    NetworkPolicyError,
    mangle_rules,
    nft_table,
    queue_bound,
)

pytestmark = pytest.mark.integration

NODE = "netpol-0"
SECOND_NODE = "netpol-1"  # one enforcer judges for both nodes
BUSYBOX = Path("/bin/busybox")
PORT = 8080
SERVER_MARK = "reached-the-server-pod"
HOST_MARK = "reached-the-node-ip"
CONSECUTIVE = 3  # once blocked, this many probes in a row must all be blocked


class HostListener:
    """An HTTP/1.0 responder on node_ip:<free port> in the test process (the host's network namespace):
    something on the node IP a pod could talk to, like kubelet's port."""

    def __init__(self, address: str) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.server = socket.create_server((address, 0), family=family)
        self.server.settimeout(0.5)
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self.accepted += 1
                with contextlib.suppress(OSError):
                    conn.settimeout(2)
                    conn.recv(4096)
                    conn.sendall(f"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{HOST_MARK}\n".encode())

    def close(self) -> None:
        self._stop.set()
        self.server.close()
        self._thread.join(timeout=5)


def pod_manifest(
    name: str, image: str, script: str, labels: dict[str, str], node_name: str = NODE
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {
            "nodeName": node_name,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "command": ["/app/busybox", "sh", "-c", script]}],
        },
    }


def deny_all(name: str, selector: dict[str, str], policy_type: str) -> dict[str, Any]:
    """A NetworkPolicy selecting `selector` with policyTypes [policy_type] and no rules: deny all."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": [policy_type]},
    }


def apply(cluster: LocalCluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


def delete_policy(cluster: LocalCluster, name: str) -> None:
    cluster.kubectl("delete", "networkpolicy", name, "-n", "default", "--ignore-not-found")


def ready_pod(cluster: LocalCluster, name: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        pod: dict[str, Any] = cluster.kubectl_json("get", "pod", name, "-n", "default")
        conditions = pod["status"].get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        return pod if ready and pod["status"].get("podIP") else None

    return eventually(probe, f"pod {name} Ready with an IP")


def reaches(cluster: LocalCluster, pod: str, url: str, mark: str) -> bool:
    """Whether `pod` gets `mark` from `url` (busybox wget, killed after 4 s: a dropped SYN hangs)."""
    done = cluster.kubectl(
        "exec", pod, "-n", "default", "--",
        "/app/busybox", "timeout", "4", "/app/busybox", "wget", "-q", "-O", "-", url,
        check=False,
    )  # fmt: skip
    if done.returncode != 0 and "error" in done.stderr.lower() and "exit code" not in done.stderr:
        raise KubectlError(done.returncode, done.args, done.stdout, done.stderr)  # exec itself failed
    if mark not in done.stdout:  # shown with a failing test's captured output (143: killed by timeout)
        print(f"[probe] {pod} -> {url}: not reached, exit {done.returncode}, {done.stderr.strip()[-200:]!r}")
    return mark in done.stdout


def blocked_for_good(probe: Callable[[], bool], what: str) -> float:
    """Poll until `probe` (a connection attempt) fails, then require CONSECUTIVE more failures in a row.
    Returns when the first failing attempt began (time.monotonic())."""

    def attempt() -> float | None:
        began = time.monotonic()
        return None if probe() else began

    first = eventually(attempt, f"{what} blocked")
    for attempt_number in range(CONSECUTIVE):
        assert not probe(), f"{what}: connected again on attempt {attempt_number + 1} after being blocked"
    return first


# fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    if os.geteuid() != 0:
        pytest.fail("a real node and the enforcer need root (bridges, cgroups, nftables)")
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@dataclass(frozen=True)
class Netfilter:
    """What the enforcer may change on the host: nftables tables, the mangle table's rules, the sysctl."""

    tables: str
    mangle: str
    mangle6: str
    bridge_nf: str
    bridge_nf6: str

    @classmethod
    def now(cls) -> Netfilter:
        return cls(
            subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout,
            mangle_rules(),
            mangle_rules("ip6"),
            (Path("/proc/sys") / BRIDGE_NF_SYSCTL).read_text(),
            (Path("/proc/sys") / BRIDGE_NF6_SYSCTL).read_text(),
        )


@pytest.fixture(scope="module")
def netfilter_before(cluster: LocalCluster) -> Netfilter:
    before = Netfilter.now()
    assert CHAIN not in before.mangle, "another enforcer's rules are on this host"
    return before


@pytest.fixture(scope="module")
def node(
    cluster: LocalCluster, netfilter_before: Netfilter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealNode]:
    with RealNode(cluster, tmp_path_factory.mktemp("node"), name=NODE, index=free_node_index()) as real:
        yield real


@pytest.fixture(scope="module")
def second_node(node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    with RealNode(
        node.cluster, tmp_path_factory.mktemp("node"), name=SECOND_NODE, index=free_node_index()
    ) as real:
        yield real


@pytest.fixture(scope="module")
def busybox(node: RealNode, second_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> str:
    if not BUSYBOX.is_file():
        pytest.fail(f"{BUSYBOX} is missing: install Debian's busybox-static (make deps)")
    store = ImageStore(tmp_path_factory.mktemp("images"))
    reference = store.build(
        "registry.local/netpol/busybox",
        files={"busybox": BUSYBOX.read_bytes()},
        entrypoint=["/app/busybox"],
        cmd=["true"],
        workdir="/",
    )
    second_node.import_image(store.layout, reference)
    return node.import_image(store.layout, reference)


@pytest.fixture(scope="module")
def host_listener(node: RealNode) -> Iterator[HostListener]:
    listener = HostListener(node.node_ip)
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def pods(cluster: LocalCluster, busybox: str) -> dict[str, str]:
    """On the first node server (httpd on PORT), client and other (idle); on the second, server-1 and
    client-1 (pods reach only their own node's subnet): name -> pod IP."""
    serve = f"mkdir -p /www && echo {SERVER_MARK} > /www/index.html && exec /app/busybox httpd -f -p {PORT} -h /www"
    placed = (
        ("server", serve, NODE),
        ("client", "exec sleep 3600", NODE),
        ("other", "exec sleep 3600", NODE),
        ("server-1", serve, SECOND_NODE),
        ("client-1", "exec sleep 3600", SECOND_NODE),
    )
    for name, script, node_name in placed:
        apply(cluster, pod_manifest(name, busybox, script, {"app": name}, node_name))
    return {name: ready_pod(cluster, name)["status"]["podIP"] for name, _, _ in placed}


@pytest.fixture(scope="module")
def enforcer(
    cluster: LocalCluster,
    node: RealNode,
    second_node: RealNode,
    pods: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NetworkPolicyEnforcer]:
    running = NetworkPolicyEnforcer(cluster, tmp_path_factory.mktemp("netpol"), nodes=[node, second_node])
    running.start()
    print(
        f"\n[figures] enforcer: nfqueue {QUEUE} bound and rules in {running.ready_at - running.started_at:.2f}s after start"
    )
    yield running
    running.stop()  # idempotent: the last tests stop it first


def server_url(pods: dict[str, str], server: str = "server") -> str:
    return f"http://{pods[server]}:{PORT}/index.html"


def host_url(node: RealNode, listener: HostListener) -> str:
    return f"http://{node.node_ip}:{listener.port}/"


def link_local_url(node: RealNode, listener: HostListener) -> str:
    """The host's IPv6 link-local address on the node's bridge, as a pod reaches it (via its eth0)."""
    shown = subprocess.run(
        ["ip", "-j", "-6", "addr", "show", "dev", node.layout.bridge],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (address,) = [a["local"] for link in json.loads(shown) for a in link["addr_info"] if a["scope"] == "link"]
    return f"http://[{address}%eth0]:{listener.port}/"


def pod_link_local_url(cluster: LocalCluster, pod: str) -> str:
    """The server pod's httpd at its own IPv6 link-local address (busybox httpd listens on [::])."""
    shown = cluster.kubectl(
        "exec", pod, "-n", "default", "--", "/app/busybox", "ip", "-6", "addr", "show", "eth0"
    )
    (address,) = [line.split()[1].split("/")[0] for line in shown.stdout.splitlines() if "scope link" in line]
    return f"http://[{address}%eth0]:{PORT}/index.html"


@pytest.fixture(scope="module")
def v6_listener(node: RealNode) -> Iterator[HostListener]:
    listener = HostListener("::")  # every IPv6 address of the host, the bridge's link-local included
    yield listener
    listener.close()


# tests, in order: the enforcer starts with the first test that asks for it ------------------------


def test_without_policy_the_client_reaches_the_server_and_the_node_ip(
    cluster: LocalCluster, node: RealNode, pods: dict[str, str], host_listener: HostListener
) -> None:
    assert reaches(cluster, "client", server_url(pods), SERVER_MARK)
    assert reaches(cluster, "other", server_url(pods), SERVER_MARK)
    assert reaches(cluster, "client", host_url(node, host_listener), HOST_MARK)


def test_the_bridge_keeps_its_own_mac_whatever_pods_join(
    node: RealNode, second_node: RealNode, pods: dict[str, str]
) -> None:
    """A bridge without a MAC of its own takes its lowest port's, so a pod's veth joining changed the
    node IP's MAC under the other pods' ARP entries: their packets to the node IP were dropped until
    they re-resolved it (seen as a flaky "client -> node IP" in (b)). The MAC is set, so it stays."""
    for real in (node, second_node):
        sysfs = Path("/sys/class/net") / real.layout.bridge
        assert host.ports_of(real.layout.bridge), "the pods' veths are on the bridge"
        assert (sysfs / "addr_assign_type").read_text().strip() == "3"  # NET_ADDR_SET: never follows ports
        assert (sysfs / "address").read_text().strip() == real.layout.bridge_mac


def test_without_the_enforcer_a_deny_egress_policy_changes_nothing(
    cluster: LocalCluster,
    node: RealNode,
    pods: dict[str, str],
    host_listener: HostListener,
    v6_listener: HostListener,
) -> None:
    """What the tests below would see with the enforcer off: the policy is stored, nothing drops; the
    pod also reaches the host over IPv6 link-local (no pod IP: nothing could judge whose it is)."""
    assert CHAIN not in mangle_rules() and not queue_bound(QUEUE)
    apply(cluster, deny_all("client-no-egress", {"app": "client"}, "Egress"))
    try:
        for _ in range(CONSECUTIVE):
            assert reaches(cluster, "client", server_url(pods), SERVER_MARK)
            assert reaches(cluster, "client", host_url(node, host_listener), HOST_MARK)
        assert reaches(cluster, "client", link_local_url(node, v6_listener), HOST_MARK)
        assert reaches(cluster, "client", pod_link_local_url(cluster, "server"), SERVER_MARK)
    finally:
        delete_policy(cluster, "client-no-egress")


def test_a_pod_under_default_deny_egress_reaches_neither_pods_nor_the_node_ip(
    cluster: LocalCluster,
    node: RealNode,
    busybox: str,
    pods: dict[str, str],
    host_listener: HostListener,
    v6_listener: HostListener,
    enforcer: NetworkPolicyEnforcer,
) -> None:
    """(b) The policy exists before the pod: the pod is isolated for egress from its start."""
    apply(cluster, deny_all("isolated-no-egress", {"app": "isolated"}, "Egress"))
    try:
        apply(cluster, pod_manifest("isolated", busybox, "exec sleep 3600", {"app": "isolated"}))
        ready_pod(cluster, "isolated")
        first_blocked = not reaches(cluster, "isolated", server_url(pods), SERVER_MARK)
        print(
            f"\n[figures] isolated pod: first probe after Ready {'blocked' if first_blocked else 'CONNECTED'}"
        )
        blocked_for_good(
            lambda: reaches(cluster, "isolated", server_url(pods), SERVER_MARK), "isolated -> server"
        )
        accepted = host_listener.accepted
        blocked_for_good(
            lambda: reaches(cluster, "isolated", host_url(node, host_listener), HOST_MARK),
            "isolated -> node IP",
        )
        assert host_listener.accepted == accepted, (
            "a connection from the isolated pod reached the host socket"
        )
        blocked_for_good(
            lambda: reaches(cluster, "isolated", link_local_url(node, v6_listener), HOST_MARK),
            "isolated -> host over IPv6 link-local",
        )
        blocked_for_good(
            lambda: reaches(cluster, "isolated", pod_link_local_url(cluster, "server"), SERVER_MARK),
            "isolated -> server pod over IPv6 link-local",
        )
        # the other pods are not selected: they still connect
        assert reaches(cluster, "client", server_url(pods), SERVER_MARK)
        assert reaches(cluster, "client", host_url(node, host_listener), HOST_MARK)
        assert 'verdict="drop"' in enforcer.log.read_text()
    finally:
        cluster.kubectl("delete", "pod", "isolated", "-n", "default", "--ignore-not-found", "--wait=false")
        delete_policy(cluster, "isolated-no-egress")


def test_ingress_deny_all_on_the_server_keeps_other_pods_out(
    cluster: LocalCluster, pods: dict[str, str], enforcer: NetworkPolicyEnforcer
) -> None:
    """(c)"""
    assert reaches(cluster, "other", server_url(pods), SERVER_MARK)
    created = time.monotonic()
    apply(cluster, deny_all("server-no-ingress", {"app": "server"}, "Ingress"))
    try:
        first = blocked_for_good(
            lambda: reaches(cluster, "other", server_url(pods), SERVER_MARK), "other -> server"
        )
        print(
            f"\n[figures] ingress deny-all: first blocked attempt began {first - created:.2f}s after kubectl apply"
        )
    finally:
        delete_policy(cluster, "server-no-ingress")
    eventually(
        lambda: reaches(cluster, "other", server_url(pods), SERVER_MARK), "other -> server after delete"
    )


def test_a_policy_created_while_the_client_runs_takes_effect(
    cluster: LocalCluster,
    node: RealNode,
    pods: dict[str, str],
    host_listener: HostListener,
    enforcer: NetworkPolicyEnforcer,
) -> None:
    """(d) The client has been running (and connecting) since before the policy."""
    assert reaches(cluster, "client", server_url(pods), SERVER_MARK)
    created = time.monotonic()
    apply(cluster, deny_all("client-no-egress", {"app": "client"}, "Egress"))
    try:
        first = blocked_for_good(
            lambda: reaches(cluster, "client", server_url(pods), SERVER_MARK), "client -> server"
        )
        print(
            f"\n[figures] egress deny on a running pod: first blocked attempt began {first - created:.2f}s after kubectl apply"
        )
        blocked_for_good(
            lambda: reaches(cluster, "client", host_url(node, host_listener), HOST_MARK), "client -> node IP"
        )
    finally:
        delete_policy(cluster, "client-no-egress")
    eventually(
        lambda: reaches(cluster, "client", server_url(pods), SERVER_MARK), "client -> server after delete"
    )


def test_the_same_enforcer_polices_the_second_nodes_pods(
    cluster: LocalCluster, second_node: RealNode, pods: dict[str, str], enforcer: NetworkPolicyEnforcer
) -> None:
    """One process for both nodes: a policy on a pod of the second node is enforced there too."""
    assert reaches(cluster, "client-1", server_url(pods, "server-1"), SERVER_MARK)
    listener = HostListener(second_node.node_ip)
    try:
        assert reaches(cluster, "client-1", host_url(second_node, listener), HOST_MARK)
        apply(cluster, deny_all("client-1-no-egress", {"app": "client-1"}, "Egress"))
        try:
            blocked_for_good(
                lambda: reaches(cluster, "client-1", server_url(pods, "server-1"), SERVER_MARK),
                "client-1 -> server-1",
            )
            blocked_for_good(
                lambda: reaches(cluster, "client-1", host_url(second_node, listener), HOST_MARK),
                "client-1 -> second node IP",
            )
        finally:
            delete_policy(cluster, "client-1-no-egress")
        eventually(
            lambda: reaches(cluster, "client-1", server_url(pods, "server-1"), SERVER_MARK),
            "client-1 after delete",
        )
    finally:
        listener.close()


def test_a_killed_enforcer_fails_closed_and_stop_puts_the_host_back(
    cluster: LocalCluster,
    pods: dict[str, str],
    enforcer: NetworkPolicyEnforcer,
    netfilter_before: Netfilter,
) -> None:
    """SIGKILL leaves the queueing rules with nobody listening on the queue: the enforced node's pods'
    new connections are dropped (fail closed), policy or not; stop() removes the rules, and the host's
    netfilter state is as before the enforcer."""
    assert reaches(cluster, "client", server_url(pods), SERVER_MARK)
    os.killpg(enforcer.pid, signal.SIGKILL)
    eventually(lambda: not enforcer.running and not queue_bound(QUEUE), "the enforcer gone")
    assert CHAIN in mangle_rules()
    assert not reaches(cluster, "client", server_url(pods), SERVER_MARK), "fail open after a kill"
    enforcer.stop()
    enforcer.stop()  # idempotent
    assert Netfilter.now() == netfilter_before
    assert nft_table() == ""
    assert reaches(cluster, "client", server_url(pods), SERVER_MARK)


def test_a_second_enforcer_on_the_host_is_refused(
    cluster: LocalCluster, node: RealNode, pods: dict[str, str], tmp_path: Path, netfilter_before: Netfilter
) -> None:
    with NetworkPolicyEnforcer(cluster, tmp_path / "first", nodes=[node]):
        second = NetworkPolicyEnforcer(cluster, tmp_path / "second", nodes=[node])
        with pytest.raises(NetworkPolicyError, match="another NetworkPolicy enforcer"):
            second.start()
        assert CHAIN in mangle_rules(), "the refused start undid the first enforcer's rules"
    assert Netfilter.now() == netfilter_before
