"""The configuration files of a real node, as pure functions of its layout: containerd's config.toml,
the CNI network list and kubelet's KubeletConfiguration. Why each setting is there is in
localcluster/README.md ("Real nodes"); the short reason is next to each below.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POD_NETWORK_PREFIX = "10.244"  # node N gets 10.244.N.0/24, its bridge and node IP 10.244.N.1
MAX_INDEX = 254
SANDBOX_REPOSITORY = "registry.local/localcluster/pause"
# Inside a node's mount namespace kubelet's root is where it is on AKS (a DaemonSet's hostPath of
# /var/lib/kubelet/pods works unchanged), and so is the aicert agent's default state directory.
KUBELET_ROOT = Path("/var/lib/kubelet")
AGENT_STATE_DIR = Path("/run/aicert")
CRI_DIR = Path("/run/containerd")  # the node's run directory appears here: its CRI socket where AKS has it
CRI_SOCKET = CRI_DIR / "containerd.sock"
CRI_NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin keeps its images and containers in

# What kubelet sets on the host when protectKernelDefaults is false (pkg/kubelet/cm,
# setupKernelTunables): these are host-wide, so the host ledger restores them after the last node.
KUBELET_SYSCTLS: Mapping[str, str] = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
# What a node needs of the host besides: pods of different nodes reach each other through the host,
# which routes between the nodes' bridges (restored by the host ledger like kubelet's).
NODE_SYSCTLS: Mapping[str, str] = {**KUBELET_SYSCTLS, "net/ipv4/ip_forward": "1"}


@dataclass(frozen=True)
class NodeLayout:
    """Where one node keeps everything. `root` may be long (a test's tmp_path); `run` must be short:
    unix sockets (containerd's, and the shims' `<run>/s/<64 hex>`) have a 107-byte limit."""

    root: Path
    run: Path
    index: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= MAX_INDEX:
            raise ValueError(f"node index {self.index} is outside 1..{MAX_INDEX}")
        if len(str(self.shim_socket_dir)) + 1 + 64 >= 108:
            raise ValueError(f"{self.run} is too long for the shims' unix sockets below it")

    # network and cgroups, derived from the index
    @property
    def node_ip(self) -> str:
        return f"{POD_NETWORK_PREFIX}.{self.index}.1"

    @property
    def pod_subnet(self) -> str:
        return f"{POD_NETWORK_PREFIX}.{self.index}.0/24"

    @property
    def bridge(self) -> str:
        return f"aicertbr{self.index}"  # at most 11 characters (IFNAMSIZ is 16 with the NUL)

    @property
    def bridge_mac(self) -> str:
        """A fixed, locally administered MAC for the bridge. Without one, a Linux bridge takes the
        lowest MAC of its ports, so it changes when a pod's veth joins or leaves, and pods whose ARP
        entry for the node IP still names the old MAC lose their packets to it (the host drops frames
        not addressed to the bridge) until they re-resolve it."""
        return f"02:ac:e7:00:00:{self.index:02x}"

    @property
    def cgroup_root(self) -> str:
        return f"/aicert-node-{self.index}"

    # directories under root
    @property
    def kubelet_root(self) -> Path:
        """kubelet's root directory as the host sees it (KUBELET_ROOT inside the node): its
        directories, without the mounts kubelet makes in the node's mount namespace."""
        return self.root / "private" / "kubelet"

    @property
    def agent_state_dir(self) -> Path:
        """AGENT_STATE_DIR of the node, as the host sees it."""
        return self.root / "private" / "aicert"

    @property
    def kubelet_cert_dir(self) -> Path:
        return self.root / "kubelet-pki"

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd"

    @property
    def registry_hosts_dir(self) -> Path:
        """containerd's registry hosts directory (CRI `registry.config_path`): `<host:port>/hosts.toml`."""
        return self.containerd_root / "certs.d"

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def pod_logs_dir(self) -> Path:
        return self.log_dir / "pods"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def private_dirs(self) -> dict[Path, Path]:
        """Fixed host paths that kubelet and containerd write to whatever their configuration says,
        each mapped to this node's own directory, bind-mounted over it in the node's mount namespace:
        /var/lib/cni (libcni's result cache), kubelet's root (with its device-plugin socket
        directory), /var/log/containers (kubelet's log symlinks), the aicert agent's state and
        /run/containerd (the node's short run directory, with containerd's socket: CRI_SOCKET)."""
        private = self.root / "private"
        return {
            Path("/var/lib/cni"): private / "var-lib-cni",
            KUBELET_ROOT: self.kubelet_root,
            Path("/var/log/containers"): private / "var-log-containers",
            AGENT_STATE_DIR: self.agent_state_dir,
            CRI_DIR: self.run,
        }

    # short paths under run
    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def containerd_state(self) -> Path:
        return self.run / "state"

    @property
    def shim_socket_dir(self) -> Path:
        return self.run / "s"

    @property
    def runc_root(self) -> Path:
        return self.run / "runc"


def containerd_config(layout: NodeLayout, bin_dir: Path, sandbox_image: str) -> dict[str, Any]:
    """containerd 2's config (version 4): every path this node's own, nothing on a fixed host path."""
    root = layout.containerd_root
    return {
        "version": 4,
        "root": str(root / "root"),
        "state": str(layout.containerd_state),
        "temp": str(root / "tmp"),
        "plugins": {
            "io.containerd.server.v1.grpc": {"address": str(layout.containerd_socket)},
            "io.containerd.server.v1.ttrpc": {"address": f"{layout.containerd_socket}.ttrpc"},
            "io.containerd.server.v1.debug": {"address": ""},
            "io.containerd.server.v1.metrics": {"address": ""},
            # the shims' sockets (default /run/containerd/s)
            "io.containerd.shim.v1.manager": {"socket_dir": str(layout.shim_socket_dir)},
            "io.containerd.internal.v1.opt": {"path": str(root / "opt")},  # default /opt/containerd
            "io.containerd.image-verifier.v1.bindir": {"bin_dir": str(root / "image-verifier")},
            "io.containerd.nri.v1.nri": {"disable": True},  # would listen on /var/run/nri/nri.sock
            "io.containerd.cri.v1.images": {
                "snapshotter": "overlayfs",
                "pinned_images": {"sandbox": sandbox_image},  # imported at start: nothing is pulled
                # per-registry hosts.toml files (registry_hosts): read at every pull, so a registry
                # can be added while the node runs
                "registry": {"config_path": str(layout.registry_hosts_dir)},
            },
            "io.containerd.cri.v1.runtime": {
                # The VM lacks CAP_SYS_RESOURCE: without this, runc cannot lower a sandbox's
                # oom_score_adj below containerd's and every sandbox fails.
                "restrict_oom_score_adj": True,
                "netns_mounts_under_state_dir": True,  # pods' network namespaces: not /run/netns
                "cdi_spec_dirs": [],
                "enable_criu": False,
                "containerd": {
                    "default_runtime_name": "runc",
                    "runtimes": {
                        "runc": {
                            "runtime_type": "io.containerd.runc.v2",
                            "runtime_path": str(bin_dir / "containerd-shim-runc-v2"),
                            "options": {
                                "BinaryName": str(bin_dir / "runc"),
                                "Root": str(layout.runc_root),  # default /run/containerd/runc
                                "SystemdCgroup": False,
                            },
                        }
                    },
                },
                "cni": {
                    "bin_dirs": [str(bin_dir)],
                    "conf_dir": str(layout.cni_conf_dir),
                    "max_conf_num": 1,
                },
            },
            # exec, attach and port-forward streams: kubelet proxies them to this loopback server
            "io.containerd.grpc.v1.cri": {"stream_server_address": "127.0.0.1", "stream_server_port": "0"},
        },
    }


_REGISTRY_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:]+\]):[0-9]{1,5}")


