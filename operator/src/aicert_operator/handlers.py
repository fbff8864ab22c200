"""kopf handlers: observe, call the pure `reconcile`, apply its decision. Nothing else.

Every watch event of a CertifiedTraining or of one of its pods, and a periodic timer, lead to the
same level-based reconciliation, serialized per training.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import kopf

from aicert.contract.network import network_policy
from aicert.contract.pod import attempt_output_claim, training_pod
from aicert.training import GROUP, LABEL_TRAINING, PLURAL, VERSION, TrainingSpec, pod_name
from aicert_operator import metrics
from aicert_operator.kube import Kube, Rejected
from aicert_operator.observe import owned_pods
from aicert_operator.reconcile import Decision, Training, pod_not_created, reconcile, status_unchanged
from aicert_operator.settings import Settings

FINALIZER = "aicert.dev/cleanup"
STALE_RETRY_SECONDS = 1.0
_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
_wakeups: dict[str, asyncio.TimerHandle] = {}  # one pending "look again at the deadline" per training
_queued: set[str] = set()  # trainings with a reconcile waiting for their lock (at most one each)
_own_writes: dict[str, str] = {}  # training -> resourceVersion of the operator's latest status write


def _context(memo: Any) -> tuple[Kube, Settings]:
    return memo["kube"], memo["settings"]


Logger = logging.Logger | logging.LoggerAdapter[Any]


def apply_reconcile(kube: Kube, settings: Settings, body: dict[str, Any], logger: Logger) -> float | None:
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return None
    training = Training(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        generation=int(meta.get("generation") or 0),
        spec=TrainingSpec.model_validate(body.get("spec") or {}),
        status=dict(body.get("status") or {}),
    )
    pods = owned_pods(
        name=training.name,
        namespace=training.namespace,
        uid=training.uid,
        spec=training.spec,
        pods=kube.list_pods(training.namespace, training.uid),
        settings=settings.pod,
    )
    now = dt.datetime.now(dt.UTC)
    decision = reconcile(training, pods, now, default_deadline=settings.default_deadline_seconds)
    if decision.create_attempt is not None:
        decision = _create_attempt(kube, settings, training, decision, now, logger)
    for name in decision.delete_pods:
        kube.delete_pod(training.namespace, name)
        logger.info("deleted pod %s", name)
    if decision.status and not status_unchanged(training.status, decision.status):
        before = training.status.get("phase")
        written = kube.apply_status(
            training.namespace, training.name, decision.status, read_version=meta.get("resourceVersion")
        )
        if written is None:  # changed since read (or deleted, as kopf removes its finalizer): decide again
            logger.info("the training changed while it was reconciled; looking again")
            if decision.create_attempt is not None:  # the pod was created all the same: say so
                _emit(kube, training, decision)
            return STALE_RETRY_SECONDS
        _own_writes[f"{training.namespace}/{training.name}"] = written
        if decision.status["phase"] != before:
            metrics.PHASES.labels(decision.status["phase"]).inc()
            logger.info("phase %s -> %s: %s", before, decision.status["phase"], decision.status["message"])
    _emit(kube, training, decision)
    return decision.requeue_after


def _emit(kube: Kube, training: Training, decision: Decision) -> None:
    for event in decision.events:
        kube.emit(
            training.namespace,
            training.name,
            training.uid,
            event.type,
            event.reason,
            event.message,
            "Reconcile",
        )


def _create_attempt(
    kube: Kube, settings: Settings, training: Training, decision: Decision, now: dt.datetime, logger: Logger
) -> Decision:
    """Create the attempt's NetworkPolicy, output claim (with a volumeClaimTemplate) and Pod; the
    status then names the pod by uid, which is the one pod the agent may certify."""
    attempt = decision.create_attempt
    assert attempt is not None
    name = pod_name(training.name, attempt)
    identity = {"name": training.name, "namespace": training.namespace, "uid": training.uid}
    policy = network_policy(**identity, attempt=attempt, egress=training.spec.network.egress)
    claim = attempt_output_claim(**identity, spec=training.spec, attempt=attempt)
    pod = training_pod(**identity, spec=training.spec, attempt=attempt, settings=settings.pod)
    what = f"NetworkPolicy {name}"
    try:
        kube.create_network_policy(policy)
        if claim is not None:
            what = f"claim {claim['metadata']['name']}"
            kube.create_claim(claim)
        what = f"pod {name}"
        created = kube.create_pod(pod)
    except Rejected as exc:
        logger.warning("the API server refused %s: %s", what, exc)
        message = f"the API server refused {what}: {exc}"
        return pod_not_created(
            training, decision, message, name_taken=False, transient=exc.transient, now=now
        )
    if created.new:
        metrics.PODS_CREATED.inc()
        logger.info("created pod %s (attempt %d)", name, attempt)
    elif not owned_pods(
        name=training.name,
        namespace=training.namespace,
        uid=training.uid,
        spec=training.spec,
        pods=[created.pod],
        settings=settings.pod,
    ):
        message = f"pod {name} exists and is not this training's; delete it to let attempt {attempt} start"
        logger.warning("%s", message)
        return pod_not_created(training, decision, message, name_taken=True, transient=False, now=now)
    return replace(decision, status={**decision.status, "podUID": created.pod["metadata"]["uid"]})


async def reconcile_training(namespace: str | None, name: str, memo: Any, logger: Logger) -> None:
    if namespace is None:
        return
    kube, settings = _context(memo)
    key = f"{namespace}/{name}"
    if key in _queued:
        return  # a reconcile is already waiting for the lock: it will read the state this event shows
    _queued.add(key)
    async with _locks[key]:
        await asyncio.sleep(settings.coalesce_seconds)  # let a burst of events settle into one read
        _queued.discard(key)
        with metrics.RECONCILE_SECONDS.time():
            body = await asyncio.to_thread(kube.get_training, namespace, name)  # fresh, not the event's copy
            if body is None:
                return
            try:
                requeue_after = await asyncio.to_thread(apply_reconcile, kube, settings, body, logger)
            except Exception:
                metrics.RECONCILES.labels("error").inc()
                raise
            metrics.RECONCILES.labels("ok").inc()
    _wake_at_deadline(namespace, name, requeue_after, memo, logger)


def _wake_at_deadline(namespace: str, name: str, delay: float | None, memo: Any, logger: Logger) -> None:
    """Reconcile again when the run's activeDeadlineSeconds runs out (the latest decision wins)."""
    key = f"{namespace}/{name}"
    previous = _wakeups.pop(key, None)
    if previous is not None:
        previous.cancel()
    if delay is None:
        return
    loop = asyncio.get_running_loop()
    _wakeups[key] = loop.call_later(
        delay, lambda: loop.create_task(reconcile_training(namespace, name, memo, logger))
    )


