"""The build stage, on this machine: its COPY lines from the checkout, its RUN lines (pip wheel) in
bwrap, and the directories the final stage copies from it, cached by their inputs."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .cache import BUILDER_VERSION, cache_key, finish_entry, is_cached, prune
from .host import dpkg_architecture, host_python, host_release, installed_versions
from .report import ImageBuildError, note
from .repository import copy_from_repository, display
from .sandbox import host_sandbox, run_logged
from .spec import ImageSpec, Run

# Environment passed to the build stage (it downloads from PyPI): proxies and pip's index settings.
PASSTHROUGH_ENV = re.compile(
    r"(?:https?_proxy|no_proxy|HTTPS?_PROXY|NO_PROXY|SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE"
    r"|PIP_(?:INDEX_URL|EXTRA_INDEX_URL|TRUSTED_HOST|CERT|CLIENT_CERT|DEFAULT_TIMEOUT|RETRIES|PROXY))"
)


@dataclass(frozen=True)
class BuildOutputs:
    key: str
    dirs: dict[str, Path]  # build-stage path -> the cached copy


def build_stage_outputs(spec: ImageSpec, cache: Path) -> BuildOutputs:
    """Run the build stage on this machine (cached): the directories the final stage copies."""
    stage = spec.build
    if host_release() != stage.base.release:
        raise ImageBuildError(
            f"the build stage of {display(spec.dockerfile)} runs on this machine, which must be Debian "
            f"{stage.base.release} (the wheels link its libraries); this is {host_release()}"
        )
    packages = installed_versions(stage.apt_packages)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="tmp-build-") as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "stage"
        copy_from_repository(spec, root)
        runs = [s for s in stage.steps if isinstance(s, Run)]
        inputs = {
            "builder": BUILDER_VERSION,
            "kind": "build-stage",
            "runs": [[r.command, r.env, r.workdir] for r in runs],
            "copied": _tree_digest(root),
            "outputs": list(spec.outputs),
            "python": host_python(),
            "packages": packages,
            "architecture": dpkg_architecture(),
            "epoch": stage.base.epoch,
        }
        key = cache_key(inputs)
        entry = cache / f"build-{spec.name}-{key[:24]}"
        dirs = {output: entry / "outputs" / _slug(output) for output in spec.outputs}
        if is_cached(entry):
            return BuildOutputs(key, dirs)
        note(f"{spec.name}: the build stage (pip wheel; wheels from PyPI, sdists compiled) ...")
        work = tmp / "entry"
        binds: list[tuple[Path, str]] = []
        workdir_host = root / stage.workdir.lstrip("/")
        workdir_host.mkdir(parents=True, exist_ok=True)
        binds.append((workdir_host, stage.workdir))
        for output in spec.outputs:
            host_dir = work / "outputs" / _slug(output)
            host_dir.mkdir(parents=True)
            binds.append((host_dir, output))
        pip_cache = cache / "pip"
        pip_cache.mkdir(exist_ok=True)
        binds.append((pip_cache, "/var/cache/pip"))
        for run in runs:
            env = {k: v for k, v in os.environ.items() if PASSTHROUGH_ENV.fullmatch(k)}
            env.update(HOME="/root", PIP_CACHE_DIR="/var/cache/pip", SOURCE_DATE_EPOCH=str(stage.base.epoch))
            env.update(run.env)
            run_logged(
                host_sandbox(run, binds, env, network=True),
                tmp / "build.log",
                f"{display(spec.dockerfile)}:{run.line} (build stage RUN)",
            )
        for output in spec.outputs:
            if not any((work / "outputs" / _slug(output)).iterdir()):
                raise ImageBuildError(f"the build stage of {display(spec.dockerfile)} left {output} empty")
        shutil.copy(tmp / "build.log", work / "build.log")
        finish_entry(work, entry, inputs)
    prune(cache, f"build-{spec.name}")
    return BuildOutputs(key, dirs)


def _slug(path: str) -> str:
    return path.strip("/").replace("/", "_") or "root"


def _tree_digest(root: Path) -> str:
    """Paths, executable bits and contents of the files under `root`."""
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(root).as_posix()}\0{os.access(file, os.X_OK)}\0".encode())
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()
