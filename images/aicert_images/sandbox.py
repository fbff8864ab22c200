"""How the RUN lines run: bwrap over this machine (the build stage) or with a rootfs as `/` (the
final stage), their output in a log that a failure quotes."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .report import ImageBuildError
from .spec import Run


def _isolated(*, network: bool) -> list[str]:
    """bwrap in new IPC, PID, UTS and cgroup namespaces (and a new network one unless `network`),
    killed with its parent."""
    args = ["bwrap", "--die-with-parent", "--unshare-ipc", "--unshare-pid", "--unshare-uts"]
    args.append("--unshare-cgroup-try")
    if not network:
        args.append("--unshare-net")
    return args


def _environment(env: Mapping[str, str]) -> list[str]:
    """--clearenv, then exactly `env`."""
    args = ["--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return args


def host_sandbox(
    run: Run, binds: Sequence[tuple[Path, str]], env: Mapping[str, str], *, network: bool
) -> list[str]:
    """bwrap over this machine's /usr and /etc (read-only), a private /tmp, the `binds` writable."""
    args = _isolated(network=network)
    args += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    args += ["--ro-bind-try", "/run/systemd/resolve", "/run/systemd/resolve"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/", top)
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/root", "--dir", "/var/tmp"]
    for host_dir, inside in binds:
        args += ["--bind", str(host_dir), inside]
    args += ["--chdir", run.workdir, *_environment(env)]
    return [*args, "/bin/sh", "-c", run.command]


def rootfs_sandbox(rootfs: Path, command: Sequence[str], env: Mapping[str, str], workdir: str) -> list[str]:
    """bwrap with `rootfs` as /, as root (no user namespace), no network."""
    args = [*_isolated(network=False), "--bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev"]
    args += ["--tmpfs", "/dev/shm", "--chdir", workdir, *_environment(env)]
    return [*args, *command]


def run_logged(cmd: Sequence[str], log: Path, what: str, env: Mapping[str, str] | None = None) -> None:
    """Run `cmd` with its output in `log`; on failure, raise with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"$ {shlex.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}); the last lines of {log}:\n{tail}")