@kopf.on.event(GROUP, VERSION, PLURAL)
async def training_changed(
    namespace: str | None, name: str, type: str, body: Mapping[str, Any], memo: Any, logger: Logger, **_: Any
) -> None:
    key = f"{namespace}/{name}"
    if type == "DELETED":
        _locks.pop(key, None)
        _own_writes.pop(key, None)
        wakeup = _wakeups.pop(key, None)
        if wakeup is not None:
            wakeup.cancel()
        return
    if _own_writes.get(key) == (body.get("metadata") or {}).get("resourceVersion"):
        return  # the echo of our own status write: it shows nothing a reconcile has not seen
    await reconcile_training(namespace, name, memo, logger)


@kopf.on.event("", "v1", "pods", labels={LABEL_TRAINING: kopf.PRESENT})
async def pod_changed(
    namespace: str | None, labels: Mapping[str, str], memo: Any, logger: Logger, **_: Any
) -> None:
    await reconcile_training(namespace, labels[LABEL_TRAINING], memo, logger)


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=30.0,  # events drive reconciles; deadlines and retries schedule their own wake-ups
    idle=0.0,
    when=lambda status, **_: status.get("phase") not in ("Succeeded", "Failed"),
)
async def resync(namespace: str | None, name: str, memo: Any, logger: Logger, **_: Any) -> None:
    """A safety net for anything a watch missed (deadlines are scheduled by reconcile_training)."""
    await reconcile_training(namespace, name, memo, logger)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def cleanup(namespace: str | None, name: str, uid: str, memo: Any, logger: Logger, **_: Any) -> None:
    """Stop the run's pods before the resource goes (garbage collection would, but later)."""
    if namespace is None:
        return
    kube, _settings = _context(memo)
    pods = await asyncio.to_thread(kube.list_pods, namespace, uid)  # by label: the GC takes the rest
    for pod in pods:
        await asyncio.to_thread(kube.delete_pod, namespace, pod["metadata"]["name"])
        logger.info("deleted pod %s of a deleted CertifiedTraining", pod["metadata"]["name"])
