"""Trust anchors for AK certificates, and building a path from an AK certificate to one."""

from aicert.trust.chain import (
    AK_USAGES,
    MAX_PATH_CERTIFICATES,
    MICROSOFT_AK_USAGE,
    TCG_KP_AIK_CERTIFICATE,
    ChainError,
    ak_certificate_problem,
    build_path,
)
from aicert.trust.store import (
    AZURE_ROOT_SHA256,
    TrustAnchor,
    TrustError,
    TrustStore,
    default_trust_dir,
    install_named,
    load_named,
    load_trust_store,
    load_tsa_store,
)

__all__ = [
    "AK_USAGES",
    "AZURE_ROOT_SHA256",
    "MAX_PATH_CERTIFICATES",
    "MICROSOFT_AK_USAGE",
    "TCG_KP_AIK_CERTIFICATE",
    "ChainError",
    "TrustAnchor",
    "TrustError",
    "TrustStore",
    "ak_certificate_problem",
    "build_path",
    "default_trust_dir",
    "install_named",
    "load_named",
    "load_trust_store",
    "load_tsa_store",
]
