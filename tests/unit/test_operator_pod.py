from __future__ import annotations

from typing import Any

from aicert.training import LABEL_ASSURANCE, TrainingSpec
from aicert_operator.pod import build_pod
from aicert_operator.settings import Settings

SPEC: dict[str, Any] = {
    "image": "registry.example/train@sha256:" + "a" * 64,
    "command": ["python", "train.py"],
    "env": [{"name": "EPOCHS", "value": "3"}],
    "gpus": 2,
    "inputs": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}, "mountPath": "/data"}],
    "output": {"persistentVolumeClaim": {"claimName": "out-pvc"}, "mountPath": "/out"},
    "tolerations": [{"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
}


def pod(**changes: Any) -> dict[str, Any]:
    spec = TrainingSpec.model_validate({**SPEC, **changes})
    return build_pod(
        name="run",
        namespace="ml",
        uid="u1",
        spec=spec,
        attempt=2,
        settings=Settings(agent_image="agent@sha256:" + "b" * 64),
    )


def containers(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in [*p["spec"]["initContainers"], *p["spec"]["containers"]]}


def test_gate_train_seal_order_and_identity() -> None:
    p = pod()
    assert p["metadata"]["name"] == "run-2"
    assert [c["name"] for c in p["spec"]["initContainers"]] == ["aicert-gate", "train"]
    assert [c["name"] for c in p["spec"]["containers"]] == ["aicert-seal"]
    owner = p["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("CertifiedTraining", "u1", True)
    assert p["spec"]["restartPolicy"] == "Never" and p["spec"]["automountServiceAccountToken"] is False


def test_train_sees_inputs_read_only_and_never_the_control_volume() -> None:
    c = containers(pod())
    mounts = {m["mountPath"]: m for m in c["train"]["volumeMounts"]}
    assert mounts["/data"]["readOnly"] is True and "readOnly" not in mounts["/out"]
    assert all(m["name"] != "aicert-control" for m in c["train"]["volumeMounts"])
    assert c["aicert-gate"]["volumeMounts"] == c["aicert-seal"]["volumeMounts"]
    volumes = {v["name"]: v for v in pod()["spec"]["volumes"]}
    assert volumes["input-data"]["persistentVolumeClaim"] == {"claimName": "data-pvc", "readOnly": True}
    assert "hostPath" not in str(volumes)  # no TPM device, no host access


def test_gpus_and_tolerations() -> None:
    p = pod()
    assert containers(p)["train"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    keys = [t["key"] for t in p["spec"]["tolerations"]]
    assert keys[:2] == ["nvidia.com/gpu", "sku"] and "team" in keys
    assert "nvidia.com/gpu" not in str(containers(pod(gpus=0))["train"])


def test_affinity_allows_the_requested_level_and_above() -> None:
    def levels(minimum: str) -> list[str]:
        term = pod(minAssurance=minimum)["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        expression = term["nodeSelectorTerms"][0]["matchExpressions"][0]
        assert expression["key"] == LABEL_ASSURANCE
        return list(expression["values"])

    assert levels("dev") == ["dev", "vtpm", "cvm"]
    assert levels("vtpm") == ["vtpm", "cvm"]
    assert levels("cvm") == ["cvm"]


def test_empty_dir_output() -> None:
    volumes = {
        v["name"]: v
        for v in pod(output={"emptyDir": {"sizeLimit": "1Gi"}, "mountPath": "/out"})["spec"]["volumes"]
    }
    assert volumes["output"] == {"name": "output", "emptyDir": {"sizeLimit": "1Gi"}}
