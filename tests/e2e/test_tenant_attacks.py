"""Red team: a tenant with the built-in `edit` role in its namespace against helm/aicert/templates/training-admission.yaml.

Each attack must be refused at admission, with the policy's message, and leave nothing behind: the
honest run still ends with the one certificate of the operator's own pod, attempt 1.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from aicert.trust import TrustStore
from aicert.verify import Verifier
from aicert_localcluster.stack import Stack

pytestmark = pytest.mark.e2e

NS = "team-a"
BREAK_GLASS_GROUP = "aicert.dev:break-glass"


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Path:
    """Kubeconfig of ServiceAccount team-a/tenant, bound to the built-in `edit` role in team-a."""
    return stack.tenant(NS)


def as_user(
    stack: Stack, kubeconfig: Path, *args: str, body: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    return stack.cluster.kubectl(
        f"--namespace={NS}",
        *args,
        kubeconfig=kubeconfig,
        check=False,
        input=None if body is None else json.dumps(body),
    )


def streaming(stack: Stack, kubeconfig: Path, *args: str, timeout: float = 20) -> tuple[int | None, str]:
    """A kubectl call that may stream (exec, attach, port-forward) if admitted: (exit code or None, stderr)."""
    argv = [str(stack.cluster.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", f"--namespace={NS}", *args]
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
            return None, stderr  # still streaming: it got past admission
        return proc.returncode, stderr


def refused(done: subprocess.CompletedProcess[str], policy: str, message: str) -> None:
    assert done.returncode != 0, f"admitted: {done.stdout}"
    assert f"ValidatingAdmissionPolicy '{policy}'" in done.stderr, done.stderr
    assert message in done.stderr, done.stderr


def live_run(run: Any) -> tuple[Any, dict[str, Any]]:
    """A training in the tenant's namespace, started and held in its train container; and its pod."""
    r = run(namespace=NS, env={"WAIT_FOR_RELEASE": "1"}).apply()
    r.wait_started()
    (pod,) = r.pods()
    assert pod["metadata"]["name"] == f"{r.name}-1"
    return r, pod


def finishes_honestly(stack: Stack, r: Any, pod: dict[str, Any]) -> dict[str, Any]:
    """Release the run: one certificate, of the operator's pod (attempt 1), that verifies."""
    r.release()
    status = r.wait("Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["attempt"] == 1 and status["podName"] == pod["metadata"]["name"]
    cert = json.loads(status["certificate"])
    assert cert["statement"]["predicate"]["run"]["id"] == pod["metadata"]["uid"]
    Verifier(TrustStore.from_pem_file(stack.ca_pem)).verify(
        status["certificate"], model_dir=r.model, data_dirs={"data": r.data}
    )
    return dict(status)


def train_container(pod: dict[str, Any]) -> dict[str, Any]:
    spec = pod["spec"]
    found: dict[str, Any] = next(
        c for c in [*(spec.get("initContainers") or []), *spec["containers"]] if c["name"] == "train"
    )
    return found


def pod_names(stack: Stack) -> set[str]:
    return {p["metadata"]["name"] for p in stack.cluster.kubectl_json("get", "pods", "-n", NS)["items"]}


def plain_pod(name: str, image: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image, "command": ["python", "-c", "pass"]}],
            **spec,
        },
    }


# --- policy 1: training pods are the operator's ----------------------------------------------------


