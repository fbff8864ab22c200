"""A real certified run on swtpm, made through the `aicert-agent` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aicert.outputs import BUNDLE_FILE
from aicert.trust import TrustStore

AGENT = [sys.executable, "-m", "aicert_agent"]


@dataclass
class CertifiedRun:
    root: Path
    tpm_spec: str
    ca_dir: Path
    data: Path
    model: Path
    certificate_path: Path

    @property
    def certificate(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.certificate_path.read_text())
        return loaded

    @property
    def trust(self) -> TrustStore:
        return TrustStore.from_pem_file(self.ca_dir / "dev-ca.pem")

    def agent(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "AICERT_TPM": self.tpm_spec, "AICERT_STATE_DIR": str(self.root / "state")}
        done = subprocess.run([*AGENT, *args], env=env, text=True, capture_output=True, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"aicert-agent {args[0]} exited {done.returncode}:\n{done.stderr}")
        return done


def make_run(
    root: Path, tpm_spec: str, *, key_type: str = "ecc", run_options: tuple[str, ...] = ()
) -> CertifiedRun:
    """`run_options`: more `aicert-agent run` options (e.g. --tlog-url and --tlog-key)."""
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    (data / "train.csv").write_text("x,y\n1,2\n3,4\n")
    (data / "sub" / "labels.txt").write_text("a\nb\n")
    run = CertifiedRun(root, tpm_spec, root / "ca", data, root / "model", root / "out" / "certificate.json")
    run.agent("dev-provision", "--ca-dir", str(run.ca_dir), "--key-type", key_type)
    script = "import pathlib,sys; pathlib.Path(sys.argv[2], 'weights.bin').write_bytes(pathlib.Path(sys.argv[1], 'train.csv').read_bytes()[::-1])"
    run.agent(
        "run",
        "--name",
        "tamper-suite",
        "--inputs",
        f"data={data}",
        "--outputs",
        str(run.model),
        "--image-ref",
        "registry.example/train@sha256:" + "ab" * 32,
        "--image-digest",
        "sha256:" + "cd" * 32,
        "--certificate",
        str(run.certificate_path),
        *run_options,
        "--",
        sys.executable,
        "-c",
        script,
        str(data),
        str(run.model),
    )
    return run


def kubectl_showing(run: CertifiedRun, directory: Path) -> Path:
    """A stand-in kubectl (written in `directory`) that prints the CertifiedTraining `default/digits`
    whose status holds `run`'s certificate and envelope signature as the agent writes them: the
    status's text is the file beside the weights less its newline. Point $KUBECTL at it."""
    bundle = json.loads((run.model / BUNDLE_FILE).read_text())
    resource = {
        "apiVersion": "aicert.dev/v1alpha1",
        "kind": "CertifiedTraining",
        "metadata": {"name": "digits", "namespace": "default", "uid": "u-1"},
        "status": {
            "phase": "Succeeded",
            "certificate": run.certificate_path.read_text().removesuffix("\n"),
            "envelopeSignature": bundle["dsseEnvelope"]["signatures"][0]["sig"],
        },
    }
    (directory / "resource.json").write_text(json.dumps(resource))
    script = directory / "kubectl"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stdout.write(open({str(directory / 'resource.json')!r}).read())\n"
    )
    script.chmod(0o755)
    return script
