"""An image as its Dockerfile defines it: the two stages, their steps, and the final config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The environment of Debian's images (and so of every RUN before an ENV changes it).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LABEL_TITLE = "org.opencontainers.image.title"


@dataclass(frozen=True)
class BaseImage:
    """`debian:<release>-<YYYYMMDD>-slim@sha256:<digest>`: Debian builds that image at 00:00 UTC of
    the tag's date (its SOURCE_DATE_EPOCH), which is also the epoch of the rootfs built here."""

    reference: str
    release: str
    epoch: int
    digest: str


@dataclass(frozen=True)
class Run:
    line: int
    command: str  # verbatim, continuation lines joined, for /bin/sh -c
    env: tuple[tuple[str, str], ...]  # the stage's ENV and ARGs at this point
    workdir: str


@dataclass(frozen=True)
class Copy:
    line: int
    sources: tuple[str, ...]  # repository paths, or absolute paths in the `from_stage` stage
    dest: str  # absolute; ends with "/" when the sources are copied into it
    from_stage: str | None


@dataclass(frozen=True)
class Stage:
    name: str | None
    base: BaseImage
    apt_packages: tuple[str, ...]  # sorted
    steps: tuple[Run | Copy, ...]  # after the apt-get line
    workdir: str
    env: tuple[tuple[str, str], ...]  # the ENV at the end of the stage, PATH first


@dataclass(frozen=True)
class ImageSpec:
    """One image as its Dockerfile defines it."""

    dockerfile: Path
    build: Stage
    final: Stage
    user: str
    labels: tuple[tuple[str, str], ...]  # sorted by name
    entrypoint: tuple[str, ...]
    distribution: str  # the project, as the final stage's pip install names it
    extras: tuple[str, ...]
    requirements: str  # the build stage's --requirement file, as a repository path
    outputs: tuple[str, ...]  # the build stage's directories that the final stage copies

    @property
    def name(self) -> str:
        return dict(self.labels)[LABEL_TITLE]

    @property
    def base(self) -> BaseImage:
        return self.final.base

    @property
    def env(self) -> tuple[tuple[str, str], ...]:
        return self.final.env

    @property
    def workdir(self) -> str:
        return self.final.workdir