def test_forged_training_pods_are_refused(stack: Stack, tenant: Path, run: Any) -> None:
    r, real = live_run(run)
    meta = real["metadata"]
    train = train_container(real)
    forged = plain_pod(f"{r.name}-forged", train["image"])
    forged["metadata"].update(
        labels=meta["labels"],
        annotations=meta.get("annotations") or {},
        ownerReferences=meta["ownerReferences"],
    )
    forged["spec"]["containers"][0]["command"] = [
        "python",
        "-c",
        "open('/model/weights.bin', 'w').write('forged')",
    ]
    message = f"creating training pod {NS}/{r.name}-forged as system:serviceaccount:{NS}:tenant is denied"
    refused(as_user(stack, tenant, "create", "-f", "-", body=forged), "aicert-training-pods", message)

    # the same, bound straight to the node the agent measures: the scheduler is not in the way
    forged["spec"]["nodeName"] = real["spec"]["nodeName"]
    refused(as_user(stack, tenant, "create", "-f", "-", body=forged), "aicert-training-pods", message)

    # only the ownerReference, no label
    owned = plain_pod(f"{r.name}-owned", train["image"])
    owned["metadata"]["ownerReferences"] = meta["ownerReferences"]
    refused(
        as_user(stack, tenant, "create", "-f", "-", body=owned),
        "aicert-training-pods",
        "only the aicert operator may create pods with aicert.dev/ labels or a CertifiedTraining owner",
    )

    # the next attempt's pod, pre-created with its labels before the operator makes it
    next_attempt = plain_pod(f"{r.name}-2", train["image"], nodeName=real["spec"]["nodeName"])
    next_attempt["metadata"]["labels"] = {**meta["labels"], "aicert.dev/attempt": "2"}
    refused(
        as_user(stack, tenant, "create", "-f", "-", body=next_attempt),
        "aicert-training-pods",
        f"creating training pod {NS}/{r.name}-2 as system:serviceaccount:{NS}:tenant is denied",
    )
    # Without labels the name alone is admitted (the agent ignores an unlabelled pod, but it would
    # block the operator's next attempt): left to the operator. Dry run: nothing is created.
    del next_attempt["metadata"]["labels"]
    squatting = as_user(stack, tenant, "create", "--dry-run=server", "-f", "-", body=next_attempt)
    assert squatting.returncode == 0, squatting.stderr

    assert pod_names(stack) >= {f"{r.name}-1"}
    assert not pod_names(stack) & {f"{r.name}-forged", f"{r.name}-owned", f"{r.name}-2"}
    assert [p["metadata"]["name"] for p in r.pods()] == [f"{r.name}-1"]
    finishes_honestly(stack, r, real)


def test_training_pod_labels_owners_and_spec_are_immutable(stack: Stack, tenant: Path, run: Any) -> None:
    r, real = live_run(run)
    name = real["metadata"]["name"]
    admin = stack.cluster.admin_kubeconfig
    label_message = f"changing the aicert.dev/ labels of pod {NS}/{name} is denied"
    for who in (tenant, admin):
        for change in ("aicert.dev/training=other", "aicert.dev/attempt-", "aicert.dev/extra=1"):
            refused(
                as_user(stack, who, "label", "pod", name, change, "--overwrite"),
                "aicert-training-pods",
                label_message,
            )
    # the label off, by a JSON patch as the agent would see it: also refused for the admin
    unlabel = [{"op": "remove", "path": "/metadata/labels/aicert.dev~1training"}]
    refused(
        as_user(stack, admin, "patch", "pod", name, "--type=json", "-p", json.dumps(unlabel)),
        "aicert-training-pods",
        label_message,
    )
    disown = [{"op": "remove", "path": "/metadata/ownerReferences"}]
    refused(
        as_user(stack, admin, "patch", "pod", name, "--type=json", "-p", json.dumps(disown)),
        "aicert-training-pods",
        f"changing the CertifiedTraining ownerReferences of pod {NS}/{name} is denied",
    )
    # swap the training image of the running pod under the certificate (the API allows image updates)
    refused(
        as_user(
            stack, tenant, "set", "image", f"pod/{name}", "train=registry.local/e2e/evil@sha256:" + "1" * 64
        ),
        "aicert-training-pods",
        f"changing the spec of training pod {NS}/{name} is denied",
    )
    # any other label or annotation too: `app=web` for a few seconds would bring the pod under the
    # NetworkPolicies (and Services) that select app=web (second red-team round, attack 1)
    frozen = f"changing the labels or annotations of training pod {NS}/{name} is denied"
    for who in (tenant, admin):
        refused(as_user(stack, who, "label", "pod", name, "app=web"), "aicert-training-pods", frozen)
        refused(as_user(stack, who, "annotate", "pod", name, "note=x"), "aicert-training-pods", frozen)

    after = stack.get("pod", name, NS)
    assert after["metadata"]["labels"] == real["metadata"]["labels"]
    assert after["metadata"].get("annotations") == real["metadata"].get("annotations")
    assert after["metadata"]["ownerReferences"] == real["metadata"]["ownerReferences"]
    assert after["spec"] == real["spec"]
    finishes_honestly(stack, r, real)


