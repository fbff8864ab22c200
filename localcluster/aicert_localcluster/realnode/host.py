"""What a real node does to the host, and how it is found and undone: the host ledger (host-wide
settings shared by every real node on the machine), mounts, processes by cgroup or mount namespace,
the node's cgroup tree and its bridge.

Everything here reads /proc and /sys or runs `ip`; nothing is cached, so each call sees the host as
it is now.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEDGER_DIR = Path("/run/aicert-localcluster")
PROC = Path("/proc")


class HostError(RuntimeError):
    """A host change could not be made or undone."""


# the host ledger ----------------------------------------------------------------------------------


@dataclass
class LedgerState:
    """What the ledger file holds: the nodes holding it, the sysctls' values before the first of them
    (and what the nodes set them to) and the fixed directories the nodes created."""

    holders: dict[str, int] = field(default_factory=dict)  # holder -> pid of its Python process
    sysctls: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> {"original", "set_to"}
    created: list[str] = field(default_factory=list)  # parents first

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> LedgerState:
        return cls(dict(data["holders"]), dict(data["sysctls"]), list(data["created"]))

    def dump(self) -> dict[str, Any]:
        return {"holders": self.holders, "sysctls": self.sysctls, "created": self.created}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class HostLedger:
    """Host-wide settings that real nodes change, saved by the first node to start and restored by
    the last to stop, across processes (a JSON file under `directory`, guarded by flock).

    - sysctls: kubelet sets six kernel settings for the whole host; their values before the first node
      are kept, and after the last node each is put back unless something else changed it since
      (its value is no longer what kubelet set).
    - directories: the fixed paths a node's private directories are bind-mounted over must exist on
      the host; those that did not are created, and removed (if still empty) after the last node.

    A holder whose process died without leaving (its Python process was killed) is dropped the next
    time the ledger is opened, so the last live node still restores the host.
    """

    def __init__(self, directory: Path = LEDGER_DIR, proc_sys: Path = PROC / "sys") -> None:
        self.directory = directory
        self.file = directory / "realnodes.json"
        self.proc_sys = proc_sys

    @contextlib.contextmanager
    def _locked(self) -> Iterator[LedgerState]:
        while True:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.stat(self.directory).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # the last holder removed the directory while we waited: retry
                    continue
                state = (
                    LedgerState.load(json.loads(self.file.read_text()))
                    if self.file.exists()
                    else LedgerState()
                )
                state.holders = {h: pid for h, pid in state.holders.items() if _alive(pid)}
                try:
                    yield state
                finally:  # saved even when the caller failed half-way: what it did is noted
                    self._save(state)
                return
            finally:
                os.close(fd)

    def _save(self, state: LedgerState) -> None:
        if state.holders or state.sysctls or state.created:
            tmp = self.file.with_name(self.file.name + ".tmp")
            tmp.write_text(json.dumps(state.dump(), indent=2, sort_keys=True))
            tmp.replace(self.file)
        else:
            self.file.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.directory.rmdir()

    def read_sysctl(self, key: str) -> str:
        return (self.proc_sys / key).read_text().strip()

    def join(self, holder: str, *, sysctls: Mapping[str, str], directories: Sequence[Path]) -> None:
        """Register `holder`; note each sysctl's value now (unless a node already did) and what the
        node will set it to; create the missing `directories` (parents first)."""
        with self._locked() as state:
            state.holders[holder] = os.getpid()  # first: a join that fails half-way can still leave
            for key, value in sysctls.items():
                if key not in state.sysctls:
                    state.sysctls[key] = {"original": self.read_sysctl(key), "set_to": value}
            for directory in directories:
                missing = [p for p in (*reversed(directory.parents), directory) if not p.exists()]
                for path in missing:
                    path.mkdir(mode=0o755)
                    state.created.append(str(path))

    def leave(self, holder: str) -> list[str]:
        """Unregister `holder`; if no live holder is left, restore the sysctls and remove the created
        directories. Returns what could not be undone (empty when all is well)."""
        problems: list[str] = []
        with self._locked() as state:
            state.holders.pop(holder, None)
            if state.holders:
                return problems
            for key, values in state.sysctls.items():
                try:
                    current = self.read_sysctl(key)
                    if current != values["original"] and current == values["set_to"]:
                        (self.proc_sys / key).write_text(values["original"])
                except OSError as exc:
                    problems.append(f"sysctl {key}: {exc}")
            kept: list[Path] = []
            for created in map(Path, reversed(state.created)):
                if any(created in path.parents for path in kept):
                    continue  # a directory below it is kept (and reported): so is it
                try:
                    created.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    kept.append(created)
                    problems.append(f"directory {created} (created by a real node): {exc.strerror}")
            state.sysctls.clear()
            state.created.clear()
        return problems


# mounts -------------------------------------------------------------------------------------------


def _unescape(field_: str) -> str:
    """/proc/*/mountinfo escapes space, tab, newline and backslash as \\ooo (octal)."""
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and i + 3 < len(field_) and field_[i + 1 : i + 4].isdigit():
            out.append(chr(int(field_[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a /proc/<pid>/mountinfo text, in its order (parents before children)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields:
            continue
        separator = fields.index("-")
        mounts.append(Mount(_unescape(fields[4]), fields[separator + 1], _unescape(fields[separator + 2])))
    return mounts


def mounts_under(paths: Sequence[Path], mountinfo: str) -> list[Mount]:
    """The mounts whose mount point is one of `paths` or below one."""
    prefixes = [str(p).rstrip("/") for p in paths]
    return [
        m
        for m in parse_mountinfo(mountinfo)
        if any(m.mount_point == p or m.mount_point.startswith(p + "/") for p in prefixes)
    ]


def host_mountinfo() -> str:
    return (PROC / "self" / "mountinfo").read_text()


# processes ----------------------------------------------------------------------------------------


def _pids() -> list[int]:
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def namespace_of(pid: int, kind: str) -> str:
    """e.g. "mnt:[4026532270]"; "" when the process is gone."""
    try:
        return os.readlink(PROC / str(pid) / "ns" / kind)
    except OSError:
        return ""


def pids_in_namespace(kind: str, namespace: str) -> list[int]:
    """Processes in the namespace `namespace` (as namespace_of gives it) of `kind` ("mnt", "net")."""
    return [pid for pid in _pids() if namespace and namespace_of(pid, kind) == namespace]


def cgroup_paths(pid: int) -> list[str]:
    """The cgroup paths of a process in each hierarchy ([] when it is gone)."""
    try:
        text = (PROC / str(pid) / "cgroup").read_text()
    except OSError:
        return []
    return [line.split(":", 2)[2] for line in text.splitlines() if line.count(":") >= 2]


def pids_in_cgroup(root: str) -> list[int]:
    """Processes in the cgroup `root` (e.g. "/aicert-node-3") or below it, in any hierarchy."""
    return [pid for pid in _pids() if any(p == root or p.startswith(root + "/") for p in cgroup_paths(pid))]


# cgroups ------------------------------------------------------------------------------------------


def cgroup_mount_points(mountinfo: str | None = None) -> list[Path]:
    """Every cgroup (v1) and cgroup2 hierarchy mounted on the host."""
    mounts = parse_mountinfo(host_mountinfo() if mountinfo is None else mountinfo)
    return [Path(m.mount_point) for m in mounts if m.fstype in ("cgroup", "cgroup2")]


def create_cgroup(root: str) -> None:
    """Create `root` in every hierarchy (kubelet requires its cgroupRoot to exist); for cpuset, give it
    its parent's CPUs and memory nodes (a new v1 cpuset has none)."""
    relative = root.lstrip("/")
    for hierarchy in cgroup_mount_points():
        path = hierarchy / relative
        if path.exists():
            raise HostError(f"cgroup {path} exists already (another node, or a node that was not stopped)")
        path.mkdir()
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (path / name).exists() and not (path / name).read_text().strip():
                (path / name).write_text((hierarchy / name).read_text())


def cgroup_exists(root: str) -> bool:
    return any((hierarchy / root.lstrip("/")).exists() for hierarchy in cgroup_mount_points())


def remove_cgroup(root: str) -> list[str]:
    """Remove `root` and every cgroup below it in every hierarchy (deepest first). Returns, per
    hierarchy, what could not be removed (cgroups still holding a process)."""
    problems = []
    for hierarchy in cgroup_mount_points():
        top = hierarchy / root.lstrip("/")
        if not top.exists():
            continue
        directories = sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True)
        busy: list[tuple[Path, str]] = []
        for directory in directories:
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                busy.append((directory, os.strerror(exc.errno or errno.EIO)))
        if busy:
            deepest, reason = busy[0]
            problems.append(f"cgroup {top}: {len(busy)} cgroups left, e.g. {deepest}: {reason}")
    return problems


# links --------------------------------------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise HostError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def links() -> list[dict[str, Any]]:
    """`ip -j link` (every link in the host's network namespace, with its master if enslaved)."""
    found: list[dict[str, Any]] = json.loads(_ip("-j", "link", "show").stdout or "[]")
    return found


def link_names() -> set[str]:
    return {str(link["ifname"]) for link in links()}


def ports_of(bridge: str) -> set[str]:
    """The links enslaved to `bridge` (the host ends of the pods' veth pairs)."""
    return {str(link["ifname"]) for link in links() if link.get("master") == bridge}


def ipv4_networks_in_use() -> set[str]:
    """The /24 networks ("10.244.3") of every IPv4 address on the host."""
    found = json.loads(_ip("-j", "-4", "addr", "show").stdout or "[]")
    return {
        info["local"].rsplit(".", 1)[0]
        for link in found
        for info in link.get("addr_info", [])
        if "local" in info
    }


def create_bridge(name: str, address: str, prefix_length: int = 24, *, mac: str = "") -> None:
    """A bridge with `address` on it, up, with the MAC `mac` if given (then it keeps it whatever ports
    join or leave). Refuses a name that exists (never takes over a link)."""
    if name in link_names():
        raise HostError(f"link {name} exists already (another node, or a node that was not stopped)")
    _ip("link", "add", name, *(("address", mac) if mac else ()), "type", "bridge")
    try:
        _ip("addr", "add", f"{address}/{prefix_length}", "dev", name)
        _ip("link", "set", name, "up")
    except HostError:
        _ip("link", "del", name, check=False)
        raise


def delete_bridge(name: str) -> list[str]:
    if name not in link_names():
        return []
    proc = _ip("link", "del", name, check=False)
    return [] if proc.returncode == 0 else [f"bridge {name}: {proc.stderr.strip()}"]
