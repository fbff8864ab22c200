"""Measuring a run's volumes within bounds, so that no tenant can stall the node's other runs.

A volume's files are whatever the tenant (or its training) wrote: a sparse file of 8 TiB uses no
disk and costs hours of hashing zeros. So each measurement has a budget of apparent bytes (the sum of
`st_size`: sparse files count fully) and of entries, and `aicert.digest.hash_tree` refuses a volume
over it before reading a byte (and stops a file that grows past it later). The budget is the smallest
of:

- the agent's setting, `AICERT_MAX_OUTPUT_BYTES` for a run's output, `AICERT_MAX_INPUT_BYTES` for
  all of a run's inputs together (they are hashed at the gate and again at the seal);
- the output's `spec.output.maxBytes`, when the training sets it;
- what the volume can hold: the claim's `status.capacity.storage`, the emptyDir's `sizeLimit`, and
  the size of the filesystem it is on. Written files cannot add up to more than that; only sparse
  files (or reflinks, or compression) can, and the agent would read every apparent byte.

A volume over its budget is refused (`OutputTooLarge`, `InputTooLarge`: the run ends Failed).
Hashing stops early when the run's pod goes away (`HashingCancelled`, from the work queue's event).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aicert.digest import BudgetExceeded, HashingCancelled, Manifest, hash_tree
from aicert_agent import metrics
from aicert_contract.pod import quantity_bytes
from aicert_contract.status import REFUSALS, Reason
from aicert_contract.training import TrainingSpec

log = logging.getLogger("aicert_agent")

ENV_MAX_OUTPUT_BYTES: Final = "AICERT_MAX_OUTPUT_BYTES"
ENV_MAX_INPUT_BYTES: Final = "AICERT_MAX_INPUT_BYTES"
ENV_MAX_FILES: Final = "AICERT_MAX_FILES"

# 1 TiB holds the weights of a 400-billion-parameter model in 16 bits, and hashes in about ten
# minutes as one file at one core's sha256 speed (1.75 GB/s, docs/performance.md), much less as
# many files on many cores: far within the gate timeout, and a bound on what one run can cost.
DEFAULT_MAX_OUTPUT_BYTES: Final = 1 << 40
DEFAULT_MAX_INPUT_BYTES: Final = 1 << 40
# Hashing keeps every path and its manifest entry in memory: about 0.9 KiB per file at its peak,
# measured. 100,000 files make some 90 MiB, and the four measurements the agent runs at once (two
# gates, two seals) fit the chart's 1 GiB memory limit; honest outputs hold far fewer files.
DEFAULT_MAX_FILES: Final = 100_000


class LimitsError(ValueError):
    """A setting of the agent's measurement limits is not usable; the message names it."""