def test_forged_training_claims_are_refused(stack: Stack, tenant: Path) -> None:
    """The per-attempt output claims (spec.output.volumeClaimTemplate) are labelled like the pods."""
    claim: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "forged-1-output", "namespace": NS, "labels": {"aicert.dev/training": "forged"}},
        "spec": {"accessModes": ["ReadWriteOncePod"], "resources": {"requests": {"storage": "1Mi"}}},
    }
    refused(
        as_user(stack, tenant, "create", "-f", "-", body=claim),
        "aicert-training-claims",
        f"creating claim {NS}/forged-1-output as system:serviceaccount:{NS}:tenant is denied",
    )
    del claim["metadata"]["labels"]
    created = as_user(stack, tenant, "create", "-f", "-", body=claim)
    assert created.returncode == 0, created.stderr
    refused(
        as_user(stack, tenant, "label", "pvc", "forged-1-output", "aicert.dev/training=forged"),
        "aicert-training-claims",
        f"changing the aicert.dev/ labels or CertifiedTraining ownerReferences of claim {NS}/forged-1-output",
    )
    assert "labels" not in stack.get("pvc", "forged-1-output", NS)["metadata"]
    stack.cluster.kubectl("delete", "pvc", "forged-1-output", f"-n={NS}")


# --- policy 2: no way into a training pod ----------------------------------------------------------


def grant_ephemeral_containers(stack: Stack, user: str) -> None:
    """What `kubectl debug` needs beyond `edit` (which, in this Kubernetes version, lacks it)."""
    role = f"{user}-debug"
    stack.cluster.kubectl(
        "create", "role", role, "--verb=get,update,patch", "--resource=pods/ephemeralcontainers", f"-n={NS}"
    )
    stack.cluster.kubectl("create", "rolebinding", role, f"--role={role}", f"--user={user}", f"-n={NS}")


def wait_until_allowed(stack: Stack, kubeconfig: Path, *can_i: str) -> None:
    for _ in range(100):
        if as_user(stack, kubeconfig, "auth", "can-i", *can_i).stdout.strip() == "yes":
            return
        time.sleep(0.1)
    raise AssertionError(f"RBAC never allowed {can_i}")


@pytest.fixture(scope="module")
def break_glass(stack: Stack) -> Path:
    """A person in the aicert.dev:break-glass group, with `edit` and ephemeral containers in team-a."""
    kubeconfig = stack.cluster.kubeconfig_for_client("breakglass-ops", groups=[BREAK_GLASS_GROUP])
    stack.cluster.kubectl(
        "create", "rolebinding", "breakglass-edit", "--clusterrole=edit", "--user=breakglass-ops", f"-n={NS}"
    )
    grant_ephemeral_containers(stack, "breakglass-ops")
    wait_until_allowed(stack, kubeconfig, "create", "pods/exec")
    wait_until_allowed(stack, kubeconfig, "patch", "pods", "--subresource=ephemeralcontainers")
    return kubeconfig


@pytest.fixture(scope="module")
def debugger(stack: Stack) -> Path:
    """A tenant's colleague granted pods/ephemeralcontainers on top of `edit` (not break-glass)."""
    kubeconfig = stack.cluster.kubeconfig_for_client("debugger")
    stack.cluster.kubectl(
        "create", "rolebinding", "debugger-edit", "--clusterrole=edit", "--user=debugger", f"-n={NS}"
    )
    grant_ephemeral_containers(stack, "debugger")
    wait_until_allowed(stack, kubeconfig, "patch", "pods", "--subresource=ephemeralcontainers")
    return kubeconfig


