"""Build (once) and locate the upstream control-plane binaries (etcd, kube-apiserver, kube-scheduler,
kube-controller-manager, kubectl) and the binaries of a real node (kubelet, containerd with its runc
shim and ctr, runc, the CNI plugins bridge, host-local and loopback, the pause program, and the
registry real nodes pull images from).

The versions come from the wrapper modules next to this package (`localcluster/go.mod` requires
k8s.io/kubernetes, `localcluster/etcd/go.mod` go.etcd.io/etcd/server/v3, `localcluster/containerd/go.mod`
containerd and the CNI plugins it is tested with, `localcluster/runc/go.mod` runc,
`localcluster/registry/go.mod` distribution's registry, `localcluster/kube-network-policies/go.mod`
the NetworkPolicy enforcer), so go.mod is the one place a version is pinned. Control-plane binaries
land in `~/.cache/aicert/k8s-<version>-etcd-<version>/bin/`, node binaries (the registry and the
enforcer too) in `~/.cache/aicert/node-k8s-<version>-containerd-<version>-runc-<version>/bin/`; Go's
build and module caches sit beside them under `~/.cache/aicert/go/`, so a rebuild after a version
bump is incremental. When `KUBEBUILDER_ASSETS` is set, the control-plane binaries found there are used as
they are and only the missing ones are built.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

LOCALCLUSTER_DIR = Path(__file__).resolve().parents[1]
K8S_MODULE_DIR = LOCALCLUSTER_DIR
ETCD_MODULE_DIR = LOCALCLUSTER_DIR / "etcd"
CONTAINERD_MODULE_DIR = LOCALCLUSTER_DIR / "containerd"
RUNC_MODULE_DIR = LOCALCLUSTER_DIR / "runc"
REGISTRY_MODULE_DIR = LOCALCLUSTER_DIR / "registry"
NETPOL_MODULE_DIR = LOCALCLUSTER_DIR / "kube-network-policies"
NETPOL_MODULE = "sigs.k8s.io/kube-network-policies"
CONTAINERD_MODULE = "github.com/containerd/containerd/v2"
CNI_PLUGINS_MODULE = "github.com/containernetworking/plugins"
RUNC_MODULE = "github.com/opencontainers/runc"
REGISTRY_MODULE = "github.com/distribution/distribution/v3"
# containerd's release builds leave out the snapshotters whose C libraries or kernel modules a node
# here does not have; runc's add seccomp (cgo, Debian's libseccomp-dev) and leave out libpathrs, a
# Rust library no Debian release packages (runc then uses its Go path-safety code).
CONTAINERD_BUILD_TAGS = "no_btrfs,no_devmapper,no_zfs"
RUNC_BUILD_TAGS = "seccomp,urfave_cli_no_docs"
CNI_PLUGINS = ("bridge", "host-local", "loopback")

# Upstream release builds use these tags (hack/lib/golang.sh): `notest` drops test-only code paths,
# `grpcnotrace` keeps golang.org/x/net/trace out of the binary.
K8S_BUILD_TAGS = "selinux,notest,grpcnotrace"

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """A binary could not be built or does not report the pinned version."""


@dataclass(frozen=True)
class Binary:
    name: str
    module_dir: Path
    package: str
    version_args: tuple[str, ...]
    expected: str  # substring the version output must contain
    ldflags: tuple[str, ...] = ()
    tags: str = ""
    cgo: bool = False  # runc needs cgo (its nsenter is C) and gcc; everything else is CGO_ENABLED=0
    c_source: str = ""  # a C program in module_dir's module (pause): built with gcc, not go build
    # The version is read from the Go module information embedded in the binary (`go version -m` shows
    # it; `expected` is part of its `mod` line), not by running it: kube-network-policies has no --version, and
    # run without arguments it would start enforcing.
    buildinfo: bool = False


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aicert"


def _required_version(go_mod: Path, module: str) -> str:
    text = go_mod.read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if match is None:
        raise BuildError(f"{go_mod} does not require {module}")
    return match.group(1)


def kubernetes_version() -> str:
    """The pinned Kubernetes version, e.g. "v1.37.2" (from localcluster/go.mod)."""
    return _required_version(K8S_MODULE_DIR / "go.mod", "k8s.io/kubernetes")


def etcd_version() -> str:
    """The pinned etcd version, e.g. "v3.6.16" (from localcluster/etcd/go.mod)."""
    return _required_version(ETCD_MODULE_DIR / "go.mod", "go.etcd.io/etcd/server/v3")


def containerd_version() -> str:
    """The pinned containerd version, e.g. "v2.4.2" (from localcluster/containerd/go.mod)."""
    return _required_version(CONTAINERD_MODULE_DIR / "go.mod", CONTAINERD_MODULE)


def cni_plugins_version() -> str:
    """The CNI plugins' version: the one containerd's own go.mod requires (and its CI installs)."""
    return _required_version(CONTAINERD_MODULE_DIR / "go.mod", CNI_PLUGINS_MODULE)


def runc_version() -> str:
    """The pinned runc version, e.g. "v1.5.2" (from localcluster/runc/go.mod)."""
    return _required_version(RUNC_MODULE_DIR / "go.mod", RUNC_MODULE)


def registry_version() -> str:
    """The pinned registry (distribution) version, e.g. "v3.1.2" (from localcluster/registry/go.mod)."""
    return _required_version(REGISTRY_MODULE_DIR / "go.mod", REGISTRY_MODULE)


def netpol_version() -> str:
    """The pinned kube-network-policies version, e.g. "v0.8.0" (localcluster/kube-network-policies/go.mod)."""
    return _required_version(NETPOL_MODULE_DIR / "go.mod", NETPOL_MODULE)


def pinned_bin_dir() -> Path:
    return cache_root() / f"k8s-{kubernetes_version()}-etcd-{etcd_version()}" / "bin"


def node_bin_dir() -> Path:
    """Where the node binaries of the pinned versions live (see `node_binaries`)."""
    name = f"node-k8s-{kubernetes_version()}-containerd-{containerd_version()}-runc-{runc_version()}"
    return cache_root() / name / "bin"


def _k8s_ldflags(version: str) -> tuple[str, ...]:
    # What hack/lib/version.sh passes, minus the git commit we do not have (a module zip has no .git).
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version)
    if match is None:
        raise BuildError(f"unexpected Kubernetes version {version!r}")
    values = {
        "gitVersion": version,
        "gitMajor": match.group(1),
        "gitMinor": match.group(2),
        "gitTreeState": "archive",
    }
    return tuple(
        f"-X {package}.{key}={value}"
        for key, value in values.items()
        for package in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version")
    )


def binaries() -> list[Binary]:
    k8s = kubernetes_version()
    etcd = etcd_version()
    ldflags = _k8s_ldflags(k8s)
    k8s_server = [
        Binary(
            name,
            K8S_MODULE_DIR,
            f"k8s.io/kubernetes/cmd/{name}",
            ("--version",),
            f"Kubernetes {k8s}",
            ldflags,
            K8S_BUILD_TAGS,
        )
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
    ]
    return [
        Binary(
            "etcd",
            ETCD_MODULE_DIR,
            "go.etcd.io/etcd/server/v3",
            ("--version",),
            f"etcd Version: {etcd.removeprefix('v')}",
        ),
        *k8s_server,
        Binary(
            "kubectl",
            K8S_MODULE_DIR,
            "k8s.io/kubernetes/cmd/kubectl",
            ("version", "--client"),
            f"Client Version: {k8s}",
            ldflags,
            K8S_BUILD_TAGS,
        ),
    ]


def node_binaries() -> list[Binary]:
    """What a real node runs: kubelet (same pin as the control plane), containerd, its runc shim and
    ctr (its client), runc, the CNI plugins and pause, the sandbox's init (k8s.io/kubernetes's
    build/pause/linux/pause.c, built with gcc -static as upstream's image build does); and the
    registry real nodes pull images from (distribution's cmd/registry, see registry.py) and the
    NetworkPolicy enforcer the real nodes' pods are policed by (kube-network-policies)."""
    k8s = kubernetes_version()
    containerd = containerd_version()
    cni = cni_plugins_version()
    runc = runc_version()
    registry = registry_version()
    containerd_ldflags = (
        f"-X {CONTAINERD_MODULE}/version.Version={containerd}",
        f"-X {CONTAINERD_MODULE}/version.Package={CONTAINERD_MODULE}",
    )
    containerd_tools = [
        Binary(
            name,
            CONTAINERD_MODULE_DIR,
            f"{CONTAINERD_MODULE}/cmd/{name}",
            version_args,
            expected,
            containerd_ldflags,
            CONTAINERD_BUILD_TAGS,
        )
        for name, version_args, expected in (
            ("containerd", ("--version",), f"{CONTAINERD_MODULE} {containerd}"),
            ("containerd-shim-runc-v2", ("-v",), f"Version:  {containerd}"),
            ("ctr", ("--version",), f"ctr {CONTAINERD_MODULE} {containerd}"),
        )
    ]
    cni_plugins = [
        Binary(
            name,
            CONTAINERD_MODULE_DIR,
            f"{CNI_PLUGINS_MODULE}/plugins/{'ipam' if name == 'host-local' else 'main'}/{name}",
            (),  # run without CNI_COMMAND, a plugin prints its name and version
            f"plugin {cni}",
            (f"-X {CNI_PLUGINS_MODULE}/pkg/utils/buildversion.BuildVersion={cni}",),
        )
        for name in CNI_PLUGINS
    ]
    return [
        Binary(
            "kubelet",
            K8S_MODULE_DIR,
            "k8s.io/kubernetes/cmd/kubelet",
            ("--version",),
            f"Kubernetes {k8s}",
            _k8s_ldflags(k8s),
            K8S_BUILD_TAGS,
        ),
        *containerd_tools,
        Binary(
            "runc",
            RUNC_MODULE_DIR,
            RUNC_MODULE,
            ("--version",),
            f"runc version {runc.removeprefix('v')}",
            (f"-X main.gitCommit={runc}",),
            RUNC_BUILD_TAGS,
            cgo=True,
        ),
        *cni_plugins,
        Binary(
            "pause",
            K8S_MODULE_DIR,
            "k8s.io/kubernetes",
            ("-v",),
            "pause.c v",
            c_source="build/pause/linux/pause.c",
        ),
        Binary(
            "registry",
            REGISTRY_MODULE_DIR,
            f"{REGISTRY_MODULE}/cmd/registry",
            ("--version",),
            f"{REGISTRY_MODULE} {registry}",
            # distribution's Makefile's ldflags, minus the git revision a module zip does not have
            (
                f"-X {REGISTRY_MODULE}/version.version={registry}",
                f"-X {REGISTRY_MODULE}/version.mainpkg={REGISTRY_MODULE}",
            ),
        ),
        Binary(
            "kube-network-policies",
            NETPOL_MODULE_DIR,
            f"{NETPOL_MODULE}/cmd",
            (),
            f"\nmod\t{NETPOL_MODULE}\t{netpol_version()}\t",
            buildinfo=True,
        ),
    ]


def reported_version(path: Path, args: tuple[str, ...]) -> str:
    """The version text a binary prints, or "" when it cannot run."""
    try:
        proc = subprocess.run(
            [str(path), *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout + proc.stderr


# The Go linker brackets a binary's module information (runtime/debug.BuildInfo's text) with these.
_MODINFO_START = bytes.fromhex("3077af0c9274080241e1c107e6d618e6")
_MODINFO_END = bytes.fromhex("f932433186182072008242104116d8f2")


def embedded_build_info(path: Path) -> str:
    """The module information a Go binary carries (what `go version -m` prints: "path\t<package>",
    "mod\t<module>\t<version>\t<sum>", "dep\t..." lines), read from the file; "" when there is none."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    start = data.find(_MODINFO_START)
    end = data.find(_MODINFO_END, start + len(_MODINFO_START)) if start >= 0 else -1
    if end < 0:
        return ""
    return data[start + len(_MODINFO_START) : end].decode("utf-8", "replace")


def version_text(binary: Binary, path: Path) -> str:
    """What `binary.expected` is looked for in: its version output, or its embedded build information."""
    return embedded_build_info(path) if binary.buildinfo else reported_version(path, binary.version_args)


def is_current(binary: Binary, path: Path) -> bool:
    return path.is_file() and binary.expected in version_text(binary, path)


def go_env(*, cgo: bool = False) -> dict[str, str]:
    root = cache_root() / "go"
    env = dict(os.environ)
    env.update(
        GOCACHE=str(root / "build"),
        GOMODCACHE=str(root / "mod"),
        CGO_ENABLED="1" if cgo else "0",
        # go.sum is complete: nothing is resolved or added at build time, so no checksum-database
        # look-up is needed either.
        GOFLAGS="-mod=readonly -buildvcs=false",
    )
    return env


def go_command() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if found is None:
        raise BuildError("the Go toolchain (`go`) is needed to build the control-plane binaries; install Go")
    return found


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _module_source(binary: Binary) -> Path:
    """The downloaded source of the module that holds a C program (`go mod download` its pin)."""
    proc = subprocess.run(
        [go_command(), "mod", "download", "-json", binary.package],
        cwd=binary.module_dir,
        env=go_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise BuildError(f"go mod download {binary.package} failed:\n{proc.stderr[-2000:]}")
    return Path(json.loads(proc.stdout)["Dir"])


def _pause_command(binary: Binary, tmp: Path) -> list[str]:
    """gcc with the flags of k8s.io/kubernetes's build/pause/Makefile (its TAG is the version)."""
    source = _module_source(binary) / binary.c_source
    makefile = (source.parents[1] / "Makefile").read_text()
    match = re.search(r"^TAG \?= (\S+)$", makefile, re.MULTILINE)
    if match is None:
        raise BuildError(f"no TAG in {source.parents[1] / 'Makefile'}")
    compiler = shutil.which("gcc")
    if compiler is None:
        raise BuildError("gcc is needed to build pause and runc (Debian: gcc, libc6-dev)")
    return [
        compiler,
        "-Os",
        "-Wall",
        "-Werror",
        "-static",
        f"-DVERSION=v{match.group(1)}-0",
        "-o",
        str(tmp),
        str(source),
    ]


def build_one(binary: Binary, out_dir: Path, *, jobs: int, log: Log) -> float:
    """`go build` (or, for a C program, gcc) one binary into out_dir; returns the seconds it took."""
    tmp = out_dir / f".{binary.name}.tmp"
    if binary.c_source:
        cmd = _pause_command(binary, tmp)
    else:
        ldflags = " ".join(("-s", "-w", *binary.ldflags))
        cmd = [go_command(), "build", "-trimpath", "-p", str(jobs), "-ldflags", ldflags]
        if binary.cgo:
            cmd.append("-buildmode=pie")  # as runc's Makefile builds it
        if binary.tags:
            cmd += ["-tags", binary.tags]
        cmd += ["-o", str(tmp), binary.package]
    started = time.monotonic()
    tool = "gcc" if binary.c_source else "go build"
    log(f"[build] {binary.name}: {tool} {binary.package} (in {binary.module_dir.name}/) ...")
    proc = subprocess.run(
        cmd,
        cwd=binary.module_dir,
        env=go_env(cgo=binary.cgo),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise BuildError(f"building {binary.name} failed (exit {proc.returncode}):\n{tail}")
    if binary.expected not in version_text(binary, tmp):
        tmp.unlink(missing_ok=True)
        raise BuildError(f"{binary.name} built but does not report {binary.expected!r}")
    tmp.replace(out_dir / binary.name)
    log(f"[build] {binary.name}: done in {elapsed:.0f}s")
    return elapsed


def ensure_pinned(
    names: list[str] | None = None, *, jobs: int = 2, force: bool = False, log: Log = _stderr
) -> Path:
    """Build the named binaries (all by default) at the pinned versions unless already cached."""
    out_dir = pinned_bin_dir()
    wanted = [b for b in binaries() if names is None or b.name in names]
    with _locked(out_dir.parent):
        out_dir.mkdir(parents=True, exist_ok=True)
        missing = [b for b in wanted if force or not is_current(b, out_dir / b.name)]
        if not missing:
            return out_dir
        log(
            f"[build] Kubernetes {kubernetes_version()}, etcd {etcd_version()} -> {out_dir} "
            f"(to build: {', '.join(b.name for b in missing)}; Go caches in {cache_root() / 'go'})"
        )
        started = time.monotonic()
        for binary in missing:
            build_one(binary, out_dir, jobs=jobs, log=log)
        log(f"[build] all built in {time.monotonic() - started:.0f}s")
    return out_dir


def ensure_node_binaries(*, jobs: int = 2, force: bool = False, log: Log = _stderr) -> Path:
    """Build the node binaries (see `node_binaries`) at the pinned versions unless already cached;
    returns their directory (it is also the CNI plugin directory)."""
    out_dir = node_bin_dir()
    wanted = node_binaries()
    with _locked(out_dir.parent):
        out_dir.mkdir(parents=True, exist_ok=True)
        missing = [b for b in wanted if force or not is_current(b, out_dir / b.name)]
        if not missing:
            return out_dir
        log(
            f"[build] node: kubelet {kubernetes_version()}, containerd {containerd_version()}, runc "
            f"{runc_version()}, CNI plugins {cni_plugins_version()}, registry {registry_version()}, "
            f"kube-network-policies {netpol_version()} -> {out_dir} "
            f"(to build: {', '.join(b.name for b in missing)})"
        )
        started = time.monotonic()
        for binary in missing:
            build_one(binary, out_dir, jobs=jobs, log=log)
        log(f"[build] node binaries built in {time.monotonic() - started:.0f}s")
    return out_dir


def _assets_dir(assets: Path) -> Path:
    digest = hashlib.sha256(str(assets.resolve()).encode()).hexdigest()[:12]
    return cache_root() / f"kubebuilder-assets-{digest}" / "bin"


def ensure_binaries(*, jobs: int = 2, force: bool = False, log: Log = _stderr) -> Path:
    """A directory holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl.

    Without `KUBEBUILDER_ASSETS`: the pinned build cache (built on first use). With it: a directory of
    symlinks to the assets' binaries, completed with pinned builds of whatever the assets lack.
    """
    assets_env = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets_env:
        return ensure_pinned(jobs=jobs, force=force, log=log)
    assets = Path(assets_env).expanduser().resolve()
    if not assets.is_dir():
        raise BuildError(f"KUBEBUILDER_ASSETS={assets_env} is not a directory")
    names = [b.name for b in binaries()]
    present = [n for n in names if os.access(assets / n, os.X_OK) and (assets / n).is_file()]
    absent = [n for n in names if n not in present]
    pinned = ensure_pinned(absent, jobs=jobs, force=force, log=log) if absent else None
    if "kube-apiserver" in present and absent:
        version = reported_version(assets / "kube-apiserver", ("--version",)).strip()
        expected = f"Kubernetes {kubernetes_version()}"
        if not version.startswith(expected.rsplit(".", 1)[0]):
            log(
                f"[build] warning: KUBEBUILDER_ASSETS has {version or 'an unknown kube-apiserver'}, "
                f"the binaries built to complete it are {expected} (version skew)"
            )
    out_dir = _assets_dir(assets)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = assets / name if name in present else (pinned or pinned_bin_dir()) / name
        link = out_dir / name
        if link.is_symlink() or link.exists():
            if link.is_symlink() and Path(os.readlink(link)) == target:
                continue
            link.unlink()
        link.symlink_to(target)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="localcluster/build.py",
        description="Build (once) the upstream etcd, kube-apiserver, kube-controller-manager, kube-scheduler "
        "and kubectl (the control plane), and a real node's kubelet, containerd (with its shim and ctr), "
        "runc, CNI plugins, pause and the registry, at the versions pinned in "
        "localcluster/{,etcd/,containerd/,runc/,registry/}go.mod; "
        "print the directories holding them. Honours KUBEBUILDER_ASSETS (control plane only).",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--control-plane", action="store_true", help="only the control-plane binaries")
    which.add_argument("--node", action="store_true", help="only the node binaries")
    which.add_argument(
        "--print-dir", action="store_true", help="only the control-plane binaries; print only their directory"
    )
    which.add_argument(
        "--print-node-dir", action="store_true", help="only the node binaries; print only their directory"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when cached binaries are current")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (go build -p), default 2")
    args = parser.parse_args(argv)
    control_plane = not (args.node or args.print_node_dir)
    node = not (args.control_plane or args.print_dir)
    started = time.monotonic()
    built: list[tuple[Path, list[Binary]]] = []
    try:
        if control_plane:
            built.append((ensure_binaries(jobs=args.jobs, force=args.force), binaries()))
        if node:
            built.append((ensure_node_binaries(jobs=args.jobs, force=args.force), node_binaries()))
    except BuildError as exc:
        _stderr(f"[build] error: {exc}")
        return 1
    if args.print_dir or args.print_node_dir:
        print(built[0][0])
        return 0
    for directory, listed in built:
        for binary in listed:
            lines = version_text(binary, directory / binary.name).strip().splitlines()
            shown = [line for line in lines if line.startswith("mod\t")] if binary.buildinfo else lines
            print(f"{binary.name:<24} {' '.join(shown[0].split()) if shown else '?'}")
    print(f"total {time.monotonic() - started:.1f}s")
    for directory, _ in built:
        print(directory)
    return 0


def cached_go_build(source: Path, name: str, *, package: str = ".", ldflags: tuple[str, ...] = ()) -> Path:
    """Build the small Go program in `source` (go.mod, go.sum, *.go: a test tool, not product code)
    once and cache it under ~/.cache/aicert/<name>/<hash of its sources>/<name>. `package` is what
    to build: "." (the module's own main package) or a main package the module requires (its go.mod
    pins the version; e.g. helm.sh/helm/v3/cmd/helm); `ldflags` are added to `-s -w`."""
    files = sorted(p for p in source.iterdir() if p.name in ("go.mod", "go.sum") or p.suffix == ".go")
    # What to build and how, when not the default (so the default's cache key stays as it was).
    recipe = b"" if (package, ldflags) == (".", ()) else "\0".join((package, *ldflags)).encode()
    sources = b"".join(p.name.encode() + p.read_bytes() for p in files)
    digest = hashlib.sha256(sources + recipe).hexdigest()[:16]
    out = cache_root() / name / digest / name
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{name}.tmp")
        flags = ["-ldflags", " ".join(("-s", "-w", *ldflags))] if ldflags else []
        proc = subprocess.run(
            [go_command(), "build", "-trimpath", *flags, "-o", str(tmp), package],
            cwd=source,
            env=go_env(),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise BuildError(f"building {name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        tmp.replace(out)
    return out
