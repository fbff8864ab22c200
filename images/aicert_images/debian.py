"""The Debian side of the final stage's FROM and apt-get lines: the mmdebstrap command that stands
for them, with the dpkg filters of Debian's slim images, and the state of the archive it reads."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path

from .report import ImageBuildError
from .spec import ImageSpec

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
MMDEBSTRAP_VARIANT = "minbase"
# What Debian's slim images leave out, and keep (debuerreotype's .slimify-excludes/.slimify-includes),
# as dpkg path filters: they stay in the image's dpkg config, as in the slim images.
SLIM_DPKG_OPTIONS = (
    *(
        f"path-exclude={path}"
        for path in (
            "/usr/share/doc/*",
            "/usr/share/groff/*",
            "/usr/share/info/*",
            "/usr/share/linda/*",
            "/usr/share/lintian/overrides/*",
            "/usr/share/locale/*",
            "/usr/share/man/*",
        )
    ),
    *(
        f"path-include={path}"
        for path in (
            "/usr/share/doc/*/copyright",
            "/usr/share/doc/kde/HTML/C/*",
            "/usr/share/gnome/help/*/C/*",
            "/usr/share/locale/all_languages",
            "/usr/share/locale/currency/*",
            "/usr/share/locale/l10n/*",
            "/usr/share/locale/languages",
            "/usr/share/locale/locale.alias",
            "/usr/share/omf/*/*-C.emf",
        )
    ),
)
APT_OPTIONS = ('Acquire::Languages "none"',)
# The container runtime provides these; a copy of the build machine's would make the image differ.
MMDEBSTRAP_HOOKS = ('rm -f "$1/etc/resolv.conf" "$1/etc/hostname"',)


def _suites(release: str) -> list[tuple[str, str]]:
    return [
        (DEBIAN_MIRROR, release),
        (DEBIAN_MIRROR, f"{release}-updates"),
        (DEBIAN_SECURITY_MIRROR, f"{release}-security"),
    ]


def archive_state(release: str, architecture: str) -> dict[str, list[str]]:
    """The package indexes each suite's InRelease lists (their sha256): the archive's content, which
    changes with a point release or a security update, and not otherwise."""
    state: dict[str, list[str]] = {}
    wanted = re.compile(
        rf" ([0-9a-f]{{64}}) +\d+ (main/binary-(?:{re.escape(architecture)}|all)/Packages\S*)"
    )
    for mirror, suite in _suites(release):
        url = f"{mirror}/dists/{suite}/InRelease"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                text = response.read().decode("utf-8", errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            raise ImageBuildError(f"cannot read {url}: {exc} (the Debian archive must be reachable)") from exc
        section = text.partition("\nSHA256:\n")[2]
        lines = sorted({f"{m.group(2)} {m.group(1)}" for m in wanted.finditer(section)})
        if not lines:
            raise ImageBuildError(f"{url} lists no main/binary-{architecture} package index")
        state[f"{mirror} {suite}"] = lines
    return state


def mmdebstrap_command(spec: ImageSpec, architecture: str, target: Path) -> list[str]:
    """The mmdebstrap that stands for the final stage's FROM and apt-get lines."""
    stage = spec.final
    return [
        "mmdebstrap",
        "--mode=root",
        "--format=directory",
        f"--variant={MMDEBSTRAP_VARIANT}",
        f"--architectures={architecture}",
        f"--include={','.join(stage.apt_packages)}",
        *[f"--dpkgopt={o}" for o in SLIM_DPKG_OPTIONS],
        *[f"--aptopt={o}" for o in APT_OPTIONS],
        *[f"--customize-hook={h}" for h in MMDEBSTRAP_HOOKS],
        stage.base.release,
        str(target),
        *[f"deb {mirror} {suite} main" for mirror, suite in _suites(stage.base.release)],
    ]
