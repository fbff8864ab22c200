"""The Pod of one attempt, derived from its CertifiedTraining: one definition, two uses.

The operator creates exactly `training_pod(...)`. The node agent measures a pod only when
`pod_deviations(live, training_pod(...))` is empty, so a pod made by anyone else, or changed after
the operator made it, is never certified (see docs/threat-model.md).

Upgrades: both accept the pod of the current release or of the previous one (`PodSettings.
previous_agent_image`, which the chart sets), so that a run outlives a routine upgrade.
`pod_conformance` is that decision, for both: the release is named by the exact agent image of the
pod's gate and seal containers (or by the one the status recorded for the attempt), and the whole
pod must then be that release's contract. Any other agent image is an unknown release.

Order: init `aicert-gate` (waits until the agent has measured the inputs), init `train` (the user's
image and command, inputs read-only, no token, no host access), container `aicert-seal` (waits
until the agent has certified the outputs; it keeps every volume mounted meanwhile).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from aicert.certificate import ASSURANCE_ORDER
from aicert_contract.status import PodContract, Reason
from aicert_contract.training import (
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
    output_claim,
    output_claim_name,
    pod_name,
)

OUTPUT_VOLUME: Final = "output"
AGENT_USER: Final = 65532  # the gate and seal containers' user (the agent image's nonroot user)
SIDECAR_RESOURCES: Final = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}}
DEFAULT_GPU_TOLERATIONS: Final[tuple[dict[str, Any], ...]] = (
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},  # AKS GPU node pools
)
DEFAULT_GATE_TIMEOUT_SECONDS: Final = 6 * 3600
# The shape of the pod `training_pod` makes, apart from its settings. A release that changes the
# shape raises it; the status records it per attempt (`pod_contract_record`).
CONTRACT_VERSION: Final = 1
# The opt-outs of the common admission injectors (docs/operations.md, "Sidecar injectors"): a pod
# they change anyway is refused as PodMutated. Azure workload identity mutates only pods labelled
# `azure.workload.identity/use: "true"`; the others inject unless told not to on the pod.
INJECTION_OPT_OUT_LABELS: Final = {
    "sidecar.istio.io/inject": "false",  # Istio (the label; the annotation is its older form)
    "azure.workload.identity/use": "false",  # Azure workload identity
}
INJECTION_OPT_OUT_ANNOTATIONS: Final = {
    "sidecar.istio.io/inject": "false",  # Istio
    "linkerd.io/inject": "disabled",  # Linkerd
    "vault.hashicorp.com/agent-inject": "false",  # Vault agent injector
    "dapr.io/enabled": "false",  # Dapr
}
_DIGEST_REF = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


class ContractError(ValueError):
    """The settings cannot produce a pod that the agent would certify."""


@dataclass(frozen=True)
class PodSettings:
    """What the operator and the agent must agree on; both read it from the same variables."""

    agent_image: str  # the gate and seal containers' image, pinned by digest
    gate_timeout_seconds: int = DEFAULT_GATE_TIMEOUT_SECONDS
    gpu_tolerations: tuple[dict[str, Any], ...] = field(default=DEFAULT_GPU_TOLERATIONS)
    # The previous release's agent image: pods it built (same contract, that image) still count.
    previous_agent_image: str | None = None

    def __post_init__(self) -> None:
        if not _DIGEST_REF.match(self.agent_image):
            raise ContractError(
                f"the agent image must be pinned by digest (repository@sha256:<64 hex>), not {self.agent_image!r}"
            )
        if self.previous_agent_image is not None and not _DIGEST_REF.match(self.previous_agent_image):
            raise ContractError(
                "the previous agent image must be pinned by digest (repository@sha256:<64 hex>), "
                f"not {self.previous_agent_image!r}"
            )
        if self.gate_timeout_seconds < 1:
            raise ContractError("the gate timeout must be at least 1 second")

    @property
    def accepted_agent_images(self) -> tuple[str, ...]:
        """The agent images whose pods count: this release's, then the previous release's."""
        previous = self.previous_agent_image
        return (self.agent_image,) if previous in (None, self.agent_image) else (self.agent_image, previous)

    def of_release(self, agent_image: str) -> PodSettings:
        """The settings the release with this agent image built its pods with."""
        return replace(self, agent_image=agent_image, previous_agent_image=None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PodSettings:
        """AICERT_AGENT_IMAGE (required), AICERT_PREVIOUS_AGENT_IMAGE (empty: none) and
        AICERT_GATE_TIMEOUT_SECONDS: the chart sets them identically for the operator and the agent."""
        e = os.environ if env is None else env
        image = e.get("AICERT_AGENT_IMAGE")
        if not image:
            raise ContractError("AICERT_AGENT_IMAGE is not set: the gate and seal image, pinned by digest")
        previous = e.get("AICERT_PREVIOUS_AGENT_IMAGE") or None
        if previous is not None and not _DIGEST_REF.match(previous):
            raise ContractError(
                "AICERT_PREVIOUS_AGENT_IMAGE: the previous agent image must be pinned by digest "
                f"(repository@sha256:<64 hex>), not {previous!r}"
            )
        timeout = e.get("AICERT_GATE_TIMEOUT_SECONDS")
        try:
            timeout_seconds = int(timeout) if timeout else DEFAULT_GATE_TIMEOUT_SECONDS
        except ValueError as exc:
            raise ContractError(f"AICERT_GATE_TIMEOUT_SECONDS: {exc}") from None
        return cls(image, timeout_seconds, previous_agent_image=previous)


def input_volume(name: str) -> str:
    return f"input-{name}"


def allowed_levels(minimum: str) -> list[str]:
    return [level for level, rank in ASSURANCE_ORDER.items() if rank >= ASSURANCE_ORDER[minimum]]


def _restricted(**extra: Any) -> dict[str, Any]:
    """A container security context that PodSecurity `restricted` admits."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, **extra}


