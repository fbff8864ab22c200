"""What an AKS agent pool needs before AICert can certify trainings on it, and the pool to ask for.

Pure: pools are the JSON ARM returns and accepts (`{"name": …, "properties": {…}}`), so these
decisions are tested without Azure. Requirements, for both levels:

- the size: a Trusted Launch size with `securityProfile.enableVTPM` and `enableSecureBoot` on
  (`vtpm`), or an AMD SEV-SNP confidential VM size (`cvm`, which also meets `vtpm`: its vTPM lives
  in the confidential VM, and AKS refuses the Trusted Launch flags on it);
- Linux, Ubuntu or Azure Linux, as AKS requires for Trusted Launch and confidential VMs;
- the node label `aicert.dev/agent=true`, which the agent DaemonSet selects;
- on GPU sizes: the taint `sku=gpu:NoSchedule` (AICert's training pods tolerate it) and the GPU
  driver left to the NVIDIA GPU Operator (`gpuProfile.driver: None`): AKS's own driver install is
  incompatible with Secure Boot and with confidential GPUs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aicert.aks.sizes import LEVEL_RANK, LEVELS, Level, VmSize, describe_level, find_size, series_for

AGENT_LABEL: Final = ("aicert.dev/agent", "true")
GPU_TAINT: Final = "sku=gpu:NoSchedule"
GPU_DRIVER_SKIPPED: Final = "None"  # gpuProfile.driver: AKS does not install the NVIDIA driver
LEGACY_SKIP_DRIVER_TAG: Final = "SkipGPUDriverInstall"  # the node pool tag AKS retired in 2025
DEFAULT_OS_SKU: Final = "Ubuntu"
OS_SKUS: Final[dict[Level, tuple[str, ...]]] = {
    "vtpm": ("Ubuntu", "Ubuntu2204", "Ubuntu2404", "AzureLinux", "AzureLinux3"),
    "cvm": ("Ubuntu", "Ubuntu2404", "AzureLinux", "AzureLinux3"),  # AKS has no CVM image of 22.04
}
# Properties ARM reports but a PUT must not carry back (read-only, or stale once the pool changes).
_NOT_SENT_BACK: Final = frozenset(
    {"provisioningState", "currentOrchestratorVersion", "eTag", "nodeImageVersion", "status"}
)


@dataclass(frozen=True)
class Missing:
    """One thing a pool lacks: `item` is a stable name (`no-vtpm`, `no-secure-boot`, `size`,
    `no-gpu`, `gpu`, `gpu-driver`, `label`, `taint`, `os`, `count`), `reason` says what and how."""

    item: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"item": self.item, "reason": self.reason}


@dataclass(frozen=True)
class Assessment:
    pool: str
    vm_size: str
    level: Level  # the level asked about
    supports: Level | None  # the highest level the pool meets, None if neither
    missing: tuple[Missing, ...]  # what it lacks for `level`; empty when it is fit

    @property
    def fit(self) -> bool:
        return not self.missing

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.pool,
            "vmSize": self.vm_size,
            "supports": self.supports,
            "fit": self.fit,
            "missing": [m.to_json() for m in self.missing],
        }


class NodePoolRefused(ValueError):
    """The pool asked for cannot be certified on, or cannot be had; `missing` says why."""

    def __init__(self, missing: list[Missing]) -> None:
        super().__init__("; ".join(m.reason for m in missing))
        self.missing = tuple(missing)


def _properties(pool: Mapping[str, Any]) -> Mapping[str, Any]:
    props = pool.get("properties")
    return props if isinstance(props, Mapping) else {}


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _one_of(names: list[str] | tuple[str, ...]) -> str:
    return ", ".join(names)


def _size_missing(size_name: str, size: VmSize | None, level: Level) -> list[Missing]:
    if size is None:
        return [
            Missing(
                "size",
                f"{size_name or 'no VM size'} is not in AICert's catalogue of {describe_level(level)} sizes "
                f"(series {_one_of(series_for(level))})",
            )
        ]
    if LEVEL_RANK[size.level] < LEVEL_RANK[level]:
        return [
            Missing(
                "size",
                f"{size.name} is not a confidential VM size: level {level} needs one of the series "
                f"{_one_of(series_for(level))}; AKS cannot change a pool's size, so create a new pool",
            )
        ]
    return []


def _trusted_launch_missing(props: Mapping[str, Any]) -> list[Missing]:
    security = _mapping(props.get("securityProfile"))
    missing = []
    if security.get("enableVTPM") is not True:
        missing.append(
            Missing(
                "no-vtpm",
                "no vTPM: securityProfile.enableVTPM is not true "
                "(az aks nodepool update --enable-vtpm, on a pool created with a Trusted Launch image)",
            )
        )
    if security.get("enableSecureBoot") is not True:
        missing.append(
            Missing(
                "no-secure-boot",
                "no Secure Boot: securityProfile.enableSecureBoot is not true "
                "(az aks nodepool update --enable-secure-boot)",
            )
        )
    return missing


def _os_missing(props: Mapping[str, Any], level: Level) -> list[Missing]:
    os_type = str(props.get("osType") or "Linux")
    os_sku = str(props.get("osSKU") or DEFAULT_OS_SKU)
    if os_type.casefold() != "linux":
        return [Missing("os", f"OS {os_type}: AKS offers Trusted Launch and confidential VMs on Linux only")]
    allowed = OS_SKUS[level]
    if os_sku.casefold() not in {sku.casefold() for sku in allowed}:
        return [Missing("os", f"OS SKU {os_sku}: a {level} pool needs one of {_one_of(allowed)}")]
    return []


def _driver_skipped(props: Mapping[str, Any]) -> bool:
    """gpuProfile.driver is "None" (absent means AKS installs it), or the retired tag says skip."""
    driver = _mapping(props.get("gpuProfile")).get("driver")
    legacy_tag = _mapping(props.get("tags")).get(LEGACY_SKIP_DRIVER_TAG)
    return (isinstance(driver, str) and driver.casefold() == GPU_DRIVER_SKIPPED.casefold()) or (
        isinstance(legacy_tag, str) and legacy_tag.casefold() == "true"
    )


def _gpu_missing(props: Mapping[str, Any], size: VmSize, gpu: bool) -> list[Missing]:
    if size.gpus == 0:
        if not gpu:
            return []
        return [Missing("no-gpu", f"no GPU: {size.name} has none (check CPU pools with --no-gpu)")]
    missing = []
    taints = props.get("nodeTaints") or []
    if GPU_TAINT not in taints:
        missing.append(
            Missing(
                "taint",
                f"no taint {GPU_TAINT} on a GPU pool, which AICert's training pods tolerate "
                f"(az aks nodepool update --node-taints {GPU_TAINT})",
            )
        )
    if not _driver_skipped(props):
        missing.append(
            Missing(
                "gpu-driver",
                "AKS installs the GPU driver (gpuProfile.driver is not None): Secure Boot and confidential "
                "GPUs need the NVIDIA GPU Operator to install it; create the pool with --gpu-driver none",
            )
        )
    return missing


def _label_missing(props: Mapping[str, Any]) -> list[Missing]:
    key, value = AGENT_LABEL
    if _mapping(props.get("nodeLabels")).get(key) == value:
        return []
    return [
        Missing(
            "label",
            f"no node label {key}={value}, which the agent DaemonSet selects "
            f"(az aks nodepool update --labels {key}={value})",
        )
    ]


def missing_for(pool: Mapping[str, Any], level: Level, *, gpu: bool = True) -> list[Missing]:
    """What `pool` lacks for certified trainings at `level` (needing a GPU unless `gpu` is False)."""
    props = _properties(pool)
    size_name = str(props.get("vmSize") or "")
    size = find_size(size_name)
    missing = _size_missing(size_name, size, level)
    if level == "vtpm" and (size is None or size.level == "vtpm"):
        missing += _trusted_launch_missing(props)
    missing += _os_missing(props, size.level if size else level)
    if size is not None:  # whether an unknown size has a GPU is unknown: its size is reported
        missing += _gpu_missing(props, size, gpu)
    missing += _label_missing(props)
    return missing


def assess(pool: Mapping[str, Any], level: Level, *, gpu: bool = True) -> Assessment:
    """Whether `pool` is fit for trainings at `level`, the highest level it meets, and what it
    lacks for `level`."""
    props = _properties(pool)
    supports = next((each for each in reversed(LEVELS) if not missing_for(pool, each, gpu=gpu)), None)
    return Assessment(
        pool=str(pool.get("name") or "?"),
        vm_size=str(props.get("vmSize") or ""),
        level=level,
        supports=supports,
        missing=tuple(missing_for(pool, level, gpu=gpu)),
    )


def _request_missing(level: Level, vm_size: str, count: int, gpu: bool | None) -> list[Missing]:
    size = find_size(vm_size)
    if size is None:
        return _size_missing(vm_size, None, level) + ([] if count >= 1 else [_count_missing(count)])
    missing = []
    if size.level != level:
        missing.append(
            Missing(
                "size",
                f"{size.name} is a {describe_level(size.level)} size, for --level {size.level}; for --level "
                f"{level} use a size of the series {_one_of(series_for(level, gpu=size.gpus > 0))}",
            )
        )
    if gpu is True and size.gpus == 0:
        missing.append(
            Missing(
                "no-gpu",
                f"no GPU: {size.name} has none; GPU series for {level}: {_one_of(series_for(level, gpu=True))}",
            )
        )
    if gpu is False and size.gpus > 0:
        missing.append(Missing("gpu", f"--no-gpu, but {size.name} has {size.gpus} GPU(s)"))
    if count < 1:
        missing.append(_count_missing(count))
    return missing


def _count_missing(count: int) -> Missing:
    return Missing("count", f"a node count of {count}: a pool to certify on needs at least 1 node")


def nodepool_body(
    level: Level,
    vm_size: str,
    count: int,
    *,
    gpu: bool | None = None,
    os_sku: str | None = None,
    existing: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The agent pool to PUT for certified trainings at `level` on `count` nodes of `vm_size`.

    `gpu` None takes it from the size; True or False must agree with the size. `os_sku` is for a
    new pool (default Ubuntu). With `existing` (the pool as ARM returned it) the pool is updated:
    its settings are kept, AICert's label, taint, GPU driver setting and Trusted Launch flags are
    added, and the count set. Raises `NodePoolRefused` listing what is wrong."""
    missing = _request_missing(level, vm_size, count, gpu)
    size = find_size(vm_size)
    if missing or size is None:
        raise NodePoolRefused(missing)
    if existing is None:
        props: dict[str, Any] = {
            "type": "VirtualMachineScaleSets",  # Trusted Launch needs scale sets, not availability sets
            "mode": "User",
            "osType": "Linux",
            "osSKU": os_sku or DEFAULT_OS_SKU,
        }
    else:
        props = {k: v for k, v in _properties(existing).items() if k not in _NOT_SENT_BACK}
        missing += _unchangeable(props, size, os_sku)
    props["vmSize"] = size.name
    props["count"] = count
    key, value = AGENT_LABEL
    props["nodeLabels"] = {**_mapping(props.get("nodeLabels")), key: value}
    if size.gpus:
        taints = list(props.get("nodeTaints") or [])
        props["nodeTaints"] = taints if GPU_TAINT in taints else [*taints, GPU_TAINT]
        props["gpuProfile"] = {**_mapping(props.get("gpuProfile")), "driver": GPU_DRIVER_SKIPPED}
    if size.level == "vtpm":
        props["securityProfile"] = {
            **_mapping(props.get("securityProfile")),
            "enableVTPM": True,
            "enableSecureBoot": True,
        }
    body = {"properties": props}
    missing += missing_for(body, level, gpu=size.gpus > 0)
    if missing:
        raise NodePoolRefused(missing)
    return body


def _unchangeable(props: Mapping[str, Any], size: VmSize, os_sku: str | None) -> list[Missing]:
    """What an update cannot change on an existing pool."""
    missing = []
    current_size = str(props.get("vmSize") or "")
    if current_size.casefold() != size.name.casefold():
        missing.append(
            Missing(
                "size",
                f"the pool exists with size {current_size}: AKS cannot change a pool's size; "
                "choose another --nodepool name or delete this pool",
            )
        )
    current_os = str(props.get("osSKU") or DEFAULT_OS_SKU)
    if os_sku is not None and os_sku.casefold() != current_os.casefold():
        missing.append(Missing("os", f"the pool exists with OS SKU {current_os}, not {os_sku}"))
    return missing
