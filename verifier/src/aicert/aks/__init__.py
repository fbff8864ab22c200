"""AKS node pools AICert can certify trainings on: `aicert aks check` and `aicert aks create-nodepool`.

- `sizes`: the VM sizes AICert knows, each for a level (`vtpm`: Trusted Launch; `cvm`: AMD SEV-SNP).
- `pool`: what a pool needs for a level (`assess`, `missing_for`) and the pool to ask for
  (`nodepool_body`). Pure: pools are ARM's JSON.
- `regions`: whether a region offers a size, from Azure's Compute resource SKUs. Pure.
- `arm`: the edge that talks to Azure Resource Manager through azure-mgmt-containerservice. It is the
  only module that imports the Azure SDK, an optional dependency (`pip install 'aicert-k8s[azure]'`);
  without it, importing `arm` raises `AzureSdkMissing`.
"""

from __future__ import annotations

from typing import Final

AZURE_EXTRA_HINT: Final = "pip install 'aicert-k8s[azure]'"


class AzureSdkMissing(ImportError):
    """The Azure SDK (azure-mgmt-containerservice, azure-identity) is not installed."""

    def __init__(self, missing: str) -> None:
        super().__init__(f"the Azure SDK is not installed ({missing}): {AZURE_EXTRA_HINT}")
