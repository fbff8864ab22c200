"""What the operator knows of the nodes, from one watch: their assurance label and AICertAKChain
condition. Pure, but for the view the watch feeds.

A node whose agent cannot chain its AK certificate to a trusted root stays unlabelled, with the
condition AICertAKChain False naming the missing issuer (aicert_agent.ak_chain). A training that
waits for a node then says so (`NoChainableNode`) instead of a bare `Unschedulable`. The view is
fed by a watch of Nodes, so deciding costs no request per training or per reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aicert.certificate import ASSURANCE_ORDER
from aicert_contract.training import LABEL_ASSURANCE, NODE_CONDITION_AK_CHAIN

NAMED_NODES: Final = 3  # a message names this many nodes, then counts the rest
NODE_MESSAGE_CHARS: Final = 600  # of the agent's own message, quoted once


@dataclass(frozen=True)
class NodeFacts:
    name: str
    assurance: str | None  # the aicert.dev/assurance label, when there is one
    ak_chained: bool | None  # the AICertAKChain condition: None when the node has none
    ak_reason: str
    ak_message: str


def node_facts(body: Mapping[str, Any]) -> NodeFacts:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    chained: bool | None = None
    reason = message = ""
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == NODE_CONDITION_AK_CHAIN:
            status = condition.get("status")
            chained = True if status == "True" else False if status == "False" else None
            reason, message = str(condition.get("reason") or ""), str(condition.get("message") or "")
    label = labels.get(LABEL_ASSURANCE)
    return NodeFacts(
        str(meta.get("name") or ""), str(label) if label is not None else None, chained, reason, message
    )


class NodeView:
    """The latest facts of every node the watch showed (a few strings each, not the Node)."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeFacts] = {}
        self._sorted: list[NodeFacts] | None = []

    def see(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        facts = node_facts(body)
        if deleted:
            if self._nodes.pop(facts.name, None) is not None:
                self._sorted = None
        elif facts.name and self._nodes.get(facts.name) != facts:  # most events change nothing here
            self._nodes[facts.name] = facts
            self._sorted = None

    def labelled(self) -> list[str]:
        """The nodes that carry the assurance label (safe from another thread: one snapshot)."""
        return sorted(f.name for f in list(self._nodes.values()) if f.assurance is not None)

    def nodes(self) -> list[NodeFacts]:
        if self._sorted is None:
            self._sorted = [self._nodes[name] for name in sorted(self._nodes)]
        return list(self._sorted)


def _runs(node: NodeFacts, minimum: str) -> bool:
    rank = ASSURANCE_ORDER.get(node.assurance or "")
    return rank is not None and rank >= ASSURANCE_ORDER[minimum]


def no_chainable_node(minimum: str, nodes: Sequence[NodeFacts]) -> str | None:
    """The message of a `NoChainableNode` wait: no node is labelled at `minimum` or higher, and the
    agents of some nodes said their AK certificate does not chain (AICertAKChain False). None when
    a node could run it (the wait is something else) or no agent reported a broken chain."""
    if any(_runs(n, minimum) for n in nodes):
        return None
    broken = sorted((n for n in nodes if n.ak_chained is False), key=lambda n: n.name)
    if not broken:
        return None
    names = ", ".join(n.name for n in broken[:NAMED_NODES])
    if len(broken) > NAMED_NODES:
        names += f" and {len(broken) - NAMED_NODES} more"
    first = broken[0]
    why = (
        f"{first.ak_reason}: {first.ak_message[:NODE_MESSAGE_CHARS]}" if first.ak_message else first.ak_reason
    )
    who = f"the agent of node {names} cannot" if len(broken) == 1 else f"the agents of nodes {names} cannot"
    their = "its AK certificate" if len(broken) == 1 else "their AK certificates"
    return (
        f"no node carries {LABEL_ASSURANCE} {minimum} or higher; {who} chain {their} ({why}); "
        f"each node's condition {NODE_CONDITION_AK_CHAIN} says why, and agent.akChain gives the agents "
        "a missing intermediate"
    )