def entry_attempts(name: str) -> dict[str, tuple[str, ...]]:
    """CONNECT requests into pod `name`: as kubectl makes them."""
    return {
        "exec": ("exec", name, "-c", "train", "--", "true"),
        "attach": ("attach", name, "-c", "train"),
        # kubectl port-forward refuses a pod that is not Running yet (ours runs its init containers):
        # the same CONNECT request, raw
        "portforward": (
            "create",
            "--raw",
            f"/api/v1/namespaces/{NS}/pods/{name}/portforward?ports=8080",
            "-f",
            "/dev/null",
        ),
        "proxy": ("get", "--raw", f"/api/v1/namespaces/{NS}/pods/{name}/proxy/"),
    }


def test_no_way_into_a_training_pod(
    stack: Stack, tenant: Path, debugger: Path, break_glass: Path, run: Any
) -> None:
    r, real = live_run(run)
    name = real["metadata"]["name"]
    train_image = train_container(real)["image"]
    for kind, args in entry_attempts(name).items():
        code, stderr = streaming(stack, tenant, *args)
        assert code not in (None, 0), f"{kind}: admitted: {stderr}"
        assert "ValidatingAdmissionPolicy 'aicert-training-pod-no-connect'" in stderr, stderr
        assert (
            f"pods/{kind} into training pod {NS}/{name} is denied: "
            f"a certified run must not be touched while it runs (CertifiedTraining {r.name})"
        ) in stderr, stderr

    # kubectl debug: `edit` has no pods/ephemeralcontainers here; whoever has it is refused at admission
    debug = ("debug", name, f"--image={train_image}", "--container=debugger", "--", "true")
    by_tenant = as_user(stack, tenant, *debug)
    assert 'cannot patch resource "pods/ephemeralcontainers"' in by_tenant.stderr, by_tenant.stderr
    for who in (debugger, stack.cluster.admin_kubeconfig):
        refused(
            as_user(stack, who, *debug),
            "aicert-training-pod-no-debug",
            f"pods/ephemeralcontainers (kubectl debug) into training pod {NS}/{name} is denied: "
            f"a certified run must not be touched while it runs (CertifiedTraining {r.name})",
        )

    # Break-glass passes admission (what kubelet then does with the stream is not checked here)...
    for kind, args in entry_attempts(name).items():
        _, stderr = streaming(stack, break_glass, *args)
        assert "ValidatingAdmissionPolicy" not in stderr and "is denied" not in stderr, f"{kind}: {stderr}"
    # ...and may add an ephemeral container: a dry run, as a real one would change the honest pod
    with_debugger = dict(stack.get("pod", name, NS))
    with_debugger["spec"]["ephemeralContainers"] = [
        {"name": "debugger", "image": train_image, "command": ["true"]}
    ]
    dry_run = ("replace", "--raw", f"/api/v1/namespaces/{NS}/pods/{name}/ephemeralcontainers?dryRun=All")
    allowed = as_user(stack, break_glass, *dry_run, "-f", "-", body=with_debugger)
    assert allowed.returncode == 0, allowed.stderr
    refused(
        as_user(stack, debugger, *dry_run, "-f", "-", body=with_debugger),
        "aicert-training-pod-no-debug",
        f"into training pod {NS}/{name} is denied",
    )

    assert not stack.get("pod", name, NS)["spec"].get("ephemeralContainers")
    finishes_honestly(stack, r, real)


def test_other_pods_stay_reachable(stack: Stack, tenant: Path, run: Any) -> None:
    """Only `<training>-<digits>` names are refused: other pods pass admission (and then are not found)."""
    r, real = live_run(run)
    for name in ("notebook", f"{r.name}-1-debug", f"x{r.name}-1", f"{r.name}-"):
        code, stderr = streaming(
            stack,
            tenant,
            "create",
            "--raw",
            f"/api/v1/namespaces/{NS}/pods/{name}/exec?command=true",
            "-f",
            "/dev/null",
        )
        assert code != 0 and "ValidatingAdmissionPolicy" not in stderr and "NotFound" in stderr, (
            name,
            stderr,
        )
    finishes_honestly(stack, r, real)


# --- policy 3: exclusive volumes while a run is live -------------------------------------------------


