"""Build the operator and agent images without a container daemon and without pulling a base image:
reproducible OCI image layouts under build/images/<name>/, one per images/<x>.Dockerfile.

    python images/build.py                      # both images; prints name@sha256:<manifest digest>
    python images/build.py images/agent.Dockerfile --out DIR
    python images/build.py lock                 # re-resolve images/*.requirements.txt (pip-compile)

One image: its Dockerfile parsed, its rootfs prepared (the build stage, mmdebstrap, the final
stage's steps; each cached, one build at a time per cache), its OCI layout written.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .cache import cache_root, locked, remove_tree
from .dockerfile import parse_dockerfile
from .host import require_root_and_tools
from .layout import Layout, write_layout
from .lock import lock
from .report import ImageBuildError, note
from .repository import DEFAULT_OUT, DOCKERFILES, build_args, display, source_date_epoch
from .rootfs import base_rootfs, image_rootfs
from .spec import ImageSpec
from .wheels import build_stage_outputs


def prepare_rootfs(spec: ImageSpec, cache: Path, *, into: Path | None = None) -> Path:
    """The image's rootfs: build stage, mmdebstrap, final stage (each cached; one build at a time
    per cache). With `into`, the final stage's steps run afresh there (the cache is not used for
    them)."""
    require_root_and_tools()
    with locked(cache):
        for stale in cache.glob("tmp-*"):  # left by a build that was killed
            remove_tree(stale)
        outputs = build_stage_outputs(spec, cache)
        base = base_rootfs(spec, cache)
        return image_rootfs(spec, cache, base, outputs, into=into)


def build(dockerfile: Path, out_root: Path, cache: Path | None = None) -> Layout:
    """Build one image into `out_root`/<name>/."""
    args = build_args()
    spec = parse_dockerfile(dockerfile, args)
    rootfs = prepare_rootfs(spec, cache or cache_root())
    return write_layout(
        spec, rootfs, out_root / spec.name, source_date_epoch(spec.base.epoch), args["VERSION"]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("dockerfiles", nargs="*", help="images/<x>.Dockerfile (default: all), or `lock`")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="where the layouts go (default build/images)"
    )
    options = parser.parse_args(argv)
    try:
        if options.dockerfiles == ["lock"]:
            lock(DOCKERFILES)
            return 0
        dockerfiles = [Path(d) for d in options.dockerfiles] or list(DOCKERFILES)
        for dockerfile in dockerfiles:
            started = time.monotonic()
            layout = build(dockerfile, options.out)
            note(
                f"{layout.name}: {display(layout.path)}, layer {layout.layer.blob.size / 1e6:.1f} MB gzipped "
                f"({layout.layer.uncompressed_size / 1e6:.1f} MB), {time.monotonic() - started:.0f} s"
            )
            print(layout.reference, flush=True)
    except ImageBuildError as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
