"""The image's root filesystem: mmdebstrap for the final stage's FROM and apt-get lines, then its
COPY --from and RUN lines in bwrap; each cached, with the files they make dated to the base's epoch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .cache import BUILDER_VERSION, cache_key, finish_entry, is_cached, prune, remove_tree
from .debian import archive_state, mmdebstrap_command
from .host import dpkg_architecture
from .report import ImageBuildError, note
from .repository import display
from .sandbox import rootfs_sandbox, run_logged
from .spec import DEFAULT_PATH, Copy, ImageSpec, Run
from .wheels import BuildOutputs


@dataclass(frozen=True)
class BaseRootfs:
    key: str
    path: Path


def base_rootfs(spec: ImageSpec, cache: Path) -> BaseRootfs:
    """The final stage's Debian packages, by mmdebstrap (cached per state of the Debian archive; when
    the archive cannot be reached, the newest rootfs cached for the same packages, with a warning)."""
    stage = spec.final
    architecture = dpkg_architecture()
    mmdebstrap_version = subprocess.run(
        ["mmdebstrap", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    static = {
        "builder": BUILDER_VERSION,
        "kind": "rootfs",
        "mmdebstrap": mmdebstrap_version,
        "epoch": stage.base.epoch,
        "command": mmdebstrap_command(spec, architecture, Path("/rootfs")),
    }
    prefix = f"rootfs-{stage.base.release}-{cache_key(static)[:12]}"
    try:
        archive = archive_state(stage.base.release, architecture)
    except ImageBuildError as exc:
        cached = sorted(
            (p for p in cache.glob(f"{prefix}-*") if (p / "done.json").is_file()),
            key=lambda p: (p / "done.json").stat().st_mtime,
        )
        if not cached:
            raise
        note(f"warning: {exc}; using the rootfs cached in {cached[-1]}")
        inputs = json.loads((cached[-1] / "done.json").read_text())
        return BaseRootfs(cache_key(inputs), cached[-1] / "rootfs")
    inputs = {**static, "archive": archive}
    key = cache_key(inputs)
    entry = cache / f"{prefix}-{key[:16]}"
    if is_cached(entry):
        return BaseRootfs(key, entry / "rootfs")
    note(f"{spec.name}: mmdebstrap {stage.base.release} {' '.join(stage.apt_packages)} (about a minute) ...")
    with tempfile.TemporaryDirectory(dir=cache, prefix="tmp-rootfs-") as tmp_name:
        work = Path(tmp_name) / "entry"
        (work / "rootfs").mkdir(parents=True)
        since = time.time() - 2
        env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "TMPDIR")}
        env["SOURCE_DATE_EPOCH"] = str(stage.base.epoch)
        run_logged(
            mmdebstrap_command(spec, architecture, work / "rootfs"),
            work / "mmdebstrap.log",
            "mmdebstrap",
            env=env,
        )
        _touch_created(work / "rootfs", since, stage.base.epoch)
        finish_entry(work, entry, inputs)
    prune(cache, f"rootfs-{stage.base.release}", keep=4)
    return BaseRootfs(key, entry / "rootfs")


# Rewrite the .pyc files Debian's packages compiled (timestamp-based: they would go stale if the layer's
# clamped mtimes changed their sources' times) as hash-based ones; run with PYTHONHASHSEED=0.
_RECOMPILE = """
import importlib.util, py_compile, sys
from pathlib import Path
count = 0
for pyc in sorted(Path(sys.argv[1]).rglob("__pycache__/*.pyc")):
    try:
        source = importlib.util.source_from_cache(str(pyc))
    except ValueError:
        continue
    if not Path(source).is_file():
        continue
    levels = [int(p[4:]) for p in pyc.name.split(".") if p.startswith("opt-")]
    py_compile.compile(source, cfile=str(pyc), dfile=source, doraise=True, optimize=levels[0] if levels else 0,
                       invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    count += 1
print(f"{count} .pyc rewritten")
"""


def image_rootfs(
    spec: ImageSpec, cache: Path, base: BaseRootfs, outputs: BuildOutputs, *, into: Path | None = None
) -> Path:
    """The rootfs after the final stage's COPY and RUN lines (cached; with `into`, built afresh there)."""
    stage = spec.final
    inputs = {
        "builder": BUILDER_VERSION,
        "kind": "image",
        "base": base.key,
        "outputs": outputs.key,
        "steps": [
            [s.command, s.env, s.workdir] if isinstance(s, Run) else [list(s.sources), s.dest, s.from_stage]
            for s in stage.steps
        ],
        "finalize": _RECOMPILE,
    }
    key = cache_key(inputs)
    entry = cache / f"image-{spec.name}-{key[:24]}"
    if into is None and is_cached(entry):
        return entry / "rootfs"
    note(f"{spec.name}: the final stage's steps (venv, byte-compile, user) ...")
    parent = cache if into is None else into.parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix="tmp-image-") as tmp_name:
        work = Path(tmp_name) / "entry"
        work.mkdir()
        rootfs = work / "rootfs"
        subprocess.run(["cp", "-a", "--reflink=auto", str(base.path), str(rootfs)], check=True)
        since = time.time() - 2
        log = work / "steps.log"
        for step in stage.steps:
            if isinstance(step, Copy):
                for source in step.sources:
                    target = rootfs / step.dest.lstrip("/")
                    shutil.copytree(outputs.dirs[source], target, dirs_exist_ok=True)
                continue
            env = {"HOME": "/root", "SOURCE_DATE_EPOCH": str(stage.base.epoch), **dict(step.env)}
            run_logged(
                rootfs_sandbox(rootfs, ["/bin/sh", "-c", step.command], env, step.workdir),
                log,
                f"{display(spec.dockerfile)}:{step.line} (RUN)",
            )
        plain = {"PATH": DEFAULT_PATH, "HOME": "/root", "PYTHONHASHSEED": "0"}
        run_logged(
            rootfs_sandbox(rootfs, ["/usr/bin/python3", "-c", _RECOMPILE, "/usr"], plain, "/"), log, "pyc"
        )
        run_logged(rootfs_sandbox(rootfs, ["/sbin/ldconfig"], plain, "/"), log, "ldconfig")
        _touch_created(rootfs, since, stage.base.epoch)
        if into is not None:
            if into.exists():
                remove_tree(into)
            rootfs.rename(into)
            return into
        finish_entry(work, entry, inputs)
    prune(cache, f"image-{spec.name}")
    return entry / "rootfs"


def _touch_created(root: Path, since: float, epoch: int) -> None:
    """Give every entry created or changed since `since` the time `epoch`: what a build makes then
    depends on its inputs only, not on when it ran (packaged files keep their packaged times)."""
    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(directory, name)
            if os.lstat(path).st_mtime >= since:
                os.utime(path, (epoch, epoch), follow_symlinks=False)
    if os.lstat(root).st_mtime >= since:
        os.utime(root, (epoch, epoch))
