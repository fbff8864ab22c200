"""The parts of the NetworkPolicy enforcer (aicert_localcluster.realnode.netpol) and of its build that
need no root: the iptables rules it installs and removes, its command line and RBAC, and the version
check on the Go module information a binary embeds. The enforcer itself is
tests/integration/test_network_policy.py."""

from __future__ import annotations

import re
from pathlib import Path

from aicert_localcluster import binaries
from aicert_localcluster.realnode.netpol import (
    CHAIN,
    IN_CHAIN,
    NO_NODE,
    OUT_CHAIN,
    QUEUE,
    V6_CHAIN,
    cluster_role,
    enforcer_args,
    ipv6_rules,
    only_policies,
    queue_rules,
    undo_ipv6_rules,
    undo_rules,
)

SUBNETS = ["10.244.3.0/24", "10.244.4.0/24"]


def _queued(rules: list[list[str]]) -> list[tuple[str, str]]:
    return [(r[2], r[3]) for r in rules if r[:2] == ["-A", CHAIN] and "NFQUEUE" in r]


def test_every_pod_subnet_is_queued_both_ways_fail_closed() -> None:
    rules = queue_rules(SUBNETS, resident_node=True)
    assert _queued(rules) == [(direction, s) for s in SUBNETS for direction in ("-s", "-d")]
    for rule in rules:
        if "NFQUEUE" in rule:
            assert rule[rule.index("--queue-num") + 1] == str(QUEUE)
            assert "--queue-bypass" not in rule  # with nobody listening, a packet is dropped


def test_established_connections_return_before_any_queueing() -> None:
    chain = [r for r in queue_rules(SUBNETS, resident_node=True) if r[:2] == ["-A", CHAIN]]
    assert chain[0][-4:] == ["--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"]
    assert all("NFQUEUE" in r for r in chain[1:])


def test_the_host_talking_to_itself_and_its_root_sockets_are_not_queued() -> None:
    rules = queue_rules(SUBNETS, resident_node=True)
    out = [r for r in rules if r[:2] == ["-A", OUT_CHAIN]]
    assert out[:2] == [
        ["-A", OUT_CHAIN, "-o", "lo", "-j", "RETURN"],
        ["-A", OUT_CHAIN, "-m", "owner", "--uid-owner", "0", "-j", "RETURN"],
    ]
    assert out[-1] == ["-A", OUT_CHAIN, "-j", CHAIN]
    into = [r for r in rules if r[:2] == ["-A", IN_CHAIN]]
    assert into == [["-A", IN_CHAIN, "-i", "lo", "-j", "RETURN"], ["-A", IN_CHAIN, "-j", CHAIN]]


def test_pod_to_its_own_node_is_policed_only_with_resident_node() -> None:
    assert ["-A", "INPUT", "-j", IN_CHAIN] in queue_rules(SUBNETS, resident_node=True)
    without = queue_rules(SUBNETS, resident_node=False)
    assert not any("INPUT" in r or IN_CHAIN in r for r in without)
    assert ["-A", "POSTROUTING", "-j", OUT_CHAIN] in without


def test_undo_removes_every_jump_and_chain_it_added_jumps_first() -> None:
    for resident in (True, False):
        added = queue_rules(SUBNETS, resident_node=resident)
        undo = undo_rules(resident_node=resident)
        jumps = [r for r in added if r[1] in ("POSTROUTING", "INPUT")]
        assert [["-D", *r[1:]] for r in jumps] == [r for r in undo if r[0] == "-D"]
        created = [r[1] for r in added if r[0] == "-N"]
        assert sorted(r[1] for r in undo if r[0] == "-X") == sorted(created)
        for chain in created:  # each chain is flushed, then deleted, after the jump into it is gone
            flushed, deleted = undo.index(["-F", chain]), undo.index(["-X", chain])
            assert flushed < deleted
            for index, rule in enumerate(undo):
                if rule[0] == "-D" and rule[-1] == chain:
                    assert index < flushed


