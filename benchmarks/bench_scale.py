#!/usr/bin/env python3
"""100 CertifiedTrainings created at once on the local cluster, against 100 plain Pods of the same job.

    python benchmarks/bench_scale.py [--count N] [--out docs/performance.md]

Same stack, same run: the real control plane, real nodes (kubelet, containerd, runc), the chart's
operator Deployment and agent DaemonSet on two swtpm-backed GPU nodes, images pulled from a registry.
Reports the time from the first create until all are finished (and the ratio to the plain Pods,
scheduled on the same two nodes; both are created eight at a time and polled in-process every 0.2 s
for unfinished objects only, so neither the submitter nor the poll weighs on one side), API requests
per training from kube-apiserver's own apiserver_request_total and its audit log (every client: the
operator, the agents, the kubelets, the controllers), and the CPU time and peak RSS of the operator's
leader and of the agents from /proc (their containers' processes, found through containerd). Writes
the "## Scale on the local cluster" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "localcluster"), str(REPO / "images"), str(Path(__file__).resolve().parent)]


from aicert_images.cli import build  # noqa: E402
from aicert_images.repository import DOCKERFILES  # noqa: E402
from aicert_localcluster.rest_client import KubeClient  # noqa: E402
from aicert_localcluster.stack import Stack  # noqa: E402
from report import machine_table, table, write_section  # noqa: E402
from request_audit import (  # noqa: E402
    KUBELETS,
    OURS,
    breakdown_rows,
    by_client,
    finished_events,
    requests,
    side_by_side,
    time_based,
)

SECTION = "Scale on the local cluster"
JOB = b"import pathlib,sys; pathlib.Path(sys.argv[2], 'weights.bin').write_bytes(pathlib.Path(sys.argv[1], 'train.csv').read_bytes()[::-1])\n"
_REQUESTS = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$", re.M)


def requests_by_resource(stack: Stack) -> Counter[str]:
    text = stack.cluster.kubectl("get", "--raw", "/metrics").stdout
    counts: Counter[str] = Counter()
    for m in _REQUESTS.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        counts[labels.get("resource", "") or "(none)"] += int(float(m.group("value")))
    return counts


def cpu_and_rss(pid: int) -> tuple[float, int]:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(stat[11]) + int(stat[12])
    hwm = next(
        line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM")
    )
    return ticks / 100.0, int(hwm.split()[1]) * 1024


def container_pid(stack: Stack, pod: dict[str, Any], container: str) -> int:
    """The host PID of a running container's first process, as containerd lists its task."""
    status = next(c for c in pod["status"]["containerStatuses"] if c["name"] == container)
    container_id = status["containerID"].partition("://")[2]
    tasks = stack.node_of(pod).ctr("tasks", "ls").stdout.splitlines()[1:]
    return next(int(line.split()[1]) for line in tasks if line.split()[0] == container_id)


def product_pids(stack: Stack) -> tuple[int, list[int]]:
    """The operator leader's process and every agent's."""
    leader = stack.get("lease", "aicert-operator", "aicert-system")["spec"]["holderIdentity"]
    operator = stack.get("pod", leader, "aicert-system")
    agents = stack.cluster.kubectl_json(
        "get", "pods", "-n", "aicert-system", "-l", "app.kubernetes.io/component=agent"
    )["items"]
    return container_pid(stack, operator, "operator"), [container_pid(stack, p, "agent") for p in agents]


