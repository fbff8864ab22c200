"""Registry credentials from a docker config.json: the file `docker login` writes, and the one
`kubectl create secret docker-registry` puts in a Secret (`.dockerconfigjson`).

Only `auths` is read: `{"auths": {"<registry>": {"auth": base64("user:password")}}}`, or
`username` and `password` instead of `auth`, or an `identitytoken` (an OAuth2 refresh token, sent
to the token service). A key may be a bare host (`registry.example:5000`) or a URL
(`https://registry.example/v1/`). Credential helpers (`credsStore`, `credHelpers`) run programs,
which aicert does not do: a registry that only they know is reached without credentials.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicert.oci.errors import OciError
from aicert.verify.errors import MalformedError
from aicert.verify.jsonload import loads_strict, read_bounded_file

CONFIG_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(username={self.username!r}, …)"


def default_config_path() -> Path:
    """$DOCKER_CONFIG/config.json, else ~/.docker/config.json (as docker and oras look)."""
    directory = os.environ.get("DOCKER_CONFIG")
    return (Path(directory) if directory else Path.home() / ".docker") / "config.json"


def _host_of(key: str) -> str:
    for scheme in ("https://", "http://"):
        if key.startswith(scheme):
            key = key[len(scheme) :]
    return key.partition("/")[0].lower()


def _entry(field: str, entry: Any) -> Credentials:
    if not isinstance(entry, dict):
        raise OciError(f"{field}: is not an object")
    strings = {k: v for k, v in entry.items() if isinstance(v, str)}
    token = strings.get("identitytoken", "")
    if strings.get("auth"):
        try:
            decoded = base64.b64decode(strings["auth"], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise OciError(f"{field}.auth: is not base64 of user:password") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise OciError(f"{field}.auth: is not base64 of user:password (no ':')")
        return Credentials(user, password, token)
    return Credentials(strings.get("username", ""), strings.get("password", ""), token)


def parse_config(data: bytes, *, name: str) -> dict[str, Credentials]:
    """host -> credentials, from the bytes of a config.json (`name` names it in errors)."""
    try:
        loaded = loads_strict(data, what=name, max_bytes=CONFIG_MAX_BYTES)
    except MalformedError as exc:
        raise OciError(f"{name}: {exc.field + ': ' if exc.field else ''}{exc.reason}") from None
    if not isinstance(loaded, dict):
        raise OciError(f"{name}: is not a JSON object")
    auths = loaded.get("auths", {})
    if not isinstance(auths, dict):
        raise OciError(f"{name}: auths: is not an object")
    found: dict[str, Credentials] = {}
    for key, entry in auths.items():
        credentials = _entry(f"{name}: auths.{key}", entry)
        if credentials != Credentials():
            found.setdefault(_host_of(key), credentials)
    return found


def load_credentials(registry: str, config: Path | None) -> Credentials | None:
    """The credentials for `registry` (host[:port]) in `config` (default: `default_config_path()`,
    which may be absent; a `config` given must exist)."""
    path = config if config is not None else default_config_path()
    if config is None and not path.exists():
        return None
    try:
        data = read_bounded_file(path, limit=CONFIG_MAX_BYTES, field=str(path))
    except MalformedError as exc:
        raise OciError(f"registry config {exc.field}: {exc.reason}") from None
    return parse_config(data, name=str(path)).get(registry.lower())
