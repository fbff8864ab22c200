"""This machine, where the build stage runs: root, the tools, its Debian release, architecture,
installed packages and Python."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .report import ImageBuildError


def require_root_and_tools() -> None:
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building the images needs root (mmdebstrap's root mode, bwrap without a user namespace)"
        )
    for tool in ("mmdebstrap", "bwrap", "dpkg", "dpkg-query"):
        if shutil.which(tool) is None:
            raise ImageBuildError(f"{tool} is not installed: run `make deps` (APT_PACKAGES in the Makefile)")


def dpkg_architecture() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def host_release() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.partition("=")[2].strip('"')
    return "unknown"


def installed_versions(packages: Sequence[str]) -> dict[str, str]:
    versions: dict[str, str] = {}
    missing: list[str] = []
    for package in packages:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}\t${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        status, _, version = proc.stdout.partition("\t")
        if proc.returncode != 0 or not status.endswith(" installed"):
            missing.append(package)
        else:
            versions[package] = version
    if missing:
        raise ImageBuildError(
            f"the build stage runs on this machine and needs the Debian packages {' '.join(missing)}: "
            "run `make deps` (APT_PACKAGES in the Makefile)"
        )
    return versions


def host_python() -> str:
    proc = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print(sys.version)"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise ImageBuildError("the build stage needs Debian's /usr/bin/python3: run `make deps`")
    return proc.stdout.strip()