def _agent_container(name: str, command: list[str], image: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": ["python", "-m", "aicert_agent", *command, "--control", CONTROL_MOUNT],
        "volumeMounts": [{"name": CONTROL_VOLUME, "mountPath": CONTROL_MOUNT, "readOnly": True}],
        "resources": SIDECAR_RESOURCES,
        "securityContext": _restricted(readOnlyRootFilesystem=True, runAsUser=AGENT_USER),
    }


def _volumes(spec: TrainingSpec, name: str, attempt: int) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {
            "name": input_volume(i.name),
            "persistentVolumeClaim": {"claimName": i.persistentVolumeClaim.claimName, "readOnly": True},
        }
        for i in spec.inputs
    ]
    claim = output_claim(spec, name, attempt)
    if claim is not None:
        volumes.append({"name": OUTPUT_VOLUME, "persistentVolumeClaim": {"claimName": claim}})
    else:
        empty: dict[str, Any] = {}
        if spec.output.emptyDir is not None and spec.output.emptyDir.sizeLimit is not None:
            empty["sizeLimit"] = str(spec.output.emptyDir.sizeLimit)
        volumes.append({"name": OUTPUT_VOLUME, "emptyDir": empty})
    volumes.append({"name": CONTROL_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})
    return volumes


def _train_container(spec: TrainingSpec) -> dict[str, Any]:
    resources: dict[str, dict[str, str]] = {  # quantities are strings in the Pod API
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
        "securityContext": _restricted(),
    }
    if spec.command:
        train["command"] = list(spec.command)
    if spec.args:
        train["args"] = list(spec.args)
    return train


def pod_labels(name: str, uid: str, attempt: int) -> dict[str, str]:
    return {LABEL_TRAINING: name, LABEL_TRAINING_UID: uid, LABEL_ATTEMPT: str(attempt)}


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def training_pod(
    *, name: str, namespace: str, uid: str, spec: TrainingSpec, attempt: int, settings: PodSettings
) -> dict[str, Any]:
    """The exact Pod of `attempt` (from 1) of CertifiedTraining namespace/name with this uid."""
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
    run_as = spec.securityContext.model_dump(exclude_none=True)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}, **run_as},
        "affinity": affinity,
        "tolerations": [
            *settings.gpu_tolerations,
            *(t.model_dump(exclude_none=True) for t in spec.tolerations),
        ],
        "volumes": _volumes(spec, name, attempt),
        "initContainers": [
            _agent_container(
                CONTAINER_GATE,
                ["gate", "--timeout", str(settings.gate_timeout_seconds)],
                settings.agent_image,
            ),
            _train_container(spec),
        ],
        "containers": [_agent_container(CONTAINER_SEAL, ["seal"], settings.agent_image)],
    }
    if spec.nodeSelector:
        pod_spec["nodeSelector"] = dict(spec.nodeSelector)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(name, attempt),
            "namespace": namespace,
            "labels": {**pod_labels(name, uid, attempt), **INJECTION_OPT_OUT_LABELS},
            "annotations": dict(INJECTION_OPT_OUT_ANNOTATIONS),
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": pod_spec,
    }


