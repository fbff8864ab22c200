"""The operator and agent images, built by images/build.py as `make images` builds them: the same
manifest digest from two builds, a layout skopeo reads, the config the Dockerfile defines, a clean
layer, and a rootfs whose Python imports the product read-only in bwrap.

The module's fixture builds each image (reusing ~/.cache/aicert/images: the build stage's wheels and
the debootstrapped rootfs; a cold build takes a few minutes), then runs the final stage's steps again
from scratch in a second directory and writes a second layout from that: both must be byte for byte
the same. Needs root, mmdebstrap, bwrap and skopeo (`make deps`) and the Debian archive and PyPI.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aicert_images.cache import cache_root
from aicert_images.cli import prepare_rootfs
from aicert_images.dockerfile import parse_dockerfile
from aicert_images.layout import Layout, write_layout
from aicert_images.repository import DOCKERFILES, build_args, source_date_epoch
from aicert_images.spec import ImageSpec

pytestmark = pytest.mark.integration

OCI_LABELS = {"source", "revision", "version", "licenses", "title", "description"}


@dataclass(frozen=True)
class Built:
    spec: ImageSpec
    first: Layout  # from the cached rootfs
    second: Layout  # from the final stage's steps run again from scratch
    clamp: int  # SOURCE_DATE_EPOCH
    rootfs: Path  # the first layout's layer, extracted by tar


def blob(layout: Layout, digest: str) -> Path:
    return layout.path / "blobs" / "sha256" / digest.removeprefix("sha256:")


def files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Built]]:
    work = tmp_path_factory.mktemp("images")
    args = build_args()
    built: dict[str, Built] = {}
    try:
        for dockerfile in DOCKERFILES:
            spec = parse_dockerfile(dockerfile, args)
            clamp = source_date_epoch(spec.base.epoch)
            rootfs = prepare_rootfs(spec, cache_root())
            first = write_layout(spec, rootfs, work / "first" / spec.name, clamp, args["VERSION"])
            again = prepare_rootfs(spec, cache_root(), into=work / "rootfs-again" / spec.name)
            second = write_layout(spec, again, work / "second" / spec.name, clamp, args["VERSION"])
            shutil.rmtree(again)
            extracted = work / "extracted" / spec.name
            extracted.mkdir(parents=True)
            layer = blob(first, first.layer.blob.digest)
            subprocess.run(["tar", "--numeric-owner", "-xzf", str(layer), "-C", str(extracted)], check=True)
            built[spec.name] = Built(spec, first, second, clamp, extracted)
        yield built
    finally:
        shutil.rmtree(work, ignore_errors=True)


NAMES = ["aicert-operator", "aicert-agent"]


@pytest.mark.parametrize("name", NAMES)
def test_two_builds_give_the_same_digest(images: dict[str, Built], name: str) -> None:
    built = images[name]
    assert built.first.manifest.digest == built.second.manifest.digest
    assert files(built.first.path) == files(built.second.path)


@pytest.mark.parametrize("name", NAMES)
def test_skopeo_reads_the_layout(images: dict[str, Built], name: str) -> None:
    built = images[name]
    for ref in (f"oci:{built.first.path}", f"oci:{built.first.path}:{build_args()['VERSION']}"):
        proc = subprocess.run(["skopeo", "inspect", ref], capture_output=True, text=True, check=True)
        inspected = json.loads(proc.stdout)
        assert inspected["Digest"] == built.first.manifest.digest
        assert inspected["Labels"] == dict(built.spec.labels)
    for path in (built.first.path / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def config(built: Built) -> dict[str, Any]:
    manifest = json.loads(blob(built.first, built.first.manifest.digest).read_bytes())
    assert manifest["layers"] == [built.first.layer.blob.json()]
    loaded: dict[str, Any] = json.loads(blob(built.first, manifest["config"]["digest"]).read_bytes())
    return loaded


@pytest.mark.parametrize("name", NAMES)
def test_config(images: dict[str, Built], name: str) -> None:
    built = images[name]
    image = config(built)
    assert image["architecture"] in ("amd64", "arm64") and image["os"] == "linux"
    assert image["rootfs"]["diff_ids"] == [built.first.layer.diff_id]
    assert image["config"]["User"] == "65532:65532"
    entrypoint = {
        "aicert-agent": ["/opt/venv/bin/aicert-agent"],
        "aicert-operator": ["/opt/venv/bin/python", "-m", "aicert_operator"],
    }
    assert image["config"]["Entrypoint"] == entrypoint[name]
    labels = image["config"]["Labels"]
    assert {k.removeprefix("org.opencontainers.image.") for k in labels} == OCI_LABELS
    assert labels["org.opencontainers.image.title"] == name
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.revision"] == build_args()["REVISION"]
    assert labels["org.opencontainers.image.version"] == build_args()["VERSION"]
    assert image["config"]["Env"][0].startswith("PATH=/opt/venv/bin:")


@pytest.mark.parametrize("name", NAMES)
def test_layer(images: dict[str, Built], name: str) -> None:
    built = images[name]
    with tarfile.open(blob(built.first, built.first.layer.blob.digest), "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert len(members) == built.first.layer.entries
    wanted = {
        "aicert-agent": [
            "opt/venv/bin/aicert-agent",
            "opt/venv/lib/python3.11/site-packages/tpm2_pytss/__init__.py",
        ],
        "aicert-operator": ["opt/venv/lib/python3.11/site-packages/aicert_operator/__main__.py"],
    }
    for path in [*wanted[name], "opt/venv/bin/python3", "usr/bin/python3.11", "etc/ld.so.cache"]:
        assert path in members, path
    assert members["opt/venv/bin/python3"].issym()
    if name == "aicert-agent":
        assert members["opt/venv/bin/aicert-agent"].mode & 0o111
        assert any(n.startswith("usr/lib/") and "/libtss2-tcti-device.so." in n for n in members)
    assert not [n for n, m in members.items() if m.ischr() or m.isblk() or m.isfifo()]
    dropped = ("var/lib/apt/lists/", "var/cache/apt/", "dev/", "proc/", "run/", "tmp/", "root/.cache")
    assert not [n for n in members if n.startswith(dropped)]
    assert not [n for n, m in members.items() if n.startswith("var/log/") and not m.isdir()]
    assert not {"etc/machine-id", "etc/resolv.conf", "etc/hostname", "var/cache/ldconfig/aux-cache"} & set(
        members
    )
    assert max(m.mtime for m in members.values()) <= built.clamp
    assert {m.uname for m in members.values()} == {""} == {m.gname for m in members.values()}
    passwd = (built.rootfs / "etc" / "passwd").read_text()
    assert "nonroot:x:65532:65532::/nonexistent:/usr/sbin/nologin\n" in passwd


@pytest.mark.parametrize("name", NAMES)
def test_bytecode_is_hash_based(images: dict[str, Built], name: str) -> None:
    """With a read-only root filesystem Python cannot rewrite .pyc files, and the layer's clamped
    mtimes would make timestamp-based ones stale: all of them are hash-based (flags 1 or 3)."""
    root = images[name].rootfs
    pycs = [p for top in ("usr", "opt") for p in (root / top).rglob("*.pyc")]
    assert len(pycs) > 1000
    stale = [str(p.relative_to(root)) for p in pycs if p.read_bytes()[4] not in (1, 3)]
    assert not stale, stale[:5]


def run_in_image(built: Built, *command: str) -> subprocess.CompletedProcess[str]:
    """`command` in the extracted rootfs, read-only, with the image's Env, as bwrap runs it."""
    env = [arg for item in config(built)["config"]["Env"] for arg in ("--setenv", *item.split("=", 1))]
    sandbox = ["--ro-bind", str(built.rootfs), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    isolation = ["--unshare-all", "--share-net", "--die-with-parent", "--clearenv", *env, "--chdir", "/"]
    return subprocess.run(
        ["bwrap", *sandbox, *isolation, *command],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_agent_runs_in_its_rootfs(images: dict[str, Built]) -> None:
    built = images["aicert-agent"]
    imported = run_in_image(
        built, "/opt/venv/bin/python", "-c", "import aicert_agent, tpm2_pytss, tpm2_pytss.FAPI"
    )
    assert imported.returncode == 0, imported.stderr
    helped = run_in_image(built, *config(built)["config"]["Entrypoint"], "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: aicert-agent"), helped.stderr
    chart = run_in_image(built, "python", "-m", "aicert_agent", "--help")  # the DaemonSet's command
    assert chart.returncode == 0, chart.stderr


def test_operator_runs_in_its_rootfs(images: dict[str, Built]) -> None:
    built = images["aicert-operator"]
    imported = run_in_image(built, "/opt/venv/bin/python", "-c", "import aicert_operator, kopf")
    assert imported.returncode == 0, imported.stderr
    # The entrypoint imports everything, then stops on the missing settings (no cluster here).
    started = run_in_image(built, *config(built)["config"]["Entrypoint"])
    assert started.returncode == 2 and "bad settings: AICERT_AGENT_IMAGE" in started.stderr, started.stderr
