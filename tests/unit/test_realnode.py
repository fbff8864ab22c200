"""The parts of a real node (localcluster/aicert_localcluster/realnode) that need no root: the host
ledger (on a directory standing in for /proc/sys), mountinfo parsing, the configuration files and the
OCI archive a node imports. The node itself is tests/integration/test_real_node.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aicert_localcluster.images import ImageStore
from aicert_localcluster.realnode import (
    KUBELET_SYSCTLS,
    ArchiveError,
    HostLedger,
    NodeLayout,
    write_oci_archive,
)
from aicert_localcluster.realnode.config import (
    cni_config,
    containerd_config,
    kubelet_config,
    registry_hosts,
    to_toml,
)
from aicert_localcluster.realnode.host import mounts_under, parse_mountinfo

LOCALCLUSTER = Path(__file__).resolve().parents[2] / "localcluster"
ORIGINAL = {
    "vm/overcommit_memory": "0",
    "vm/panic_on_oom": "0",
    "kernel/panic": "1",
    "kernel/panic_on_oops": "0",
    "kernel/keys/root_maxkeys": "200",
    "kernel/keys/root_maxbytes": "20000",
}


@pytest.fixture
def proc_sys(tmp_path: Path) -> Path:
    root = tmp_path / "proc-sys"
    for key, value in ORIGINAL.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text(value + "\n")
    return root


def sysctls(proc_sys: Path) -> dict[str, str]:
    return {key: (proc_sys / key).read_text().strip() for key in ORIGINAL}


def kubelet_sets(proc_sys: Path) -> None:
    """What kubelet does at start (protectKernelDefaults false)."""
    for key, value in KUBELET_SYSCTLS.items():
        (proc_sys / key).write_text(value)


# the host ledger -----------------------------------------------------------------------------------


def test_the_last_node_to_leave_restores_the_host(tmp_path: Path, proc_sys: Path) -> None:
    ledger = HostLedger(tmp_path / "ledger", proc_sys)
    fixed = tmp_path / "host" / "var" / "lib" / "kubelet" / "device-plugins"
    ledger.join("a", sysctls=KUBELET_SYSCTLS, directories=[fixed])
    kubelet_sets(proc_sys)
    ledger.join("b", sysctls=KUBELET_SYSCTLS, directories=[fixed])  # notes nothing new: a already did
    assert fixed.is_dir()

    assert ledger.leave("a") == []
    assert sysctls(proc_sys) == dict(KUBELET_SYSCTLS)  # b still runs: nothing restored
    assert fixed.is_dir()

    assert ledger.leave("b") == []
    assert sysctls(proc_sys) == ORIGINAL
    assert not (tmp_path / "host").exists()  # every directory the nodes created, and only those
    assert not (tmp_path / "ledger").exists()


def test_a_setting_changed_by_someone_else_since_is_left_alone(tmp_path: Path, proc_sys: Path) -> None:
    ledger = HostLedger(tmp_path / "ledger", proc_sys)
    ledger.join("a", sysctls=KUBELET_SYSCTLS, directories=[])
    kubelet_sets(proc_sys)
    (proc_sys / "kernel/panic").write_text("30")  # an administrator, after kubelet
    assert ledger.leave("a") == []
    assert sysctls(proc_sys) == {**ORIGINAL, "kernel/panic": "30"}


def test_directories_that_existed_are_never_removed(tmp_path: Path, proc_sys: Path) -> None:
    existing = tmp_path / "var" / "lib" / "cni"
    existing.mkdir(parents=True)
    ledger = HostLedger(tmp_path / "ledger", proc_sys)
    ledger.join("a", sysctls={}, directories=[existing, tmp_path / "var" / "log" / "containers"])
    assert ledger.leave("a") == []
    assert existing.is_dir()
    assert not (tmp_path / "var" / "log").exists()


def test_a_created_directory_someone_wrote_into_is_kept_and_reported(tmp_path: Path, proc_sys: Path) -> None:
    created = tmp_path / "var" / "log" / "containers"
    ledger = HostLedger(tmp_path / "ledger", proc_sys)
    ledger.join("a", sysctls={}, directories=[created])
    (created / "someone.log").write_text("x")
    problems = ledger.leave("a")
    assert len(problems) == 1 and str(created) in problems[0]
    assert (created / "someone.log").read_text() == "x"


def test_a_join_that_fails_half_way_is_undone_by_leave(tmp_path: Path, proc_sys: Path) -> None:
    ledger = HostLedger(tmp_path / "ledger", proc_sys)
    made = tmp_path / "var" / "lib" / "cni"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError):
        ledger.join("a", sysctls=KUBELET_SYSCTLS, directories=[made, blocker / "device-plugins"])
    assert made.is_dir()
    kubelet_sets(proc_sys)
    assert ledger.leave("a") == []
    assert not (tmp_path / "var").exists()
    assert sysctls(proc_sys) == ORIGINAL
    assert not (tmp_path / "ledger").exists()


def test_a_holder_whose_process_died_does_not_keep_the_host_changed(tmp_path: Path, proc_sys: Path) -> None:
    """A node whose Python process was killed never leaves; the next node to leave restores the host."""
    joined = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from aicert_localcluster.realnode import HostLedger, KUBELET_SYSCTLS;"
            "HostLedger(Path(sys.argv[1]), Path(sys.argv[2])).join('dead', sysctls=KUBELET_SYSCTLS, directories=[])",
            str(tmp_path / "ledger"),
            str(proc_sys),
        ],
        env={**os.environ, "PYTHONPATH": str(LOCALCLUSTER)},
        capture_output=True,
        text=True,
    )
    assert joined.returncode == 0, joined.stderr
    assert "dead" in json.loads((tmp_path / "ledger" / "realnodes.json").read_text())["holders"]
    kubelet_sets(proc_sys)
    ledger = HostLedger(tmp_path / "ledger", proc_sys)
    ledger.join("alive", sysctls=KUBELET_SYSCTLS, directories=[])
    assert ledger.leave("alive") == []
    assert sysctls(proc_sys) == ORIGINAL  # the values from before the dead holder, not kubelet's


# mounts --------------------------------------------------------------------------------------------


MOUNTINFO = (
    "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "90 22 0:50 / /tmp/node rw shared:5 - tmpfs tmpfs rw\n"
    "91 90 0:51 / /tmp/node/pods/a\\040b/vol rw - tmpfs tmpfs rw\n"
    "92 22 0:52 / /tmp/node2 rw - tmpfs tmpfs rw\n"
    "93 22 0:53 / /tmp/nod rw - overlay overlay rw,lowerdir=/x\n"
)


def test_mountinfo_escapes_are_decoded_and_prefixes_are_whole_path_components() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts][2] == "/tmp/node/pods/a b/vol"
    under = mounts_under([Path("/tmp/node")], MOUNTINFO)
    assert [m.mount_point for m in under] == ["/tmp/node", "/tmp/node/pods/a b/vol"]  # not /tmp/node2


# configuration -------------------------------------------------------------------------------------


@pytest.fixture
def layout(tmp_path: Path) -> NodeLayout:
    return NodeLayout(tmp_path / "node", Path("/tmp/aicert-node-7-0123abcd"), 7)


def absolute_paths(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from absolute_paths(item)
    elif isinstance(value, list):
        for item in value:
            yield from absolute_paths(item)
    elif isinstance(value, str):
        text = value.removeprefix("unix://")
        if text.startswith("/"):
            yield text


def test_containerd_config_survives_toml_and_uses_only_the_nodes_own_paths(layout: NodeLayout) -> None:
    bin_dir = Path("/cache/node-bin")
    config = containerd_config(layout, bin_dir, "registry.local/localcluster/pause@sha256:" + "a" * 64)
    assert tomllib.loads(to_toml(config)) == config
    owned = (str(layout.root), str(layout.run), str(bin_dir))
    stray = [p for p in absolute_paths(config) if not p.startswith(owned)]
    assert stray == []  # a default such as /run/containerd or /opt/cni/bin would be shared with the host
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["netns_mounts_under_state_dir"] is True


def test_kubelet_and_cni_configs_use_only_the_nodes_own_paths(layout: NodeLayout, tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    kubelet = kubelet_config(
        layout,
        port=10250,
        healthz_port=10248,
        client_ca_file=pki / "ca.crt",
        tls_cert_file=pki / "k.crt",
        tls_key_file=pki / "k.key",
    )
    owned = (str(layout.root), str(layout.run), str(pki), layout.cgroup_root)
    assert [p for p in absolute_paths(kubelet) if not p.startswith(owned)] == []
    assert kubelet["address"] == layout.node_ip == "10.244.7.1"
    assert kubelet["cgroupRoot"] == "/aicert-node-7"
    cni = cni_config(layout)
    assert [p for p in absolute_paths(cni) if not p.startswith(owned)] == []
    (bridge,) = cni["plugins"]
    assert (bridge["bridge"], bridge["isGateway"], bridge["ipMasq"]) == ("aicertbr7", False, False)


def test_registry_hosts_trust_each_registry_over_http_for_pulls_only(layout: NodeLayout) -> None:
    config = containerd_config(
        layout, Path("/cache/node-bin"), "registry.local/localcluster/pause@sha256:" + "a" * 64
    )
    assert config["plugins"]["io.containerd.cri.v1.images"]["registry"]["config_path"] == str(
        layout.registry_hosts_dir
    )
    files = registry_hosts(["127.0.0.1:5000", "127.0.0.1:5001"])
    assert sorted(files) == ["127.0.0.1:5000/hosts.toml", "127.0.0.1:5001/hosts.toml"]
    assert tomllib.loads(files["127.0.0.1:5000/hosts.toml"]) == {
        "server": "http://127.0.0.1:5000",
        "host": {"http://127.0.0.1:5000": {"capabilities": ["pull", "resolve"]}},
    }


@pytest.mark.parametrize(
    "registry", ["../etc", "127.0.0.1", "127.0.0.1:5000/x", "a:1\n[x]", "", "http://a:1"]
)
def test_a_registry_that_is_not_host_port_is_refused(registry: str) -> None:
    """The name becomes a directory under the hosts dir and a TOML string: only host:port."""
    with pytest.raises(ValueError, match="is not host:port"):
        registry_hosts([registry])


def test_kubelet_verifies_the_credentials_of_images_it_pulled_with_a_secret(layout: NodeLayout) -> None:
    """kubelet's default policy: NeverVerify would let a pod without the pull secret use an image another
    pod pulled with one (tests/integration/test_registry.py shows it on the real kubelet)."""
    config = kubelet_config(
        layout,
        port=1,
        healthz_port=2,
        client_ca_file=Path("/c"),
        tls_cert_file=Path("/t"),
        tls_key_file=Path("/k"),
    )
    assert config["imagePullCredentialsVerificationPolicy"] == "NeverVerifyPreloadedImages"


def test_toml_quotes_keys_and_strings() -> None:
    document = {"plugins": {"io.containerd.x": {"path": 'a "quoted"\\ path', "on": True, "n": [1, 2]}}}
    assert tomllib.loads(to_toml(document)) == document


@pytest.mark.parametrize("index", [0, 255])
def test_a_node_index_outside_the_pod_network_is_refused(tmp_path: Path, index: int) -> None:
    with pytest.raises(ValueError, match=r"outside 1\.\.254"):
        NodeLayout(tmp_path, Path("/tmp/x"), index)


def test_a_run_directory_too_long_for_the_shim_sockets_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too long"):
        NodeLayout(tmp_path, Path("/tmp/" + "r" * 40), 1)


# the OCI archive a node imports ---------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


@pytest.fixture
def reference(store: ImageStore) -> str:
    return store.build(
        "registry.local/unit/tool",
        files={"tool": b"\x7fELF not really", "notes.txt": b"text"},
        entrypoint=["/app/tool"],
        cmd=None,
    )


def test_the_archive_holds_exactly_the_one_image_under_its_digest(
    store: ImageStore, reference: str, tmp_path: Path
) -> None:
    store.build("registry.local/unit/other", files={"x": b"x"}, entrypoint=None, cmd=None)  # not archived
    repository, digest = write_oci_archive(store.layout, reference, tmp_path / "image.tar")
    assert f"{repository}@{digest}" == reference
    with tarfile.open(tmp_path / "image.tar") as tar:
        names = tar.getnames()
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        blobs = {n: tar.extractfile(n).read() for n in names if n.startswith("blobs/")}  # type: ignore[union-attr]
    (entry,) = index["manifests"]
    assert entry["digest"] == digest and "annotations" not in entry  # no name: ctr --digests names it
    manifest = json.loads(blobs[f"blobs/sha256/{digest[7:]}"])
    wanted = {digest, manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}
    assert {f"sha256:{n.rsplit('/', 1)[1]}" for n in blobs} == wanted
    assert all(hashlib.sha256(data).hexdigest() == n.rsplit("/", 1)[1] for n, data in blobs.items())


def test_elf_programs_are_executable_in_the_layer(store: ImageStore, reference: str, tmp_path: Path) -> None:
    manifest = json.loads((store.blobs / reference.rsplit(":", 1)[1]).read_bytes())
    layer = store.blobs / manifest["layers"][0]["digest"].removeprefix("sha256:")
    with tarfile.open(layer) as tar:
        assert tar.getmember("app/tool").mode == 0o755
        assert tar.getmember("app/notes.txt").mode == 0o644


def test_a_blob_that_does_not_match_its_digest_is_refused(
    store: ImageStore, reference: str, tmp_path: Path
) -> None:
    manifest = json.loads((store.blobs / reference.rsplit(":", 1)[1]).read_bytes())
    layer = store.blobs / manifest["layers"][0]["digest"].removeprefix("sha256:")
    layer.write_bytes(layer.read_bytes() + b"tampered")
    with pytest.raises(ArchiveError, match="does not match its digest"):
        write_oci_archive(store.layout, reference, tmp_path / "image.tar")


def test_an_image_by_tag_or_missing_is_refused(store: ImageStore, reference: str, tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="by digest"):
        write_oci_archive(store.layout, "registry.local/unit/tool:latest", tmp_path / "image.tar")
    with pytest.raises(ArchiveError, match="manifest sha256:"):
        write_oci_archive(store.layout, "registry.local/unit/tool@sha256:" + "0" * 64, tmp_path / "image.tar")