def attempt_output_claim(
    *, name: str, namespace: str, uid: str, spec: TrainingSpec, attempt: int
) -> dict[str, Any] | None:
    """The PVC the operator creates for an attempt's output (spec.output.volumeClaimTemplate): one
    per attempt, so every attempt starts from an empty volume that no other pod may mount
    (ReadWriteOncePod). Not owned by the training: deleting the training keeps the weights."""
    template = spec.output.volumeClaimTemplate
    if template is None:
        return None
    claim: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": output_claim_name(name, attempt),
            "namespace": namespace,
            "labels": pod_labels(name, uid, attempt),
        },
        "spec": {
            "accessModes": ["ReadWriteOncePod"],
            "resources": {"requests": {"storage": str(template.size)}},
        },
    }
    if template.storageClassName is not None:
        claim["spec"]["storageClassName"] = template.storageClassName
    return claim


# --- comparing a live pod with the contract ---------------------------------------------------------

# Container fields that cannot change what runs or what it can touch; the API server defaults them.
_IGNORED_CONTAINER_FIELDS: Final = frozenset(
    {"resources", "imagePullPolicy", "terminationMessagePath", "terminationMessagePolicy"}
)
# Pod fields that decide what runs, with whose rights, and what it can reach. Anything not listed
# (scheduling: affinity, tolerations, nodeName, priority; dnsPolicy, schedulerName, …) cannot.
_COMPARED_POD_FIELDS: Final = (
    "restartPolicy",
    "automountServiceAccountToken",
    "securityContext",
    "volumes",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "hostUsers",
    "shareProcessNamespace",
    "runtimeClassName",
    "resourceClaims",
    "ephemeralContainers",
    "os",
)


_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_SUFFIX = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
}


def _quantity(value: Any) -> Any:
    """A resource quantity as a number: the API server stores "1024Mi" as "1Gi"."""
    match = _QUANTITY.match(str(value))
    if match is None:
        return value
    number, suffix = match.groups()
    try:
        base = Decimal(number)
    except InvalidOperation:
        return value
    if suffix and suffix[0] in "eE":
        return base * Decimal(10) ** int(suffix[1:])
    return base * _SUFFIX.get(suffix or "", Decimal(1))


def quantity_bytes(value: Any) -> int | None:
    """A resource quantity of bytes ("10Gi", "500M", 1024) as an integer; None when it is not one."""
    number = _quantity(value)
    if not isinstance(number, Decimal) or not number.is_finite() or number < 0 or number != int(number):
        return None
    return int(number)


def _clean(value: Any, key: str = "") -> Any:
    """Drop what the API server omits when stored: nulls, empty strings (`value: ""`) and empty lists
    (`env: []`); compare quantities by value. `false` and `{}` stay: `automountServiceAccountToken:
    false` and `emptyDir: {}` mean something."""
    if isinstance(value, dict):
        cleaned = {k: _clean(v, k) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v is not None and v != [] and v != ""}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if key == "sizeLimit":
        return _quantity(value)
    return value


