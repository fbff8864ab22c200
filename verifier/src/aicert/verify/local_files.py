"""Step 9: the local files (`--model DIR`, `--data NAME=DIR`) against what was certified.

A certificate certifies a root over a file set; the local directory must hash to it. An input is
measured whole; an output leaves out the manifest.json aicert writes beside it. `--ignore PATTERN`
leaves extra local files out of the comparison, never a certified one: when the certified file
names are known (the certified manifest.json beside the outputs, an old proof's outputs) the files
they name are checked whatever the patterns say; when they are not (an input), a pattern that
matches a certified file leaves it out of the local root, which then cannot match, and the failure
names the files the patterns left out. When the files compare, the ones the patterns left out are
returned for the result to list (`IgnoredFiles`), and the check records itself as passed in the
verification's CheckLog. A top-level manifest.json or aicert-certificate.json that is a directory
fails the check: those names are left out of an output's root, and a directory would hide files.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec

from aicert.certificate import InputRecord, OutputRecord
from aicert.digest import (
    INPUT_EXCLUDED,
    MANIFEST_FILE,
    OUTPUT_EXCLUDED,
    DigestError,
    Manifest,
    ManifestError,
    PathPatterns,
    PatternError,
    check_relative_path,
    hash_tree,
)
from aicert.verify.checklog import CheckLog
from aicert.verify.errors import Check, MalformedError, VerificationError
from aicert.verify.result import IgnoredFiles

NO_PATTERNS = PathPatterns()
_LISTING_MAX_BYTES = 256 << 20  # a certified manifest.json larger than this is not read
_SHOWN = 5  # file names shown per kind in a failure


def ignore_patterns(patterns: Iterable[str]) -> PathPatterns:
    """The `--ignore` patterns, checked; raises MalformedError naming the unusable one."""
    try:
        return PathPatterns.parse([patterns] if isinstance(patterns, str) else patterns)
    except PatternError as exc:
        raise MalformedError("--ignore", str(exc)) from None


class LocalTree(msgspec.Struct, frozen=True):
    manifest: Manifest
    ignored: tuple[str, ...]  # local files an --ignore pattern left out, sorted


def _shown(paths: Iterable[str]) -> str:
    listed = sorted(paths)
    return ", ".join(listed[:_SHOWN]) + (" …" if len(listed) > _SHOWN else "")


def _hash_local(
    directory: Path,
    check: Check,
    option: str,
    *,
    exclude: frozenset[str],
    ignore: PathPatterns | None,
    certified: frozenset[str],
) -> LocalTree:
    """Hash DIR, leaving out `exclude` and the files `ignore` matches unless they are `certified`."""
    ignore = ignore or NO_PATTERNS
    if not directory.exists():
        raise MalformedError(option, f"{directory} does not exist")
    ignored: list[str] = []

    def left_out(path: str) -> bool:
        if path in certified or ignore.match(path) is None:
            return False
        ignored.append(path)
        return True

    try:
        manifest = hash_tree(directory, exclude=exclude, skip=left_out if ignore else None)
    except DigestError as exc:
        raise VerificationError(check, f"cannot hash {directory}: {exc}") from None
    return LocalTree(manifest, tuple(sorted(ignored)))


def certified_listing(directory: Path, root: str) -> Manifest | None:
    """The manifest.json aicert wrote beside the outputs, if it is the certified one (its entries
    hash to the certified root): then the names of the certified files are known."""
    path = directory / MANIFEST_FILE
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _LISTING_MAX_BYTES:
            return None
        shipped = Manifest.read(path)
    except (OSError, ManifestError, ValueError):
        return None
    return shipped if shipped.root == root else None


def _explain(listing: Manifest | None, local: LocalTree) -> str:
    """Name the files that differ, when the certified file names are known."""
    parts = []
    if listing is not None:
        want = {f.path: f for f in listing.files}
        have = {f.path: f for f in local.manifest.files}
        for label, paths in (
            ("changed", [p for p in want.keys() & have.keys() if want[p] != have[p]]),
            ("missing", want.keys() - have.keys()),
            ("extra", have.keys() - want.keys()),
        ):
            if paths:
                parts.append(f"{label}: {_shown(paths)}")
    if local.ignored:
        parts.append(f"left out by --ignore: {_shown(local.ignored)}")
        if listing is None:
            parts.append("a certified file is never ignored: if a pattern matches one, narrow it")
    return f" ({'; '.join(parts)})" if parts else ""


def _no_excluded_directory(directory: Path, check: Check, exclude: frozenset[str]) -> None:
    """The names left out of a root (the manifest.json, aicert-certificate.json and
    aicert.sigstore.json aicert writes beside the outputs) must not be directories: aicert writes files there, and a directory of that
    name would take its whole subtree out of the comparison unseen."""
    for name in sorted(exclude):
        try:
            is_directory = stat.S_ISDIR(os.lstat(directory / name).st_mode)
        except OSError:  # absent (or DIR is a file): nothing left out
            continue
        if is_directory:
            raise VerificationError(
                check,
                f"{directory / name} is a directory: aicert writes {name} beside the outputs as a file, "
                "and a directory there would leave the files in it out of the comparison",
            )


def check_local_dir(
    directory: Path,
    root: str,
    files: int,
    check: Check,
    option: str,
    what: str,
    *,
    exclude: frozenset[str],
    listing: Manifest | None = None,
    ignore: PathPatterns | None = None,
) -> tuple[str, ...]:
    """DIR, less `exclude` and the extra files `ignore` matches, must hash to the certified root;
    the files `ignore` left out, sorted. `listing`: the certified manifest, when known
    (`certified_listing`)."""
    certified = frozenset(f.path for f in listing.files) if listing is not None else frozenset()
    if directory.is_dir():
        _no_excluded_directory(directory, check, exclude)
    local = _hash_local(directory, check, option, exclude=exclude, ignore=ignore, certified=certified)
    if local.manifest.root != root:
        raise VerificationError(
            check,
            f"{directory} hashes to {local.manifest.root} ({local.manifest.file_count} files), but the "
            f"certified {what} is {root} ({files} files){_explain(listing, local)}",
        )
    return local.ignored


def check_model_dir(
    directory: Path, outputs: OutputRecord, log: CheckLog[Check], ignore: PathPatterns | None = None
) -> tuple[IgnoredFiles, ...]:
    """`model-files`: `--model DIR` hashes to the certified output root (less the manifest.json and
    certificate aicert writes beside it, and the extra files `ignore` matches); what `ignore` left out."""
    left_out = check_local_dir(
        directory,
        outputs.root,
        outputs.files,
        Check.MODEL_FILES,
        "--model",
        "output",
        exclude=OUTPUT_EXCLUDED,
        listing=certified_listing(directory, outputs.root),
        ignore=ignore,
    )
    log.passed(Check.MODEL_FILES)  # (9)
    return IgnoredFiles.of(Check.MODEL_FILES, directory, left_out)


def check_data_dirs(
    directories: Mapping[str, Path],
    inputs: Iterable[InputRecord],
    log: CheckLog[Check],
    ignore: PathPatterns | None = None,
) -> tuple[IgnoredFiles, ...]:
    """`data-files`: each `--data NAME=DIR` hashes to the certified root of input NAME (measured
    whole); what `ignore` left out. MalformedError for a NAME the certificate has no input of."""
    certified = {i.name: i for i in inputs}
    for name in directories:
        if name not in certified:
            known = ", ".join(sorted(certified)) or "none"
            raise MalformedError("--data", f"the certificate has no input named {name!r} (inputs: {known})")
    ignored: list[IgnoredFiles] = []
    for name, directory in directories.items():
        left_out = check_local_dir(
            directory,
            certified[name].root,
            certified[name].files,
            Check.DATA_FILES,
            "--data",
            f"input {name!r}",
            exclude=INPUT_EXCLUDED,
            ignore=ignore,
        )
        ignored += IgnoredFiles.of(Check.DATA_FILES, directory, left_out)
    log.passed(Check.DATA_FILES)  # (9) every input given
    return tuple(ignored)


# --- old AICert proofs -----------------------------------------------------------------------


def _legacy_output(index: int, position: int, output: Any) -> tuple[str, str]:
    where = f"event_log[{index}].content[{position}]"
    spec = output.get("spec") if isinstance(output, dict) else None
    resolved = output.get("resolved") if isinstance(output, dict) else None
    path = spec.get("path") if isinstance(spec, dict) else None
    digest = resolved.get("hash") if isinstance(resolved, dict) else None
    if not isinstance(path, str):
        raise MalformedError(f"{where}.spec.path", "the outputs event names no file path")
    if not isinstance(digest, str):
        raise MalformedError(f"{where}.resolved.hash", "the outputs event gives no hash")
    try:
        check_relative_path(path)
    except ManifestError as exc:
        raise VerificationError(
            Check.MODEL_FILES,
            f"the proof names output {path!r}, not a path inside --model DIR: "
            f"{str(exc).removeprefix('path: ')}",
        ) from None
    return path, digest


def legacy_outputs(events: list[dict[str, Any]]) -> dict[str, str]:
    """The files an old proof's `outputs` events certify: relative path -> sha256 hex."""
    outputs: dict[str, str] = {}
    for index, event in enumerate(events):
        if event.get("event_type") != "outputs":
            continue
        content = event.get("content")
        if not isinstance(content, list):
            raise MalformedError(f"event_log[{index}].content", "the outputs event's content is not a list")
        for position, output in enumerate(content):
            path, digest = _legacy_output(index, position, output)
            if path in outputs:
                raise VerificationError(Check.MODEL_FILES, f"the proof names output {path!r} twice")
            outputs[path] = digest
    return outputs


