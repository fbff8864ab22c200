"""The VM sizes AICert knows an AKS node pool can certify on, and the level each is for.

Two kinds of node give a certificate its level:

- `vtpm`: an Azure Trusted Launch VM (Generation 2, vTPM and Secure Boot on). The families below
  are those Azure lists as supporting Trusted Launch that suit training; the confidential DC/EC
  families cannot use Trusted Launch.
- `cvm`: an AMD SEV-SNP confidential VM, whose vTPM lives inside the encrypted VM: DCasv5, DCadsv5,
  ECasv5, ECadsv5 and, for confidential GPUs, NCCads_H100_v5. (Intel TDX sizes are left out: the
  `cvm` level is an SEV-SNP report.)

The catalogue is deliberately a closed list: a size outside it is refused rather than guessed at.
Whether a region offers a size to a subscription is another question, answered by Azure's Compute
resource SKUs (see `aicert.aks.regions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Level = Literal["vtpm", "cvm"]
LEVELS: Final[tuple[Level, ...]] = ("vtpm", "cvm")
LEVEL_RANK: Final[dict[Level, int]] = {"vtpm": 1, "cvm": 2}  # a cvm node also meets vtpm


@dataclass(frozen=True)
class VmSize:
    name: str  # as Azure spells it, e.g. Standard_NC24ads_A100_v4
    series: str  # e.g. NCads_A100_v4
    gpus: int
    level: Level  # vtpm: a Trusted Launch size; cvm: an SEV-SNP confidential VM size


def _series(series: str, level: Level, sizes: dict[str, int]) -> tuple[VmSize, ...]:
    """`sizes`: each size's name (without `Standard_`) and its number of GPUs."""
    return tuple(VmSize(f"Standard_{name}", series, gpus, level) for name, gpus in sizes.items())


def _cpu(template: str, vcpus: tuple[int, ...]) -> dict[str, int]:
    return {template.format(n): 0 for n in vcpus}


_V5_VCPUS: Final = (2, 4, 8, 16, 32, 48, 64, 96)
_E_V5_VCPUS: Final = (2, 4, 8, 16, 20, 32, 48, 64, 96)

CATALOGUE: Final[tuple[VmSize, ...]] = (
    # Trusted Launch GPU sizes: NVIDIA T4, A100, H100 NVL.
    *_series(
        "NCasT4_v3",
        "vtpm",
        {"NC4as_T4_v3": 1, "NC8as_T4_v3": 1, "NC16as_T4_v3": 1, "NC64as_T4_v3": 4},
    ),
    *_series("NCads_A100_v4", "vtpm", {"NC24ads_A100_v4": 1, "NC48ads_A100_v4": 2, "NC96ads_A100_v4": 4}),
    *_series("NCads_H100_v5", "vtpm", {"NC40ads_H100_v5": 1, "NC80adis_H100_v5": 2}),
    # Trusted Launch CPU sizes (general purpose and memory optimised, x64).
    *_series("Dsv5", "vtpm", _cpu("D{}s_v5", _V5_VCPUS)),
    *_series("Ddsv5", "vtpm", _cpu("D{}ds_v5", _V5_VCPUS)),
    *_series("Dasv5", "vtpm", _cpu("D{}as_v5", _V5_VCPUS)),
    *_series("Dadsv5", "vtpm", _cpu("D{}ads_v5", _V5_VCPUS)),
    *_series("Esv5", "vtpm", _cpu("E{}s_v5", _E_V5_VCPUS)),
    *_series("Edsv5", "vtpm", _cpu("E{}ds_v5", _E_V5_VCPUS)),
    *_series("Easv5", "vtpm", _cpu("E{}as_v5", _E_V5_VCPUS)),
    *_series("Eadsv5", "vtpm", _cpu("E{}ads_v5", _E_V5_VCPUS)),
    # AMD SEV-SNP confidential VMs.
    *_series("DCasv5", "cvm", _cpu("DC{}as_v5", _V5_VCPUS)),
    *_series("DCadsv5", "cvm", _cpu("DC{}ads_v5", _V5_VCPUS)),
    *_series("ECasv5", "cvm", {**_cpu("EC{}as_v5", _E_V5_VCPUS), "EC96ias_v5": 0}),
    *_series("ECadsv5", "cvm", {**_cpu("EC{}ads_v5", _E_V5_VCPUS), "EC96iads_v5": 0}),
    # Confidential GPU: an SEV-SNP VM with an H100 in confidential-computing mode.
    *_series("NCCads_H100_v5", "cvm", {"NCC40ads_H100_v5": 1}),
)

_BY_NAME: Final[dict[str, VmSize]] = {size.name.casefold(): size for size in CATALOGUE}


def find_size(name: str) -> VmSize | None:
    """The catalogue's entry for `name` (any case, `Standard_` prefix required as in ARM)."""
    return _BY_NAME.get(name.casefold())


def series_for(level: Level, *, gpu: bool | None = None) -> list[str]:
    """The series of `level`, in catalogue order; only those with (or without) GPUs if `gpu` is
    given. For messages: "use one of …"."""
    names: list[str] = []
    for size in CATALOGUE:
        if size.level == level and (gpu is None or (size.gpus > 0) == gpu) and size.series not in names:
            names.append(size.series)
    return names


def describe_level(level: Level) -> str:
    return "Trusted Launch" if level == "vtpm" else "confidential VM (AMD SEV-SNP)"