def create_all(api: KubeClient, path: str, objects: list[dict[str, Any]]) -> None:
    """Create the objects eight at a time, as a batch submitter would (kubectl apply, one object
    after the other, would spread the start over seconds)."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda body: api.request("POST", path, body=body), objects))


UNFINISHED = "status.phase!=Succeeded,status.phase!=Failed"


def wait_all(api: KubeClient, path: str, selector: str, started: float, timeout: float) -> float:
    """Seconds from `started` until no object under `path` with `selector` is unfinished. Polled in
    this process every 0.2 s with a field selector, so the API server sends only the unfinished
    objects and the poll costs both phases of the benchmark alike (and little)."""
    while True:
        left = api.request("GET", path, query={"labelSelector": selector, "fieldSelector": UNFINISHED})
        if not left.get("items"):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{path}: {len(left['items'])} unfinished after {timeout} s")
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md")
    parser.add_argument(
        "--workdir", type=Path, help="keep the stack's files and logs here (default: a temporary dir)"
    )
    args = parser.parse_args()
    n = args.count
    with contextlib.ExitStack() as scope:
        workdir = args.workdir or Path(
            scope.enter_context(tempfile.TemporaryDirectory(prefix="aicert-scale-"))
        )
        layouts = {layout.name: layout.path for layout in (build(d, workdir / "images") for d in DOCKERFILES)}
        stack = scope.enter_context(
            Stack(
                workdir / "stack",
                agent_layout=layouts["aicert-agent"],
                operator_layout=layouts["aicert-operator"],
                audit=True,
            )
        )
        api = KubeClient(stack.cluster.admin_kubeconfig, workdir / "bench-credentials")
        image = stack.build_image(
            "registry.local/bench/job",
            files={"job.py": JOB},
            entrypoint=["/opt/venv/bin/python", "/app/job.py"],
        )
        data = stack.local_volume("bench-data", access_mode="ReadOnlyMany")
        (data / "train.csv").write_text("x,y\n1,2\n")

        # the peer: the same job as plain Pods, no gate, no agent, no certificate
        pods = [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"plain-{i}", "labels": {"bench": "plain"}},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "nodeSelector": {"kubernetes.azure.com/agentpool": "gpu"},  # the trainings' nodes
                    "volumes": [
                        {
                            "name": "data",
                            "persistentVolumeClaim": {"claimName": "bench-data", "readOnly": True},
                        },
                        {"name": "out", "emptyDir": {}},
                    ],
                    "containers": [
                        {
                            "name": "train",
                            "image": image,
                            "args": ["/data", "/out"],
                            "volumeMounts": [
                                {"name": "data", "mountPath": "/data", "readOnly": True},
                                {"name": "out", "mountPath": "/out"},
                            ],
                        }
                    ],
                },
            }
            for i in range(n)
        ]
        plain_offset = stack.cluster.audit_log.stat().st_size
        started = time.monotonic()
        create_all(api, "/api/v1/namespaces/default/pods", pods)
        plain_seconds = wait_all(api, "/api/v1/namespaces/default/pods", "bench=plain", started, 900)
        plain_requests = requests(
            finished_events(stack.cluster.audit_log, plain_offset, stack.cluster.audit_log.stat().st_size)
        )
        plain = stack.cluster.kubectl_json("get", "pods", "-l", "bench=plain")["items"]
        if Counter(p["status"]["phase"] for p in plain) != Counter({"Succeeded": n}):
            raise RuntimeError(
                f"the plain pods did not all succeed: {Counter(p['status']['phase'] for p in plain)}"
            )
        stack.cluster.kubectl("delete", "pods", "-l", "bench=plain", "--wait=true")

        before = requests_by_resource(stack)
        audit_offset = stack.cluster.audit_log.stat().st_size
        operator_pid, agent_pids = product_pids(stack)
        operator_before = cpu_and_rss(operator_pid)
        agent_before = [cpu_and_rss(pid) for pid in agent_pids]
        trainings = [
            {
                "apiVersion": "aicert.dev/v1alpha1",
                "kind": "CertifiedTraining",
                "metadata": {"name": f"scale-{i}", "labels": {"bench": "scale"}},
                "spec": {
                    "image": image,
                    "args": ["/data", "/model"],
                    "gpus": 0,
                    "minAssurance": "dev",
                    "inputs": [
                        {
                            "name": "data",
                            "persistentVolumeClaim": {"claimName": "bench-data"},
                            "mountPath": "/data",
                        }
                    ],
                    "output": {"emptyDir": {}, "mountPath": "/model"},
                },
            }
            for i in range(n)
        ]
        started = time.monotonic()
        create_all(api, "/apis/aicert.dev/v1alpha1/namespaces/default/certifiedtrainings", trainings)
        ct_seconds = wait_all(
            api,
            "/apis/aicert.dev/v1alpha1/namespaces/default/certifiedtrainings",
            "bench=scale",
            started,
            1800,
        )
        phases = Counter(
            i["status"]["phase"]
            for i in stack.cluster.kubectl_json("get", "ct", "-l", "bench=scale")["items"]
        )
        if sum(phases.values()) != n:
            raise RuntimeError(f"{sum(phases.values())} CertifiedTrainings, not {n}")
        after = requests_by_resource(stack)
        trained = requests(finished_events(stack.cluster.audit_log, audit_offset))
        clients = by_client(trained)
        if product_pids(stack) != (operator_pid, agent_pids):
            raise RuntimeError("the operator's leader or an agent restarted during the run")
        operator_after = cpu_and_rss(operator_pid)
        agent_after = [cpu_and_rss(pid) for pid in agent_pids]
        agent_cpu = sum(a[0] - b[0] for a, b in zip(agent_after, agent_before, strict=True))
        agent_rss = max(a[1] for a in agent_after)

    delta = after - before
    clock_requests = time_based(trained, OURS)
    total = sum(delta.values())
    top = ", ".join(f"{r} {c / n:.1f}" for r, c in delta.most_common(6))
    client_summary = ", ".join(f"{who} {c / n:.1f}" for who, c in clients.most_common())
    rows = [
        [
            f"{n} CertifiedTrainings, all Succeeded",
            f"{ct_seconds:.0f} s",
            f"{n} plain Pods: {plain_seconds:.1f} s",
            f"{ct_seconds / plain_seconds:.1f}",
        ],
        ["API requests per training (all clients)", f"{total / n:.0f}", "—", "—"],
        [
            "API requests per training by the operator and the agent",
            f"{(clients['operator'] + clients['agent']) / n:.1f}",
            "—",
            "—",
        ],
        [
            "… of which by the clock: leases, node labels, liveness lists, discovery, watches "
            f"({clock_requests / ct_seconds:.2f} per second)",
            f"{clock_requests / n:.1f}",
            "—",
            "—",
        ],
        [
            "operator CPU / peak RSS",
            f"{operator_after[0] - operator_before[0]:.1f} s / {operator_after[1] / 2**20:.0f} MiB",
            "—",
            "—",
        ],
        [
            "agents' CPU (both) / the larger peak RSS",
            f"{agent_cpu:.1f} s / {agent_rss / 2**20:.0f} MiB",
            "—",
            "—",
        ],
    ]
    body = (
        f"## {SECTION}\n\n`python benchmarks/bench_scale.py --count {n}`: {n} CertifiedTrainings of a trivial job created "
        f"at once (final phases: {dict(phases)}) on two swtpm-backed GPU nodes (real kubelet, containerd and runc), "
        f"one agent each; the peer is the same job as {n} plain Pods on the same two nodes in the same run (no gate, "
        "no measuring, no quote).\n\n"
        + table(["what", "measured", "peer", "ratio"], rows)
        + f"\n\nRequests per training by resource: {top}; by client (kube-apiserver's audit log): {client_summary}. "
        "The clock starts before the first create and stops when the API server lists no unfinished "
        "object; both sides are created eight at a time and polled the same way.\n\n"
        "The operator's and the agent's requests per training, by verb and resource (the audit log, "
        "from the first create until all are finished):\n\n"
        + table(["client", "verb", "resource", "per training"], breakdown_rows(trained, OURS, n))
        + "\n\nThe kubelets' requests per training pod and per plain Pod, by verb and resource (each "
        f"from its first create until all are finished: {ct_seconds:.0f} s and {plain_seconds:.0f} s; "
        "node heartbeats, leases and the like are per second, not per pod):\n\n"
        + table(
            ["verb", "resource", "per training pod", "per plain Pod"],
            [
                *side_by_side(trained, n, plain_requests, n, KUBELETS),
                [
                    "all",
                    "",
                    f"{clients[KUBELETS] / n:.2f}",
                    f"{by_client(plain_requests)[KUBELETS] / n:.2f}",
                ],
            ],
        )
        + "\n\n"
        + machine_table()
        + "\n"
    )
    write_section(args.out, SECTION, body)
    print(body)
    return 0 if phases.get("Succeeded") == n else 1


if __name__ == "__main__":
    sys.exit(main())
