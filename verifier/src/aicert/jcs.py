"""Canonical JSON (RFC 8785, JCS) and the digests the certificate format is built on."""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785


def canonical(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 encoding of a JSON value."""
    return rfc8785.dumps(value)


def sha256_jcs(value: Any) -> bytes:
    """sha256 over the canonical encoding: how every digest in a certificate is computed."""
    return hashlib.sha256(canonical(value)).digest()


def sha256_jcs_hex(value: Any) -> str:
    return sha256_jcs(value).hex()
