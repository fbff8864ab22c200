"""Reading an input's `aicert-certificate.json` for lineage: the edge of `aicert.lineage`.

The file is read only when the input's manifest (measured at the gate) lists it at the top level as
a regular file no larger than a certificate; it is opened without following a link and without
blocking, refused unless it is a regular file, and read to at most the cap. Whatever is read is
then compared with the measured digest by `parent_in_volume`: a file swapped after the
measurement is not a parent (and the seal's second measurement refuses the run for a changed input).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from aicert.boundedfile import FileRefused, read_bounded
from aicert.certificate import MAX_PARENTS
from aicert.digest import CERTIFICATE_FILE, Manifest
from aicert.lineage import (
    PARENT_CERTIFICATE_MAX_BYTES,
    ParentDecision,
    certificate_entry,
    parent_in_volume,
    wants_certificate,
)

log = logging.getLogger("aicert_agent")


def read_certificate_file(volume: Path) -> bytes | None:
    """The bytes of `volume`/aicert-certificate.json, a regular file of at most the cap; None when
    it cannot be read as one."""
    path = volume / CERTIFICATE_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(os.dup(fd), "rb") as stream:
            return read_bounded(stream, limit=PARENT_CERTIFICATE_MAX_BYTES, name=str(path))
    except (OSError, FileRefused):
        return None
    finally:
        os.close(fd)


def input_parent(volume: Path, manifest: Manifest, what: str, *, recorded: int) -> ParentDecision:
    """The parent `what` records (`recorded`: how many of the run's inputs already record one)."""
    if not wants_certificate(manifest):
        decision = parent_in_volume(manifest, None)
    elif recorded >= MAX_PARENTS:
        decision = ParentDecision(None, f"the run's inputs already record {MAX_PARENTS} parents, the most")
    else:
        decision = parent_in_volume(manifest, read_certificate_file(volume))
    if certificate_entry(manifest) is not None:  # plain data needs no word
        log.info("%s: %s: %s", what, "parent" if decision.parent else "no parent", decision.reason)
    return decision