def _container_view(container: Mapping[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = _clean({k: v for k, v in container.items() if k not in _IGNORED_CONTAINER_FIELDS})
    return view


def _containers(spec: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    return [dict(c) for c in spec.get(kind) or []]


ADDED: Final = "added"
REMOVED: Final = "removed"
CHANGED: Final = "changed"


@dataclass(frozen=True)
class Deviation:
    """One place where a live pod departs from the contract's pod.

    `at_creation`: the API server takes this part of a pod only in the request that creates it
    (containers, init containers, volumes, every container field but the image, the pod-level
    fields compared), or it is an image while `metadata.generation` is 1 (the spec is as created).
    The operator creates the pod as the contract says, so such a difference was made by admission:
    a mutating webhook or a MutatingAdmissionPolicy (a sidecar injector)."""

    path: str  # e.g. spec.containers[istio-proxy], spec.initContainers[train].env[AZURE_CLIENT_ID]
    change: str  # added | removed | changed
    at_creation: bool

    def __str__(self) -> str:
        return f"{self.path} {self.change}"


# Lists whose entries are told apart by a key: a difference then names the entry.
_ENTRY_KEYS: Final = {"env": "name", "volumeMounts": "mountPath", "volumes": "name"}
# Pod fields that only an update after creation can set (the ephemeralcontainers subresource).
_SET_AFTER_CREATION: Final = frozenset({"ephemeralContainers"})


def _change(got: Any, wanted: Any) -> str:
    if wanted is None:
        return ADDED
    return REMOVED if got is None else CHANGED


def _keyed(items: Any, key: str) -> dict[str, Any] | None:
    """`items` by `key`, or None when they cannot be told apart that way (then compared whole)."""
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get(key), str) for i in items
    ):
        return None
    keyed = {str(i[key]): i for i in items}
    return keyed if len(keyed) == len(items) else None


def _list_differences(path: str, got: Any, wanted: Any, key: str, at_creation: bool) -> list[Deviation]:
    """Entry by entry when both lists key cleanly (added, removed, changed, then their order)."""
    have, need = _keyed(got or [], key), _keyed(wanted or [], key)
    if have is None or need is None:
        return [] if got == wanted else [Deviation(path, _change(got, wanted), at_creation)]
    found = [Deviation(f"{path}[{k}]", ADDED, at_creation) for k in have if k not in need]
    found += [Deviation(f"{path}[{k}]", REMOVED, at_creation) for k in need if k not in have]
    found += [
        Deviation(f"{path}[{k}]", CHANGED, at_creation) for k in need if k in have and have[k] != need[k]
    ]
    if not found and list(have) != list(need):
        found.append(Deviation(path, CHANGED, at_creation))
    return found


def _container_differences(
    kind: str, have: list[dict[str, Any]], need: list[dict[str, Any]], spec_as_created: bool
) -> list[Deviation]:
    got = {str(c.get("name")): c for c in have}
    wanted = {str(c["name"]): c for c in need}
    found = [Deviation(f"spec.{kind}[{n}]", ADDED, True) for n in got if n not in wanted]
    found += [Deviation(f"spec.{kind}[{n}]", REMOVED, True) for n in wanted if n not in got]
    if len(got) != len(have) or [n for n in got if n in wanted] != [n for n in wanted if n in got]:
        found.append(Deviation(f"spec.{kind}[*].name", CHANGED, True))  # repeated or reordered
    for name in (n for n in wanted if n in got):
        got_view, wanted_view = _container_view(got[name]), _container_view(wanted[name])
        for k in sorted(got_view.keys() | wanted_view.keys()):
            at_creation = spec_as_created if k == "image" else True
            path = f"spec.{kind}[{name}].{k}"
            if k in _ENTRY_KEYS:
                found += _list_differences(
                    path, got_view.get(k), wanted_view.get(k), _ENTRY_KEYS[k], at_creation
                )
            elif got_view.get(k) != wanted_view.get(k):
                found.append(Deviation(path, _change(got_view.get(k), wanted_view.get(k)), at_creation))
    return found


def pod_differences(live: Mapping[str, Any], expected: Mapping[str, Any]) -> list[Deviation]:
    """Where the live pod differs from the contract's pod, each with what changed and whether only
    admission could have made it; empty when the pod conforms."""
    found: list[Deviation] = []
    meta, want_meta = live.get("metadata") or {}, expected["metadata"]
    for key in ("name", "namespace"):
        if meta.get(key) != want_meta[key]:
            found.append(Deviation(f"metadata.{key}", CHANGED, False))
    labels = meta.get("labels") or {}
    found += [
        Deviation(f"metadata.labels[{k}]", REMOVED if k not in labels else CHANGED, False)
        for k, v in want_meta["labels"].items()
        if labels.get(k) != v
    ]
    controllers = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
    want_owner = want_meta["ownerReferences"][0]
    if len(controllers) != 1 or any(controllers[0].get(k) != want_owner[k] for k in ("kind", "name", "uid")):
        found.append(Deviation("metadata.ownerReferences", CHANGED, False))
    spec, want = live.get("spec") or {}, expected["spec"]
    as_created = meta.get("generation") == 1
    for kind in ("initContainers", "containers"):
        found += _container_differences(kind, _containers(spec, kind), _containers(want, kind), as_created)
    for k in _COMPARED_POD_FIELDS:
        got, wanted = _clean(spec.get(k)), _clean(want.get(k))
        at_creation = k not in _SET_AFTER_CREATION
        if k in _ENTRY_KEYS:
            found += _list_differences(f"spec.{k}", got, wanted, _ENTRY_KEYS[k], at_creation)
        elif got != wanted:
            found.append(Deviation(f"spec.{k}", _change(got, wanted), at_creation))
    return found


# --- which release built a live pod -------------------------------------------------------------------


def pod_agent_image(live: Mapping[str, Any]) -> str | None:
    """The image the pod's gate and seal containers run, when there is one of each and they agree."""
    spec = live.get("spec") or {}
    gates = [c for c in spec.get("initContainers") or [] if c.get("name") == CONTAINER_GATE]
    seals = [c for c in spec.get("containers") or [] if c.get("name") == CONTAINER_SEAL]
    if len(gates) != 1 or len(seals) != 1:
        return None
    gate, seal = gates[0].get("image"), seals[0].get("image")
    return gate if isinstance(gate, str) and gate == seal else None


@dataclass(frozen=True)
class PodConformance:
    """How a live pod stands against the contracts of the releases the settings accept."""

    agent_image: str | None  # the accepted release whose contract it was compared with (None: none)
    differences: tuple[Deviation, ...]  # where it departs from that contract (or from the current one)
    unknown_release: str | None = None  # its agent image, when no accepted release has it

    @property
    def deviations(self) -> tuple[str, ...]:
        """The paths of `differences`."""
        return tuple(d.path for d in self.differences)

    @property
    def conforms(self) -> bool:
        return self.agent_image is not None and not self.differences


def pod_conformance(
    live: Mapping[str, Any],
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: TrainingSpec,
    attempt: int,
    settings: PodSettings,
    recorded_agent_image: str | None = None,
) -> PodConformance:
    """Is `live` the pod of `attempt` as the current or the previous release made it?

    The release is the one the status recorded for the attempt (`recorded_agent_image`), else the
    one the gate and seal images name; it must be one of `settings.accepted_agent_images`, exactly,
    and the whole pod that release's `training_pod`. A pod whose (agreeing) agent image no accepted
    release has is from an unknown release: an older one, or anyone's image (refused either way)."""
    claimed = pod_agent_image(live)
    release = recorded_agent_image or claimed

    def contract(release_settings: PodSettings) -> dict[str, Any]:
        return training_pod(
            name=name, namespace=namespace, uid=uid, spec=spec, attempt=attempt, settings=release_settings
        )

    if release is not None and release in settings.accepted_agent_images:
        return PodConformance(release, tuple(pod_differences(live, contract(settings.of_release(release)))))
    differences = tuple(pod_differences(live, contract(settings)))
    if claimed is not None and release == claimed:
        return PodConformance(None, differences, unknown_release=claimed)
    return PodConformance(None, differences)


def pod_contract_record(attempt: int, agent_image: str) -> PodContract:
    """status.podContract: the contract the pod of `attempt` was built with."""
    return {"attempt": attempt, "agentImage": agent_image, "contractVersion": CONTRACT_VERSION}


def recorded_agent_image(status: Mapping[str, Any]) -> str | None:
    """The agent image status.podContract records for the status's current attempt, if any."""
    record = status.get("podContract")
    if not isinstance(record, Mapping) or record.get("attempt") != status.get("attempt"):
        return None
    image = record.get("agentImage")
    return image if isinstance(image, str) and image else None


def pod_deviations(live: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """The paths of `pod_differences`: empty when the pod conforms."""
    return [d.path for d in pod_differences(live, expected)]


def refusal(pod_name: str, differences: Sequence[Deviation]) -> tuple[Reason, str]:
    """Why a pod with these differences is never certified (operator and agent alike): PodMutated
    when admission made every one of them (a sidecar injector: docs/operations.md says how to
    exclude the namespace), PodMismatch otherwise. Either way the run fails."""
    if not differences:
        raise ValueError("no difference: nothing to refuse")
    listed = ", ".join(str(d) for d in differences)
    if all(d.at_creation for d in differences):
        return Reason.POD_MUTATED, (
            f"pod {pod_name} was changed by admission when it was created (a mutating webhook or "
            f"policy, such as a sidecar injector): {listed}"
        )
    return Reason.POD_MISMATCH, f"pod {pod_name} is not the pod the operator made: {listed}"


def controller_uid(pod: Mapping[str, Any]) -> str | None:
    """The uid of the pod's controller owner, if that owner is a CertifiedTraining."""
    for owner in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if (
            owner.get("controller")
            and owner.get("kind") == KIND
            and owner.get("apiVersion", "").startswith(GROUP)
        ):
            return str(owner.get("uid"))
    return None