def _legacy_local(directory: Path, local: Manifest, certified: Mapping[str, str]) -> dict[str, str]:
    """Local path -> sha256. `--model FILE` may name the one certified file itself."""
    have = {f.path: f.sha256 for f in local.files}
    if directory.is_file() and len(certified) == 1 and len(local.files) == 1:
        (path,) = certified
        if PurePosixPath(path).name == directory.name:
            return {path: local.files[0].sha256}
    return have


def check_legacy_model(
    directory: Path,
    events: list[dict[str, Any]],
    ignore: PathPatterns | None = None,
    *,
    log: CheckLog[Check] | None = None,
) -> tuple[IgnoredFiles, ...]:
    """`model-files` for an old proof: DIR must hold exactly the regular files the proof names (less
    the extras `ignore` matches), each with the certified sha256; a symlink or special file among
    them is refused. Records the pass in `log` (the verification's; None: a record of its own) and
    returns what `ignore` left out."""
    certified = legacy_outputs(events)
    if not certified:
        raise VerificationError(Check.MODEL_FILES, "the proof records no outputs to compare with")
    local = _hash_local(
        directory,
        Check.MODEL_FILES,
        "--model",
        exclude=frozenset(),
        ignore=ignore,
        certified=frozenset(certified),
    )
    have = _legacy_local(directory, local.manifest, certified)
    changed = sorted(p for p in certified.keys() & have.keys() if have[p] != certified[p])
    parts = [f"{p} hashes to {have[p]}, the proof certifies {certified[p]}" for p in changed[:_SHOWN]]
    for label, paths in (
        ("missing", certified.keys() - have.keys()),
        ("extra", have.keys() - certified.keys()),
    ):
        if paths:
            parts.append(f"{label}: {_shown(paths)}")
    if parts:
        raise VerificationError(
            Check.MODEL_FILES, f"{directory} does not hold the files the proof certifies: {'; '.join(parts)}"
        )
    (log or CheckLog(Check)).passed(Check.MODEL_FILES)  # (9)
    return IgnoredFiles.of(Check.MODEL_FILES, directory, local.ignored)
