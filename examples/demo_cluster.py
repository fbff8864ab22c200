"""`make demo`: the cluster path, end to end, on this machine.

Builds the operator and agent images (`make images`, cached), then starts the real control plane
(etcd, kube-apiserver, kube-scheduler, kube-controller-manager), a registry, and real nodes (kubelet,
containerd, runc): two Trusted Launch GPU nodes, each with a swtpm as its vTPM, and a system node;
the chart's operator Deployment and agent DaemonSet run there from the images; pushes the digits
training image (FROM the agent image) to the registry; applies examples/training.yaml with that
image's digest; shows `kubectl get certifiedtrainings` until it is done; fetches the certificate;
then applies examples/finetune.yaml, a second run whose input is the first run's output claim; verifies
both with `aicert verify`, the second with `--lineage` back to the first; stops everything it started.
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
from verify_steps import lineage_argv, verify_argv  # noqa: E402

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
    argv = verify_argv(OUT)
    print(
        "$ aicert verify demo-output/certificate.json --trust-bundle demo-output/dev-ca.pem --model demo-output/model"
    )
    code = subprocess.run(argv, check=False).returncode
    say("verify the fine-tuned model and its lineage: the first certificate is beside the base weights")
    argv = lineage_argv(OUT)
    print(
        "$ aicert verify demo-output/finetune/certificate.json --trust-bundle demo-output/dev-ca.pem "
        "--model demo-output/finetune/model --lineage demo-output/model"
    )
    code = code or subprocess.run(argv, check=False).returncode
    print(
        f"\nDone in {time.monotonic() - started:.0f} s. See demo-output/: certificate.json, model/, finetune/, dev-ca.pem,"
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
    if not run_training(stack, image, "training.yaml", "digits", OUT):
        return False
    shutil.copy(stack.ca_pem, OUT / "dev-ca.pem")
    return run_training(stack, image, "finetune.yaml", "digits-finetune", OUT / "finetune")


def run_training(stack: Stack, image: str, manifest: str, name: str, out: Path) -> bool:
    """Apply examples/`manifest` with `image`, watch it, keep its certificate and weights in `out`."""
    say(f"kubectl apply -f examples/{manifest} (spec.image: the digest just built)")
    training = digits_image.with_image(yaml.safe_load((REPO / "examples" / manifest).read_text()), image)
    print("$ kubectl apply -f -", flush=True)
    print(stack.cluster.kubectl("apply", "-f", "-", input=json.dumps(training)).stdout.rstrip(), flush=True)
    last = ""
    while True:
        table = kubectl(stack, "get", "certifiedtrainings", show=False)
        if table != last:
            print(table.rstrip(), flush=True)
            last = table
        phase = (stack.get("certifiedtraining", name).get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            break
        time.sleep(0.5)
    wide = kubectl(stack, "get", "certifiedtrainings", "-o", "wide", show=False)
    (OUT / "certifiedtrainings.txt").write_text(wide)
    if phase != "Succeeded":
        kubectl(stack, "describe", "certifiedtraining", name)
        return False
    relative = out.relative_to(REPO)
    say(
        f"fetch the certificate: kubectl get ct {name} -o jsonpath='{{.status.certificate}}' > {relative}/certificate.json"
    )
    certificate = kubectl(stack, "get", "ct", name, "-o", "jsonpath={.status.certificate}", show=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / "certificate.json").write_text(json.dumps(json.loads(certificate), indent=2) + "\n")
    shutil.copytree(stack.claim_dir(f"{name}-1-output"), out / "model")
    return True


if __name__ == "__main__":
    sys.exit(main())
