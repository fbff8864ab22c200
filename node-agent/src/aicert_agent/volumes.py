"""Where kubelet keeps a pod's volumes on the host (the agent measures them there).

<root>/pods/<pod uid>/volumes/kubernetes.io~empty-dir/<volume name>
<root>/pods/<pod uid>/volumes/kubernetes.io~<plugin>/<pv name>[/mount]   (PVCs: local, csi, …)
"""

from __future__ import annotations

from pathlib import Path


class VolumeNotFound(Exception):
    pass


def pod_volumes_dir(kubelet_root: Path, pod_uid: str) -> Path:
    return kubelet_root / "pods" / pod_uid / "volumes"


def empty_dir_path(kubelet_root: Path, pod_uid: str, volume: str) -> Path:
    return pod_volumes_dir(kubelet_root, pod_uid) / "kubernetes.io~empty-dir" / volume


def pvc_path(kubelet_root: Path, pod_uid: str, pv_name: str) -> Path:
    """The mounted PV: the one plugin directory holding it (CSI volumes mount under `mount/`)."""
    base = pod_volumes_dir(kubelet_root, pod_uid)
    found = sorted(p for p in base.glob(f"*/{pv_name}") if p.is_dir())
    if len(found) != 1:
        raise VolumeNotFound(
            f"PV {pv_name} is {'not mounted' if not found else 'mounted twice'} under {base}"
        )
    path = found[0]
    return path / "mount" if path.parent.name == "kubernetes.io~csi" else path