def claim_pod(name: str, claim: str, read_only: bool | None) -> dict[str, Any]:
    source: dict[str, Any] = {"claimName": claim}
    if read_only is not None:
        source["readOnly"] = read_only
    pod = plain_pod(
        name, "registry.local/e2e/reader:1", volumes=[{"name": "v", "persistentVolumeClaim": source}]
    )
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "v", "mountPath": "/v", "readOnly": True}]
    return pod


def test_live_training_volumes_are_exclusive(stack: Stack, tenant: Path, run: Any) -> None:
    r, real = live_run(run)
    output, data = f"{r.name}-model", f"{r.name}-data"
    refused(
        as_user(
            stack, tenant, "create", "-f", "-", body=claim_pod(f"{r.name}-writer", output, read_only=True)
        ),
        "aicert-exclusive-volumes",
        f"pod {NS}/{r.name}-writer may not mount PersistentVolumeClaim {output}: "
        f"it is the output of CertifiedTraining {NS}/{r.name}, which is still running",
    )
    # an attempt's own claim (spec.output.volumeClaimTemplate), by its name
    refused(
        as_user(
            stack, tenant, "create", "-f", "-", body=claim_pod(f"{r.name}-writer", f"{r.name}-1-output", True)
        ),
        "aicert-exclusive-volumes",
        f"pod {NS}/{r.name}-writer may not mount PersistentVolumeClaim {r.name}-1-output: "
        f"it is the output of CertifiedTraining {NS}/{r.name}, which is still running",
    )
    for read_only in (None, False):  # a read-only volumeMount is not enough: another container may write
        refused(
            as_user(stack, tenant, "create", "-f", "-", body=claim_pod(f"{r.name}-writer", data, read_only)),
            "aicert-exclusive-volumes",
            f"pod {NS}/{r.name}-writer may mount PersistentVolumeClaim {data} only with "
            f"persistentVolumeClaim.readOnly: true: it is an input of CertifiedTraining {NS}/{r.name}, "
            "which is still running",
        )
    reader = as_user(
        stack, tenant, "create", "--dry-run=server", "-f", "-", body=claim_pod(f"{r.name}-reader", data, True)
    )
    assert reader.returncode == 0, reader.stderr
    assert f"{r.name}-writer" not in pod_names(stack)
    finishes_honestly(stack, r, real)
    # the run is over: its volumes are the tenant's again
    after = as_user(
        stack,
        tenant,
        "create",
        "--dry-run=server",
        "-f",
        "-",
        body=claim_pod(f"{r.name}-after", output, None),
    )
    assert after.returncode == 0, after.stderr


# --- policy 4: status belongs to the operator and the agent ----------------------------------------


def test_status_belongs_to_operator_and_agent(stack: Stack, tenant: Path, run: Any) -> None:
    r = run(namespace=NS).apply()
    honest = r.wait("Succeeded", "Failed")["status"]
    assert honest["phase"] == "Succeeded", honest
    forged = json.dumps({"status": {"modelDigest": "sha256:" + "0" * 64, "certificate": "{}"}})
    patch = ("patch", "ct", r.name, "--subresource=status", "--type=merge", "-p", forged)

    by_tenant = as_user(stack, tenant, *patch)
    assert by_tenant.returncode != 0
    # kubectl reads the status before patching it: RBAC refuses the read already
    assert 'resource "certifiedtrainings/status"' in by_tenant.stderr, by_tenant.stderr
    assert "is forbidden: User" in by_tenant.stderr, by_tenant.stderr

    # someone granted it by mistake, and the cluster admin: RBAC allows, the policy does not
    stack.cluster.kubectl(
        "create",
        "role",
        "status-writer",
        "--verb=get,patch,update",
        "--resource=certifiedtrainings.aicert.dev/status",
        f"-n={NS}",
    )
    stack.cluster.kubectl(
        "create", "rolebinding", "status-writer", "--role=status-writer", "--user=mallory", f"-n={NS}"
    )
    mallory = stack.cluster.kubeconfig_for_client("mallory")
    for _ in range(100):
        can = as_user(
            stack, mallory, "auth", "can-i", "patch", "certifiedtrainings.aicert.dev", "--subresource=status"
        )
        if can.stdout.strip() == "yes":
            break
        time.sleep(0.1)
    for who, user in ((mallory, "mallory"), (stack.cluster.admin_kubeconfig, "aicert-admin")):
        refused(
            as_user(stack, who, *patch),
            "aicert-status-writers",
            f"writing the status of CertifiedTraining {NS}/{r.name} as {user} is denied: "
            "only the aicert operator and node agent may, as it carries the certificate",
        )
    after = r.status
    assert (after["certificate"], after["modelDigest"]) == (honest["certificate"], honest["modelDigest"])


