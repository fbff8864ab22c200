"""The node double's runtime decisions for images with their own root filesystem: where a mount
lands inside the image's root, the bwrap command line, and how layers and whiteouts apply."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from aicert_localcluster.images import ImageStore, ImageStoreError, _extract_layer
from aicert_localcluster.kubelet.sandbox import inside_root, sandbox_argv


def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "usr" / "lib").mkdir(parents=True)
    os.symlink("/run", root / "var" / "run")  # Debian's: absolute
    os.symlink("usr/lib", root / "lib")  # merged /usr: relative
    os.symlink("../../etc/loop", root / "usr" / "lib" / "loop")
    os.symlink("/usr/lib/loop", root / "etc")
    return root


def test_mount_paths_resolve_symlinks_inside_the_image_not_on_the_host(tmp_path: Path) -> None:
    root = image_root(tmp_path)
    assert inside_root(root, "/var/run/secrets/kubernetes.io/serviceaccount") == (
        "/run/secrets/kubernetes.io/serviceaccount"
    )
    assert inside_root(root, "/lib/x/../y") == "/usr/lib/y"
    assert inside_root(root, "/../../control") == "/control"
    assert inside_root(root, "/") == "/"
    with pytest.raises(OSError, match="too many levels of symbolic links"):
        inside_root(root, "/etc/hosts")


def test_an_own_root_sandbox_binds_the_image_as_root_and_nothing_of_the_host(tmp_path: Path) -> None:
    root = image_root(tmp_path)
    (root / "etc").unlink()  # no loop here
    argv = sandbox_argv(
        bwrap="bwrap",
        host_binds=[("/usr", "/usr"), ("/work", "/work")],
        app_dir=tmp_path / "app",
        mounts=[(tmp_path / "token", "/var/run/secrets/kubernetes.io/serviceaccount", True)],
        root=root,
        workdir="/var/run",
        hostname="pod",
        capabilities=[],
        read_only_root=True,
        argv=["python", "-V"],
    )
    assert argv[:4] == ["bwrap", "--bind", str(root), "/"]
    pairs = list(zip(argv, argv[1:], argv[2:], strict=False))
    assert ("--ro-bind", str(tmp_path / "token"), "/run/secrets/kubernetes.io/serviceaccount") in pairs
    assert "/work" not in argv and "/app" not in argv and "/usr" not in argv
    assert argv[argv.index("--chdir") + 1] == "/run"
    assert argv[-5:] == ["--remount-ro", "/", "--", "python", "-V"]


def layer(path: Path, members: dict[str, bytes | None]) -> Path:
    """A tar layer: a name with bytes is a file, with None a directory."""
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_layers_apply_in_order_with_their_whiteouts(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    _extract_layer(
        layer(tmp_path / "1.tar", {"etc": None, "etc/a": b"1", "etc/b": b"1", "opt": None, "opt/x": b"1"}),
        rootfs,
    )
    _extract_layer(
        layer(
            tmp_path / "2.tar",
            {"etc": None, "etc/.wh.a": b"", "opt": None, "opt/.wh..wh..opq": b"", "opt/y": b"2"},
        ),
        rootfs,
    )
    assert sorted(p.relative_to(rootfs).as_posix() for p in rootfs.rglob("*")) == [
        "etc",
        "etc/b",
        "opt",
        "opt/y",
    ]


def test_a_damaged_layer_is_refused_with_tars_message(tmp_path: Path) -> None:
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tar archive" * 100)
    with pytest.raises(ImageStoreError, match="tar -tf"):
        _extract_layer(broken, tmp_path)


def built_store(tmp_path: Path) -> tuple[ImageStore, str]:
    store = ImageStore(tmp_path / "a")
    ref = store.build("registry.local/t/app", {"run.py": b"print(1)"}, entrypoint=["python3"], cmd=None)
    return store, ref


def test_a_layout_copies_into_another_store_under_the_same_digest(tmp_path: Path) -> None:
    source, ref = built_store(tmp_path)
    target = ImageStore(tmp_path / "b")
    copied = target.add_layout(source.layout, "registry.local/t/app")
    assert copied == ref
    resolved = target.resolve(copied)
    assert (resolved.app_dir / "run.py").read_bytes() == b"print(1)"
    assert resolved.own_root is False  # a `build` image runs on the host's binds, not its own root


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda layout: (layout / "index.json").unlink(), "not an OCI image layout"),
        (
            lambda layout: (layout / "index.json").write_text('{"manifests": []}'),
            "expected one image manifest",
        ),
        (
            lambda layout: [
                b.write_bytes(b"x") for b in (layout / "blobs/sha256").iterdir() if b.stat().st_size > 1000
            ],
            "does not match its digest",
        ),
        (
            lambda layout: [
                b.unlink() for b in (layout / "blobs/sha256").iterdir() if b.stat().st_size > 1000
            ],
            "is missing",
        ),
    ],
    ids=["no-index", "no-manifest", "tampered-layer", "missing-layer"],
)
def test_a_damaged_layout_is_refused_and_nothing_is_added(tmp_path: Path, damage: Any, message: str) -> None:
    source, ref = built_store(tmp_path)
    damage(source.layout)
    target = ImageStore(tmp_path / "b")
    with pytest.raises(ImageStoreError, match=message):
        target.add_layout(source.layout, "registry.local/t/app")
    assert target.references() == []
    assert ref not in target


def test_volumes_mount_parents_first_whatever_the_pods_order(tmp_path: Path) -> None:
    """As containerd sorts them: a volume at /tmp listed after one at /tmp/kubelet/pods must not
    hide it (the agent DaemonSet's tmp volume and its kubelet pods volume on a test node)."""
    argv = sandbox_argv(
        bwrap="bwrap",
        host_binds=[],
        app_dir=None,
        mounts=[(tmp_path / "pods", "/tmp/kubelet/pods", False), (tmp_path / "tmp", "/tmp", False)],
        workdir="/",
        hostname="pod",
        capabilities=None,
        read_only_root=False,
        argv=["true"],
    )
    targets = [argv[i + 2] for i, a in enumerate(argv) if a == "--bind"]
    assert targets == ["/tmp", "/tmp/kubelet/pods"]


def test_a_whiteout_behind_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    """A layer whose whiteout sits under a symlink to an absolute path must not delete that path on
    the host (the symlink resolves on the host, not in the image)."""
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    os.symlink(str(outside), rootfs / "etc")
    with pytest.raises(ImageStoreError, match="leads out of the image's root"):
        _extract_layer(layer(tmp_path / "2.tar", {"etc/.wh.precious": b""}), rootfs)
    assert (outside / "precious").read_text() == "keep"
