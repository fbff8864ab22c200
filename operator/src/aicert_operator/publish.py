"""spec.output.oci after the run Succeeded: which push pod to create, and the Published condition. Pure.

The state is read each time from the status and the training's push pods (their deterministic
names, `<name>-<attempt>-push-<try>`), so a restarted operator decides what the previous one would
have: a push pod already made is found (or its name is, AlreadyExists), and its result stays in its
termination message until the status records it (`status.published`).

Tries: a push pod that fails is followed by the next try after PUSH_RETRY_SECONDS x its number, up
to PUSH_TRIES; then, or at once when the pod says the files are not the certified ones (exit 1: a
tenant changed the output since the seal, and trying again would not change it back), Published is
False with reason PushFailed and nothing more happens. The phase stays Succeeded throughout: the
certificate holds whether or not a copy of the model reached a registry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aicert_contract.pod import PodSettings, controller_uid, pod_deviations
from aicert_contract.publish import (
    LABEL_PUSH_ATTEMPT,
    LABEL_PUSH_OF,
    LABEL_PUSH_TRY,
    PUSH_NOT_CERTIFIED_EXIT,
    PUSH_RETRY_SECONDS,
    PUSH_TRIES,
    parse_push_message,
    published_reference,
    push_container_message,
    push_pod,
    push_pod_name,
)
from aicert_contract.status import ConditionStatus, ConditionType, Reason
from aicert_contract.training import TrainingSpec
from aicert_operator.observe import parse_time


@dataclass(frozen=True)
class PushView:
    """What the operator reads off one push pod."""

    name: str
    attempt: int
    push_try: int
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    deleting: bool
    exit_code: int | None  # of the push container, once it terminated
    message: str | None  # its termination message
    reason: str  # the pod's (e.g. DeadlineExceeded)
    pod_message: str
    finished_at: dt.datetime | None
    deviations: tuple[str, ...] = ()  # where it differs from the contract's push pod


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def push_views(
    *,
    name: str,
    namespace: str,
    uid: str,
    spec: TrainingSpec,
    status: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    settings: PodSettings,
) -> list[PushView]:
    """The training's own push pods (controlled by its uid, named for their attempt and try), each
    compared with the push pod of either accepted release: a pod made by anyone else, or changed,
    has `deviations` and its message is never taken for a result."""
    views = []
    certificate = status.get("certificate")
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        attempt, push_try = _int(labels.get(LABEL_PUSH_ATTEMPT)), _int(labels.get(LABEL_PUSH_TRY))
        if (
            labels.get(LABEL_PUSH_OF) != name
            or controller_uid(pod) != uid
            or attempt < 1
            or push_try < 1
            or meta.get("name") != push_pod_name(name, attempt, push_try)
        ):
            continue
        deviations: tuple[str, ...] = ("the training has no certificate",)
        if isinstance(certificate, str) and spec.output.oci is not None:
            found = []
            for image in settings.accepted_agent_images:
                expected = push_pod(
                    name=name,
                    namespace=namespace,
                    uid=uid,
                    spec=spec,
                    attempt=attempt,
                    push_try=push_try,
                    settings=settings.of_release(image),
                    certificate_sha256=certificate_sha256(certificate),
                    envelope_signature=status.get("envelopeSignature"),
                    transparency_log_entry=status.get("transparencyLogEntry"),
                )
                found.append(tuple(pod_deviations(pod, expected)))
            deviations = min(found, key=len)
        pod_status = pod.get("status") or {}
        exit_code, message = push_container_message(pod)
        finished = None
        for container in pod_status.get("containerStatuses") or []:
            finished = parse_time(((container.get("state") or {}).get("terminated") or {}).get("finishedAt"))
        views.append(
            PushView(
                name=str(meta.get("name")),
                attempt=attempt,
                push_try=push_try,
                phase=str(pod_status.get("phase") or "Pending"),
                deleting=bool(meta.get("deletionTimestamp")),
                exit_code=exit_code,
                message=message,
                reason=str(pod_status.get("reason") or ""),
                pod_message=str(pod_status.get("message") or ""),
                finished_at=finished,
                deviations=deviations,
            )
        )
    return views


def certificate_sha256(certificate: str) -> str:
    import hashlib

    return hashlib.sha256(certificate.encode()).hexdigest()


@dataclass(frozen=True)
class Publication:
    """What spec.output.oci wants now: the Published condition, status.published once pushed, the
    try whose pod to create, and when to look again."""

    condition: tuple[ConditionStatus, Reason, str]
    published: dict[str, str] | None = None
    create_try: int | None = None
    requeue_after: float | None = None


def _failure(view: PushView) -> str:
    if view.phase == "Succeeded":
        outcome = parse_push_message(view.message)
        return outcome.error or "the push pod exited 0 without a result"
    if view.message:
        return parse_push_message(view.message).error
    if view.reason or view.pod_message:
        return f"{view.reason}: {view.pod_message}".strip(": ")
    return "the push pod failed"


def publication(
    name: str, spec: TrainingSpec, status: Mapping[str, Any], pushes: Sequence[PushView], now: dt.datetime
) -> Publication | None:
    """None when there is nothing to publish (no spec.output.oci, not Succeeded, no certificate) or
    the outcome is settled (Published True, or False with PushFailed)."""
    oci = spec.output.oci
    if oci is None or status.get("phase") != "Succeeded" or not status.get("certificate"):
        return None
    current: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == ConditionType.PUBLISHED), {}
    )
    if current.get("status") == "True" and status.get("published"):
        return None
    if current.get("status") == "False" and current.get("reason") == Reason.PUSH_FAILED:
        return None
    attempt = _int(status.get("attempt"))
    mine = sorted((p for p in pushes if p.attempt == attempt), key=lambda p: p.push_try)
    for view in mine:
        if not view.deviations and view.phase == "Succeeded" and view.exit_code == 0:
            digest = parse_push_message(view.message).digest
            if digest is not None:
                reference = published_reference(oci.reference, digest)
                return Publication(
                    ("True", Reason.PUBLISHED, f"pushed to {reference} by pod {view.name}"),
                    published={"reference": reference, "digest": digest},
                )
    target = f"oci://{oci.reference}"
    if not mine:
        first = push_pod_name(name, attempt, 1)
        return Publication(
            ("False", Reason.PUSH_PENDING, f"creating pod {first} to push to {target}"), create_try=1
        )
    latest = mine[-1]
    if latest.deviations:
        return Publication(
            (
                "False",
                Reason.PUSH_FAILED,
                f"pod {latest.name} is not the push pod the operator makes ({', '.join(latest.deviations)}); "
                "its result is not used",
            )
        )
    of = f"try {latest.push_try} of {PUSH_TRIES}"
    if latest.phase not in ("Succeeded", "Failed"):
        doing = "is being deleted" if latest.deleting else f"pushes the model to {target}"
        return Publication(("False", Reason.PUSH_PENDING, f"pod {latest.name} {doing} ({of})"))
    error = _failure(latest)
    if latest.exit_code == PUSH_NOT_CERTIFIED_EXIT:
        return Publication(
            ("False", Reason.PUSH_FAILED, f"pod {latest.name} refused to push ({of}): {error}")
        )
    if latest.push_try >= PUSH_TRIES:
        return Publication(
            ("False", Reason.PUSH_FAILED, f"pod {latest.name} failed ({of}, the last): {error}")
        )
    nxt = latest.push_try + 1
    wait = 0.0  # a pod that failed before its container ran (its deadline, say) is retried at once
    if latest.finished_at is not None:
        delay = dt.timedelta(seconds=PUSH_RETRY_SECONDS * latest.push_try)
        wait = (latest.finished_at + delay - now).total_seconds()
    failed = f"pod {latest.name} failed ({of}): {error}"
    if wait > 0:
        return Publication(
            ("False", Reason.PUSH_PENDING, f"{failed}; try {nxt} in {wait:.0f} s"), requeue_after=wait
        )
    return Publication(("False", Reason.PUSH_PENDING, f"{failed}; starting try {nxt}"), create_try=nxt)
