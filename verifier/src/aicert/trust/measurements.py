"""The `paravisor` trust store: launch measurements of Azure's paravisor known to be good.

Level `cvm` rests on the SEV-SNP report's launch measurement: the chip signs a report for any
guest, and whatever runs at VMPL 0 of it chooses the report data. Only the measurement tells
Azure's paravisor (HCL/OpenHCL), which puts the vTPM's own AK there, from firmware of anyone's
choosing on another cloud or on bare metal. So `cvm` is granted only when the measurement is one
of this list (check `cvm-measurement`, aicert.cvm.check).

The list is a UTF-8 text file, one measurement per line with where it comes from:

    # Azure paravisor launch measurements (SHA-384, 96 hex digits)
    5a71e4ba...  # Azure's published list, paravisor release ...

Blank lines and lines starting with `#` are comments. Every other line is exactly 96 hex digits
(any case; kept in lower case), then `#` and a source: printable text, not empty. A line that is anything
else, a measurement listed twice, or a list with none is refused naming the line (TrustError, a
usage problem: exit 2). `aicert trust install paravisor --from FILE|URL` installs it (replacing
the installed list), `aicert trust show` prints it; nothing here ships a measurement.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

import msgspec

from aicert.boundedfile import FileRefused, read_regular_file
from aicert.trust.store import TrustError, default_trust_dir, read_source

PARAVISOR_STORE: Final = "paravisor"
MEASUREMENT_HEX_DIGITS: Final = 96  # SHA-384: 48 bytes
_LIST_MAX_BYTES: Final = 1 << 20
_LINE: Final = re.compile(r"([0-9A-Fa-f]+)[ \t]*#(.*)")
_HEX: Final = re.compile(r"[0-9A-Fa-f]{96}")
NOT_INSTALLED: Final = (
    "no list of known-good paravisor measurements is installed ({path} is missing): "
    "run `aicert trust install paravisor --from <your list>`"
)


class KnownMeasurement(msgspec.Struct, frozen=True):
    measurement: str  # 96 lower-case hex digits
    source: str  # where the operator got it, as the list says


class KnownMeasurements(msgspec.Struct, frozen=True):
    """The known-good launch measurements and where the list was read (`origin`, for messages);
    empty when none is installed or given, which grants `cvm` to nothing."""

    entries: tuple[KnownMeasurement, ...]
    origin: str

    def source_of(self, measurement: str) -> str | None:
        """The source the list gives for `measurement` (hex, any case), or None if not listed."""
        wanted = measurement.lower()
        return next((e.source for e in self.entries if e.measurement == wanted), None)


def parse_known_measurements(data: bytes, origin: str) -> KnownMeasurements:
    """The list in `data` (see the module docstring); TrustError naming `origin` and the line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TrustError(f"{origin} is not UTF-8 text") from None
    entries: list[KnownMeasurement] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{origin} line {number}"
        found = _LINE.fullmatch(line)
        value = found.group(1) if found else line.split()[0]
        if not _HEX.fullmatch(value) or (found is None and len(line.split()) > 1):
            raise TrustError(
                f"{where} is not 96 hex digits (an SEV-SNP launch measurement) followed by `# source`"
            )
        source = found.group(2).strip() if found else ""
        if not source:
            raise TrustError(f"{where} has no source: write `<measurement>  # where it comes from`")
        if not source.isprintable():
            raise TrustError(f"{where}: its source holds control characters")
        measurement = value.lower()
        if measurement in first_line:
            raise TrustError(f"{where} repeats the measurement of line {first_line[measurement]}")
        first_line[measurement] = number
        entries.append(KnownMeasurement(measurement, source))
    if not entries:
        raise TrustError(f"{origin} holds no measurement")
    return KnownMeasurements(tuple(entries), origin)


def _store_path(trust_dir: Path | None) -> Path:
    return (trust_dir or default_trust_dir()) / PARAVISOR_STORE / "measurements.txt"


def read_paravisor_measurements(path: Path) -> KnownMeasurements:
    """The list in the regular file `path` (at most 1 MiB); TrustError if it cannot be used."""
    try:
        data = read_regular_file(path, limit=_LIST_MAX_BYTES)
    except FileRefused as exc:
        raise TrustError(f"known-good paravisor measurements: {exc}") from None
    return parse_known_measurements(data, str(path))


def load_paravisor_measurements(trust_dir: Path | None = None) -> KnownMeasurements:
    """The installed `paravisor` list; empty (saying how to install one) when there is none, and
    TrustError when the installed file cannot be used."""
    path = _store_path(trust_dir)
    if not path.exists() and not path.is_symlink():
        return KnownMeasurements((), NOT_INSTALLED.format(path=path))
    return read_paravisor_measurements(path)


def install_paravisor_measurements(data: bytes, origin: str, trust_dir: Path | None = None) -> Path:
    """Install the list in `data` as the `paravisor` store, replacing the installed one, once it
    reads as a list; the file is kept as given."""
    if len(data) > _LIST_MAX_BYTES:
        raise TrustError(f"{origin} is larger than {_LIST_MAX_BYTES} bytes")
    parse_known_measurements(data, origin)
    path = _store_path(trust_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def fetch_paravisor_measurements(source: str, trust_dir: Path | None = None) -> Path:
    """`aicert trust install paravisor --from FILE|URL`."""
    return install_paravisor_measurements(read_source(source), source, trust_dir)