_REGISTRY_NAME = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[0-9]{1,5})?")


def registry_hosts(http_registries: Sequence[str], names: Mapping[str, str] | None = None) -> dict[str, str]:
    """containerd's hosts files for registries served over plain http (the node's local registries):
    `<host:port>/hosts.toml` under the hosts directory -> its text. Each says the server is
    `http://<host:port>`, for pulling and resolving only (no push). `names` maps a registry name
    images use (e.g. registry.local) to one of those host:port: images named there are pulled from
    it, as a node pulls `<acr>.azurecr.io/...` from whatever serves that name. A registry not listed
    gets containerd's default (https)."""
    files: dict[str, str] = {}
    served = {registry: registry for registry in http_registries}
    for name, registry in (names or {}).items():
        if not _REGISTRY_NAME.fullmatch(name):
            raise ValueError(f"registry name {name!r} is not a host name (with an optional port)")
        served[name] = registry
    for name, registry in served.items():
        if not _REGISTRY_HOST.fullmatch(registry):
            raise ValueError(f"registry {registry!r} is not host:port")
        server = f"http://{registry}"
        files[f"{name}/hosts.toml"] = (
            f"server = {json.dumps(server)}\n\n"
            f"[host.{json.dumps(server)}]\n"
            '  capabilities = ["pull", "resolve"]\n'
        )
    return files


