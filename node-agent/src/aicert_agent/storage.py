"""Which storage backs a PersistentVolume, and whether two PVs share it. Pure.

Exclusivity of a run's claims cannot be judged by claim name: two static PVs can point at one NFS
export (or one at a subdirectory of the other's), a provisioner may take its path from a tenant's
annotations, and a PV in another namespace's hands is invisible to a check by name. So the agent
compares what backs each PV: a CSI driver and volume handle, an NFS server and path, a node path
(`local` and `hostPath`), an Azure disk URI or file share, ... Paths overlap when one contains the
other. A volume source this module does not know is identified by its PV name alone, which is
what a check by claim had.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aicert_agent.pod_check import Problem
from aicert_contract.status import Reason

WRITABLE_MODES = frozenset({"ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"})


@dataclass(frozen=True)
class Backing:
    kind: str  # e.g. "csi file.csi.azure.com", "nfs 10.0.0.4", "node path"
    location: str  # the volume handle, or a normalized absolute path
    tree: bool = False  # a path: it overlaps the paths above and below it

    def overlaps(self, other: Backing) -> bool:
        if self.kind != other.kind:
            return False
        if self.location == other.location:
            return True
        if not self.tree:
            return False
        a, b = self.location.rstrip("/") + "/", other.location.rstrip("/") + "/"
        return a.startswith(b) or b.startswith(a)

    def __str__(self) -> str:
        return f"{self.kind} {self.location}"


def _path(value: Any) -> str:
    return posixpath.normpath("/" + str(value or "").strip("/"))


def backing(pv: Mapping[str, Any]) -> Backing:
    spec = pv.get("spec") or {}
    name = str((pv.get("metadata") or {}).get("name"))
    if csi := spec.get("csi"):
        return Backing(f"csi {csi.get('driver')}", str(csi.get("volumeHandle")))
    if nfs := spec.get("nfs"):
        return Backing(f"nfs {nfs.get('server')}", _path(nfs.get("path")), tree=True)
    for source in ("local", "hostPath"):  # both are paths on a node's filesystem
        if found := spec.get(source):
            return Backing("node path", _path(found.get("path")), tree=True)
    if disk := spec.get("azureDisk"):
        return Backing("azureDisk", str(disk.get("diskURI")).lower())
    if share := spec.get("azureFile"):
        return Backing("azureFile", str(share.get("shareName")))
    if cephfs := spec.get("cephfs"):
        monitors = ",".join(sorted(cephfs.get("monitors") or []))
        return Backing(f"cephfs {monitors}", _path(cephfs.get("path")), tree=True)
    if iscsi := spec.get("iscsi"):
        return Backing("iscsi", f"{iscsi.get('targetPortal')} {iscsi.get('iqn')} {iscsi.get('lun')}")
    if rbd := spec.get("rbd"):
        return Backing("rbd", f"{rbd.get('pool') or 'rbd'}/{rbd.get('image')}")
    return Backing("pv", name)


def _modes(obj: Mapping[str, Any]) -> set[str]:
    return set((obj.get("spec") or {}).get("accessModes") or [])


def shared_storage_problem(
    claims: Mapping[str, Mapping[str, Any]],
    volumes: Iterable[Mapping[str, Any]],
    *,
    inputs: Iterable[str],
    output_claim: str | None,
) -> Problem | None:
    """`claims`: name -> PVC for every input claim and `output_claim`; `volumes`: every PV of the
    cluster. The output's storage must back no other PV at all (any of them could be mounted by
    anyone at any time during the run); an input's storage no other PV that can be written."""
    by_name = {str((v.get("metadata") or {}).get("name")): v for v in volumes}
    ours: dict[str, tuple[str, Backing]] = {}  # claim -> (PV name, backing)
    for claim, pvc in claims.items():
        pv_name = str((pvc.get("spec") or {}).get("volumeName") or "")
        if pv_name in by_name:
            ours[claim] = (pv_name, backing(by_name[pv_name]))
    own_pvs = {pv for pv, _ in ours.values()}
    output = ours.get(output_claim) if output_claim else None
    if output is not None:
        for claim, (_, found) in ours.items():
            if claim != output_claim and found.overlaps(output[1]):
                return Problem(
                    Reason.OUTPUT_NOT_EXCLUSIVE,
                    f"output claim {output_claim} and claim {claim} are backed by the same storage ({found})",
                )
    for name, volume in by_name.items():
        if name in own_pvs:
            continue
        other = backing(volume)
        bound = (volume.get("spec") or {}).get("claimRef") or {}
        holder = f"PV {name}" + (f" (claim {bound.get('namespace')}/{bound.get('name')})" if bound else "")
        if output is not None and other.overlaps(output[1]):
            return Problem(
                Reason.OUTPUT_NOT_EXCLUSIVE,
                f"{holder} is backed by the storage of output claim {output_claim} ({other}): "
                "anyone could write into the run's output through it",
            )
        for claim in inputs:
            mine = ours.get(claim)
            if mine is not None and other.overlaps(mine[1]) and _modes(volume) & WRITABLE_MODES:
                return Problem(
                    Reason.INPUT_NOT_EXCLUSIVE,
                    f"{holder} is backed by the storage of input claim {claim} ({other}) and can be written "
                    f"({', '.join(sorted(_modes(volume) & WRITABLE_MODES))})",
                )
    return None
