"""`make demo`: certify a real training run on a software TPM, then verify the certificate.

Starts swtpm on 127.0.0.1, provisions it like an Azure vTPM with a local dev CA, exports the
digits data set, runs `examples/digits/train.py` under `aicert-agent run`, and checks the result
with `aicert verify`; then fine-tunes that model from its certified output directory (weights and
certificate) and verifies the second certificate's lineage back to the first. Leaves
demo-output/certificate.json, demo-output/model/, demo-output/finetune/ and demo-output/dev-ca.pem;
stops everything it started.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from aicert_agent.tpm.swtpm import Swtpm
from verify_steps import lineage_argv, verify_argv

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "demo-output"
PY = sys.executable


def step(title: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    shown = " ".join(shlex.quote(a.replace(str(REPO) + "/", "")) for a in argv)
    print(f"\n== {title}\n$ {shown}", flush=True)
    subprocess.run(argv, check=True, env=env, cwd=REPO)


def main() -> int:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    with Swtpm(OUT / ".swtpm") as tpm:
        agent = [PY, "-m", "aicert_agent", "--tpm", tpm.spec, "--state-dir", str(OUT / ".agent-state")]
        print(f"== software TPM listening on {tpm.spec}")
        step(
            "provision the TPM like an Azure vTPM (AK at 0x81000003, AK certificate in NV 0x01C101D0)",
            [*agent, "dev-provision", "--ca-dir", str(OUT / ".dev-ca")],
        )
        shutil.copy(OUT / ".dev-ca" / "dev-ca.pem", OUT / "dev-ca.pem")
        step(
            "export the training data (scikit-learn's bundled digits)",
            [PY, str(REPO / "examples/digits/prepare_data.py"), str(OUT / "data")],
        )
        step(
            "measure the inputs, train, measure the weights, quote, write the certificate",
            [
                *agent,
                "run",
                "--name",
                "digits-logreg",
                "--inputs",
                f"digits={OUT / 'data'}",
                "--outputs",
                str(OUT / "model"),
                "--certificate",
                str(OUT / "certificate.json"),
                "--",
                PY,
                str(REPO / "examples/digits/train.py"),
                "--data",
                str(OUT / "data"),
                "--out",
                str(OUT / "model"),
            ],
        )
        step(
            "fine-tune from the certified weights: the input holds the first run's output and certificate",
            [
                *agent,
                "run",
                "--name",
                "digits-finetune",
                "--inputs",
                f"digits={OUT / 'data'}",
                f"base={OUT / 'model'}",
                "--outputs",
                str(OUT / "finetune" / "model"),
                "--certificate",
                str(OUT / "finetune" / "certificate.json"),
                "--",
                PY,
                str(REPO / "examples/digits/train.py"),
                "--data",
                str(OUT / "data"),
                "--base",
                str(OUT / "model"),
                "--out",
                str(OUT / "finetune" / "model"),
            ],
        )
    step(
        "verify the certificate offline and re-hash the weights and the data",
        verify_argv(OUT, None, "--data", f"digits={OUT / 'data'}"),
    )
    step(
        "verify the fine-tuned model's lineage: its parent's certificate is the one beside the base weights",
        lineage_argv(OUT),
    )
    print(f"\nDone. See {OUT.relative_to(REPO)}/: certificate.json, model/, finetune/, dev-ca.pem")
    return 0


if __name__ == "__main__":
    sys.exit(main())
