"""kopf handlers: observe, call the pure `reconcile`, apply its decision. Nothing else.

Every watch event of a CertifiedTraining or of one of its pods leads to the same level-based
reconciliation, serialized per training and decided from what the watches showed (`view`). Each
reconcile of a run that is not finished schedules the next one (its deadline, or a resync), so no
kopf timer and no finalizer is needed: the operator writes nothing on a training but its status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from typing import Any

import kopf

from aicert_contract.network import network_policy
from aicert_contract.pod import attempt_output_claim, pod_contract_record, training_pod
from aicert_contract.publish import LABEL_PUSH_OF, push_pod
from aicert_contract.status import Reason
from aicert_contract.training import GROUP, LABEL_TRAINING, PLURAL, VERSION, TrainingSpec, pod_name
from aicert_operator import metrics
from aicert_operator.kube import Kube, Rejected
from aicert_operator.nodes import NodeView
from aicert_operator.observe import PodView, owned_pods
from aicert_operator.publish import Publication, PushView, certificate_sha256, push_views
from aicert_operator.reconcile import (
    Decision,
    Training,
    pod_not_created,
    published_decision,
    reconcile,
    status_unchanged,
)
from aicert_operator.settings import Settings
from aicert_operator.view import WatchView, needs_pod_list

FINALIZER = "aicert.dev/cleanup"  # set by earlier versions; kopf removes it from trainings it sees
STALE_RETRY_SECONDS = 1.0
RESYNC_SECONDS = 30.0  # a safety net for anything a watch missed
ERROR_RETRY_SECONDS = 5.0
_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
_wakeups: dict[str, asyncio.TimerHandle] = {}  # one pending "look again at the deadline" per training
_queued: set[str] = set()  # trainings with a reconcile waiting for their lock (at most one each)
_own_writes: dict[str, str] = {}  # training -> resourceVersion of the operator's latest status write
_view = WatchView()
_nodes = NodeView()  # fed by the node watch: why a pod waits for a node, at no request per reconcile
_tasks: set[asyncio.Task[None]] = set()


def labelled_nodes() -> list[str]:
    """The nodes labelled for runs, as the node watch last showed them (the agents' liveness loop)."""
    return _nodes.labelled()


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
    pods = _owned(settings, training, _view.pods(training.uid))
    if needs_pod_list(training.status, pods):  # the watch may not have shown the pod yet
        _view.merge_pods(training.uid, kube.list_pods(training.namespace, training.uid))
        pods = _owned(settings, training, _view.pods(training.uid))
    now = dt.datetime.now(dt.UTC)
    decision = reconcile(
        training,
        pods,
        now,
        default_deadline=settings.default_deadline_seconds,
        max_deadline=settings.max_deadline_seconds,
        nodes=_nodes.nodes(),
        pushes=_pushes(settings, training),
    )
    if decision.create_attempt is not None:
        decision = _create_attempt(kube, settings, training, decision, now, logger)
    if decision.create_push is not None:
        decision = _create_push(kube, settings, training, decision, now, logger)
    for name in decision.delete_pods:
        kube.delete_pod(training.namespace, name)
        logger.info("deleted pod %s", name)
    if decision.status and not status_unchanged(training.status, decision.status):
        before = training.status.get("phase")
        written = kube.apply_status(
            training.namespace,
            training.name,
            training.uid,
            decision.status,
            read_version=meta.get("resourceVersion"),
        )
        if written is None:  # changed since read, deleted, or replaced: decide again from a fresh read
            logger.info("the training changed while it was reconciled; looking again")
            _view.mark_stale(f"{training.namespace}/{training.name}")
            if decision.create_attempt is not None:  # the pod was created all the same: say so
                _emit(kube, training, decision)
            return STALE_RETRY_SECONDS
        key = f"{training.namespace}/{training.name}"
        _view.read(key, written)  # the next reconcile decides from what was written
        _own_writes[key] = str(written["metadata"]["resourceVersion"])
        if decision.status["phase"] != before:
            metrics.PHASES.labels(decision.status["phase"]).inc()
            logger.info("phase %s -> %s: %s", before, decision.status["phase"], decision.status["message"])
    _emit(kube, training, decision)
    return decision.requeue_after


def _owned(settings: Settings, training: Training, pods: list[dict[str, Any]]) -> list[PodView]:
    return owned_pods(
        name=training.name,
        namespace=training.namespace,
        uid=training.uid,
        spec=training.spec,
        pods=pods,
        settings=settings.pod,
        status=training.status,
    )


def _pushes(settings: Settings, training: Training) -> list[PushView]:
    return push_views(
        name=training.name,
        namespace=training.namespace,
        uid=training.uid,
        spec=training.spec,
        status=training.status,
        pods=_view.pods(training.uid),
        settings=settings.pod,
    )


def _create_push(
    kube: Kube, settings: Settings, training: Training, decision: Decision, now: dt.datetime, logger: Logger
) -> Decision:
    """Create the push pod `decision` wants (spec.output.oci). A pod already holding its name is
    judged by the next reconcile (push_views), which the pod watch brings; a refusal by the API
    server is the Published condition's PushFailed (PushPending when it may pass later: quota)."""
    push_try = decision.create_push
    assert push_try is not None
    certificate = str(training.status.get("certificate") or "")
    pod = push_pod(
        name=training.name,
        namespace=training.namespace,
        uid=training.uid,
        spec=training.spec,
        attempt=int(training.status.get("attempt") or 0),
        push_try=push_try,
        settings=settings.pod,
        certificate_sha256=certificate_sha256(certificate),
        envelope_signature=training.status.get("envelopeSignature"),
        transparency_log_entry=training.status.get("transparencyLogEntry"),
    )
    name = pod["metadata"]["name"]
    try:
        created = kube.create_pod(pod)
    except Rejected as exc:
        logger.warning("the API server refused push pod %s: %s", name, exc)
        reason = Reason.PUSH_PENDING if exc.transient else Reason.PUSH_FAILED
        message = f"the API server refused push pod {name}: {exc}"
        wanted = Publication(("False", reason, message), requeue_after=10.0 if exc.transient else None)
        return published_decision(training, decision.status, wanted, now, decision.delete_pods)
    _view.see_pod(created.pod)
    if created.new:
        logger.info("created push pod %s", name)
    return decision


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
    _view.see_pod(created.pod)
    if created.new:
        metrics.PODS_CREATED.inc()
        logger.info("created pod %s (attempt %d)", name, attempt)
    elif not _owned(settings, training, [created.pod]):
        message = f"pod {name} exists and is not this training's; delete it to let attempt {attempt} start"
        logger.warning("%s", message)
        return pod_not_created(training, decision, message, name_taken=True, transient=False, now=now)
    status = {**decision.status, "podUID": created.pod["metadata"]["uid"]}
    if created.new:  # the contract it was built with; a pod found made gets it from the next reconcile
        status["podContract"] = pod_contract_record(attempt, settings.pod.agent_image)
    return replace(decision, status=status)


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
            try:
                body = _view.training(key)
                if body is None:  # not watched yet, or a write found the view's copy stale
                    body = await asyncio.to_thread(kube.get_training, namespace, name)
                    if body is None:
                        return
                    _view.read(key, body)
                requeue_after = await asyncio.to_thread(apply_reconcile, kube, settings, body, logger)
            except Exception:
                metrics.RECONCILES.labels("error").inc()
                logger.exception("reconcile failed; trying again in %.0f s", ERROR_RETRY_SECONDS)
                _view.mark_stale(key)
                requeue_after = ERROR_RETRY_SECONDS
            else:
                metrics.RECONCILES.labels("ok").inc()
    if requeue_after is not None:
        requeue_after = min(requeue_after, RESYNC_SECONDS)
    _wake_at_deadline(namespace, name, requeue_after, memo, logger)


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` without making kopf's per-object worker wait for it (so the view stays current);
    a reconcile reports and schedules its own retries."""
    task = asyncio.get_running_loop().create_task(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _wake_at_deadline(namespace: str, name: str, delay: float | None, memo: Any, logger: Logger) -> None:
    """Reconcile again after `delay`: the run's activeDeadlineSeconds, a retry, or a resync (the
    latest decision wins)."""
    key = f"{namespace}/{name}"
    previous = _wakeups.pop(key, None)
    if previous is not None:
        previous.cancel()
    if delay is None:
        return
    loop = asyncio.get_running_loop()
    _wakeups[key] = loop.call_later(delay, lambda: _spawn(reconcile_training(namespace, name, memo, logger)))


@kopf.on.event(GROUP, VERSION, PLURAL)
async def training_changed(
    namespace: str | None, name: str, type: str, body: Mapping[str, Any], memo: Any, logger: Logger, **_: Any
) -> None:
    key = f"{namespace}/{name}"
    if type == "DELETED":
        _locks.pop(key, None)
        _own_writes.pop(key, None)
        _view.forget_training(key)
        wakeup = _wakeups.pop(key, None)
        if wakeup is not None:
            wakeup.cancel()
        uid = (body.get("metadata") or {}).get("uid")
        if namespace is not None and uid:
            _spawn(cleanup(namespace, str(uid), memo, logger))
        return
    _view.see_training(key, body)
    if _own_writes.get(key) == (body.get("metadata") or {}).get("resourceVersion"):
        return  # the echo of our own status write: it shows nothing a reconcile has not seen
    _spawn(reconcile_training(namespace, name, memo, logger))


@kopf.on.event("", "v1", "pods", labels={LABEL_TRAINING: kopf.PRESENT})
async def pod_changed(
    namespace: str | None,
    labels: Mapping[str, str],
    type: str,
    body: Mapping[str, Any],
    memo: Any,
    logger: Logger,
    **_: Any,
) -> None:
    _view.see_pod(body, deleted=type == "DELETED")
    _spawn(reconcile_training(namespace, labels[LABEL_TRAINING], memo, logger))


@kopf.on.event("", "v1", "pods", labels={LABEL_PUSH_OF: kopf.PRESENT})
async def push_pod_changed(
    namespace: str | None,
    labels: Mapping[str, str],
    type: str,
    body: Mapping[str, Any],
    memo: Any,
    logger: Logger,
    **_: Any,
) -> None:
    """A push pod of spec.output.oci (it carries the training's uid but not its name label, so that
    the node agent never takes it for a training pod): its state decides the Published condition."""
    _view.see_pod(body, deleted=type == "DELETED")
    _spawn(reconcile_training(namespace, labels[LABEL_PUSH_OF], memo, logger))


@kopf.on.event("", "v1", "nodes")
async def node_changed(type: str, body: Mapping[str, Any], **_: Any) -> None:
    """Keep the nodes' assurance labels and AICertAKChain conditions; a Pending run's next reconcile
    (its pod's events, or the resync) reads them from here."""
    _nodes.see(body, deleted=type == "DELETED")


async def cleanup(namespace: str, uid: str, memo: Any, logger: Logger) -> None:
    """Stop a deleted training's pods now (garbage collection would, but later)."""
    kube, _settings = _context(memo)
    try:
        pods = await asyncio.to_thread(kube.list_pods, namespace, uid)  # by label: the GC takes the rest
        for pod in pods:
            await asyncio.to_thread(kube.delete_pod, namespace, pod["metadata"]["name"])
            logger.info("deleted pod %s of a deleted CertifiedTraining", pod["metadata"]["name"])
    except Exception:  # the garbage collector deletes them all the same (owner references)
        logger.exception("could not delete the pods of a deleted CertifiedTraining")
