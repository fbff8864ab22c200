"""One whole stack (control plane, real nodes, a swtpm per TPM node, operator, agents) for all e2e tests."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aicert_localcluster.stack import Stack

JOB = Path(__file__).resolve().parent / "job.py"
_names = itertools.count(1)


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory, product_images: dict[str, Path]) -> Iterator[Stack]:
    """The stack: real kubelets run the operator, the agents and the training pods (gate and seal
    containers included) from the images this checkout builds (`make images`), as the chart deploys them."""
    with Stack(
        tmp_path_factory.mktemp("stack"),
        agent_layout=product_images["aicert-agent"],
        operator_layout=product_images["aicert-operator"],
    ) as running:
        yield running


@pytest.fixture(scope="package")
def image(stack: Stack) -> str:
    return stack.build_image(
        "registry.local/e2e/job",
        files={"job.py": JOB.read_bytes()},
        entrypoint=["/opt/venv/bin/python", "/app/job.py"],
        cmd=None,
        env={},
        workdir="/app",
    )


class Run:
    """One CertifiedTraining of the e2e job, with its volumes on the host."""

    def __init__(self, stack: Stack, image: str, namespace: str = "default", **spec: Any) -> None:
        self.stack = stack
        self.name = f"e2e-{next(_names)}"
        self.namespace = namespace
        self.data = stack.local_volume(f"{self.name}-data", namespace=namespace, access_mode="ReadOnlyMany")
        (self.data / "train.csv").write_text("x,y\n1,2\n3,4\n")
        self.model = stack.local_volume(f"{self.name}-model", namespace=namespace)
        env = [{"name": k, "value": v} for k, v in spec.pop("env", {}).items()]
        self.body = {
            "apiVersion": "aicert.dev/v1alpha1",
            "kind": "CertifiedTraining",
            "metadata": {"name": self.name, "namespace": namespace},
            "spec": {
                "image": image,
                "args": ["/data", "/model"],
                "env": env,
                "inputs": [
                    {
                        "name": "data",
                        "persistentVolumeClaim": {"claimName": f"{self.name}-data"},
                        "mountPath": "/data",
                    }
                ],
                "output": {
                    "persistentVolumeClaim": {"claimName": f"{self.name}-model"},
                    "mountPath": "/model",
                },
                "minAssurance": "dev",
                **spec,
            },
        }

    def apply(self) -> Run:
        self.stack.cluster.kubectl("apply", "-f", "-", input=json.dumps(self.body))
        return self

    def wait(self, *phases: str, timeout: float = 120) -> dict[str, Any]:
        return self.stack.wait_for(self.name, phases, namespace=self.namespace, timeout=timeout)

    def wait_reason(self, reason: str, timeout: float = 60) -> dict[str, Any]:
        """The status once its reason is `reason` (a state that is not a phase of its own)."""
        deadline = time.monotonic() + timeout
        while (status := self.status).get("reason") != reason:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} never reached reason {reason}: {status}")
            time.sleep(0.3)
        return status

    def per_attempt_output(self) -> Run:
        """Write the output to a fresh claim per attempt (spec.output.volumeClaimTemplate)."""
        self.body["spec"]["output"] = {
            "volumeClaimTemplate": self.stack.claim_template(),
            "mountPath": "/model",
        }
        return self

    def output_dir(self, attempt: int = 1) -> Path:
        if "volumeClaimTemplate" in self.body["spec"]["output"]:
            return self.stack.claim_dir(f"{self.name}-{attempt}-output", self.namespace)
        return self.model

    def wait_started(self, timeout: float = 120, attempt: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while not (self.output_dir(attempt) / "started").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} never started training:\n{self.stack.operator.tail()}")
            time.sleep(0.1)

    def release(self, attempt: int = 1) -> None:
        (self.output_dir(attempt) / "release").write_text("go")

    @property
    def node(self) -> str:
        """The node its (one) pod is bound to."""
        (pod,) = [p for p in self.pods() if p["spec"].get("nodeName")]
        return str(pod["spec"]["nodeName"])

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.stack.get("certifiedtraining", self.name, self.namespace).get("status") or {})

    def pods(self) -> list[dict[str, Any]]:
        found = self.stack.cluster.kubectl_json(
            "get", "pods", "-n", self.namespace, "-l", f"aicert.dev/training={self.name}"
        )
        return list(found["items"])


@pytest.fixture
def run(stack: Stack, image: str) -> Any:
    def make(namespace: str = "default", **spec: Any) -> Run:
        return Run(stack, image, namespace, **spec)

    return make
