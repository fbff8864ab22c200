"""Real nodes for the local cluster: the pinned upstream kubelet, containerd, runc and CNI plugins run
a node of a LocalCluster on this machine (node: RealNode; config: the configuration files; host: what
a node changes on the host and how it is undone; archive: importing OCI images by digest).
See localcluster/README.md, "Real nodes".
"""

from .archive import ArchiveError, write_oci_archive
from .config import KUBELET_SYSCTLS, NodeLayout
from .host import HostError, HostLedger
from .node import GPU_RESOURCE, RealNode, RealNodeError, free_node_index

__all__ = [
    "GPU_RESOURCE",
    "KUBELET_SYSCTLS",
    "ArchiveError",
    "HostError",
    "HostLedger",
    "NodeLayout",
    "RealNode",
    "RealNodeError",
    "free_node_index",
    "write_oci_archive",
]
