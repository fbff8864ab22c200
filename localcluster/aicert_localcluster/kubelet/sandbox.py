"""The node double's container runtime: each container is a local process in a bubblewrap sandbox.

An image that brings its own root filesystem (what `make images` builds) runs on it: the worker
mounts an overlay of the extracted image (a fresh writable layer per container) and the sandbox
binds it as `/`, with the host's /etc/hosts and /etc/resolv.conf, as a container runtime does.
Any other sandbox is a fresh root of read-only binds of the host's /usr /bin /lib /lib64 /sbin /etc /root/.pyenv
and /work (the repository and its venv), the venv of `python_executable` also at /opt/venv, the image's
files read-only at /app, the container's volumeMounts at their mountPath (read-only when the mount or
the claim says so), `--proc /proc --dev /dev --tmpfs /tmp --tmpfs /dev/shm`, own PID, IPC and UTS
namespaces (hostname = pod name), `--die-with-parent`, the default container capabilities (all of them
when privileged) and a read-only root for readOnlyRootFilesystem; the network is the host's (hostIP =
podIP = 127.0.0.1). Images are what the runtime runs: an `ImageStore` image by digest, or the agent
image (DEV_AGENT_IMAGE by default), which runs the host's `python_executable` (entrypoint `python -m
aicert_agent`, working dir /, imageID `<repository>@<its digest>`). `Processes` is the one place that
starts, polls and ends a pod's processes (SIGTERM to the sandboxed processes, SIGKILL to the
sandbox's process group after the grace period), each one's output appended to its log file.
Users and groups are not switched: every container runs as the node double's user.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..images import ImageNotFound, ImageStore, parse_reference

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_HOST_BINDS: tuple[str, ...] = (
    "/usr",
    "/bin",
    "/lib",
    "/lib64",
    "/sbin",
    "/etc",
    "/root/.pyenv",
    "/work",
)
VENV_MOUNT = "/opt/venv"
APP_MOUNT = "/app"
# What a container runtime binds into a container that has its own root filesystem.
RUNTIME_FILES: tuple[str, ...] = ("/etc/hosts", "/etc/resolv.conf")
# containerd's default capability set (what a non-privileged container gets).
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
# The gate/seal image the test stack and the demo use: pinned by digest as the pod contract requires.
DEV_AGENT_IMAGE = (
    "registry.local/aicert/agent@sha256:7903601cd11d4adc4c69c90f44ef685939d20989d097bab831f4bd8f0894b628"
)


def under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def inside_root(root: Path, path: str) -> str:
    """`path` as the container sees it, its symlinks resolved inside `root` (Debian's /var/run -> /run
    is absolute: left to bwrap, it would resolve on the host)."""
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise OSError(f"{path}: too many levels of symbolic links in the image")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return "/" + "/".join(resolved)


def host_binds_for(
    python_executable: str, host_binds: Sequence[str], venv_mount: str | None
) -> list[tuple[str, str]]:
    """The read-only (host, sandbox) binds of every sandbox: `host_binds`, plus what running
    `python_executable` and the project's own sources needs, wherever the checkout is."""
    binds = [(p, p) for p in host_binds]
    real = Path(python_executable).resolve()
    prefix = str(real.parents[1]) if len(real.parents) > 1 else str(real.parent)
    if not any(under(prefix, p) for p in host_binds):
        binds.append((prefix, prefix))
    # The project's own sources, wherever the checkout is (editable installs point there).
    for package in ("aicert", "aicert_agent"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            source_root = str(Path(spec.origin).resolve().parents[3])  # <repo>/<part>/src/<pkg>/__init__.py
            if not any(under(source_root, p) for p, _ in binds):
                binds.append((source_root, source_root))
    venv = Path(python_executable).absolute().parent.parent
    if (venv / "pyvenv.cfg").exists():
        if not any(under(str(venv), p) for p in host_binds):
            binds.append((str(venv), str(venv)))
        if venv_mount:
            binds.append((str(venv), venv_mount))
    return binds


def sandbox_argv(
    *,
    bwrap: str,
    host_binds: Sequence[tuple[str, str]],
    app_dir: Path | None,
    mounts: Sequence[tuple[Path, str, bool]],
    root: Path | None = None,
    workdir: str,
    hostname: str,
    capabilities: Sequence[str] | None,
    read_only_root: bool,
    argv: Sequence[str],
) -> list[str]:
    """The bwrap command line for one container (host_binds: read-only (host, sandbox) pairs; mounts:
    (host path, mountPath, read-only); capabilities None keeps them all, i.e. privileged; root: the
    container's own root filesystem, which replaces host_binds and app_dir)."""
    # The private /tmp (and /dev, /proc) first: bwrap mounts in order, so host paths that live
    # under /tmp (a checkout in /tmp, its venv) must be bound after it, on top of it.
    args = [bwrap] + (["--bind", str(root), "/"] if root is not None else [])
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm", "--tmpfs", "/tmp"]
    if root is not None:
        host_binds = [(f, inside_root(root, f)) for f in RUNTIME_FILES if os.path.isfile(f)]
        app_dir = None
        mounts = [(source, inside_root(root, target), ro) for source, target, ro in mounts]
        workdir = inside_root(root, workdir)
    for source, target in host_binds:
        if os.path.islink(source) and source == target:
            args += ["--symlink", os.readlink(source), target]
        elif os.path.exists(source):
            args += ["--ro-bind", source, target]
    if app_dir is not None:
        args += ["--ro-bind", str(app_dir), APP_MOUNT]
    destinations = (
        [t for _, t in host_binds] + [APP_MOUNT, "/tmp", "/proc", "/dev"] + [m for _, m, _ in mounts]
    )
    if workdir != "/" and not any(under(workdir, d) for d in destinations):
        args += ["--dir", workdir]
    # As containerd does: parents before children whatever the pod's order (a volume at /tmp must
    # not hide one at /tmp/x mounted before it).
    for source_path, mount_path, read_only in sorted(mounts, key=lambda m: len(PurePosixPath(m[1]).parts)):
        args += ["--ro-bind" if read_only else "--bind", str(source_path), mount_path]
    args += ["--chdir", workdir, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", hostname]
    args += ["--die-with-parent"]
    if capabilities is not None:
        args += ["--cap-drop", "ALL"]
        for capability in capabilities:
            args += ["--cap-add", capability]
    if read_only_root:
        args += ["--remount-ro", "/"]
    return [*args, "--", *argv]


def capabilities_for(security_context: Mapping[str, Any]) -> list[str] | None:
    if security_context.get("privileged"):
        return None
    requested = security_context.get("capabilities") or {}
    drop = {_cap_name(c) for c in requested.get("drop") or []}
    caps = [] if "CAP_ALL" in drop else [c for c in DEFAULT_CAPABILITIES if c not in drop]
    for add in requested.get("add") or []:
        name = _cap_name(add)
        if name != "CAP_ALL" and name not in caps:
            caps.append(name)
    return caps


def _cap_name(capability: str) -> str:
    upper = str(capability).upper()
    return upper if upper.startswith("CAP_") else f"CAP_{upper}"


# --- images as the runtime sees them ----------------------------------------------------------------


@dataclass(frozen=True)
class RunImage:
    app_dir: Path | None
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    workdir: str
    image_id: str
    host_python: bool = False
    root_dir: Path | None = None  # the image's own root filesystem (the sandbox's / is an overlay of it)


def agent_image_id(reference: str) -> str:
    """The imageID reported for the agent image: its own digest if it has one, else
    `<repository>@sha256:<sha256 of the reference string>`."""
    try:
        parsed = parse_reference(reference)
    except ImageNotFound:
        return f"aicert-agent@sha256:{hashlib.sha256(reference.encode()).hexdigest()}"
    if parsed.digest:
        return f"{parsed.repository}@{parsed.digest}"
    return f"{parsed.repository}@sha256:{hashlib.sha256(reference.encode()).hexdigest()}"


def run_image(images: ImageStore, ref: str, *, agent_image: str, python_executable: str) -> RunImage:
    """What `ref` runs: the agent image runs the host's Python, any other comes from `images`
    (ImageNotFound, ImageStoreError when it is not there)."""
    if ref == agent_image:
        bin_dir = str(Path(python_executable).parent)
        return RunImage(
            app_dir=None,
            entrypoint=["python", "-m", "aicert_agent"],
            cmd=[],
            env={"PATH": f"{bin_dir}:{DEFAULT_PATH}"},
            workdir="/",
            image_id=agent_image_id(ref),
            host_python=True,
        )
    resolved = images.resolve(ref)
    return RunImage(
        app_dir=None if resolved.own_root else resolved.app_dir,
        entrypoint=resolved.entrypoint,
        cmd=resolved.cmd,
        env=resolved.env,
        workdir=resolved.workdir,
        image_id=resolved.image_id,
        root_dir=resolved.root_dir if resolved.own_root else None,
    )


# --- processes ------------------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, frontier = [], [pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            found.append(child)
            frontier.append(child)
    return found


def terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the sandboxed processes (bwrap's own init ignores it), SIGKILL the lot after `grace`."""
    if proc.poll() is not None:
        return
    for pid in _descendants(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(timeout=max(grace, 0.0))
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: the group is the sandbox's
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class Processes:
    """The sandboxed processes of one pod, by container name: start, poll, terminate, exit code."""

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: Sequence[str], env: Mapping[str, str], log_path: Path) -> int:
        """Start `command` in a new session, stdout and stderr appended to `log_path`; its pid."""
        with open(log_path, "ab") as output:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        self._procs[name] = proc
        return proc.pid

    def names(self) -> list[str]:
        """Every container started so far, in the order they started."""
        return list(self._procs)

    def is_running(self, name: str) -> bool:
        return name in self._procs and self._procs[name].poll() is None

    def running(self) -> list[str]:
        return [name for name, proc in self._procs.items() if proc.poll() is None]

    def exit_code(self, name: str) -> int | None:
        """The container's exit code (128 + the signal that ended it), None while it runs."""
        returncode = self._procs[name].poll()
        return None if returncode is None else exit_code(returncode)

    def kill(self, name: str) -> None:
        """SIGKILL the container's whole sandbox (its process group) now."""
        proc = self._procs[name]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def wait(self, name: str) -> int:
        """The exit code of a container, once it has ended."""
        return exit_code(self._procs[name].wait())

    def terminate(self, names: Sequence[str], grace: float) -> None:
        """`terminate` the given containers' processes, all at once."""
        threads = [threading.Thread(target=terminate, args=(self._procs[n], grace)) for n in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
