"""A dynamic provisioner for the local cluster: PVCs of one StorageClass get a local PV of their own.

It plays what a CSI provisioner does on AKS (Azure Disk, for example): a claim the operator creates
from `spec.output.volumeClaimTemplate` is bound to a fresh, empty volume. Each volume is a host
directory under `root/<namespace>/<claim>`, a `local` PV with node affinity to the TPM nodes and the
claim's access modes, pre-bound to the claim (claimRef with its uid) so the PV controller binds the
two at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)
STORAGE_CLASS = "aicert-local"


class LocalProvisioner:
    def __init__(self, kubeconfig: Path, root: Path, nodes: Sequence[str], poll_seconds: float = 0.3) -> None:
        self.api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
        self.storage = client.StorageV1Api(self.api.api_client)
        self.root = root
        self.nodes = list(nodes)
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-provisioner", daemon=True)

    def path(self, namespace: str, claim: str) -> Path:
        return self.root / namespace / claim

    def start(self) -> None:
        body: Any = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS},
            "provisioner": "aicert.dev/local-test",
            "reclaimPolicy": "Retain",
            "volumeBindingMode": "Immediate",
        }
        try:
            self.storage.create_storage_class(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                for pvc in self.api.list_persistent_volume_claim_for_all_namespaces().items:
                    spec = pvc.spec
                    if spec is not None and spec.storage_class_name == STORAGE_CLASS and not spec.volume_name:
                        self._provision(pvc)
            except Exception as exc:  # the API server may be stopping; the next round retries
                log.warning("provisioner round failed: %s", exc)

    def _provision(self, pvc: Any) -> None:
        meta = pvc.metadata
        path = self.path(meta.namespace, meta.name)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)  # the training runs as its image's user, not root
        body: Any = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"pvc-{meta.uid}"},
            "spec": {
                "capacity": {"storage": pvc.spec.resources.requests["storage"]},
                "accessModes": list(pvc.spec.access_modes),
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": STORAGE_CLASS,
                "claimRef": {"namespace": meta.namespace, "name": meta.name, "uid": meta.uid},
                "local": {"path": str(path)},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/hostname", "operator": "In", "values": self.nodes}
                                ]
                            }
                        ]
                    }
                },
            },
        }
        try:
            self.api.create_persistent_volume(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
