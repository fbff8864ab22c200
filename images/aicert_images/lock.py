"""`python images/build.py lock`: re-resolve images/*.requirements.txt with pip-compile."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .dockerfile import parse_dockerfile
from .repository import REPO, build_args, copy_from_repository, display
from .wheels import PASSTHROUGH_ENV

PIP_TOOLS = "pip-tools==7.6.2"


def lock(dockerfiles: Sequence[Path]) -> None:
    """Re-resolve each image's requirements file with pip-compile (hashes of every file of each
    pinned version, for any platform), with Debian's Python of this machine."""
    specs = [parse_dockerfile(d, build_args()) for d in dockerfiles]
    with tempfile.TemporaryDirectory(prefix="aicert-lock-") as tmp_name:
        tmp = Path(tmp_name)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(tmp / "venv")], check=True)
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("PIP_") or PASSTHROUGH_ENV.fullmatch(k)
        }
        pip = [str(tmp / "venv" / "bin" / "pip"), "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "-q", PIP_TOOLS], check=True, env=env)
        for spec in specs:
            project = tmp / "project"
            copy_from_repository(spec, project)
            source = project / spec.build.workdir.lstrip("/")
            out = REPO / spec.requirements
            subprocess.run(
                [
                    str(tmp / "venv" / "bin" / "pip-compile"),
                    "--quiet",
                    *[f"--extra={e}" for e in spec.extras],
                    "--generate-hashes",
                    "--strip-extras",
                    f"--output-file={out}",
                    "pyproject.toml",
                ],
                cwd=source,
                check=True,
                env={**env, "CUSTOM_COMPILE_COMMAND": "python images/build.py lock"},
            )
            shutil.rmtree(project)
            print(display(out))
