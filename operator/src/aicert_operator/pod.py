"""The Pod of one attempt (DESIGN.md "Flow of one training run", step 2). Pure."""

from __future__ import annotations

from typing import Any

from aicert.certificate import ASSURANCE_ORDER
from aicert.training import (
    CONTAINER_GATE,
    CONTAINER_SEAL,
    CONTAINER_TRAIN,
    CONTROL_MOUNT,
    CONTROL_VOLUME,
    GROUP,
    KIND,
    LABEL_ASSURANCE,
    LABEL_ATTEMPT,
    LABEL_TRAINING,
    LABEL_TRAINING_UID,
    VERSION,
    TrainingSpec,
    pod_name,
)
from aicert_operator.settings import Settings

OUTPUT_VOLUME = "output"
SIDECAR_RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}


def input_volume(name: str) -> str:
    return f"input-{name}"


def allowed_levels(minimum: str) -> list[str]:
    return [level for level, rank in ASSURANCE_ORDER.items() if rank >= ASSURANCE_ORDER[minimum]]


def _agent_container(name: str, action: str, image: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": ["python", "-m", "aicert_agent", action, "--control", CONTROL_MOUNT],
        "volumeMounts": [{"name": CONTROL_VOLUME, "mountPath": CONTROL_MOUNT}],
        "resources": SIDECAR_RESOURCES,
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True},
    }


def build_pod(
    *, name: str, namespace: str, uid: str, spec: TrainingSpec, attempt: int, settings: Settings
) -> dict[str, Any]:
    """gate (init) → train (init) → seal: the agent measures between them (see DESIGN.md)."""
    volumes: list[dict[str, Any]] = [
        {
            "name": input_volume(i.name),
            "persistentVolumeClaim": {"claimName": i.persistentVolumeClaim.claimName, "readOnly": True},
        }
        for i in spec.inputs
    ]
    if spec.output.persistentVolumeClaim is not None:
        volumes.append(
            {
                "name": OUTPUT_VOLUME,
                "persistentVolumeClaim": {"claimName": spec.output.persistentVolumeClaim.claimName},
            }
        )
    else:
        empty: dict[str, Any] = {}
        if spec.output.emptyDir is not None and spec.output.emptyDir.sizeLimit is not None:
            empty["sizeLimit"] = str(spec.output.emptyDir.sizeLimit)
        volumes.append({"name": OUTPUT_VOLUME, "emptyDir": empty})
    volumes.append({"name": CONTROL_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})

    # Quantities are strings in the Pod API.
    resources: dict[str, dict[str, str]] = {
        "requests": {k: str(v) for k, v in spec.resources.requests.items()},
        "limits": {k: str(v) for k, v in spec.resources.limits.items()},
    }
    if spec.gpus:
        resources["limits"]["nvidia.com/gpu"] = str(spec.gpus)
    train: dict[str, Any] = {
        "name": CONTAINER_TRAIN,
        "image": spec.image,
        "env": [{"name": e.name, "value": e.value} for e in spec.env],
        "resources": {k: v for k, v in resources.items() if v},
        "volumeMounts": [
            {"name": input_volume(i.name), "mountPath": i.mountPath, "readOnly": True} for i in spec.inputs
        ]
        + [{"name": OUTPUT_VOLUME, "mountPath": spec.output.mountPath}],
    }
    if spec.command:
        train["command"] = list(spec.command)
    if spec.args:
        train["args"] = list(spec.args)

    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": LABEL_ASSURANCE,
                                "operator": "In",
                                "values": allowed_levels(spec.minAssurance),
                            }
                        ]
                    }
                ]
            }
        }
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "affinity": affinity,
        "tolerations": [
            *settings.gpu_tolerations,
            *(t.model_dump(exclude_none=True) for t in spec.tolerations),
        ],
        "volumes": volumes,
        "initContainers": [_agent_container(CONTAINER_GATE, "gate", settings.agent_image), train],
        "containers": [_agent_container(CONTAINER_SEAL, "seal", settings.agent_image)],
    }
    if spec.nodeSelector:
        pod_spec["nodeSelector"] = dict(spec.nodeSelector)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(name, attempt),
            "namespace": namespace,
            "labels": {LABEL_TRAINING: name, LABEL_TRAINING_UID: uid, LABEL_ATTEMPT: str(attempt)},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": pod_spec,
    }
