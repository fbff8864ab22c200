"""A pod's volumes, laid out like kubelet lays them out under `<kubelet_root>/pods/<uid>/volumes/`:
emptyDir at `kubernetes.io~empty-dir/<volume>` (medium Memory: a real tmpfs, sized by sizeLimit); a
persistentVolumeClaim resolved through its bound PV (`spec.local.path` or `spec.hostPath.path`) and
bind-mounted at `kubernetes.io~local-volume/<pv name>` (remounted read-only when the pod's volume says
readOnly), so writes to the PV directory show through it at once; hostPath as the host path itself;
configMap, secret, downwardAPI and projected volumes (service account tokens from the TokenRequest
API) written once as files under `kubernetes.io~<plugin>/<volume>`. Teardown unmounts what was
mounted, and removes trees only when no mount remains under them. Also the host mount helpers.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from .client import ApiError, log
from .env import PodSource, Retry, config_data, field_value

# --- mounts on the host ---------------------------------------------------------------------------


def _run_tool(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    if proc.returncode != 0:
        raise OSError(f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()}")


def mount_points() -> list[Path]:
    """Every mount point of this process's mount namespace."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.append(Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])))
    return points


def mounts_under(path: Path) -> list[Path]:
    path = Path(os.path.abspath(path))
    return [p for p in mount_points() if p == path or path in p.parents]


def bind_mount(source: Path, target: Path, *, read_only: bool) -> None:
    target.mkdir(parents=True, exist_ok=True)
    _run_tool("mount", "--bind", str(source), str(target))
    if read_only:
        try:
            _run_tool("mount", "-o", "remount,bind,ro", str(target))
        except OSError:
            unmount(target)
            raise


