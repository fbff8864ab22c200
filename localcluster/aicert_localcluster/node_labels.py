"""The labels an AKS node pool gives its nodes, for the local cluster's nodes (set at registration).

`aicert.dev/assurance` is never among them: the agent labels its node once it has proved its TPM.
"""

from __future__ import annotations

from typing import Literal

SecurityType = Literal["TrustedLaunch", "ConfidentialVM"]

LABEL_SECURITY_TYPE = "kubernetes.azure.com/security-type"
LABEL_ACCELERATOR = "kubernetes.azure.com/accelerator"
LABEL_AGENTPOOL = "kubernetes.azure.com/agentpool"
LABEL_MODE = "kubernetes.azure.com/mode"
LABEL_ASSURANCE = "aicert.dev/assurance"  # the agent's, never ours


def aks_node_labels(security_type: SecurityType | None, *, gpus: int, agentpool: str) -> dict[str, str]:
    """`kubernetes.azure.com/security-type` unless the node has no TPM, `.../accelerator=nvidia` with
    GPUs, the pool's name (both AKS keys) and its mode; kubelet adds hostname, os and arch itself."""
    labels = {LABEL_AGENTPOOL: agentpool, "agentpool": agentpool, LABEL_MODE: "user"}
    if agentpool == "system":
        labels[LABEL_MODE] = "system"
    if security_type is not None:
        labels[LABEL_SECURITY_TYPE] = security_type
    if gpus > 0:
        labels[LABEL_ACCELERATOR] = "nvidia"
    return labels