def test_every_ipv6_packet_from_an_enforced_bridge_is_dropped_and_undone() -> None:
    """Link-local IPv6 (fe80::) is no pod's IP: the judge would allow it, so it never reaches it."""
    bridges = ["aicertbr3", "aicertbr4"]
    rules = ipv6_rules(bridges)
    assert ["-A", V6_CHAIN, "-j", "DROP"] in rules
    assert [r for r in rules if r[1] == "PREROUTING"] == [
        ["-A", "PREROUTING", "-i", bridge, "-j", V6_CHAIN] for bridge in bridges
    ]
    undo = undo_ipv6_rules(bridges)
    assert [r for r in undo if r[0] == "-D"] == [["-D", *r[1:]] for r in rules if r[1] == "PREROUTING"]
    assert undo[-2:] == [["-F", V6_CHAIN], ["-X", V6_CHAIN]]


def test_a_mangle_table_is_empty_only_with_nothing_but_policies() -> None:
    assert only_policies("-P PREROUTING ACCEPT\n-P INPUT ACCEPT\n-P POSTROUTING ACCEPT\n")
    assert only_policies("")
    assert not only_policies("-P INPUT ACCEPT\n-N SOMEONE-ELSE\n")
    assert not only_policies("-P INPUT ACCEPT\n-A INPUT -j MARK --set-mark 1\n")


def test_its_command_line_is_fail_closed_with_metrics_on_loopback() -> None:
    args = enforcer_args(Path("/bin/kube-network-policies"), metrics_port=9999)
    assert "--fail-open=false" in args
    assert "--metrics-bind-address=127.0.0.1:9999" in args
    assert f"--nfqueue-id={QUEUE}" in args
    assert f"--hostname-override={NO_NODE}" in args


def test_its_role_is_what_its_install_manifest_grants_plus_events() -> None:
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): r["verbs"] for r in cluster_role()["rules"]}
    assert rules[(("",), ("pods", "namespaces"))] == ["list", "watch"]
    assert rules[(("networking.k8s.io",), ("networkpolicies",))] == ["list", "watch"]
    assert all(set(verbs) <= {"list", "watch", "create", "patch", "update"} for verbs in rules.values())
    writes = [k for k, verbs in rules.items() if {"create", "patch", "update"} & set(verbs)]
    assert writes == [(("", "events.k8s.io"), ("events",))]


# the version check on embedded build information -----------------------------------------------


def _go_binary(tmp_path: Path, modinfo: str) -> Path:
    path = tmp_path / "prog"
    path.write_bytes(
        b"\x7fELF padding"
        + binaries._MODINFO_START
        + modinfo.encode()
        + binaries._MODINFO_END
        + b"more padding\nmod\tsigs.k8s.io/kube-network-policies\t"
        + binaries.netpol_version().encode()
        + b"\t elsewhere"
    )
    return path


def _netpol_binary() -> binaries.Binary:
    (found,) = [b for b in binaries.node_binaries() if b.name == "kube-network-policies"]
    return found


def test_the_pinned_enforcer_is_current_from_its_embedded_module_line(tmp_path: Path) -> None:
    version = binaries.netpol_version()
    assert re.fullmatch(r"v\d+\.\d+\.\d+", version)
    info = f"path\tsigs.k8s.io/kube-network-policies/cmd\nmod\tsigs.k8s.io/kube-network-policies\t{version}\th1:x=\n"
    binary = _netpol_binary()
    assert binary.buildinfo and binary.version_args == ()
    assert binaries.is_current(binary, _go_binary(tmp_path, info))


def test_another_version_or_a_string_outside_the_build_information_is_not_current(tmp_path: Path) -> None:
    binary = _netpol_binary()
    other = (
        "path\tsigs.k8s.io/kube-network-policies/cmd\nmod\tsigs.k8s.io/kube-network-policies\tv0.7.0\th1:x=\n"
    )
    assert not binaries.is_current(binary, _go_binary(tmp_path, other))
    # the pinned module line elsewhere in the file (outside the markers) does not count
    assert not binaries.is_current(binary, _go_binary(tmp_path, "path\texample.com/x\n"))
    assert binaries.embedded_build_info(tmp_path / "missing") == ""