def tmpfs_mount(target: Path, size_bytes: int | None) -> None:
    target.mkdir(parents=True, exist_ok=True)
    options = "mode=0777" + (f",size={size_bytes}" if size_bytes else "")
    _run_tool("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target))


def make_shared(target: Path) -> None:
    """Mounts made under `target` from now on propagate to its copies (containers' HostToContainer)."""
    _run_tool("mount", "--make-rshared", str(target))


def mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    _run_tool("mount", "-t", "overlay", "-o", options, "overlay", str(target))


def unmount(target: Path) -> None:
    try:
        _run_tool("umount", str(target))
    except OSError:
        _run_tool("umount", "-l", str(target))


def safe_rmtree(path: Path) -> None:
    """Remove a directory tree, never through a mount point (unmount those first, or leave the tree)."""
    if not path.exists():
        return
    for point in sorted(mounts_under(path), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            unmount(point)
    if mounts_under(path):
        log.warning("not removing %s: mounts remain under it", path)
        return
    shutil.rmtree(path, ignore_errors=True)


_QUANTITY = re.compile(r"^([0-9.]+(?:[eE][0-9]+)?)([a-zA-Z]*)$")
_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def quantity_bytes(value: object) -> int | None:
    """A Kubernetes quantity ("1Mi", "500M", 1024) in bytes; None when it is not one."""
    match = _QUANTITY.match(str(value).strip())
    if match is None or match.group(2) not in _SUFFIXES:
        return None
    return int(float(match.group(1)) * _SUFFIXES[match.group(2)])


# --- one pod's volumes ----------------------------------------------------------------------------


class PodVolumes:
    """The volumes of one pod: set up (again, until nothing raises `Retry`), looked up by name for
    the containers' mounts, torn down once."""

    def __init__(self, source: PodSource, pod_dir: Path) -> None:
        self._source = source
        self._pod_dir = pod_dir
        self._mounts: list[Path] = []
        self._volumes: dict[str, tuple[Path, bool]] = {}  # name -> (host path, read-only)
        self._torn_down = False

    def __getitem__(self, name: str) -> tuple[Path, bool]:
        """The host path of a volume and whether the volume itself is read-only."""
        return self._volumes[name]

    def _plugin_dir(self, plugin: str, name: str) -> Path:
        return self._pod_dir / "volumes" / f"kubernetes.io~{plugin}" / name

    def setup(self) -> None:
        for volume in self._source.spec.get("volumes") or []:
            name = str(volume["name"])
            if name in self._volumes:
                continue
            if "emptyDir" in volume:
                self._volumes[name] = (self._empty_dir(name, volume["emptyDir"] or {}), False)
            elif "persistentVolumeClaim" in volume:
                self._volumes[name] = self._claim(volume["persistentVolumeClaim"])
            elif "hostPath" in volume:
                self._volumes[name] = (self._host_path(volume["hostPath"]), False)
            elif (
                "configMap" in volume
                or "secret" in volume
                or "downwardAPI" in volume
                or "projected" in volume
            ):
                self._volumes[name] = (self._file_volume(name, volume), True)
            else:
                kinds = sorted(k for k in volume if k != "name")
                raise Retry("ContainerCreating", f"volume {name}: unsupported volume type {kinds}")

    def _empty_dir(self, name: str, source: Mapping[str, Any]) -> Path:
        path = self._plugin_dir("empty-dir", name)
        path.mkdir(parents=True, exist_ok=True)
        if source.get("medium") == "Memory":
            if path not in mount_points():
                tmpfs_mount(path, quantity_bytes(source["sizeLimit"]) if source.get("sizeLimit") else None)
                self._mounts.append(path)
        else:
            os.chmod(path, 0o777)
        return path

    def _claim(self, source: Mapping[str, Any]) -> tuple[Path, bool]:
        claim = str(source["claimName"])
        read_only = bool(source.get("readOnly"))
        kube, namespace = self._source.kube, self._source.namespace
        try:
            pvc = kube.request("GET", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
        except ApiError as exc:
            raise Retry("ContainerCreating", f"persistentvolumeclaim {claim!r}: {exc.message}") from exc
        pv_name = (pvc.get("spec") or {}).get("volumeName")
        if (pvc.get("status") or {}).get("phase") != "Bound" or not pv_name:
            raise Retry("ContainerCreating", f"persistentvolumeclaim {claim!r} is not bound")
        try:
            pv = kube.request("GET", f"/api/v1/persistentvolumes/{pv_name}")
        except ApiError as exc:
            raise Retry("ContainerCreating", f"persistentvolume {pv_name!r}: {exc.message}") from exc
        spec = pv.get("spec") or {}
        if "local" in spec:
            source_path = Path(spec["local"]["path"])
        elif "hostPath" in spec:
            source_path = Path(spec["hostPath"]["path"])
            if spec["hostPath"].get("type") == "DirectoryOrCreate":
                source_path.mkdir(parents=True, exist_ok=True)
        else:
            raise Retry(
                "ContainerCreating", f"persistentvolume {pv_name!r}: only local and hostPath are supported"
            )
        if not source_path.is_dir():
            raise Retry(
                "ContainerCreating", f"persistentvolume {pv_name!r}: {source_path} is not a directory"
            )
        target = self._plugin_dir("local-volume", str(pv_name))
        if target not in mount_points():
            bind_mount(source_path, target, read_only=read_only)
            self._mounts.append(target)
        return target, read_only

    def _host_path(self, source: Mapping[str, Any]) -> Path:
        path = Path(source["path"])
        kind = source.get("type") or ""
        if kind == "DirectoryOrCreate":
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "FileOrCreate" and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        if not path.exists():
            raise Retry("ContainerCreating", f"hostPath {path} does not exist")
        return path

    def _file_volume(self, name: str, volume: Mapping[str, Any]) -> Path:
        files: dict[str, tuple[bytes, int]] = {}
        if "configMap" in volume or "secret" in volume:
            kind, key = ("configmaps", "configMap") if "configMap" in volume else ("secrets", "secret")
            plugin = "configmap" if kind == "configmaps" else "secret"
            source = volume[key]
            default_mode = int(source.get("defaultMode", 0o644))
            files.update(self._projected_config(kind, source, default_mode))
        elif "downwardAPI" in volume:
            plugin = "downward-api"
            source = volume["downwardAPI"]
            files.update(self._downward(source.get("items") or [], int(source.get("defaultMode", 0o644))))
        else:
            plugin = "projected"
            source = volume["projected"]
            default_mode = int(source.get("defaultMode", 0o644))
            for item in source.get("sources") or []:
                if "serviceAccountToken" in item:
                    token = item["serviceAccountToken"]
                    files[str(token["path"])] = (self._token(token).encode(), default_mode)
                elif "configMap" in item:
                    files.update(self._projected_config("configmaps", item["configMap"], default_mode))
                elif "secret" in item:
                    files.update(self._projected_config("secrets", item["secret"], default_mode))
                elif "downwardAPI" in item:
                    files.update(self._downward(item["downwardAPI"].get("items") or [], default_mode))
                else:
                    raise Retry("ContainerCreating", f"volume {name}: unsupported projection {sorted(item)}")
        path = self._plugin_dir(plugin, name)
        path.mkdir(parents=True, exist_ok=True)
        for relative, (data, mode) in files.items():
            target = path / PurePosixPath(relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            os.chmod(target, mode)
        return path

    def _projected_config(
        self, kind: str, source: Mapping[str, Any], default_mode: int
    ) -> dict[str, tuple[bytes, int]]:
        name = source.get("name") or source.get("secretName")
        data = config_data(self._source, kind, str(name), optional=bool(source.get("optional")))
        items = source.get("items")
        if not items:
            return {k: (v, default_mode) for k, v in data.items()}
        files = {}
        for item in items:
            if item["key"] not in data:
                if source.get("optional"):
                    continue
                raise Retry("ContainerCreating", f"{kind} {name}: no key {item['key']!r}")
            files[str(item["path"])] = (data[item["key"]], int(item.get("mode", default_mode)))
        return files

    def _downward(
        self, items: Sequence[Mapping[str, Any]], default_mode: int
    ) -> dict[str, tuple[bytes, int]]:
        files = {}
        for item in items:
            value = (
                field_value(self._source, str(item["fieldRef"]["fieldPath"])) if "fieldRef" in item else ""
            )
            files[str(item["path"])] = (value.encode(), int(item.get("mode", default_mode)))
        return files

    def _token(self, source: Mapping[str, Any]) -> str:
        pod = self._source
        account = pod.spec.get("serviceAccountName") or "default"
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": int(source.get("expirationSeconds", 3607)),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": pod.uid},
            },
        }
        if source.get("audience"):
            body["spec"]["audiences"] = [source["audience"]]
        try:
            review = pod.kube.request(
                "POST", f"/api/v1/namespaces/{pod.namespace}/serviceaccounts/{account}/token", body=body
            )
        except ApiError as exc:
            raise Retry("ContainerCreating", f"service account token for {account}: {exc.message}") from exc
        return str(review["status"]["token"])

    def teardown(self, on_error: Callable[[str], None], keep_files: Callable[[], bool]) -> None:
        """Unmount what was mounted (a failure goes to `on_error`), then remove the volumes'
        directory unless `keep_files()`. Only the first call does anything."""
        if self._torn_down:
            return
        for target in reversed(self._mounts):
            try:
                unmount(target)
            except OSError as exc:
                on_error(f"unmount {target}: {exc}")
        self._mounts.clear()
        if not keep_files():
            safe_rmtree(self._pod_dir / "volumes")
        self._torn_down = True
