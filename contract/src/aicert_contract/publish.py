"""The push pod of `spec.output.oci`, and the message it leaves: one definition, two uses. Pure.

Once a run has Succeeded, the operator creates `push_pod(...)` in the training's namespace: the
agent image running `python -m aicert_agent push` (aicert_agent.push), the attempt's output claim
mounted read-only, the pull secret (if any) as a volume, no service account token, PodSecurity
`restricted`, a bounded deadline. Neither the operator nor the agent ever reads the Secret.

The pod carries the training's uid label (so the operator's view and cleanup find it) but not the
training's name label nor the attempt label: the node agent does not take it for a training pod,
and the attempt's NetworkPolicy (which may deny all egress) does not select it.

Its result is its termination message (`push_message`), which the operator reads from the pod's
status (`parse_push_message`): no API call, no credentials in the pod.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aicert.oci.errors import OciError
from aicert.oci.reference import DIGEST, parse_reference
from aicert_contract.pod import (
    AGENT_USER,
    INJECTION_OPT_OUT_ANNOTATIONS,
    INJECTION_OPT_OUT_LABELS,
    PodSettings,
    owner_reference,
)
from aicert_contract.training import LABEL_TRAINING_UID, TrainingSpec, output_claim

CONTAINER_PUSH: Final = "aicert-push"
LABEL_PUSH_OF: Final = "aicert.dev/push-of"  # the training's name (the operator's push pod watch)
LABEL_PUSH_ATTEMPT: Final = "aicert.dev/push-attempt"  # the certified attempt whose output it pushes
LABEL_PUSH_TRY: Final = "aicert.dev/push-try"  # 1, 2, … up to PUSH_TRIES
TERMINATION_LOG: Final = "/dev/termination-log"
PUSH_MESSAGE_MAX_BYTES: Final = 4096  # kubelet keeps at most this much of a termination message
PUSH_NOT_CERTIFIED_EXIT: Final = 1  # the push pod's exit code when the files are not the certified ones
PUSH_TRIES: Final = 3  # push pods per certified attempt, at most: a failed try is retried twice
PUSH_RETRY_SECONDS: Final = 30  # after a failed try, before the next (times the try's number)
PUSH_DEADLINE_SECONDS: Final = 3600  # activeDeadlineSeconds: a pod stuck (no secret, no node) fails
MODEL_MOUNT: Final = "/model"
REGISTRY_CONFIG_MOUNT: Final = "/var/run/aicert/registry"
REGISTRY_CONFIG_FILE: Final = "config.json"
OUTPUT_VOLUME: Final = "output"
REGISTRY_VOLUME: Final = "registry-config"
PUSH_RESOURCES: Final = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}


def push_pod_name(training: str, attempt: int, push_try: int) -> str:
    """Deterministic: one pod per try of one attempt, whoever creates it and however often."""
    return f"{training}-{attempt}-push-{push_try}"


def push_labels(name: str, uid: str, attempt: int, push_try: int) -> dict[str, str]:
    return {
        LABEL_TRAINING_UID: uid,
        LABEL_PUSH_OF: name,
        LABEL_PUSH_ATTEMPT: str(attempt),
        LABEL_PUSH_TRY: str(push_try),
    }


def push_pod(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: TrainingSpec,
    attempt: int,
    push_try: int,
    settings: PodSettings,
    certificate_sha256: str,
    envelope_signature: str | None,
    transparency_log_entry: str | None = None,
) -> dict[str, Any]:
    """The push pod of try `push_try` for the certified `attempt` of namespace/name (uid). Raises
    ValueError for a spec without output.oci or without a claim (the CRD refuses both)."""
    oci = spec.output.oci
    claim = output_claim(spec, name, attempt)
    if oci is None or claim is None:
        raise ValueError("spec.output.oci needs an output claim")
    command = [
        "python",
        "-m",
        "aicert_agent",
        "push",
        "--model",
        MODEL_MOUNT,
        "--reference",
        oci.reference,
        "--name",
        name,
        "--certificate-sha256",
        certificate_sha256,
    ]
    if envelope_signature:
        command += ["--envelope-signature", envelope_signature]
        if transparency_log_entry:  # at most 32 KiB (the CRD's bound), within one argument's limit
            command += ["--transparency-log-entry", transparency_log_entry]
    if oci.plainHttp:
        command.append("--plain-http")
    mounts: list[dict[str, Any]] = [{"name": OUTPUT_VOLUME, "mountPath": MODEL_MOUNT, "readOnly": True}]
    volumes: list[dict[str, Any]] = [
        {"name": OUTPUT_VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
    ]
    if oci.pullSecret is not None:
        command += ["--registry-config", f"{REGISTRY_CONFIG_MOUNT}/{REGISTRY_CONFIG_FILE}"]
        mounts.append({"name": REGISTRY_VOLUME, "mountPath": REGISTRY_CONFIG_MOUNT, "readOnly": True})
        volumes.append(
            {
                "name": REGISTRY_VOLUME,
                "secret": {  # defaultMode as the API server would default it otherwise (0644)
                    "secretName": oci.pullSecret.name,
                    "items": [{"key": ".dockerconfigjson", "path": REGISTRY_CONFIG_FILE}],
                    "defaultMode": 0o444,
                },
            }
        )
    run_as = spec.securityContext.model_dump(exclude_none=True)
    container_context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    if "runAsUser" not in run_as:  # the training's user wrote the files; else the agent image's
        container_context["runAsUser"] = AGENT_USER
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "activeDeadlineSeconds": PUSH_DEADLINE_SECONDS,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}, **run_as},
        "tolerations": [  # where the training ran, its output may be the only place to mount it
            *settings.gpu_tolerations,
            *(t.model_dump(exclude_none=True) for t in spec.tolerations),
        ],
        "volumes": volumes,
        "containers": [
            {
                "name": CONTAINER_PUSH,
                "image": settings.agent_image,
                "command": command,
                "volumeMounts": mounts,
                "resources": PUSH_RESOURCES,
                "securityContext": container_context,
                "terminationMessagePath": TERMINATION_LOG,
                "terminationMessagePolicy": "File",
            }
        ],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": push_pod_name(name, attempt, push_try),
            "namespace": namespace,
            "labels": {**push_labels(name, uid, attempt, push_try), **INJECTION_OPT_OUT_LABELS},
            "annotations": dict(INJECTION_OPT_OUT_ANNOTATIONS),
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": pod_spec,
    }


def push_message(*, digest: str | None = None, error: str | None = None) -> bytes:
    """The push pod's termination message: `{"digest": …}` or `{"error": …}`, at most
    PUSH_MESSAGE_MAX_BYTES (a long error is cut, the JSON stays whole)."""
    if (digest is None) == (error is None):
        raise ValueError("a push message is a digest or an error")
    if digest is not None:
        return json.dumps({"digest": digest}).encode()
    assert error is not None
    text = error
    while True:
        data = json.dumps({"error": text}).encode()
        if len(data) <= PUSH_MESSAGE_MAX_BYTES:
            return data
        text = text[: len(text) - (len(data) - PUSH_MESSAGE_MAX_BYTES) - 1] + "…"


@dataclass(frozen=True)
class PushOutcome:
    digest: str | None  # sha256:<hex> when the pod says it pushed
    error: str  # why not (the pod's words, or why its message is not one), "" when pushed


def parse_push_message(text: str | None) -> PushOutcome:
    """What a push pod's termination message says; anything but a well-formed message is an error."""
    if not text:
        return PushOutcome(None, "the push pod left no termination message")
    if len(text.encode()) > PUSH_MESSAGE_MAX_BYTES:
        return PushOutcome(None, "the push pod's termination message is too long")
    try:
        doc = json.loads(text)
    except ValueError:
        return PushOutcome(None, "the push pod's termination message is not JSON")
    if not isinstance(doc, dict) or len(doc) != 1:
        return PushOutcome(None, "the push pod's termination message is not one digest or one error")
    if "digest" in doc:
        digest = doc["digest"]
        if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
            return PushOutcome(None, "the push pod's termination message names no sha256 digest")
        return PushOutcome(digest, "")
    error = doc.get("error")
    if not isinstance(error, str) or not error:
        return PushOutcome(None, "the push pod's termination message is not one digest or one error")
    return PushOutcome(None, error)


def published_reference(reference: str, digest: str) -> str:
    """oci://REGISTRY/REPOSITORY@digest for spec.output.oci.reference (its tag left out): what
    `aicert verify` takes. ValueError for a reference the CRD would not have admitted."""
    try:
        parsed = parse_reference(f"oci://{reference}")
    except OciError as exc:
        raise ValueError(exc.reason) from None
    return str(parsed.with_digest(digest))


def push_container_message(pod: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """(exit code, termination message) of the push container, once it has terminated."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != CONTAINER_PUSH:
            continue
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return terminated.get("exitCode"), terminated.get("message")
    return None, None
