"""`make demo`: the cluster path, end to end, on this machine.

Builds the operator and agent images (`make images`, cached), then starts the real control plane
(etcd, kube-apiserver, kube-scheduler, kube-controller-manager), a registry, and real nodes (kubelet,
containerd, runc): two Trusted Launch GPU nodes, each with a swtpm as its vTPM, and a system node;
the chart's operator Deployment and agent DaemonSet run there from the images; pushes the digits
training image (FROM the agent image) to the registry; applies examples/training.yaml with that
image's digest; shows `kubectl get certifiedtrainings` until it is done; fetches the certificate;
verifies it with `aicert verify`; stops everything it started.
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
sys.path.insert(0, str(REPO / "images"))
sys.path.insert(0, str(REPO / "examples"))

import yaml  # noqa: E402

from aicert_images.cli import build  # noqa: E402
from aicert_images.repository import DOCKERFILES  # noqa: E402
from aicert_localcluster.stack import Stack  # noqa: E402
from digits import image as digits_image  # noqa: E402

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
    with tempfile.TemporaryDirectory(prefix="aicert-demo-") as tmp:
        say("the operator and agent images (make images; cached after the first build)")
        layouts = {
            layout.name: layout.path for layout in (build(d, Path(tmp) / "images") for d in DOCKERFILES)
        }
        with Stack(
            Path(tmp) / "stack",
            agent_layout=layouts["aicert-agent"],
            operator_layout=layouts["aicert-operator"],
        ) as stack:
            if not train_in_the_cluster(stack, started):
                return 1
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
        f"\nDone in {time.monotonic() - started:.0f} s. See demo-output/: certificate.json, model/, dev-ca.pem,"
        " certifiedtrainings.txt"
    )
    return code


def train_in_the_cluster(stack: Stack, started: float) -> bool:
    """Apply the run, watch it, and keep its certificate, weights and the dev CA in demo-output/."""
    say(
        f"cluster up in {time.monotonic() - started:.0f} s: etcd, kube-apiserver, scheduler, controller-manager;"
        " kubelet + containerd + runc nodes; the chart's operator and agents as pods"
    )
    kubectl(stack, "get", "nodes", "-L", "aicert.dev/assurance,kubernetes.azure.com/security-type")
    kubectl(stack, "get", "pods", "-n", "aicert-system", "-o", "wide")
    say("training image into the registry, input data into a volume")
    image = stack.build_image(
        digits_image.REPOSITORY,
        files=digits_image.FILES,
        entrypoint=digits_image.ENTRYPOINT,
        env=digits_image.ENV,
    )
    print(f"image {image}")
    data = stack.local_volume("digits-data", access_mode="ReadOnlyMany")
    subprocess.run([sys.executable, str(REPO / "examples/digits/prepare_data.py"), str(data)], check=True)
    say("kubectl apply -f examples/training.yaml (spec.image: the digest just built)")
    training = digits_image.with_image(yaml.safe_load((REPO / "examples/training.yaml").read_text()), image)
    print("$ kubectl apply -f -", flush=True)
    print(stack.cluster.kubectl("apply", "-f", "-", input=json.dumps(training)).stdout.rstrip(), flush=True)
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
        return False
    say(
        "fetch the certificate: kubectl get ct digits -o jsonpath='{.status.certificate}' > demo-output/certificate.json"
    )
    certificate = kubectl(stack, "get", "ct", "digits", "-o", "jsonpath={.status.certificate}", show=False)
    (OUT / "certificate.json").write_text(json.dumps(json.loads(certificate), indent=2) + "\n")
    shutil.copytree(stack.claim_dir("digits-1-output"), OUT / "model")
    shutil.copy(stack.ca_pem, OUT / "dev-ca.pem")
    return True


if __name__ == "__main__":
    sys.exit(main())
