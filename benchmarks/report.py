"""What every benchmark report shares: the machine it ran on, Markdown tables, and updating one
`## Section` of docs/performance.md without touching the others."""

from __future__ import annotations

import datetime
import os
import platform
import re
import ssl
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _proc(pattern: str, path: str) -> str | None:
    try:
        found = re.search(pattern, Path(path).read_text(), re.M)
    except OSError:
        return None
    return found.group(1).strip() if found else None


def package_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def machine_info(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    cpu = _proc(r"^model name\s*:\s*(.+)$", "/proc/cpuinfo") or "unknown"
    if " sha_ni" in (Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""):
        cpu += " (SHA extensions)"
    kib = _proc(r"^MemTotal:\s*(\d+) kB", "/proc/meminfo")
    info = {
        "CPU": cpu,
        "cores": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "RAM": f"{int(kib) / (1 << 20):.1f} GiB" if kib else "unknown",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "OpenSSL": ssl.OPENSSL_VERSION,
    }
    info.update(extra or {})
    info["load average before the run"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return info


def machine_table(extra: Mapping[str, str] | None = None) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in machine_info(extra).items())


def table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def write_section(out: Path, heading: str, section: str) -> None:
    """Replace `## heading` (up to the next `## `) in `out`, or append it."""
    text = out.read_text() if out.exists() else "# Performance\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section.rstrip("\n") + "\n\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
