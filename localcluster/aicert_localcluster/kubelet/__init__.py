"""The node double: plays kubelet for the local control plane, with no real kubelet and no container
engine, each container a local process in a bubblewrap sandbox. Its parts: `client` (the REST client
and watch), `node` (registration, Lease, the pod watch), `double` (`NodeDouble`, one worker per pod),
`worker` (the life of one pod), `status` (the pod status kubelet reports), `volumes`, `env` (a
container's env and command) and `sandbox` (bwrap, images as the runtime sees them, processes).

    images = ImageStore(tmp / "images")
    ref = images.build("registry.local/train", {"train.py": b"..."}, ["python3", "/app/train.py"], None)
    with NodeDouble(cluster, tmp / "kubelet", images, [NodeSpec("gpu-0", "TrustedLaunch")]) as nodes:
        ...  # pods bound to gpu-0 run, their status is reported like kubelet reports it
"""

from .client import LOOPBACK, MERGE_PATCH, ApiError, KubeClient
from .double import ClusterAccess, NodeDouble
from .env import container_argv, expand
from .node import (
    GPU_RESOURCE,
    LABEL_ACCELERATOR,
    LABEL_AGENTPOOL,
    LABEL_ASSURANCE,
    LABEL_MODE,
    LABEL_SECURITY_TYPE,
    LEASE_DURATION_SECONDS,
    NODE_LEASE_NAMESPACE,
    NodeSpec,
    SecurityType,
)
from .sandbox import (
    APP_MOUNT,
    DEFAULT_CAPABILITIES,
    DEFAULT_HOST_BINDS,
    DEFAULT_PATH,
    DEV_AGENT_IMAGE,
    VENV_MOUNT,
    agent_image_id,
    capabilities_for,
    exit_code,
    sandbox_argv,
    terminate,
)
from .volumes import bind_mount, mount_points, mounts_under, quantity_bytes, tmpfs_mount, unmount
from .worker import POLL_SECONDS, PULL_BACKOFF_MAX_SECONDS

__all__ = [
    "APP_MOUNT",
    "DEFAULT_CAPABILITIES",
    "DEFAULT_HOST_BINDS",
    "DEFAULT_PATH",
    "DEV_AGENT_IMAGE",
    "GPU_RESOURCE",
    "LABEL_ACCELERATOR",
    "LABEL_AGENTPOOL",
    "LABEL_ASSURANCE",
    "LABEL_MODE",
    "LABEL_SECURITY_TYPE",
    "LEASE_DURATION_SECONDS",
    "LOOPBACK",
    "MERGE_PATCH",
    "NODE_LEASE_NAMESPACE",
    "POLL_SECONDS",
    "PULL_BACKOFF_MAX_SECONDS",
    "VENV_MOUNT",
    "ApiError",
    "ClusterAccess",
    "KubeClient",
    "NodeDouble",
    "NodeSpec",
    "SecurityType",
    "agent_image_id",
    "bind_mount",
    "capabilities_for",
    "container_argv",
    "exit_code",
    "expand",
    "mount_points",
    "mounts_under",
    "quantity_bytes",
    "sandbox_argv",
    "terminate",
    "tmpfs_mount",
    "unmount",
]
