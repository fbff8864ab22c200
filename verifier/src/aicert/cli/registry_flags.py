"""The registry flags `aicert verify oci://…` and `kubectl aicert push` share, and the client they
make (argparse only at import: the registry client loads when a registry is used)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aicert.oci.client import RegistryClient
    from aicert.oci.reference import OciReference


def add_registry_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry-config",
        type=Path,
        metavar="FILE",
        help="docker config.json with the registry's credentials (default: $DOCKER_CONFIG/config.json, "
        "else ~/.docker/config.json; the .dockerconfigjson of a docker-registry Secret works too)",
    )
    p.add_argument(
        "--plain-http",
        action="store_true",
        help="talk to the registry over plain http (default: https, except for localhost and 127.0.0.1)",
    )


def connect(reference: OciReference, args: argparse.Namespace) -> RegistryClient:
    """A client for the reference's registry, with its credentials from the registry config (a
    command without the registry flags gets their defaults)."""
    from aicert.oci.auth import load_credentials
    from aicert.oci.client import RegistryClient

    return RegistryClient(
        reference.registry,
        plain_http=bool(getattr(args, "plain_http", False)) or reference.loopback,
        credentials=load_credentials(reference.registry, getattr(args, "registry_config", None)),
    )
