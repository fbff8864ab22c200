"""The CertifiedTraining contract shared by the operator and the node agent.

Names (labels, containers, marker files, field managers) and a typed view of the resource's
spec. Pure: no Kubernetes library. The CRD in crds/ is the one source of the API: the schema the API
server enforces and every field's description. This model reads what it admitted, and
tests/unit/test_crd_models.py holds it to the CRD field by field (names, types, enums, defaults,
required, bounds).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from aicert.certificate import Assurance
from aicert_contract.markers import (  # re-exported: the pod's control protocol
    CONTROL_MOUNT as CONTROL_MOUNT,
)
from aicert_contract.markers import (
    CONTROL_VOLUME as CONTROL_VOLUME,
)
from aicert_contract.markers import (
    GATE_TIMEOUT_EXIT as GATE_TIMEOUT_EXIT,
)
from aicert_contract.markers import (
    MARKER_GATE as MARKER_GATE,
)
from aicert_contract.markers import (
    MARKER_REFUSED as MARKER_REFUSED,
)
from aicert_contract.markers import (
    MARKER_SEALED as MARKER_SEALED,
)
from aicert_contract.markers import (
    SEAL_REFUSED_EXIT as SEAL_REFUSED_EXIT,
)

GROUP: Final = "aicert.dev"
VERSION: Final = "v1alpha1"
PLURAL: Final = "certifiedtrainings"
KIND: Final = "CertifiedTraining"

# Labels and annotations
LABEL_ASSURANCE: Final = "aicert.dev/assurance"  # on Nodes, set by the agent: dev | vtpm | cvm
# On Nodes, set by the agent at start: True when its AK certificate chains to a trusted root, False
# (reason AKIssuerMissing or AKChainRefused, the missing issuer in the message) when it does not.
NODE_CONDITION_AK_CHAIN: Final = "AICertAKChain"
LABEL_TRAINING: Final = "aicert.dev/training"  # on Pods: the CertifiedTraining's name
LABEL_TRAINING_UID: Final = "aicert.dev/training-uid"
LABEL_ATTEMPT: Final = "aicert.dev/attempt"

# The pod of one attempt
CONTAINER_GATE: Final = "aicert-gate"
CONTAINER_TRAIN: Final = "train"
CONTAINER_SEAL: Final = "aicert-seal"

CERTIFICATE_MAX_BYTES: Final = 1_048_576  # status.certificate's maxLength in the CRD

AGENT_LEASE_PREFIX: Final = "aicert-agent-"  # the agent of node N renews Lease aicert-agent-N

FIELD_MANAGER_OPERATOR: Final = "aicert-operator"
FIELD_MANAGER_AGENT: Final = "aicert-agent"

Phase = Literal["Pending", "Measuring", "Training", "Sealing", "Succeeded", "Failed"]
TERMINAL_PHASES: Final = ("Succeeded", "Failed")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ClaimRef(_Spec):
    claimName: str


class Input(_Spec):
    name: str
    persistentVolumeClaim: ClaimRef
    mountPath: str


class EmptyDir(_Spec):
    sizeLimit: int | str | None = None


class ClaimTemplate(_Spec):
    """A fresh ReadWriteOncePod claim the operator creates for each attempt."""

    storageClassName: str | None = None
    size: int | str


# A certificate records the spec in JCS (RFC 8785), whose numbers are IEEE doubles: exact to 2**53 - 1.
MAX_EXACT_INTEGER: Final = 2**53 - 1


class SecretRef(_Spec):
    name: str


class OciOutput(_Spec):
    """Where the operator pushes the certified model once the run has Succeeded (a push pod)."""

    reference: str  # REGISTRY/REPOSITORY[:TAG], no scheme, no digest
    pullSecret: SecretRef | None = None  # a kubernetes.io/dockerconfigjson Secret, same namespace
    plainHttp: bool | None = None  # unset: https, except for loopback


class Output(_Spec):
    name: str = "model"
    persistentVolumeClaim: ClaimRef | None = None
    volumeClaimTemplate: ClaimTemplate | None = None
    emptyDir: EmptyDir | None = None
    mountPath: str
    # At most this many bytes (apparent sizes) are measured; more is refused (OutputTooLarge).
    maxBytes: Annotated[int, Field(ge=1, le=MAX_EXACT_INTEGER)] | None = None
    oci: OciOutput | None = None


class EnvVar(_Spec):
    name: str
    value: str


class Toleration(_Spec):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = None


class Network(_Spec):
    egress: Literal["none", "allowed"] = "none"


class RunAs(_Spec):
    """Who the training container runs as (PodSecurity `restricted` forbids root)."""

    runAsUser: Annotated[int, Field(ge=1)] | None = None
    runAsGroup: Annotated[int, Field(ge=0)] | None = None
    fsGroup: Annotated[int, Field(ge=0)] | None = None


class Resources(_Spec):
    requests: dict[str, int | str] = Field(default_factory=dict)
    limits: dict[str, int | str] = Field(default_factory=dict)


class TrainingSpec(_Spec):
    image: str
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    gpus: Annotated[int, Field(ge=0)] = 1
    resources: Resources = Resources()
    inputs: list[Input] = Field(default_factory=list)
    output: Output
    minAssurance: Assurance = "vtpm"
    nodeSelector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    activeDeadlineSeconds: int | None = None
    backoffLimit: int = 0
    network: Network = Network()
    securityContext: RunAs = RunAs()

    def recorded(self) -> dict[str, Any]:
        """The spec as the certificate records it (defaults filled in)."""
        return self.model_dump(mode="json", exclude_none=True)


def pod_name(training: str, attempt: int) -> str:
    """Deterministic: one pod per attempt, whoever creates it and however often."""
    return f"{training}-{attempt}"


def agent_lease_name(node: str) -> str:
    """The Lease the agent of `node` renews while it and its TPM work."""
    return f"{AGENT_LEASE_PREFIX}{node}"


def output_claim_name(training: str, attempt: int) -> str:
    """The claim the operator creates for an attempt's output (spec.output.volumeClaimTemplate)."""
    return f"{training}-{attempt}-output"


def output_claim(spec: TrainingSpec, training: str, attempt: int) -> str | None:
    """The claim an attempt writes its output to; None for an emptyDir output."""
    if spec.output.persistentVolumeClaim is not None:
        return spec.output.persistentVolumeClaim.claimName
    if spec.output.volumeClaimTemplate is not None:
        return output_claim_name(training, attempt)
    return None


def short_digest(root: str) -> str:
    return f"sha256:{root[:12]}"
