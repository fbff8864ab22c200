"""Whether a region offers a VM size to a subscription, from Azure's Compute resource SKUs.

`GET /subscriptions/{id}/providers/Microsoft.Compute/skus?$filter=location eq '{region}'` lists the
VM sizes of a region with their capabilities and restrictions (api-version 2021-07-01). Pure: the
decision reads the JSON entries, so it is tested without Azure.

- A size the list does not name for the region is not offered there.
- A `Location` restriction naming the region (reason `NotAvailableForSubscription` or `QuotaId`)
  means the subscription cannot have it there. `Zone` restrictions are left to AKS.
- Capabilities: a Trusted Launch size must offer Generation 2 (`HyperVGenerations` has `V2`) and
  not say `TrustedLaunchDisabled: True`; a `cvm` size must say `ConfidentialComputingType: SNP`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from aicert.aks.pool import Missing
from aicert.aks.sizes import VmSize

SKUS_API_VERSION: Final = "2021-07-01"


def skus_path(subscription: str) -> str:
    return f"/subscriptions/{subscription}/providers/Microsoft.Compute/skus"


def location_filter(location: str) -> str:
    return f"location eq '{location}'"


def _capabilities(sku: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for capability in sku.get("capabilities") or []:
        if isinstance(capability, Mapping) and "name" in capability:
            found[str(capability["name"])] = str(capability.get("value", ""))
    return found


def _names_location(sku: Mapping[str, Any], location: str) -> bool:
    return location.casefold() in {str(each).casefold() for each in sku.get("locations") or []}


def region_missing(skus: Iterable[Mapping[str, Any]], size: VmSize, location: str) -> list[Missing]:
    """What keeps `size` from being had in `location`, given the region's resource SKUs."""
    entry = next(
        (
            sku
            for sku in skus
            if sku.get("resourceType") == "virtualMachines"
            and str(sku.get("name", "")).casefold() == size.name.casefold()
            and _names_location(sku, location)
        ),
        None,
    )
    if entry is None:
        return [Missing("region", f"{size.name} is not offered in {location} (Compute resource SKUs)")]
    missing = []
    for restriction in entry.get("restrictions") or []:
        if (
            isinstance(restriction, Mapping)
            and restriction.get("type") == "Location"
            and location.casefold() in {str(v).casefold() for v in restriction.get("values") or []}
        ):
            reason = restriction.get("reasonCode") or "restricted"
            missing.append(
                Missing(
                    "region", f"{size.name} is not available to this subscription in {location} ({reason})"
                )
            )
    capabilities = _capabilities(entry)
    if size.level == "vtpm":
        if "V2" not in capabilities.get("HyperVGenerations", "").split(","):
            missing.append(Missing("size", f"{size.name} is not a Generation 2 size in {location}"))
        if capabilities.get("TrustedLaunchDisabled", "").casefold() == "true":
            missing.append(Missing("size", f"{size.name} does not support Trusted Launch in {location}"))
    elif capabilities.get("ConfidentialComputingType") != "SNP":
        kind = capabilities.get("ConfidentialComputingType") or "none"
        missing.append(
            Missing("size", f"{size.name} is not an AMD SEV-SNP confidential size in {location} ({kind})")
        )
    return missing
