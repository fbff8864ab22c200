#!/usr/bin/env python3
"""Who asked kube-apiserver for what: kube-apiserver's audit log (level Metadata, one JSON line per
finished request) read back by client, verb and resource.

    python benchmarks/request_audit.py AUDIT_LOG [--start BYTE] [--end BYTE] [--per N]

The scale benchmark (`bench_scale.py`) reads the same log through these functions; run alone, this
prints the breakdown of any stretch of a kept log (`bench_scale.py --workdir`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

OPERATOR = "operator"
AGENT = "agent"
KUBELETS = "kubelets"
CONTROL_PLANE = "scheduler and controllers"
OTHER = "other (benchmark's kubectl, apiserver)"
OURS = (OPERATOR, AGENT)


# What the operator and the agent ask for by the clock, not per run: leases (renewals, the
# standby's polls, the operator's look at the agents' leases), nodes (the agent's label, the
# operator's list of labelled nodes), API discovery ("(none)": the agent's look for policy kinds
# every minute) and watches (each ends after its timeout and is started again).
TIME_BASED_RESOURCES = frozenset({"leases", "nodes", "(none)"})


class Request(NamedTuple):
    client: str
    verb: str  # get, list, watch, create, update, patch, delete, ...
    resource: str  # e.g. pods, pods/status, certifiedtrainings/status; "(none)" for /healthz and the like


def client_of(username: str) -> str:
    if username == "system:serviceaccount:aicert-system:aicert-operator":
        return OPERATOR
    if username == "system:serviceaccount:aicert-system:aicert-agent":
        return AGENT
    if username.startswith("system:node:"):
        return KUBELETS
    if username.startswith(("system:kube-", "system:serviceaccount:kube-system:")):
        return CONTROL_PLANE
    return OTHER


def request_of(event: dict[str, Any]) -> Request:
    ref = event.get("objectRef") or {}
    resource = str(ref.get("resource") or "(none)")
    if ref.get("subresource"):
        resource += "/" + str(ref["subresource"])
    return Request(client_of(str(event["user"]["username"])), str(event.get("verb")), resource)


def finished_events(audit_log: Path, start: int = 0, end: int | None = None) -> Iterator[dict[str, Any]]:
    """The log's ResponseComplete events between byte offsets `start` and `end` (None: its end)."""
    with open(audit_log, "rb") as f:
        f.seek(start)
        while end is None or f.tell() < end:
            line = f.readline()
            if not line:
                return
            event = json.loads(line)
            if event.get("stage") == "ResponseComplete":
                yield event


def requests(events: Iterable[dict[str, Any]]) -> Counter[Request]:
    return Counter(request_of(e) for e in events)


def by_client(counts: Counter[Request]) -> Counter[str]:
    out: Counter[str] = Counter()
    for request, n in counts.items():
        out[request.client] += n
    return out


def time_based(counts: Counter[Request], clients: Iterable[str]) -> int:
    """Requests of `clients` on TIME_BASED_RESOURCES, and their watches."""
    wanted = set(clients)
    return sum(
        n
        for r, n in counts.items()
        if r.client in wanted and (r.verb == "watch" or r.resource.split("/")[0] in TIME_BASED_RESOURCES)
    )


def breakdown_rows(counts: Counter[Request], clients: Iterable[str], per: int) -> list[list[str]]:
    """Rows (client, verb, resource, per unit), largest first, for the given clients only."""
    wanted = set(clients)
    chosen = [(r, n) for r, n in counts.items() if r.client in wanted]
    chosen.sort(key=lambda rn: (-rn[1], rn[0]))
    return [[r.client, r.verb, r.resource, f"{n / per:.2f}"] for r, n in chosen]


def side_by_side(
    left: Counter[Request], left_per: int, right: Counter[Request], right_per: int, client: str
) -> list[list[str]]:
    """Rows (verb, resource, left per unit, right per unit) of one client's requests in two stretches."""
    keys = {(r.verb, r.resource) for r in (*left, *right) if r.client == client}

    def per(counts: Counter[Request], n: int, verb: str, resource: str) -> float:
        return counts[Request(client, verb, resource)] / n

    rows = sorted(keys, key=lambda k: (-per(left, left_per, *k), k))
    return [
        [
            verb,
            resource,
            f"{per(left, left_per, verb, resource):.2f}",
            f"{per(right, right_per, verb, resource):.2f}",
        ]
        for verb, resource in rows
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audit_log", type=Path)
    parser.add_argument("--start", type=int, default=0, help="byte offset to read from")
    parser.add_argument("--end", type=int, help="byte offset to stop at")
    parser.add_argument("--per", type=int, default=1, help="divide the counts by this (e.g. the trainings)")
    args = parser.parse_args()
    counts = requests(finished_events(args.audit_log, args.start, args.end))
    for client, n in by_client(counts).most_common():
        print(f"{client}: {n / args.per:.2f}")
    print()
    for row in breakdown_rows(counts, by_client(counts), args.per):
        print("\t".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
