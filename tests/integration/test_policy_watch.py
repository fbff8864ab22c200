"""The agent's whole-run network watch (`aicert_agent.policy_watch`) against a real kube-apiserver,
with the policy CRDs of Cilium, Calico and SIG Network installed as a cluster using them has them.

Attacks from the second red-team round, at the API: an allow-all NetworkPolicy that lives a moment
between the gate and the seal, the same while the agent is down (it resumes its watch where it
stopped), and a policy kind the agent cannot evaluate.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, config

from aicert_agent.network_ledger import NetworkLedger, NotWatching
from aicert_agent.policy_watch import PolicyWatch
from aicert_contract.network import network_policy
from aicert_localcluster import LocalCluster

pytestmark = pytest.mark.integration

T = TypeVar("T")
NS = "default"
LABELS = {"aicert.dev/training": "run", "aicert.dev/training-uid": "t1", "aicert.dev/attempt": "1"}


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result is not None and result is not False:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def crd(group: str, version: str, plural: str, kind: str, *, namespaced: bool) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{group}",
            # as the network-policy-api project's own CRDs carry it (k8s.io groups require one)
            **(
                {
                    "annotations": {
                        "api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/network-policy-api/pull/30"
                    }
                }
                if group.endswith(".k8s.io")
                else {}
            ),
        },
        "spec": {
            "group": group,
            "scope": "Namespaced" if namespaced else "Cluster",
            "names": {"plural": plural, "kind": kind, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


POLICY_CRDS = [
    crd("cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", namespaced=True),
    crd(
        "cilium.io",
        "v2",
        "ciliumclusterwidenetworkpolicies",
        "CiliumClusterwideNetworkPolicy",
        namespaced=False,
    ),
    crd("crd.projectcalico.org", "v1", "networkpolicies", "NetworkPolicy", namespaced=True),
    crd("crd.projectcalico.org", "v1", "globalnetworkpolicies", "GlobalNetworkPolicy", namespaced=False),
    crd(
        "policy.networking.k8s.io", "v1alpha1", "adminnetworkpolicies", "AdminNetworkPolicy", namespaced=False
    ),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("policywatch")) as running:
        running.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": POLICY_CRDS})
        )
        for item in POLICY_CRDS:
            running.kubectl("wait", "--for=condition=Established", f"crd/{item['metadata']['name']}")
        yield running


@pytest.fixture
def api(cluster: LocalCluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.admin_kubeconfig))  # type: ignore[no-untyped-call]


def apply(cluster: LocalCluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


def allow_all(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
    }


def registered(ledger: NetworkLedger, uid: str) -> dict[str, Any]:
    def attempt() -> dict[str, Any] | None:
        try:
            return ledger.register(uid, NS, LABELS, {})
        except NotWatching:
            return None

    return eventually(attempt, "every served policy kind to be listed")


def watching(api: client.ApiClient, ledger: NetworkLedger) -> threading.Event:
    stop = threading.Event()
    PolicyWatch(api, ledger, stop, timeout=5, rediscover_seconds=1).start()
    return stop


def test_the_served_kinds_are_the_installed_ones(api: client.ApiClient) -> None:
    kinds = PolicyWatch(api, NetworkLedger(None), threading.Event()).served()
    assert sorted(k.key for k in kinds) == [
        "adminnetworkpolicies.policy.networking.k8s.io",
        "ciliumclusterwidenetworkpolicies.cilium.io",
        "ciliumnetworkpolicies.cilium.io",
        "globalnetworkpolicies.crd.projectcalico.org",
        "networkpolicies.crd.projectcalico.org",
        "networkpolicies.networking.k8s.io",
    ]


def test_a_policy_that_lived_a_moment_is_in_the_record(
    cluster: LocalCluster, api: client.ApiClient, tmp_path: Path
) -> None:
    deny = network_policy(name="moment", namespace=NS, uid="t1", attempt=1, egress="none")
    apply(cluster, deny)
    ledger = NetworkLedger(tmp_path / "network.json")
    stop = watching(api, ledger)
    try:
        assert registered(ledger, "pod-a")["egress"] == "none"
        apply(cluster, allow_all("moment-open"))
        cluster.kubectl("delete", "networkpolicy", "moment-open", "-n", NS)
        whole = eventually(lambda: ledger.record("pod-a") if ledger.opened("pod-a") else None, "the moment")
        assert whole["egress"] == "allowed"
        assert "NetworkPolicy moment-open allowed egress" in ledger.opened("pod-a")[0]
    finally:
        stop.set()
        cluster.kubectl("delete", "networkpolicy", "moment-1", "-n", NS)


def test_what_happened_while_the_agent_was_down_is_replayed(
    cluster: LocalCluster, api: client.ApiClient, tmp_path: Path
) -> None:
    deny = network_policy(name="down", namespace=NS, uid="t1", attempt=1, egress="none")
    apply(cluster, deny)
    ledger = NetworkLedger(tmp_path / "network.json")
    stop = watching(api, ledger)
    registered(ledger, "pod-b")
    stop.set()  # the agent stops: what it wrote last is what a restarted agent finds
    state = tmp_path / "restarted.json"
    state.write_bytes((tmp_path / "network.json").read_bytes())
    apply(cluster, allow_all("while-down"))  # a tenant opens and closes egress meanwhile
    cluster.kubectl("delete", "networkpolicy", "while-down", "-n", NS)
    restarted = NetworkLedger(state)
    assert restarted.record("pod-b")["egress"] == "none"  # nothing seen yet
    stop = watching(api, restarted)
    try:
        eventually(lambda: restarted.opened("pod-b") or None, "the replayed moment")
        assert "NetworkPolicy while-down allowed egress" in restarted.opened("pod-b")[0]
    finally:
        stop.set()
        cluster.kubectl("delete", "networkpolicy", "down-1", "-n", NS)


@pytest.mark.parametrize(
    ("kind", "namespaced"),
    [
        ("ciliumnetworkpolicies.cilium.io", True),
        ("ciliumclusterwidenetworkpolicies.cilium.io", False),
        ("networkpolicies.crd.projectcalico.org", True),
        ("globalnetworkpolicies.crd.projectcalico.org", False),
        ("adminnetworkpolicies.policy.networking.k8s.io", False),
    ],
)
def test_a_kind_the_agent_cannot_evaluate_makes_egress_unknown(
    cluster: LocalCluster, api: client.ApiClient, tmp_path: Path, kind: str, namespaced: bool
) -> None:
    (definition,) = [c for c in POLICY_CRDS if c["metadata"]["name"] == kind]
    apply(cluster, network_policy(name="cni", namespace=NS, uid="t1", attempt=1, egress="none"))
    ledger = NetworkLedger(tmp_path / "network.json")
    stop = watching(api, ledger)
    group, version = definition["spec"]["group"], definition["spec"]["versions"][0]["name"]
    obj: dict[str, Any] = {
        "apiVersion": f"{group}/{version}",
        "kind": definition["spec"]["names"]["kind"],
        "metadata": {"name": "plugin-policy", **({"namespace": NS} if namespaced else {})},
        "spec": {"anything": "the agent cannot evaluate"},
    }
    try:
        assert registered(ledger, "pod-c")["egress"] == "none"
        apply(cluster, obj)
        cluster.kubectl("delete", "-f", "-", input=json.dumps(obj))
        whole = eventually(
            lambda: ledger.record("pod-c") if "unknown" in ledger.record("pod-c") else None, kind
        )
        assert whole["egress"] == "unknown"
        assert "plugin-policy could select the pod and aicert cannot evaluate it" in whole["unknown"][0]
    finally:
        stop.set()
        cluster.kubectl("delete", "networkpolicy", "cni-1", "-n", NS)
