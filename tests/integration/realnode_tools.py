"""Helpers shared by the integration tests that run pods on a real node (test_real_node.py,
test_registry.py): polling with a deadline, a busybox image, pod manifests and pod states."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from aicert_localcluster import KubectlError, LocalCluster
from aicert_localcluster.images import ImageStore
from aicert_localcluster.realnode import GPU_RESOURCE

DEADLINE = 90.0
BUSYBOX = Path("/bin/busybox")
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    """Poll `probe` until it returns something other than None/False; fail with `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except (KubectlError, json.JSONDecodeError, OSError) as exc:
            last, result = exc, None
        if result is not None and result is not False:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}; last error: {last}")


def busybox_image(store: ImageStore, repository: str) -> str:
    """Debian's static busybox as an OCI image (/app/busybox) in `store`; its digest reference."""
    if not BUSYBOX.is_file():
        pytest.fail(f"{BUSYBOX} is missing: install Debian's busybox-static (make deps)")
    return store.build(
        repository,
        files={"busybox": BUSYBOX.read_bytes()},
        entrypoint=["/app/busybox"],
        cmd=["true"],
        workdir="/",
    )


def pod_manifest(name: str, image: str, script: str, *, gpus: int = 0) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "command": ["/app/busybox", "sh", "-c", script],
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
    }
    if gpus:
        container["resources"] = {"limits": {GPU_RESOURCE: str(gpus)}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
    }


def get_pod(cluster: LocalCluster, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = cluster.kubectl_json("get", "pod", name, "-n", "default")
    return pod


def wait_pod(
    cluster: LocalCluster, name: str, ready: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The pod, once `ready(pod)` holds."""

    def probe() -> dict[str, Any] | None:
        pod = get_pod(cluster, name)
        return pod if ready(pod) else None

    return eventually(probe, f"pod {name} {what}")


def succeeded(pod: dict[str, Any]) -> bool:
    return bool(pod["status"].get("phase") == "Succeeded")


def condition(obj: dict[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True" for c in obj["status"].get("conditions") or []
    )


def cluster_for_real_nodes(workdir: Path) -> Iterator[LocalCluster]:
    """A LocalCluster for a module's real nodes (a fixture yields from it): real nodes need root."""
    if os.geteuid() != 0:
        pytest.fail("a real node needs root (bridges, cgroups, mount namespaces)")
    with LocalCluster(workdir) as running:
        yield running
