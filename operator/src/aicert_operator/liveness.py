"""Only nodes whose agent is alive may take new runs.

Each node agent renews the Lease `aicert-agent-<node>` while its TPM answers. A node still labelled
`aicert.dev/assurance` whose agent lease is missing or expired loses the label, so the scheduler
places no new training there (a run already there is not disturbed: its gate times out, or its
deadline ends it). The agent labels its node again once it renews its lease.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from aicert_operator import metrics

log = logging.getLogger("aicert_operator.liveness")


def stale_nodes(
    labelled: Iterable[str], lease_valid_until: Mapping[str, dt.datetime | None], now: dt.datetime
) -> list[str]:
    """The labelled nodes whose agent has no lease, or one that expired."""
    return sorted(n for n in labelled if (until := lease_valid_until.get(n)) is None or now > until)


class AgentView(Protocol):
    def agent_leases(self, namespace: str) -> dict[str, dt.datetime | None]: ...
    def unlabel_node(self, node: str) -> None: ...


def watch_agents(
    kube: AgentView,
    labelled_nodes: Callable[[], list[str]],
    namespace: str,
    every: float,
    stop: threading.Event,
) -> threading.Thread:
    """Every `every` seconds, take nodes with a dead agent out of scheduling (until `stop`).
    `labelled_nodes`: the nodes labelled now, as the operator's node watch shows them (no request:
    a label set a moment ago and not seen yet is looked at on the next round)."""

    def loop() -> None:
        while not stop.wait(every):
            try:
                for node in stale_nodes(
                    labelled_nodes(), kube.agent_leases(namespace), dt.datetime.now(dt.UTC)
                ):
                    kube.unlabel_node(node)
                    metrics.NODES_UNLABELLED.inc()
                    log.warning(
                        "node %s: its aicert agent stopped renewing its lease; no new runs go there", node
                    )
            except Exception as exc:  # the next round tries again
                log.warning("checking the node agents failed: %s", exc)

    thread = threading.Thread(target=loop, name="agent-liveness", daemon=True)
    thread.start()
    return thread
