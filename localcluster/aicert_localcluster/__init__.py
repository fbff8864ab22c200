"""A local Kubernetes control plane of real upstream binaries, for tests, the demo and benchmarks.

Not an installed package: put `localcluster/` on sys.path (pytest's `pythonpath` does).
"""

from .binaries import BuildError, ensure_binaries, etcd_version, kubernetes_version
from .cluster import KubectlError, LocalCluster, LocalClusterError, free_port
from .pki import CertPair, ClusterPKI

__all__ = [
    "BuildError",
    "CertPair",
    "ClusterPKI",
    "KubectlError",
    "LocalCluster",
    "LocalClusterError",
    "ensure_binaries",
    "etcd_version",
    "free_port",
    "kubernetes_version",
]