def _setting(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    value = quantity_bytes(text)
    if value is None or value < 1:
        raise LimitsError(f"{name}: {text!r} is not a positive whole quantity (like 1099511627776 or 1Ti)")
    return value


@dataclass(frozen=True)
class MeasureLimits:
    """The agent's bounds on what one run may have it hash."""

    output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES  # a run's output, apparent bytes
    input_bytes: int = DEFAULT_MAX_INPUT_BYTES  # all of a run's inputs together, apparent bytes
    files: int = DEFAULT_MAX_FILES  # entries (files, directories, links) of one volume

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> MeasureLimits:
        return cls(
            output_bytes=_setting(environ, ENV_MAX_OUTPUT_BYTES, DEFAULT_MAX_OUTPUT_BYTES),
            input_bytes=_setting(environ, ENV_MAX_INPUT_BYTES, DEFAULT_MAX_INPUT_BYTES),
            files=_setting(environ, ENV_MAX_FILES, DEFAULT_MAX_FILES),
        )

    def publish(self) -> None:
        """Show the byte budgets as metrics (an operator reading a refusal compares with them)."""
        metrics.MEASURE_LIMIT.labels("output").set(self.output_bytes)
        metrics.MEASURE_LIMIT.labels("input").set(self.input_bytes)


@dataclass(frozen=True)
class Limit:
    bytes: int
    source: str  # what sets it, as the refusal names it
    kind: str  # the metric label: agent, spec, capacity or filesystem


@dataclass(frozen=True)
class Budget:
    """What one measurement may read: the smallest of its limits, and at most `files` entries."""

    volume: str  # "input" or "output"
    reason: Reason  # the refusal past it
    limits: tuple[Limit, ...]
    files: int

    @property
    def binding(self) -> Limit:
        return min(self.limits, key=lambda limit: limit.bytes)


def filesystem_size(path: Path) -> int | None:
    """The size of the filesystem `path` is on (None when it reports none)."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None  # hashing the path will say what is wrong with it
    size = stats.f_blocks * stats.f_frsize
    return size if size > 0 else None


def _capacity_limits(path: Path, claim: Mapping[str, Any] | None, size_limit: Any = None) -> list[Limit]:
    limits = []
    if claim is not None:
        name = (claim.get("metadata") or {}).get("name", "")
        capacity = quantity_bytes(((claim.get("status") or {}).get("capacity") or {}).get("storage"))
        if capacity is not None:
            limits.append(
                Limit(capacity, f"the capacity of claim {name} (status.capacity.storage)", "capacity")
            )
    if size_limit is not None and (limit := quantity_bytes(size_limit)) is not None:
        limits.append(Limit(limit, "spec.output.emptyDir.sizeLimit", "capacity"))
    fs = filesystem_size(path)
    if fs is not None:
        limits.append(Limit(fs, "the size of the filesystem the volume is on", "filesystem"))
    return limits


def output_budget(
    limits: MeasureLimits, spec: TrainingSpec, path: Path, claim: Mapping[str, Any] | None
) -> Budget:
    """The output's budget. `claim`: the output's PVC (None for an emptyDir output)."""
    found = [Limit(limits.output_bytes, f"{ENV_MAX_OUTPUT_BYTES} (the agent's setting)", "agent")]
    if spec.output.maxBytes is not None:
        found.append(Limit(spec.output.maxBytes, "spec.output.maxBytes", "spec"))
    empty_dir = spec.output.emptyDir
    found += _capacity_limits(path, claim, empty_dir.sizeLimit if empty_dir is not None else None)
    return Budget("output", Reason.OUTPUT_TOO_LARGE, tuple(found), limits.files)


def input_budget(limits: MeasureLimits, path: Path, claim: Mapping[str, Any], *, spent: int) -> Budget:
    """One input's budget, after the run's other inputs measured `spent` bytes in this pass."""
    left = max(0, limits.input_bytes - spent)
    source = f"{ENV_MAX_INPUT_BYTES} (the agent's setting, for all of a run's inputs together"
    source += f": {spent} bytes of it went to the inputs measured before this one)" if spent else ")"
    found = [Limit(left, source, "agent"), *_capacity_limits(path, claim)]
    return Budget("input", Reason.INPUT_TOO_LARGE, tuple(found), limits.files)


class TooLarge(Exception):
    """A volume over its budget: the run is refused with `reason`."""

    def __init__(self, reason: Reason, message: str) -> None:
        assert reason in REFUSALS, reason
        super().__init__(message)
        self.reason, self.message = reason, message


def _binary(n: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    value, unit = float(n), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{n} B" if unit == 0 else f"{value:.1f} {units[unit]}"


def _refusal(what: str, root: Path, budget: Budget, exc: BudgetExceeded) -> TooLarge:
    if exc.what == "files":
        message = (
            f"{what} holds more than {exc.limit} files, directories and links, more than the agent "
            f"measures ({ENV_MAX_FILES}); it was not hashed"
        )
        metrics.VOLUMES_TOO_LARGE.labels(budget.volume, "agent").inc()
        return TooLarge(budget.reason, message)
    binding = budget.binding
    grew = exc.path != os.fspath(root)  # a file grown since the walk, refused when it was opened
    message = (
        f"{what} holds {exc.found} bytes ({_binary(exc.found)}) counting each file at its apparent size "
        f"(a sparse file counts fully), more than its budget of {binding.bytes} bytes "
        f"({_binary(binding.bytes)}) set by {binding.source}"
        + (
            f"; {exc.path} grew while it was measured, and hashing stopped there"
            if grew
            else "; it was not hashed"
        )
    )
    metrics.VOLUMES_TOO_LARGE.labels(budget.volume, binding.kind).inc()
    return TooLarge(budget.reason, message)


def measure(
    path: Path, what: str, budget: Budget, *, exclude: Collection[str], cancel: threading.Event
) -> Manifest:
    """Hash `path` within `budget`. Raises `TooLarge` past it, `HashingCancelled` once `cancel` is
    set, `DigestError` when the tree cannot be hashed faithfully."""
    started = time.perf_counter()
    try:
        manifest = hash_tree(
            path, exclude=exclude, max_bytes=budget.binding.bytes, max_files=budget.files, cancel=cancel
        )
    except BudgetExceeded as exc:
        raise _refusal(what, path, budget, exc) from None
    except HashingCancelled:
        metrics.MEASUREMENTS_CANCELLED.inc()
        log.info("stopped measuring %s: the pod is going away (or the agent is stopping)", what)
        raise
    metrics.HASH_SECONDS.observe(time.perf_counter() - started)
    metrics.BYTES_HASHED.inc(manifest.total_bytes)
    log.info(
        "measured %s: %d files, %d bytes, root %s",
        what,
        manifest.file_count,
        manifest.total_bytes,
        manifest.root,
    )
    return manifest
