"""The network a training pod had from its gate to its seal (`aicert_agent.network_ledger`).

Attacks from the second red-team round: a relabel that brings the pod under an allow-egress policy
for a while, and an allow-all policy that lives a few seconds between gate and seal. Both left a
certificate saying `egress: none` when the agent only looked at the gate and at the seal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aicert_agent.network_ledger import (
    MAX_POLICY_STATES,
    NETWORK_POLICIES,
    NetworkLedger,
    NotWatching,
    PolicyKind,
)
from aicert_contract.network import network_policy

NS = "team-a"
LABELS = {"aicert.dev/training": "run", "aicert.dev/training-uid": "t1", "aicert.dev/attempt": "1"}
CILIUM = PolicyKind("cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", namespaced=True)
CILIUM_CLUSTER = PolicyKind(
    "cilium.io", "v2", "ciliumclusterwidenetworkpolicies", "CiliumClusterwideNetworkPolicy", namespaced=False
)


def deny_all() -> dict[str, Any]:
    policy = network_policy(name="run", namespace=NS, uid="t1", attempt=1, egress="none")
    policy["metadata"]["uid"] = "np-deny"
    return policy


def policy(name: str, selector: dict[str, Any], *, egress: list[Any], namespace: str = NS) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"np-{name}"},
        "spec": {"podSelector": selector, "policyTypes": ["Egress"], "egress": egress},
    }


def cilium(name: str, namespace: str | None = NS) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"c-{name}"}
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta, "spec": {"endpointSelector": {}}}


def ledger(tmp_path: Path, *objects: dict[str, Any], kinds: tuple[PolicyKind, ...] = ()) -> NetworkLedger:
    book = NetworkLedger(tmp_path / "network.json")
    book.listed(NETWORK_POLICIES, list(objects), "10")
    for kind in kinds:
        book.listed(kind, [], "10")
    return book


def register(book: NetworkLedger, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return book.register("pod-1", NS, labels or LABELS, {})


def test_an_isolated_run_is_certified_egress_none(tmp_path: Path) -> None:
    book = ledger(tmp_path, deny_all())
    at_gate = register(book)
    assert at_gate["egress"] == "none" and [p["name"] for p in at_gate["policies"]] == ["run-1"]
    book.changed(NETWORK_POLICIES, "ADDED", policy("web", {"matchLabels": {"app": "web"}}, egress=[{}]), "11")
    whole = book.record("pod-1")
    assert whole["egress"] == "none", whole
    assert [p["name"] for p in whole["policies"]] == ["run-1"]


def test_an_allow_all_policy_that_came_and_went_is_seen(tmp_path: Path) -> None:
    book = ledger(tmp_path, deny_all())
    register(book)
    opened = policy("open", {}, egress=[{}])
    book.changed(NETWORK_POLICIES, "ADDED", opened, "11")
    book.changed(NETWORK_POLICIES, "DELETED", opened, "12")
    whole = book.record("pod-1")
    assert whole["egress"] == "allowed"
    assert sorted(p["name"] for p in whole["policies"]) == ["open", "run-1"]
    assert "open" in book.opened("pod-1")[0] and "resourceVersion 11" in book.opened("pod-1")[0]


def test_deleting_the_operators_deny_all_policy_opens_egress(tmp_path: Path) -> None:
    book = ledger(tmp_path, deny_all())
    register(book)
    book.changed(NETWORK_POLICIES, "DELETED", deny_all(), "11")
    assert book.record("pod-1")["egress"] == "allowed"
    assert "no NetworkPolicy isolates its egress" in book.opened("pod-1")[0]


def test_a_policy_edited_to_allow_egress_for_a_moment_is_seen(tmp_path: Path) -> None:
    narrow = policy("narrow", {"matchLabels": {"aicert.dev/attempt": "1"}}, egress=[])
    book = ledger(tmp_path, deny_all(), narrow)
    register(book)
    wide = json.loads(json.dumps(narrow))
    wide["spec"]["egress"] = [{}]
    book.changed(NETWORK_POLICIES, "MODIFIED", wide, "11")
    book.changed(NETWORK_POLICIES, "MODIFIED", narrow, "12")
    whole = book.record("pod-1")
    assert whole["egress"] == "allowed"
    assert [p["name"] for p in whole["policies"]].count("narrow") == 2  # both of its specs


def test_a_relabel_is_recorded_even_when_it_is_undone(tmp_path: Path) -> None:
    book = ledger(tmp_path, deny_all(), policy("web", {"matchLabels": {"app": "web"}}, egress=[{}]))
    register(book)
    book.pod_seen("pod-1", {**LABELS, "app": "web"}, {})
    book.pod_seen("pod-1", LABELS, {})
    assert book.relabelled("pod-1") == "its labels changed after the gate: app added"
    # and the policy that selected the relabelled pod opened egress while it did
    assert book.record("pod-1")["egress"] == "allowed"


def test_an_annotation_change_is_a_relabel(tmp_path: Path) -> None:
    book = ledger(tmp_path, deny_all())
    register(book)
    book.pod_seen("pod-1", LABELS, {"note": "x"})
    assert book.relabelled("pod-1") == "its annotations changed after the gate: note added"


def test_other_namespaces_and_other_pods_do_not_count(tmp_path: Path) -> None:
    book = ledger(tmp_path, deny_all())
    register(book)
    book.changed(NETWORK_POLICIES, "ADDED", policy("open", {}, egress=[{}], namespace="team-b"), "11")
    book.pod_seen("another-pod", {"app": "web"}, {})
    assert book.record("pod-1")["egress"] == "none" and book.relabelled("pod-1") is None


def test_a_policy_kind_the_agent_cannot_evaluate_makes_egress_unknown(tmp_path: Path) -> None:
    book = ledger(tmp_path, deny_all(), kinds=(CILIUM, CILIUM_CLUSTER))
    register(book)
    assert book.record("pod-1")["egress"] == "none"
    book.changed(CILIUM, "ADDED", cilium("elsewhere", "team-b"), "11")
    assert book.record("pod-1")["egress"] == "none"  # another namespace cannot select the pod
    book.changed(CILIUM_CLUSTER, "ADDED", cilium("everywhere", None), "12")
    book.changed(CILIUM_CLUSTER, "DELETED", cilium("everywhere", None), "13")
    whole = book.record("pod-1")
    assert whole["egress"] == "unknown"
    assert whole["unknown"] == [
        "CiliumClusterwideNetworkPolicy everywhere could select the pod and aicert cannot evaluate it"
    ]


def test_a_namespaced_kind_in_the_pods_namespace_makes_egress_unknown(tmp_path: Path) -> None:
    book = NetworkLedger(tmp_path / "network.json")
    book.listed(NETWORK_POLICIES, [deny_all()], "10")
    book.listed(CILIUM, [cilium("here")], "10")
    at_gate = register(book)
    assert at_gate["egress"] == "unknown" and "CiliumNetworkPolicy team-a/here" in at_gate["unknown"][0]


def test_opened_beats_unknown(tmp_path: Path) -> None:
    book = ledger(tmp_path, deny_all(), kinds=(CILIUM,))
    register(book)
    book.changed(CILIUM, "ADDED", cilium("here"), "11")
    book.changed(NETWORK_POLICIES, "DELETED", deny_all(), "12")
    assert book.record("pod-1")["egress"] == "allowed"


def test_registering_before_every_kind_is_listed_is_refused(tmp_path: Path) -> None:
    book = NetworkLedger(tmp_path / "network.json")
    book.watching(CILIUM)
    book.listed(NETWORK_POLICIES, [deny_all()], "10")
    with pytest.raises(NotWatching, match="CiliumNetworkPolicy"):
        register(book)


def test_a_run_the_ledger_never_saw_has_unknown_egress(tmp_path: Path) -> None:
    book = ledger(tmp_path, deny_all())
    whole = book.record("never-registered")
    assert whole == {
        "egress": "unknown",
        "policies": [],
        "unknown": ["the agent did not watch this pod's network from its gate"],
    }


def test_policy_churn_is_bounded(tmp_path: Path) -> None:
    narrow = policy("narrow", {}, egress=[])
    book = ledger(tmp_path, deny_all(), narrow)
    register(book)
    for i in range(MAX_POLICY_STATES * 3):
        edited = json.loads(json.dumps(narrow))
        edited["spec"]["policyTypes"] = ["Egress", "Ingress"] if i % 2 else ["Egress"]
        edited["spec"]["ingress"] = [{"ports": [{"port": 1000 + i}]}]
        book.changed(NETWORK_POLICIES, "MODIFIED", edited, str(11 + i))
    whole = book.record("pod-1")
    assert len(whole["policies"]) == MAX_POLICY_STATES
    assert whole["egress"] == "unknown"
    assert whole["unknown"] == [f"more than {MAX_POLICY_STATES} NetworkPolicy states selected the pod"]
    assert len((tmp_path / "network.json").read_bytes()) < 64 * 1024


# --- restarts ---------------------------------------------------------------------------------------


def test_a_restarted_agent_resumes_from_where_it_stopped(tmp_path: Path) -> None:
    book = ledger(tmp_path, deny_all())
    register(book)
    book.changed(NETWORK_POLICIES, "ADDED", policy("open", {}, egress=[{}]), "11")
    again = NetworkLedger(tmp_path / "network.json")
    assert again.resume_from(NETWORK_POLICIES) == "11"
    assert again.record("pod-1")["egress"] == "allowed"  # what it saw before survives
    assert again.relabelled("pod-1") is None


def test_a_restart_that_cannot_replay_the_history_makes_egress_unknown(tmp_path: Path) -> None:
    book = ledger(tmp_path, deny_all())
    register(book)
    again = NetworkLedger(tmp_path / "network.json")
    again.history_lost(NETWORK_POLICIES, "resourceVersion 10 is too old")
    again.listed(NETWORK_POLICIES, [deny_all()], "40")
    whole = again.record("pod-1")
    assert whole["egress"] == "unknown"
    assert whole["unknown"] == [
        "the agent could not replay the NetworkPolicy changes it missed: resourceVersion 10 is too old"
    ]


def test_nothing_is_kept_once_a_run_is_forgotten(tmp_path: Path) -> None:
    book = ledger(tmp_path, deny_all())
    register(book)
    book.forget("pod-1")
    assert NetworkLedger(tmp_path / "network.json").tracked() == set()
    assert NetworkLedger(tmp_path / "network.json").resume_from(NETWORK_POLICIES) is None


def test_a_damaged_state_file_is_history_lost_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "network.json").write_text("{not json")
    book = NetworkLedger(tmp_path / "network.json")
    assert book.tracked() == set() and book.damaged


def test_a_kind_the_agent_may_not_read_makes_egress_unknown_without_holding_runs(tmp_path: Path) -> None:
    book = ledger(tmp_path, deny_all())
    book.watching(CILIUM)
    book.unreadable(CILIUM, "the API server forbids it (Forbidden)")
    at_gate = register(book)
    assert at_gate["egress"] == "unknown"
    assert at_gate["unknown"] == [
        "CiliumNetworkPolicy objects could select the pod: the API server forbids it (Forbidden)"
    ]
