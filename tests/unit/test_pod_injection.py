"""Admission injectors (service meshes, secret agents, workload identity) against the training pod.

The pod opts out of the common injectors; one that injects all the same is refused as `PodMutated`,
naming what it added or changed, never measured. Every other departure stays `PodMismatch`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from aicert_contract.pod import (
    INJECTION_OPT_OUT_ANNOTATIONS,
    INJECTION_OPT_OUT_LABELS,
    Deviation,
    PodSettings,
    pod_differences,
    refusal,
    training_pod,
)
from aicert_contract.status import REFUSALS, Reason
from aicert_contract.training import TrainingSpec

AGENT_IMAGE = "registry.example/aicert/agent@sha256:" + "b" * 64
SETTINGS = PodSettings(agent_image=AGENT_IMAGE)
SPEC: dict[str, Any] = {
    "image": "registry.example/train@sha256:" + "a" * 64,
    "command": ["python", "train.py"],
    "env": [{"name": "EPOCHS", "value": "3"}],
    "inputs": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-pvc"}, "mountPath": "/data"}],
    "output": {"persistentVolumeClaim": {"claimName": "out-pvc"}, "mountPath": "/out"},
}


def pod() -> dict[str, Any]:
    spec = TrainingSpec.model_validate(SPEC)
    return training_pod(name="run", namespace="ml", uid="u1", spec=spec, attempt=2, settings=SETTINGS)


def stored(p: dict[str, Any], generation: int | None = 1) -> dict[str, Any]:
    live = copy.deepcopy(p)
    live["metadata"]["uid"] = "pod-uid-2"
    if generation is not None:
        live["metadata"]["generation"] = generation
    return live


def _by_name(p: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    return next(c for c in p["spec"][kind] if c["name"] == name)


# --- the opt-outs -------------------------------------------------------------------------------------


def test_the_pod_opts_out_of_the_common_injectors() -> None:
    meta = pod()["metadata"]
    assert INJECTION_OPT_OUT_LABELS == {
        "sidecar.istio.io/inject": "false",
        "azure.workload.identity/use": "false",
    }
    assert INJECTION_OPT_OUT_ANNOTATIONS == {
        "sidecar.istio.io/inject": "false",
        "linkerd.io/inject": "disabled",
        "vault.hashicorp.com/agent-inject": "false",
        "dapr.io/enabled": "false",
    }
    assert meta["labels"].items() >= INJECTION_OPT_OUT_LABELS.items()
    assert meta["annotations"] == INJECTION_OPT_OUT_ANNOTATIONS


def test_an_honest_pod_has_no_differences() -> None:
    assert pod_differences(stored(pod()), pod()) == []


# --- what the injectors do when they inject all the same ---------------------------------------------

PROXY = {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0", "args": ["proxy", "sidecar"]}


def _istio(p: dict[str, Any]) -> None:
    spec = p["spec"]
    spec["initContainers"].insert(
        0, {"name": "istio-init", "image": PROXY["image"], "args": ["istio-iptables"]}
    )
    spec["containers"].append(dict(PROXY))
    spec["volumes"] += [{"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}]


def _linkerd(p: dict[str, Any]) -> None:
    spec = p["spec"]
    spec["initContainers"].insert(0, {"name": "linkerd-init", "image": "cr.l5d.io/linkerd/proxy-init"})
    spec["containers"].insert(0, {"name": "linkerd-proxy", "image": "cr.l5d.io/linkerd/proxy"})


def _vault(p: dict[str, Any]) -> None:
    spec = p["spec"]
    spec["initContainers"].append({"name": "vault-agent-init", "image": "hashicorp/vault"})
    spec["volumes"].append({"name": "vault-secrets", "emptyDir": {"medium": "Memory"}})
    _by_name(p, "initContainers", "train")["volumeMounts"].append(
        {"name": "vault-secrets", "mountPath": "/vault/secrets"}
    )


def _azure_workload_identity(p: dict[str, Any]) -> None:
    train = _by_name(p, "initContainers", "train")
    train["env"] += [
        {"name": "AZURE_CLIENT_ID", "value": "c"},
        {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": "f"},
    ]
    train["volumeMounts"].append(
        {"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": True}
    )
    p["spec"]["volumes"].append({"name": "azure-identity-token", "projected": {"sources": []}})


def _dapr(p: dict[str, Any]) -> None:
    p["spec"]["containers"].append({"name": "daprd", "image": "ghcr.io/dapr/daprd"})


def _probe_rewrite(p: dict[str, Any]) -> None:  # e.g. a mesh rewriting the train container's command
    _by_name(p, "initContainers", "train")["command"] = ["pilot-agent", "wait", "--", "python", "train.py"]


def _no_token_mount_undone(p: dict[str, Any]) -> None:
    p["spec"]["automountServiceAccountToken"] = True


INJECTIONS: list[Any] = [
    pytest.param(
        _istio,
        [
            Deviation("spec.initContainers[istio-init]", "added", True),
            Deviation("spec.containers[istio-proxy]", "added", True),
            Deviation("spec.volumes[istio-envoy]", "added", True),
        ],
        id="istio",
    ),
    pytest.param(
        _linkerd,
        [
            Deviation("spec.initContainers[linkerd-init]", "added", True),
            Deviation("spec.containers[linkerd-proxy]", "added", True),
        ],
        id="linkerd",
    ),
    pytest.param(
        _vault,
        [
            Deviation("spec.initContainers[vault-agent-init]", "added", True),
            Deviation("spec.initContainers[train].volumeMounts[/vault/secrets]", "added", True),
            Deviation("spec.volumes[vault-secrets]", "added", True),
        ],
        id="vault",
    ),
    pytest.param(
        _azure_workload_identity,
        [
            Deviation("spec.initContainers[train].env[AZURE_CLIENT_ID]", "added", True),
            Deviation("spec.initContainers[train].env[AZURE_FEDERATED_TOKEN_FILE]", "added", True),
            Deviation(
                "spec.initContainers[train].volumeMounts[/var/run/secrets/azure/tokens]", "added", True
            ),
            Deviation("spec.volumes[azure-identity-token]", "added", True),
        ],
        id="azure-workload-identity",
    ),
    pytest.param(_dapr, [Deviation("spec.containers[daprd]", "added", True)], id="dapr"),
    pytest.param(
        _probe_rewrite,
        [Deviation("spec.initContainers[train].command", "changed", True)],
        id="command-rewritten",
    ),
    pytest.param(
        _no_token_mount_undone, [Deviation("spec.automountServiceAccountToken", "changed", True)], id="token"
    ),
]


@pytest.mark.parametrize(("inject", "differences"), INJECTIONS)
def test_an_injected_pod_is_refused_as_mutated_naming_what_was_injected(
    inject: Callable[[dict[str, Any]], None], differences: list[Deviation]
) -> None:
    live = stored(pod())
    inject(live)
    assert pod_differences(live, pod()) == differences
    reason, message = refusal("run-2", differences)
    assert reason is Reason.POD_MUTATED and reason in REFUSALS
    assert all(str(d) in message for d in differences)
    assert message.startswith("pod run-2 was changed by admission when it was created")


def test_the_differences_say_added_removed_and_changed() -> None:
    live = stored(pod())
    _by_name(live, "containers", "aicert-seal")["name"] = "renamed"
    live["spec"]["volumes"] = [v for v in live["spec"]["volumes"] if v["name"] != "output"]
    assert pod_differences(live, pod()) == [
        Deviation("spec.containers[renamed]", "added", True),
        Deviation("spec.containers[aicert-seal]", "removed", True),
        Deviation("spec.volumes[output]", "removed", True),
    ]


def test_reordered_containers_are_a_difference() -> None:
    live = stored(pod())
    live["spec"]["initContainers"].reverse()  # train before the gate: it would run unmeasured
    assert pod_differences(live, pod()) == [Deviation("spec.initContainers[*].name", "changed", True)]


# --- what is not admission's doing ---------------------------------------------------------------------


def _gate_image(p: dict[str, Any]) -> None:
    _by_name(p, "initContainers", "aicert-gate")["image"] = "registry.example/fake@sha256:" + "d" * 64


@pytest.mark.parametrize(("generation", "at_creation"), [(1, True), (2, False), (None, False)])
def test_an_image_counts_as_admission_only_while_the_spec_is_unchanged_since_creation(
    generation: int | None, at_creation: bool
) -> None:
    # An image is the one container field a pod update may change: metadata.generation 1 says the
    # spec is still as created; without it (older API servers) nobody can tell.
    live = stored(pod(), generation)
    _gate_image(live)
    differences = pod_differences(live, pod())
    assert differences == [Deviation("spec.initContainers[aicert-gate].image", "changed", at_creation)]
    assert refusal("run-2", differences)[0] is (Reason.POD_MUTATED if at_creation else Reason.POD_MISMATCH)


LATER: list[Any] = [
    pytest.param(
        lambda p: p["metadata"]["labels"].update({"aicert.dev/attempt": "1"}),
        Deviation("metadata.labels[aicert.dev/attempt]", "changed", False),
        id="label",
    ),
    pytest.param(
        lambda p: p["spec"].update(ephemeralContainers=[{"name": "debugger", "image": "busybox"}]),
        Deviation("spec.ephemeralContainers", "added", False),
        id="ephemeral-container",
    ),
    pytest.param(
        lambda p: p["metadata"]["ownerReferences"][0].update(uid="u2"),
        Deviation("metadata.ownerReferences", "changed", False),
        id="owner",
    ),
]


@pytest.mark.parametrize(("tamper", "difference"), LATER)
def test_a_change_made_after_creation_is_a_mismatch(
    tamper: Callable[[dict[str, Any]], None], difference: Deviation
) -> None:
    live = stored(pod())
    tamper(live)
    assert pod_differences(live, pod()) == [difference]
    reason, message = refusal("run-2", [difference])
    assert reason is Reason.POD_MISMATCH
    assert message == f"pod run-2 is not the pod the operator made: {difference}"


def test_an_injection_together_with_a_later_change_is_a_mismatch_naming_both() -> None:
    live = stored(pod())
    _dapr(live)
    live["metadata"]["labels"]["aicert.dev/attempt"] = "1"
    differences = pod_differences(live, pod())
    reason, message = refusal("run-2", differences)
    assert reason is Reason.POD_MISMATCH
    assert message == (
        "pod run-2 is not the pod the operator made: metadata.labels[aicert.dev/attempt] changed, "
        "spec.containers[daprd] added"
    )


def test_no_difference_is_no_refusal() -> None:
    with pytest.raises(ValueError, match="no difference"):
        refusal("run-2", [])
