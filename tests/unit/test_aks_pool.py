"""`aicert.aks`: the size catalogue, what a pool needs for each level, the pool to ask for, and
whether a region offers a size. Pure: pools and resource SKUs are ARM's JSON."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from aicert.aks.pool import (
    AGENT_LABEL,
    GPU_TAINT,
    NodePoolRefused,
    assess,
    missing_for,
    nodepool_body,
)
from aicert.aks.regions import region_missing
from aicert.aks.sizes import CATALOGUE, LEVELS, find_size, series_for
from aicert_contract.pod import DEFAULT_GPU_TOLERATIONS

A100 = "Standard_NC24ads_A100_v4"
CONFIDENTIAL_H100 = "Standard_NCC40ads_H100_v5"


def trusted_launch_gpu_pool(**changes: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "vmSize": A100,
        "count": 1,
        "osType": "Linux",
        "osSKU": "Ubuntu",
        "securityProfile": {"enableVTPM": True, "enableSecureBoot": True},
        "gpuProfile": {"driver": "None"},
        "nodeLabels": {"aicert.dev/agent": "true"},
        "nodeTaints": ["sku=gpu:NoSchedule"],
    }
    props.update(changes)
    return {"name": "gpu1", "properties": {k: v for k, v in props.items() if v is not None}}


def confidential_gpu_pool(**changes: Any) -> dict[str, Any]:
    return trusted_launch_gpu_pool(**{"vmSize": CONFIDENTIAL_H100, "securityProfile": None, **changes})


# -- the catalogue ----------------------------------------------------------------------------------


def test_sizes_are_found_in_any_case_and_unknown_ones_are_not() -> None:
    size = find_size("standard_ncc40ADS_h100_v5")
    assert size is not None and (size.name, size.gpus, size.level) == (CONFIDENTIAL_H100, 1, "cvm")
    assert find_size("Standard_NC24ads_A100_v4") == find_size(A100.upper())
    assert find_size("NC24ads_A100_v4") is None  # ARM names carry the Standard_ prefix
    assert find_size("Standard_DC4es_v5") is None  # Intel TDX: not an SEV-SNP level


def test_catalogue_names_are_unique_and_levels_are_as_documented() -> None:
    assert len({s.name.casefold() for s in CATALOGUE}) == len(CATALOGUE)
    assert series_for("cvm") == ["DCasv5", "DCadsv5", "ECasv5", "ECadsv5", "NCCads_H100_v5"]
    assert series_for("cvm", gpu=True) == ["NCCads_H100_v5"]
    assert series_for("vtpm", gpu=True) == ["NCasT4_v3", "NCads_A100_v4", "NCads_H100_v5"]
    assert {s.level for s in CATALOGUE if s.series.startswith(("DC", "EC", "NCC"))} == {"cvm"}


def test_the_gpu_taint_is_one_that_training_pods_tolerate() -> None:
    key, rest = GPU_TAINT.split("=")
    value, effect = rest.split(":")
    assert {"key": key, "operator": "Equal", "value": value, "effect": effect} in DEFAULT_GPU_TOLERATIONS


# -- assess: what a pool lacks --------------------------------------------------------------------


def test_a_complete_trusted_launch_gpu_pool_is_fit_for_vtpm_only() -> None:
    vtpm = assess(trusted_launch_gpu_pool(), "vtpm")
    assert (vtpm.fit, vtpm.supports, vtpm.missing) == (True, "vtpm", ())
    cvm = assess(trusted_launch_gpu_pool(), "cvm")
    assert not cvm.fit and [m.item for m in cvm.missing] == ["size"]


def test_a_confidential_pool_meets_both_levels_without_trusted_launch_flags() -> None:
    for level in LEVELS:
        assert assess(confidential_gpu_pool(), level).fit
    assert assess(confidential_gpu_pool(), "vtpm").supports == "cvm"


@pytest.mark.parametrize(
    ("pool", "level", "item"),
    [
        (trusted_launch_gpu_pool(securityProfile={"enableSecureBoot": True}), "vtpm", "no-vtpm"),
        (trusted_launch_gpu_pool(securityProfile={"enableVTPM": True}), "vtpm", "no-secure-boot"),
        (trusted_launch_gpu_pool(vmSize="Standard_ND96isr_H100_v5"), "vtpm", "size"),
        (trusted_launch_gpu_pool(vmSize="Standard_D8s_v5"), "vtpm", "no-gpu"),
        (trusted_launch_gpu_pool(gpuProfile={"driver": "Install"}), "vtpm", "gpu-driver"),
        (trusted_launch_gpu_pool(gpuProfile=None), "vtpm", "gpu-driver"),  # AKS installs by default
        (trusted_launch_gpu_pool(nodeLabels={"aicert.dev/agent": "false"}), "vtpm", "label"),
        (trusted_launch_gpu_pool(nodeTaints=["nvidia.com/gpu=true:NoSchedule"]), "vtpm", "taint"),
        (trusted_launch_gpu_pool(osType="Windows", osSKU="Windows2022"), "vtpm", "os"),
        (trusted_launch_gpu_pool(osSKU="CBLMariner"), "vtpm", "os"),
        (confidential_gpu_pool(osSKU="Ubuntu2204"), "cvm", "os"),  # AKS has no 22.04 CVM image
        (confidential_gpu_pool(vmSize="Standard_DC8as_v5"), "cvm", "no-gpu"),
    ],
)
def test_each_missing_requirement_is_named_alone(pool: dict[str, Any], level: str, item: str) -> None:
    assessment = assess(pool, level)  # type: ignore[arg-type]
    assert [m.item for m in assessment.missing] == [item]
    assert not assessment.fit and assessment.supports is None


def test_an_unknown_size_is_reported_with_what_would_do() -> None:
    [size] = missing_for(trusted_launch_gpu_pool(vmSize="Standard_ND96isr_H100_v5"), "vtpm")
    assert "Standard_ND96isr_H100_v5 is not in AICert's catalogue of Trusted Launch sizes" in size.reason
    assert "NCads_A100_v4" in size.reason


def test_a_pool_without_properties_lacks_everything_but_an_os() -> None:
    items = [m.item for m in assess({"name": "empty"}, "vtpm").missing]
    assert items == ["size", "no-vtpm", "no-secure-boot", "label"]


def test_cpu_pools_pass_with_no_gpu_and_need_no_gpu_taint() -> None:
    cpu = trusted_launch_gpu_pool(vmSize="Standard_D8s_v5", nodeTaints=None, gpuProfile=None)
    assert assess(cpu, "vtpm", gpu=False).fit
    assert [m.item for m in assess(cpu, "vtpm", gpu=True).missing] == ["no-gpu"]


def test_the_retired_skip_driver_tag_still_counts_as_driver_skipped() -> None:
    pool = trusted_launch_gpu_pool(gpuProfile=None, tags={"SkipGPUDriverInstall": "true"})
    assert assess(pool, "vtpm").fit


# -- nodepool_body: the pool to ask for -----------------------------------------------------------


def test_a_trusted_launch_gpu_pool_body() -> None:
    assert nodepool_body("vtpm", A100.lower(), 2) == {
        "properties": {
            "type": "VirtualMachineScaleSets",
            "mode": "User",
            "osType": "Linux",
            "osSKU": "Ubuntu",
            "vmSize": A100,
            "count": 2,
            "nodeLabels": {"aicert.dev/agent": "true"},
            "nodeTaints": ["sku=gpu:NoSchedule"],
            "gpuProfile": {"driver": "None"},
            "securityProfile": {"enableVTPM": True, "enableSecureBoot": True},
        }
    }


def test_a_confidential_gpu_pool_body_has_no_trusted_launch_flags() -> None:
    props = nodepool_body("cvm", CONFIDENTIAL_H100, 1, os_sku="AzureLinux")["properties"]
    assert "securityProfile" not in props
    assert (props["vmSize"], props["osSKU"], props["gpuProfile"]) == (
        CONFIDENTIAL_H100,
        "AzureLinux",
        {"driver": "None"},
    )
    assert props["nodeTaints"] == [GPU_TAINT] and props["nodeLabels"] == dict([AGENT_LABEL])


def test_a_cpu_pool_body_has_no_gpu_settings() -> None:
    props = nodepool_body("cvm", "Standard_DC8as_v5", 3)["properties"]
    assert "nodeTaints" not in props and "gpuProfile" not in props


@pytest.mark.parametrize(
    ("level", "size", "count", "gpu", "items"),
    [
        ("cvm", A100, 1, None, ["size"]),  # a Trusted Launch size for the confidential level
        ("vtpm", CONFIDENTIAL_H100, 1, None, ["size"]),  # AKS refuses Trusted Launch on a CVM
        ("vtpm", "Standard_NC6", 1, None, ["size"]),
        ("vtpm", "Standard_D8s_v5", 1, True, ["no-gpu"]),
        ("vtpm", A100, 1, False, ["gpu"]),
        ("vtpm", A100, 0, None, ["count"]),
        ("cvm", "Standard_DC8as_v5", 1, None, []),
    ],
)
def test_requests_are_refused_naming_what_is_wrong(
    level: str, size: str, count: int, gpu: bool | None, items: list[str]
) -> None:
    if not items:
        nodepool_body(level, size, count, gpu=gpu)  # type: ignore[arg-type]
        return
    with pytest.raises(NodePoolRefused) as refused:
        nodepool_body(level, size, count, gpu=gpu)  # type: ignore[arg-type]
    assert [m.item for m in refused.value.missing] == items


def test_cvm_refuses_an_os_without_a_confidential_image() -> None:
    with pytest.raises(NodePoolRefused, match="OS SKU Ubuntu2204"):
        nodepool_body("cvm", CONFIDENTIAL_H100, 1, os_sku="Ubuntu2204")


def test_an_update_keeps_the_pool_settings_and_adds_aicerts() -> None:
    existing = trusted_launch_gpu_pool(
        securityProfile={"sshAccess": "Disabled"},
        gpuProfile=None,
        nodeLabels={"team": "ml"},
        nodeTaints=["dedicated=ml:NoSchedule"],
        maxPods=50,
        orchestratorVersion="1.33",
        provisioningState="Succeeded",
        currentOrchestratorVersion="1.33.2",
        nodeImageVersion="AKSUbuntu-2204gen2TLcontainerd-202601.01.0",
        eTag="abc",
    )
    before = copy.deepcopy(existing)
    props = nodepool_body("vtpm", A100, 4, existing=existing)["properties"]
    assert existing == before  # the pool read from ARM is not changed in place
    assert props["securityProfile"] == {"sshAccess": "Disabled", "enableVTPM": True, "enableSecureBoot": True}
    assert props["nodeLabels"] == {"team": "ml", "aicert.dev/agent": "true"}
    assert props["nodeTaints"] == ["dedicated=ml:NoSchedule", GPU_TAINT]
    assert (props["maxPods"], props["orchestratorVersion"], props["count"]) == (50, "1.33", 4)
    assert not {"provisioningState", "currentOrchestratorVersion", "nodeImageVersion", "eTag"} & set(props)


def test_an_update_cannot_change_the_size_or_the_os() -> None:
    existing = trusted_launch_gpu_pool(vmSize="Standard_NC48ads_A100_v4")
    with pytest.raises(NodePoolRefused, match="exists with size Standard_NC48ads_A100_v4"):
        nodepool_body("vtpm", A100, 1, existing=existing)
    with pytest.raises(NodePoolRefused, match="exists with OS SKU Ubuntu, not AzureLinux"):
        nodepool_body("vtpm", A100, 1, os_sku="AzureLinux", existing=trusted_launch_gpu_pool())
    windows = trusted_launch_gpu_pool(osType="Windows", osSKU="Windows2022")
    with pytest.raises(NodePoolRefused) as refused:
        nodepool_body("vtpm", A100, 1, existing=windows)
    assert [m.item for m in refused.value.missing] == ["os"]


# -- region_missing: is the size offered ----------------------------------------------------------


def sku(name: str, *, locations: tuple[str, ...] = ("westeurope",), **capabilities: str) -> dict[str, Any]:
    return {
        "resourceType": "virtualMachines",
        "name": name,
        "locations": list(locations),
        "capabilities": [{"name": k, "value": v} for k, v in capabilities.items()],
        "restrictions": [],
    }


def test_an_offered_size_passes() -> None:
    a100, h100 = find_size(A100), find_size(CONFIDENTIAL_H100)
    assert a100 is not None and h100 is not None
    skus = [sku(A100, HyperVGenerations="V1,V2"), sku(CONFIDENTIAL_H100, ConfidentialComputingType="SNP")]
    assert region_missing(skus, a100, "WestEurope") == []
    assert region_missing(skus, h100, "westeurope") == []


def test_a_size_the_region_does_not_list_is_not_offered() -> None:
    h100 = find_size(CONFIDENTIAL_H100)
    assert h100 is not None
    skus = [sku(CONFIDENTIAL_H100, locations=("eastus2",), ConfidentialComputingType="SNP"), sku(A100)]
    [missing] = region_missing(skus, h100, "westeurope")
    assert missing.reason == f"{CONFIDENTIAL_H100} is not offered in westeurope (Compute resource SKUs)"


def test_a_location_restriction_keeps_the_size_from_the_subscription() -> None:
    a100 = find_size(A100)
    assert a100 is not None
    restricted = sku(A100, HyperVGenerations="V2")
    restricted["restrictions"] = [
        {"type": "Zone", "values": ["westeurope"], "reasonCode": "NotAvailableForSubscription"},
        {"type": "Location", "values": ["westeurope"], "reasonCode": "NotAvailableForSubscription"},
    ]
    [missing] = region_missing([restricted], a100, "westeurope")
    assert missing.reason.endswith(
        "not available to this subscription in westeurope (NotAvailableForSubscription)"
    )


@pytest.mark.parametrize(
    ("name", "capabilities", "says"),
    [
        (A100, {"HyperVGenerations": "V1"}, "is not a Generation 2 size"),
        (
            A100,
            {"HyperVGenerations": "V2", "TrustedLaunchDisabled": "True"},
            "does not support Trusted Launch",
        ),
        (CONFIDENTIAL_H100, {"ConfidentialComputingType": "TDX"}, "is not an AMD SEV-SNP confidential size"),
        (CONFIDENTIAL_H100, {}, "(none)"),
    ],
)
def test_capabilities_must_fit_the_level(name: str, capabilities: dict[str, str], says: str) -> None:
    size = find_size(name)
    assert size is not None
    [missing] = region_missing([sku(name, **capabilities)], size, "westeurope")
    assert says in missing.reason and missing.item == "size"
