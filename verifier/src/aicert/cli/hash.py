"""`aicert hash PATH`: the manifest and root digest of a model or data set.

Prints a short summary, or with ``--json`` exactly the manifest object ``{"root", "files"}``.
A progress bar goes to stderr when stderr is a terminal. Unusable input exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from aicert.cli.arguments import positive_int
from aicert.digest import (
    INPUT_EXCLUDED,
    MANIFEST_FILE,
    OUTPUT_EXCLUDED,
    DigestError,
    Manifest,
    SymlinkPolicy,
    hash_tree,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "hash",
        help="hash a file or directory tree into a manifest and root digest",
        description=(
            "Hash every file under PATH with sha256 (parallel on all cores) and print the manifest "
            "root digest, i.e. sha256 of the RFC 8785 canonical JSON of the sorted "
            "[{path, size, sha256}] entries. Symlinks are never followed. As in certificates, the "
            f"{MANIFEST_FILE} that aicert writes at the top of an output directory is left out, so the "
            "root printed here is the one a certificate names for an output. An input is measured "
            "whole: for the root a certificate names for an input, add --include-manifest."
        ),
    )
    p.add_argument("path", metavar="PATH", type=Path, help="a directory, or a single regular file")
    p.add_argument(
        "--json", action="store_true", help='print the manifest {"root": ..., "files": [...]} as JSON'
    )
    p.add_argument(
        "--symlinks",
        choices=[m.value for m in SymlinkPolicy],
        default=SymlinkPolicy.REFUSE.value,
        help="refuse (default): a symlink is an error; record: a link is an entry of its own "
        "(sha256 of its target string), and must point inside PATH",
    )
    p.add_argument(
        "--include-manifest",
        action="store_true",
        help=f"hash a top-level {MANIFEST_FILE} too, as certificates do for an input (by default it is "
        "left out, as certificates do for an output)",
    )
    p.add_argument(
        "--workers", type=positive_int, default=None, metavar="N", help="hashing threads (default: cores)"
    )
    p.set_defaults(func=run)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _hash_with_progress(
    path: Path, symlinks: SymlinkPolicy, workers: int | None, exclude: frozenset[str]
) -> Manifest:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("hashing"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=Console(stderr=True),
    )
    task = progress.add_task("hash", total=None)

    def on_total(_files: int, nbytes: int) -> None:
        progress.update(task, total=nbytes)

    done = 0
    last = 0.0

    def advance(n: int) -> None:
        # hash_tree never calls this concurrently; redraw data at most 10 times a second, as a
        # rich update per small file would cost more than hashing it.
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= 0.1:
            last = now
            progress.update(task, completed=done)

    with progress:
        return hash_tree(
            path, symlinks=symlinks, workers=workers, progress=advance, on_total=on_total, exclude=exclude
        )


def run(args: argparse.Namespace) -> int:
    path: Path = args.path
    symlinks = SymlinkPolicy(args.symlinks)
    workers: int | None = args.workers
    exclude = INPUT_EXCLUDED if args.include_manifest else OUTPUT_EXCLUDED
    start = time.perf_counter()
    try:
        if sys.stderr.isatty():
            manifest = _hash_with_progress(path, symlinks, workers, exclude)
        else:
            manifest = hash_tree(path, symlinks=symlinks, workers=workers, exclude=exclude)
    except DigestError as e:
        print(f"aicert hash: error: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start

    if args.json:
        json.dump(manifest.to_json(), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    total = manifest.total_bytes
    rate = f"{_human_bytes(total / elapsed)}/s" if elapsed > 0 else "n/a"
    print(f"root     {manifest.root}")
    print(f"files    {manifest.file_count:,}")
    print(f"bytes    {total:,} ({_human_bytes(total)})")
    print(f"elapsed  {elapsed:.2f} s")
    print(f"speed    {rate}")
    return 0
