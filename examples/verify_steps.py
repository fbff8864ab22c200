"""The demo's `aicert verify` command lines, shared by the local demo (demo.py) and the cluster demo
(demo_cluster.py): a run's certificate and weights are `<out>/[<run>/]certificate.json` and `model/`,
and the dev CA is `<out>/dev-ca.pem`."""

from __future__ import annotations

import sys
from pathlib import Path


def verify_argv(out: Path, run: str | None = None, *extra: str) -> list[str]:
    """`aicert verify` of the run in `out` (or its subdirectory `run`), re-hashing its weights."""
    where = out / run if run else out
    return [
        sys.executable,
        "-m",
        "aicert.cli",
        "verify",
        str(where / "certificate.json"),
        "--trust-bundle",
        str(out / "dev-ca.pem"),
        "--model",
        str(where / "model"),
        *extra,
    ]


def lineage_argv(out: Path) -> list[str]:
    """`aicert verify` of the fine-tuned run with its lineage: the base run's certificate is the one
    beside the base weights."""
    return verify_argv(out, "finetune", "--lineage", str(out / "model"))
