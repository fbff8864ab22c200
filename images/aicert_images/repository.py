"""The checkout the images are built from: its paths, its commit, the ARG values `make images`
gives, and the build context the build stage's COPY lines read (the repository less .dockerignore)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from .report import ImageBuildError
from .spec import Copy, ImageSpec

REPO = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO / "images"
DOCKERFILES = (IMAGES_DIR / "operator.Dockerfile", IMAGES_DIR / "agent.Dockerfile")
DEFAULT_OUT = REPO / "build" / "images"


def display(path: Path) -> str:
    """`path` relative to the checkout, as messages and the image history name it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def source_date_epoch(default: int) -> int:
    """SOURCE_DATE_EPOCH if set, else the commit's time, else `default` (not a git checkout)."""
    if value := os.environ.get("SOURCE_DATE_EPOCH"):
        if not value.isdigit():
            raise ImageBuildError(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds")
        return int(value)
    out = _git("log", "-1", "--format=%ct")
    return int(out) if out and out.isdigit() else default


def build_args() -> dict[str, str]:
    """The values `make images` gives the Dockerfiles' ARGs: VERSION and REVISION."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {"VERSION": str(project["version"]), "REVISION": _git("rev-parse", "HEAD") or "unknown"}


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def dockerignore_patterns() -> list[re.Pattern[str]]:
    """.dockerignore's patterns (no `!` exceptions), as regexes over repository paths."""
    path = REPO / ".dockerignore"
    patterns: list[re.Pattern[str]] = []
    for number, raw in enumerate(path.read_text().splitlines() if path.exists() else [], start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!"):
            raise ImageBuildError(
                f".dockerignore:{number}: exceptions (!) are not supported by images/build.py"
            )
        regex = ""
        for part in line.strip("/").split("/"):
            if part == "**":
                regex += "(?:[^/]+/)*"
                continue
            regex += re.escape(part).replace(r"\*", "[^/]*").replace(r"\?", "[^/]") + "/"
        patterns.append(re.compile(regex.rstrip("/")))
    return patterns


def is_ignored(relative: str, patterns: Sequence[re.Pattern[str]]) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(p.fullmatch(prefix) for p in patterns for prefix in prefixes)


def copy_from_repository(spec: ImageSpec, root: Path) -> None:
    """The build stage's COPY lines, into `root` standing for the stage's `/`."""
    patterns = dockerignore_patterns()
    for step in spec.build.steps:
        if not isinstance(step, Copy):
            continue
        for source in step.sources:
            origin = REPO / source
            if is_ignored(source, patterns) or not origin.exists():
                where = f"{display(spec.dockerfile)}:{step.line}"
                raise ImageBuildError(
                    f"{where}: {source} is not in the repository (or .dockerignore drops it)"
                )
            target = root / str(copy_target(step, source)).lstrip("/")
            if origin.is_dir():
                for file in sorted(origin.rglob("*")):
                    relative = file.relative_to(REPO).as_posix()
                    if file.is_dir() or is_ignored(relative, patterns):
                        continue
                    destination = target / file.relative_to(origin)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, destination)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)


def copy_target(copy: Copy, source: str) -> PurePosixPath:
    """Where COPY puts `source` (a file into a dest/ directory, a directory's contents into dest)."""
    dest = PurePosixPath(copy.dest)
    if copy.dest.endswith("/") and not (REPO / source).is_dir():
        return dest / PurePosixPath(source).name
    return dest
