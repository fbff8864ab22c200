"""Where the TPM is: parse a TPM spec string and open the matching TCTI.

Two forms are accepted:

- ``device:/dev/tpmrm0`` — a TPM character device (use the kernel resource manager, ``tpmrm``);
- ``swtpm:host=127.0.0.1,port=2321`` — a swtpm listening on TCP (its control channel is
  ``port + 1``). ``host`` defaults to ``127.0.0.1`` and ``port`` to ``2321``.

Parsing is pure (no tpm2_pytss import) so that configuration errors are reported without the
TPM libraries; only `TpmSpec.open` loads tpm2_pytss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

SWTPM_DEFAULT_HOST = "127.0.0.1"
SWTPM_DEFAULT_PORT = 2321

_EXAMPLES = "expected 'device:/dev/tpmrm0' or 'swtpm:host=127.0.0.1,port=2321'"


@dataclass(frozen=True)
class TpmSpec:
    """A parsed TPM spec. Build it with `parse_tpm_spec`; `str()` gives the canonical spec back."""

    kind: Literal["device", "swtpm"]
    path: str | None = None
    host: str | None = None
    port: int | None = None

    @property
    def tcti_name(self) -> str:
        return self.kind

    @property
    def tcti_conf(self) -> str:
        """The configuration string the tss2 TCTI loader takes for this TCTI."""
        if self.kind == "device":
            assert self.path is not None
            return self.path
        return f"host={self.host},port={self.port}"

    def __str__(self) -> str:
        return f"{self.tcti_name}:{self.tcti_conf}"

    def open(self) -> Any:
        """Open the TCTI (a ``tpm2_pytss.TCTILdr``); the caller closes it after the ESAPI context."""
        from tpm2_pytss import TCTILdr

        return TCTILdr(self.tcti_name, self.tcti_conf)


def parse_tpm_spec(spec: str) -> TpmSpec:
    """Parse ``device:<absolute path>`` or ``swtpm:host=<host>,port=<port>``.

    Raises ValueError with a message that says what is wrong and what is expected.
    """
    if not isinstance(spec, str):
        raise ValueError(f"TPM spec must be a string, got {type(spec).__name__}")
    text = spec.strip()
    if not text:
        raise ValueError(f"empty TPM spec; {_EXAMPLES}")
    kind, sep, conf = text.partition(":")
    kind = kind.strip().lower()
    if kind == "device":
        return _parse_device(spec, conf if sep else "")
    if kind == "swtpm":
        return _parse_swtpm(spec, conf if sep else "")
    raise ValueError(f"unknown TPM kind {kind!r} in TPM spec {spec!r}; {_EXAMPLES}")


def _parse_device(spec: str, path: str) -> TpmSpec:
    if not path:
        raise ValueError(f"TPM spec {spec!r} names no device path; expected e.g. 'device:/dev/tpmrm0'")
    if not path.startswith("/"):
        raise ValueError(f"TPM device path in {spec!r} must be absolute, e.g. 'device:/dev/tpmrm0'")
    if any(c.isspace() for c in path) or "\0" in path:
        raise ValueError(f"TPM device path in {spec!r} contains whitespace or NUL")
    return TpmSpec(kind="device", path=path)


def _parse_swtpm(spec: str, conf: str) -> TpmSpec:
    host = SWTPM_DEFAULT_HOST
    port = SWTPM_DEFAULT_PORT
    seen: set[str] = set()
    for item in conf.split(",") if conf else []:
        key, eq, value = item.partition("=")
        key = key.strip()
        value = value.strip()
        if not eq or not key:
            raise ValueError(f"malformed option {item!r} in TPM spec {spec!r}; expected key=value pairs")
        if key in seen:
            raise ValueError(f"option {key!r} given twice in TPM spec {spec!r}")
        seen.add(key)
        if key == "host":
            if not value or any(c.isspace() for c in value):
                raise ValueError(f"empty or malformed host in TPM spec {spec!r}")
            host = value
        elif key == "port":
            try:
                port = int(value, 10)
            except ValueError:
                raise ValueError(f"port {value!r} in TPM spec {spec!r} is not a number") from None
            # swtpm's control channel listens on port + 1, so port must leave room for it.
            if not 1 <= port <= 65534:
                raise ValueError(f"port {port} in TPM spec {spec!r} is out of range 1..65534")
        else:
            raise ValueError(f"unknown option {key!r} in TPM spec {spec!r}; swtpm takes host= and port=")
    return TpmSpec(kind="swtpm", host=host, port=port)