# --- what tenants may do -------------------------------------------------------------------------


def test_tenant_manages_its_certifiedtrainings(stack: Stack, tenant: Path, image: str) -> None:
    body = {
        "apiVersion": "aicert.dev/v1alpha1",
        "kind": "CertifiedTraining",
        "metadata": {"name": "tenant-made", "namespace": NS},
        "spec": {"image": image, "output": {"emptyDir": {}, "mountPath": "/model"}, "minAssurance": "cvm"},
    }
    created = as_user(stack, tenant, "create", "-f", "-", body=body)
    assert created.returncode == 0, created.stderr
    got = as_user(stack, tenant, "get", "ct", "tenant-made", "-o", "jsonpath={.spec.minAssurance}")
    assert got.returncode == 0 and got.stdout == "cvm", got.stderr
    listed = as_user(stack, tenant, "get", "certifiedtrainings", "-o", "name")
    assert "certifiedtraining.aicert.dev/tenant-made" in listed.stdout.split(), listed.stderr
    for verb, extra in (("patch", ()), ("update", ()), ("patch", ("--subresource=status",))):
        can = as_user(stack, tenant, "auth", "can-i", verb, "certifiedtrainings.aicert.dev", *extra)
        assert can.stdout.strip() == "no", (verb, extra, can.stdout)
    deleted = as_user(stack, tenant, "delete", "ct", "tenant-made", "--timeout=60s")
    assert deleted.returncode == 0, deleted.stderr
    assert as_user(stack, tenant, "get", "ct", "tenant-made").returncode != 0


# --- a hostile training image (second red-team round, attacks 3 to 5) ------------------------------


def test_a_sparse_8_tib_output_is_refused_unread(stack: Stack, tenant: Path, run: Any) -> None:
    """Attack 3: a file of 8 TiB apparent size and no blocks used to keep a seal worker busy for
    hours. It is refused before a byte is read, and the run ends."""
    r = run(namespace=NS, env={"HOSTILE": "sparse"}).apply()
    status = r.wait("Succeeded", "Failed")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "OutputTooLarge"), status
    # 8 TiB and the 12-byte weights beside it; refused by the smallest budget, the claim's size here
    assert "(8.0 TiB) counting each file at its apparent size" in status["message"], status["message"]
    assert "it was not hashed" in status["message"]
    assert "certificate" not in status


def test_a_planted_temporary_name_does_not_hold_the_seal(stack: Stack, tenant: Path, run: Any) -> None:
    """Attack 4: directories named like the agent's old temporary files made it quote again and
    again until the run's deadline. The agent writes through names no training can prepare."""
    r = run(namespace=NS, env={"HOSTILE": "tmpdir"}).apply()
    status = r.wait("Succeeded", "Failed")["status"]
    assert status["phase"] == "Succeeded", status
    assert (r.output_dir() / "aicert-certificate.json").is_file()
    assert (r.output_dir() / ".aicert-certificate.json.tmp").is_dir()  # left as the training made it
    trust = TrustStore.from_pem_file(stack.ca_pem)
    assert Verifier(trust).verify(status["certificate"]).assurance == "dev"


def test_a_file_name_that_is_not_utf8_ends_the_run_with_a_readable_reason(
    stack: Stack, tenant: Path, run: Any
) -> None:
    """Attack 5: the refusal's status write was rejected (400) and the agent re-hashed twice a
    second until the deadline. The name is escaped, the refusal lands, the run ends."""
    r = run(namespace=NS, env={"HOSTILE": "badname"}).apply()
    status = r.wait("Succeeded", "Failed")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "MeasurementFailed"), status
    assert "bad-\\xff\\xfe.bin" in status["message"], status["message"]
