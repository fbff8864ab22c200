"""Trust anchors for AK certificates, and building a path from an AK certificate to one."""

from aicert.trust.chain import ChainError, build_path
from aicert.trust.store import (
    AZURE_ROOT_SHA256,
    TrustAnchor,
    TrustError,
    TrustStore,
    default_trust_dir,
    install_named,
    load_named,
)

__all__ = [
    "AZURE_ROOT_SHA256",
    "ChainError",
    "TrustAnchor",
    "TrustError",
    "TrustStore",
    "build_path",
    "default_trust_dir",
    "install_named",
    "load_named",
]