def cni_config(layout: NodeLayout) -> dict[str, Any]:
    """A bridge network on the node's own bridge (made before containerd starts, with the node IP).

    isGateway false: the bridge plugin neither sets the bridge address nor turns on the host's
    ip_forward (the node does that through the host ledger: NODE_SYSCTLS); pods get their subnet's route and one to 10.244.0.0/16 through the node IP (the host:
    the API server's address and every node's are there), and none to anywhere else. ipMasq false:
    no iptables NAT chains. host-local keeps its allocations in the node's directory, not
    /var/lib/cni/networks."""
    return {
        "cniVersion": "1.0.0",
        "name": f"aicert-node-{layout.index}",
        "plugins": [
            {
                "type": "bridge",
                "bridge": layout.bridge,
                "isGateway": False,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": layout.pod_subnet, "gateway": layout.node_ip}]],
                    "routes": [{"dst": f"{POD_NETWORK_PREFIX}.0.0/16"}],
                    "dataDir": str(layout.ipam_dir),
                },
            }
        ],
    }


def kubelet_config(
    layout: NodeLayout,
    *,
    port: int,
    healthz_port: int,
    client_ca_file: Path,
    tls_cert_file: Path,
    tls_key_file: Path,
) -> dict[str, Any]:
    """KubeletConfiguration (kubelet.config.k8s.io/v1beta1) for a node on this machine."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": layout.node_ip,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(tls_cert_file),
        "tlsPrivateKeyFile": str(tls_key_file),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "imageServiceEndpoint": f"unix://{layout.containerd_socket}",
        "cgroupDriver": "cgroupfs",  # no systemd here
        "cgroupRoot": layout.cgroup_root,  # one cgroup tree per node
        "failCgroupV1": False,  # kubelet refuses cgroup v1 by default; this machine has only v1
        "failSwapOn": False,
        "podLogsDir": str(layout.pod_logs_dir),
        "makeIPTablesUtilChains": False,  # no KUBE-IPTABLES-HINT/KUBE-KUBELET-CANARY chains on the host
        # kubelet's default (KubeletEnsureSecretPulledImages, beta and on since 1.35): an image kubelet
        # pulled with a pull secret is checked again for a pod without those credentials; an image
        # it did not pull (imported: the pause image, import_image) is not
        "imagePullCredentialsVerificationPolicy": "NeverVerifyPreloadedImages",
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "shutdownGracePeriod": "0s",  # no systemd-logind inhibitor
        "registerNode": True,
        "maxPods": 110,
    }


def kubelet_args(
    layout: NodeLayout,
    *,
    name: str,
    config_file: Path,
    kubeconfig: Path,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[str] = (),
) -> list[str]:
    """kubelet's command line: what KubeletConfiguration cannot say. `labels` and `taints`
    (key=value:Effect) are set when the node registers, as an AKS node pool's are."""
    extra = []
    if labels:
        extra.append("--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
    if taints:
        extra.append("--register-with-taints=" + ",".join(taints))
    return [
        *extra,
        f"--config={config_file}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={KUBELET_ROOT}",
        f"--cert-dir={layout.kubelet_cert_dir}",
        f"--hostname-override={name}",
        f"--node-ip={layout.node_ip}",
        "--v=2",
    ]


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def to_toml(document: Mapping[str, Any]) -> str:
    """TOML for nested tables of strings, booleans, integers and lists of them (all config.toml needs)."""
    lines: list[str] = []

    def table(prefix: tuple[str, ...], values: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in values.items() if not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in values.items() if isinstance(v, Mapping)]
        if prefix and (scalars or not tables):
            lines.append(f"[{'.'.join(_key(p) for p in prefix)}]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars)
        for key, sub in tables:
            table((*prefix, key), sub)

    table((), document)
    return "\n".join(lines) + "\n"
