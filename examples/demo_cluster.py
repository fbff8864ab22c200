"""`make demo`: the cluster path, end to end, on this machine.

Starts the real control plane (etcd, kube-apiserver, kube-scheduler, kube-controller-manager), a
node double playing kubelet for a Trusted Launch GPU node (swtpm as its vTPM) and a CPU node, the
operator and the node agent with their own ServiceAccounts; builds the digits training image into
the local image store; `kubectl apply -f examples/training.yaml`; shows `kubectl get
certifiedtrainings` until it is done; fetches the certificate; verifies it with `aicert verify`;
stops everything it started.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "localcluster"))
sys.path.insert(0, str(REPO / "examples"))

from aicert_localcluster.stack import Stack  # noqa: E402
from digits.image import build_training_image  # noqa: E402

OUT = REPO / "demo-output"


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def kubectl(stack: Stack, *args: str, show: bool = True) -> str:
    if show:
        print("$ kubectl " + " ".join(shlex.quote(a) for a in args), flush=True)
    out = stack.cluster.kubectl(*args).stdout
    if show and out.strip():
        print(out.rstrip(), flush=True)
    return out


def main() -> int:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aicert-demo-") as tmp, Stack(Path(tmp)) as stack:
        say(
            f"cluster up in {time.monotonic() - started:.0f} s: real etcd + kube-apiserver + scheduler + controller-manager"
        )
        kubectl(stack, "get", "nodes", "-L", "aicert.dev/assurance,kubernetes.azure.com/security-type")
        say("training image into the local image store, input data into a volume")
        image = build_training_image(stack.images)
        print(f"image {image}")
        data = stack.local_volume("digits-data", access_mode="ReadOnlyMany")
        subprocess.run([sys.executable, str(REPO / "examples/digits/prepare_data.py"), str(data)], check=True)
        say("kubectl apply -f examples/training.yaml")
        kubectl(stack, "apply", "-f", str(REPO / "examples/training.yaml"))
        last = ""
        while True:
            table = kubectl(stack, "get", "certifiedtrainings", show=False)
            if table != last:
                print(table.rstrip(), flush=True)
                last = table
            phase = (stack.get("certifiedtraining", "digits").get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(0.5)
        wide = kubectl(stack, "get", "certifiedtrainings", "-o", "wide", show=False)
        (OUT / "certifiedtrainings.txt").write_text(wide)
        if phase != "Succeeded":
            kubectl(stack, "describe", "certifiedtraining", "digits")
            return 1
        say(
            "fetch the certificate: kubectl get ct digits -o jsonpath='{.status.certificate}' > demo-output/certificate.json"
        )
        certificate = kubectl(
            stack, "get", "ct", "digits", "-o", "jsonpath={.status.certificate}", show=False
        )
        (OUT / "certificate.json").write_text(json.dumps(json.loads(certificate), indent=2) + "\n")
        shutil.copytree(stack.claim_dir("digits-1-output"), OUT / "model")
        shutil.copy(stack.ca_pem, OUT / "dev-ca.pem")
    say("verify it offline, re-hashing the weights (the cluster is gone now)")
    argv = [
        sys.executable,
        "-m",
        "aicert.cli",
        "verify",
        str(OUT / "certificate.json"),
        "--trust-bundle",
        str(OUT / "dev-ca.pem"),
        "--model",
        str(OUT / "model"),
    ]
    print(
        "$ aicert verify demo-output/certificate.json --trust-bundle demo-output/dev-ca.pem --model demo-output/model"
    )
    code = subprocess.run(argv, check=False).returncode
    print(
        f"\nDone in {time.monotonic() - started:.0f} s. See demo-output/: certificate.json, model/, dev-ca.pem, certifiedtrainings.txt"
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
