"""The writable root filesystems of a pod's containers whose image brings its own root: for each
container start, a fresh overlay (lower: the image's extracted root, read-only and shared by every
container of the image; upper: a new directory of this container) mounted at
`<pod_dir>/rootfs/<container>/merged`, which the sandbox binds as `/`. What a container writes there
never reaches the image or another container, and goes at teardown, as a container runtime's
writable layer does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .volumes import mount_overlay, safe_rmtree, unmount

# overlayfs takes its directories in a comma- and colon-separated option string
_OPTION_SAFE = re.compile(r"[^,:\\\s]+")


class ContainerRoots:
    def __init__(self, pod_dir: Path) -> None:
        self._dir = pod_dir / "rootfs"
        self._mounted: dict[str, Path] = {}

    def mount(self, container: str, image_root: Path) -> Path:
        """A fresh writable root over `image_root` for `container` (its earlier one, if any, is gone)."""
        base = self._dir / container
        for path in (image_root, base):
            if not _OPTION_SAFE.fullmatch(str(path)):
                raise OSError(
                    f"{path}: an overlay directory must not contain a comma, colon, backslash or space"
                )
        if container in self._mounted:
            unmount(self._mounted.pop(container))
        safe_rmtree(base)
        upper, work, merged = base / "upper", base / "work", base / "merged"
        for directory in (upper, work, merged):
            directory.mkdir(parents=True)
        mount_overlay(image_root, upper, work, merged)
        self._mounted[container] = merged
        return merged

    def teardown(self, on_error: Callable[[str], None]) -> None:
        """Unmount every container's root (a failure goes to `on_error`) and remove their layers."""
        for container, merged in list(self._mounted.items()):
            try:
                unmount(merged)
            except OSError as exc:
                on_error(f"unmount {merged}: {exc}")
            del self._mounted[container]
        safe_rmtree(self._dir)
