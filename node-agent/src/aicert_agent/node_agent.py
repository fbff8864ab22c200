"""The node agent on Kubernetes: measure, gate, seal and certify the training pods on one node.

Pods are worked on as their watch events arrive (`work_queue`), several at once: hashing runs in
parallel, every TPM operation is serialized by the measurement log's lock. Each pod is first checked
against the pod contract (`pod_check`), then planned with the pure `pod_plan.plan`; every step is
safe to repeat, so a restart at any point neither loses nor duplicates a measurement.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from kubernetes.client.exceptions import ApiException
from pydantic import JsonValue

from aicert.certificate import ASSURANCE_ORDER, Assurance, root_level
from aicert.digest import (
    INPUT_EXCLUDED,
    MANIFEST_FILE,
    OUTPUT_EXCLUDED,
    DigestError,
    HashingCancelled,
    Manifest,
)
from aicert.events import IMAGE, INPUT, OUTPUT
from aicert.trust import ChainError, TrustStore, build_path
from aicert.trust.measurements import KnownMeasurements
from aicert_agent import metrics
from aicert_agent.cri import RuntimeReader
from aicert_agent.image_proof import PinnedImage
from aicert_agent.kube import AgentKube
from aicert_agent.markers import write_atomic, write_marker
from aicert_agent.measurement_log import Entry, LogError, MeasurementLog
from aicert_agent.measuring import MeasureLimits, TooLarge, input_budget, measure, output_budget
from aicert_agent.network_ledger import NetworkLedger, NotWatching
from aicert_agent.pacing import next_wait, relabel_due
from aicert_agent.parents import input_parent
from aicert_agent.platform import cvm_problem
from aicert_agent.pod_check import (
    Action,
    check_pod,
    network_problem,
    relabel_problem,
    volume_problem,
)
from aicert_agent.pod_plan import (
    Markers,
    PodFacts,
    PodRun,
    Step,
    lanes,
    may_act,
    plan,
    run_in_flight,
    work_lane,
)
from aicert_agent.pod_state import pod_facts, run_progress
from aicert_agent.recorder import AkIdentity, RunRecorder, SealError, new_salt
from aicert_agent.sealing import Refusal, RetryPolicy, Sealer
from aicert_agent.storage import shared_storage_problem
from aicert_agent.train_image import train_image_problem
from aicert_agent.transparency import TransparencyLog
from aicert_agent.volumes import VolumeNotFound, empty_dir_path, pvc_path
from aicert_agent.work_queue import PodQueue
from aicert_contract.pod import OUTPUT_VOLUME, PodSettings, pod_agent_image
from aicert_contract.status import Reason
from aicert_contract.training import (
    CONTROL_VOLUME,
    LABEL_ATTEMPT,
    LABEL_TRAINING,
    MARKER_GATE,
    MARKER_REFUSED,
    MARKER_SEALED,
    Input,
    TrainingSpec,
    output_claim,
)

log = logging.getLogger("aicert_agent")


# Failures below the agent, by documented reason (never by exception class name).
_FAILURE_REASONS: tuple[tuple[type[Exception], Reason], ...] = (
    (SealError, Reason.SEAL_FAILED),
    (LogError, Reason.LOG_FAILED),
    (DigestError, Reason.MEASUREMENT_FAILED),
    (VolumeNotFound, Reason.VOLUME_NOT_FOUND),
)
# Steps after training: an error in them is counted, tried again after a back-off, then refused.
_SEAL_STEPS = frozenset({Step.FINISH, Step.PUBLISH, Step.MARK_SEALED})


@dataclass(frozen=True)
class AgentConfig:
    node: str
    kubelet_root: Path
    assurance: Assurance
    pod: PodSettings  # the operator's: a pod is measured only when it is exactly the contract's pod
    resync_seconds: float = 2.0
    tsa_url: str | None = None  # an RFC 3161 TSA that dates each quote's signature (None: no timestamp)
    ark_fingerprints: frozenset[str] | None = None  # level cvm: the AMD roots (None: AMD's own, pinned)
    # level cvm: the known-good paravisor launch measurements (None: none, so no cvm label)
    paravisor_measurements: KnownMeasurements | None = None
    workers: int = 2  # pods worked on at once in each lane: gates, and seals (aicert_agent.work_queue)
    limits: MeasureLimits = field(default_factory=MeasureLimits)  # what one run may have hashed (measuring)
    seal_attempts: int = RetryPolicy.attempts  # a run whose seal failed this often is refused (SealFailed)
    tlog: TransparencyLog | None = None  # a Rekor v2 log every bundle is submitted to (None: none)


@dataclass
class PodContext:
    pod: dict[str, Any]
    training: dict[str, Any]
    spec: TrainingSpec
    # the run's claims, read once for the pod (NodeAgent._claims): what the agent uses of one cannot
    # change while the pod lives (a claim's access modes and bound volume are immutable, and the
    # pod keeps the volume it mounted even if its claim were deleted and made again)
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)  # set when the pod goes away

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def training_name(self) -> str:
        return str(self.training["metadata"]["name"])

    @property
    def training_uid(self) -> str:  # every status write names it (aicert_kube.TrainingClient.apply_status)
        return str(self.training["metadata"]["uid"])

    @property
    def training_version(self) -> str:  # what this pass read (or last wrote): a status write's first try
        return str(self.training["metadata"].get("resourceVersion") or "")

    @property
    def attempt(self) -> int:
        return int((self.pod["metadata"].get("labels") or {}).get(LABEL_ATTEMPT, "0"))

    @property
    def output_claim(self) -> str | None:
        return output_claim(self.spec, self.training_name, self.attempt)


@dataclass
class NodeAgent:
    config: AgentConfig
    kube: AgentKube
    tpm: Any  # aicert_agent.tpm.client.Tpm, open
    log: MeasurementLog
    ak: AkIdentity
    trust: TrustStore
    network: NetworkLedger  # the policies that selected each run's pod, gate to seal (policy_watch)
    # the container runtime's CRI, read-only (aicert_agent.cri_client); None: --cri-socket not given,
    # the train container's image is then known from kubelet's pod status alone (logged at start)
    runtime: RuntimeReader | None = None
    _salts: dict[str, str] = field(default_factory=dict)
    _claims: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # pod uid -> its claims
    _labelled_at: float | None = None  # time.monotonic() of the latest label_node
    # pod uid -> (monotonic time before which it is not looked at again, the delay that led there)
    _waiting: dict[str, tuple[float, float]] = field(default_factory=dict)
    sealer: Sealer = field(init=False)

    def __post_init__(self) -> None:
        self.sealer = Sealer(
            self.kube,
            self.config.node,
            self.config.assurance,
            self.ak,
            self.config.tsa_url,
            RetryPolicy(attempts=self.config.seal_attempts),
            tlog=self.config.tlog,
        )

    # --- start -----------------------------------------------------------------------------

    def check_ak(self) -> bool:
        """Is our AK certificate one a verifier would accept, at our assurance level?"""
        chain = [x509.load_pem_x509_certificate(p.encode()) for p in self.ak.certificate_chain]
        metrics.AK_CERTIFICATE_EXPIRY.set(chain[0].not_valid_after_utc.timestamp())
        try:
            path = build_path(chain[0], chain[1:], self.trust, dt.datetime.now(dt.UTC))
        except ChainError as exc:
            log.error("cannot certify on %s: the AK certificate does not verify: %s", self.config.node, exc)
            return False
        if ASSURANCE_ORDER[root_level(self.config.assurance)] > ASSURANCE_ORDER[path.anchor.max_assurance]:
            log.error(
                "cannot certify at %s: the AK chains to a root that vouches for %s at most",
                self.config.assurance,
                path.anchor.max_assurance,
            )
            return False
        # at cvm: would a verifier grant cvm to this AK, with this VM's evidence?
        problem = None
        if self.config.assurance == "cvm":
            problem = cvm_problem(
                self.ak.platform, chain[0], self.config.ark_fingerprints, self.config.paravisor_measurements
            )
        if problem:
            log.error("cannot certify on %s at cvm: %s", self.config.node, problem)
        return problem is None

    def start(self) -> bool:
        try:
            self.log.recover(self.tpm)
        except LogError as exc:
            # The old epoch proves nothing any more: runs mid-training will be refused (their
            # inputs are no longer in the log); a fresh epoch lets new runs be certified.
            log.error("%s; re-basing the measurement log", exc)
            metrics.LOG_REBASES.labels("mismatch").inc()
            self.log.rebase(self.tpm)
        if self.runtime is None:
            log.warning(
                "no --cri-socket: the train container's image is known from kubelet's pod status alone, "
                "not cross-checked with the container runtime"
            )
        ok = self.check_ak()
        self.kube.label_node(self.config.assurance if ok else None)
        self._labelled_at = time.monotonic()
        log.info(
            "node %s %s",
            self.config.node,
            f"labelled assurance={self.config.assurance}" if ok else "unlabelled",
        )
        return ok

    def probe_tpm(self) -> None:
        """Raises when the TPM does not answer (the lease is then not renewed)."""
        with self.log.locked():
            self.tpm.pcr_read([self.log.pcr])

    def relabel(self) -> None:
        """After a lease renewal: label the node again, at most once every `RELABEL_SECONDS`. The
        operator takes the label away only from a node whose lease it sees expired, and an agent
        whose lease lapses stops (`LeaseLock.hold`); so the label can be gone while this agent
        renews only when the operator's clock runs ahead, or someone removed it by hand. Only
        called once start() found the AK good."""
        now = time.monotonic()
        if relabel_due(self._labelled_at, now):
            self.kube.label_node(self.config.assurance)
            self._labelled_at = now

    # --- one pod -----------------------------------------------------------------------------

    def rebase_if_idle(self, pods: list[dict[str, Any]]) -> None:
        """Called while no pod is worked on: with no run between its gate and its seal, start a new
        measurement epoch, so certificates carry only concurrent runs' entries."""
        runs = [self._pod_run(p) for p in pods]  # reads each pod's markers once
        for gone in self.network.tracked() - {r.uid for r in runs if not r.finished}:
            self.network.forget(gone)
        for gone in set(self._claims) - {r.uid for r in runs if not r.finished}:
            self._claims.pop(gone, None)
        for gone in set(self._waiting) - {r.uid for r in runs if not r.finished}:
            self._waiting.pop(gone, None)
        entries = self.log.entries()
        if entries and not run_in_flight(runs, {e.run for e in entries}):
            self.log.rebase(self.tpm)
            metrics.LOG_REBASES.labels("idle").inc()
            log.info("no run in flight: new measurement epoch")

    def wants_work(self, pod: dict[str, Any]) -> bool:
        """Can the agent do anything for this pod now (`may_act`)? Cheap: no API call."""
        return self._now(pod) is not None

    def _now(self, pod: dict[str, Any]) -> tuple[PodFacts, Markers] | None:
        """The pod's facts and markers when the agent may act on it now, else None."""
        uid = str(pod["metadata"]["uid"])
        waiting = self._waiting.get(uid)
        if waiting is not None and time.monotonic() < waiting[0]:
            return None  # its training did not name it a moment ago: looked at again after the delay
        control = self._control(uid)
        if not control.is_dir():
            return None  # kubelet has not set up the pod's volumes yet: nothing to measure or mark
        markers = Markers(*((control / m).exists() for m in (MARKER_GATE, MARKER_SEALED, MARKER_REFUSED)))
        facts = pod_facts(pod)
        if facts.seal_running and self.sealer.waiting(control):
            return None  # its seal failed a moment ago: tried again after the back-off
        return (facts, markers) if may_act(facts, markers) else None

    def _pod_run(self, pod: dict[str, Any]) -> PodRun:
        uid = str(pod["metadata"]["uid"])
        control = self._control(uid)
        finished = (control / MARKER_SEALED).exists() or (control / MARKER_REFUSED).exists()
        return PodRun(uid, pod_facts(pod).terminal, finished)

    def _control(self, uid: str) -> Path:
        return empty_dir_path(self.config.kubelet_root, uid, CONTROL_VOLUME)

    def _certified(self, training: dict[str, Any], uid: str) -> bool:
        text = (training.get("status") or {}).get("certificate")
        if not text:
            return False
        try:
            return bool(json.loads(text)["statement"]["predicate"]["run"]["id"] == uid)
        except (ValueError, KeyError, TypeError):
            return False

    def reconcile_pod(self, pod: dict[str, Any], cancel: threading.Event | None = None) -> None:
        meta = pod["metadata"]
        now = self._now(pod)
        if now is None:
            return  # nothing to do now: no need to read the training
        facts, markers = now
        training = self.kube.get_training(
            meta["namespace"], (meta.get("labels") or {}).get(LABEL_TRAINING, "")
        )
        if training is None:
            return
        ctx = PodContext(
            pod,
            training,
            TrainingSpec.model_validate(training.get("spec") or {}),
            claims=self._claims.setdefault(str(meta["uid"]), {}),
        )
        ctx.cancel = cancel or ctx.cancel
        verdict = check_pod(
            pod, training, self.config.pod, self.config.assurance, gated=facts.gate_done or markers.gate
        )
        if verdict.action is Action.WAIT:
            delay = next_wait(self._waiting[ctx.uid][1] if ctx.uid in self._waiting else None)
            self._waiting[ctx.uid] = (time.monotonic() + delay, delay)
            return
        self._waiting.pop(ctx.uid, None)
        if verdict.action is not Action.MEASURE:
            assert verdict.reason is not None
            self._refuse(ctx, verdict.reason, verdict.message, own=verdict.action is Action.REFUSE)
            return
        if self.sealer.finish_refusal(ctx, self._control(ctx.uid)):
            return  # refused earlier, but a write did not land: finished now, no step runs again
        entries = self.log.entries()
        steps = plan(
            facts,
            run_progress(entries, ctx.uid),
            markers,
            len(ctx.spec.inputs),
            self._certified(training, ctx.uid),
        )
        for step in steps:
            log.info("%s/%s: %s", ctx.namespace, meta["name"], step.value)
            try:
                self._do(step, ctx, entries)
            except NotWatching as exc:  # the policy watches are not listed yet: the next sweep
                log.info("%s/%s: %s", ctx.namespace, meta["name"], exc)
                return
            except (Refusal, TooLarge) as refusal:
                self._refuse(ctx, refusal.reason, refusal.message)
                return
            except HashingCancelled:  # the pod is going away: nothing to refuse, nothing to certify
                return
            except (SealError, LogError, DigestError, VolumeNotFound) as exc:
                reason = next(r for kind, r in _FAILURE_REASONS if isinstance(exc, kind))
                self._refuse(ctx, reason, str(exc))
                return
            except Exception as exc:
                if step not in _SEAL_STEPS:
                    raise  # before training: tried again, bounded by the gate's timeout
                self.sealer.failed(ctx, self._control(ctx.uid), exc)  # bounded: then SealFailed
                return
            entries = self.log.entries()

    def _recorder(self, ctx: PodContext, entries: list[Entry]) -> RunRecorder:
        salt = next((str(e.content["salt"]) for e in entries if e.run == ctx.uid), None)
        return RunRecorder(
            self.log, self.tpm, run_id=ctx.uid, salt=salt or self._salts.setdefault(ctx.uid, new_salt())
        )

    def _claim_path(self, ctx: PodContext, claim: str) -> Path:
        volume = (self._claim(ctx, claim).get("spec") or {}).get("volumeName")
        if not volume:
            raise VolumeNotFound(f"PVC {ctx.namespace}/{claim} is not bound to a volume")
        return pvc_path(self.config.kubelet_root, ctx.uid, str(volume))

    def _claim(self, ctx: PodContext, name: str) -> dict[str, Any]:
        if name not in ctx.claims:
            try:
                ctx.claims[name] = self.kube.get_claim(ctx.namespace, name)
            except LookupError as exc:
                raise VolumeNotFound(str(exc)) from None
        return ctx.claims[name]

    def _check_volumes(self, ctx: PodContext) -> None:
        """Refuse unless the output is the pod's alone and nobody else can write the inputs now."""
        output = ctx.output_claim
        names = [i.persistentVolumeClaim.claimName for i in ctx.spec.inputs] + ([output] if output else [])
        claims = {n: self._claim(ctx, n) for n in names}
        if not claims:
            return  # no claim: no other pod or volume can share the run's storage
        pods = self.kube.pods_in_namespace(ctx.namespace)
        problem = volume_problem(
            ctx.spec, claims, pods, ctx.uid, output_claim=output
        ) or shared_storage_problem(
            claims,
            self.kube.volumes(),
            inputs=[i.persistentVolumeClaim.claimName for i in ctx.spec.inputs],
            output_claim=output,
        )
        if problem is not None:
            raise Refusal.of(problem)

    def _network(self, ctx: PodContext) -> dict[str, JsonValue]:
        """Start watching the pod's network (the ledger keeps every policy state that selects it
        until the seal); refuses when the spec asks for no egress and the pod has some now."""
        meta = ctx.pod["metadata"]
        record = self.network.register(
            ctx.uid, ctx.namespace, meta.get("labels") or {}, meta.get("annotations") or {}
        )
        problem = network_problem(ctx.spec, record, self.network.opened(ctx.uid))
        if problem is not None:
            raise Refusal.of(problem)
        return dict(record)

    def _measure_input(self, ctx: PodContext, item: Input, what: str, *, spent: int) -> Manifest:
        claim = item.persistentVolumeClaim.claimName
        path = self._claim_path(ctx, claim)
        budget = input_budget(self.config.limits, path, self._claim(ctx, claim), spent=spent)
        return measure(path, what, budget, exclude=INPUT_EXCLUDED, cancel=ctx.cancel)

    def _measure_output(self, ctx: PodContext, path: Path) -> Manifest:
        claim = self._claim(ctx, ctx.output_claim) if ctx.output_claim else None
        budget = output_budget(self.config.limits, ctx.spec, path, claim)
        return measure(path, "the output", budget, exclude=OUTPUT_EXCLUDED, cancel=ctx.cancel)

    def _do(self, step: Step, ctx: PodContext, entries: list[Entry]) -> None:
        recorder = self._recorder(ctx, entries)
        if step is Step.BEGIN:
            meta = ctx.training["metadata"]
            recorder.begin(
                node=self.config.node,
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta["uid"],
                attempt=ctx.attempt,
                spec=ctx.spec.recorded(),
                network=self._network(ctx),
                agent_image=pod_agent_image(ctx.pod),  # the accepted release's: check_pod said so
            )
        elif step is Step.MEASURE_INPUTS:
            measured = [e.content for e in entries if e.run == ctx.uid and e.type == INPUT]
            spent = sum(int(c.get("bytes") or 0) for c in measured)
            done = {c.get("name") for c in measured}
            parents = sum(1 for c in measured if c.get("parent"))
            for item in ctx.spec.inputs:
                if item.name not in done:
                    what = f"input {item.name}"
                    manifest = self._measure_input(ctx, item, what, spent=spent)
                    path = self._claim_path(ctx, item.persistentVolumeClaim.claimName)
                    parent = input_parent(path, manifest, what, recorded=parents).parent
                    recorder.input(item.name, manifest, parent=parent)
                    spent += manifest.total_bytes
                    parents += parent is not None
        elif step is Step.OPEN_GATE:
            self._check_volumes(ctx)
            present = sorted(p.name for _, p in zip(range(5), self._output_path(ctx).iterdir(), strict=False))
            if present:
                raise Refusal(
                    Reason.OUTPUT_NOT_EMPTY,
                    f"the output volume holds {', '.join(present[:5])} before training: every file of a "
                    "certified output must come from this run, so it must start empty",
                )
            write_marker(self._control(ctx.uid), MARKER_GATE)
            try:  # shown in `kubectl get ct` while training; the certificate's own record comes at the seal
                written = self.kube.apply_status(
                    ctx.namespace,
                    ctx.training_name,
                    ctx.training_uid,
                    {"assurance": self.config.assurance},
                    known_version=ctx.training_version,
                )
                ctx.training = written or ctx.training
            except ApiException as exc:
                log.warning("%s: could not show the assurance level yet: %s", ctx.training_name, exc.reason)
        elif step is Step.FINISH:
            self._finish(ctx, recorder, entries)
        elif step is Step.PUBLISH:
            self._publish(ctx, recorder)
        elif step is Step.MARK_SEALED:
            write_marker(self._control(ctx.uid), MARKER_SEALED)
        elif step is Step.REFUSE_LOG_LOST:
            raise Refusal(
                Reason.MEASUREMENT_LOG_LOST,
                "the node's measurement log no longer holds this run's input measurements (the node rebooted or the log was re-based mid-run)",
            )

    def _output_path(self, ctx: PodContext) -> Path:
        claim = ctx.output_claim
        if claim is None:
            return empty_dir_path(self.config.kubelet_root, ctx.uid, OUTPUT_VOLUME)
        return self._claim_path(ctx, claim)

    def _finish(self, ctx: PodContext, recorder: RunRecorder, entries: list[Entry]) -> None:
        own = [e for e in entries if e.run == ctx.uid]
        if not any(e.type == OUTPUT for e in own):
            self._check_volumes(ctx)
            meta = ctx.pod["metadata"]
            self.network.pod_seen(ctx.uid, meta.get("labels") or {}, meta.get("annotations") or {})
            network = self.network.record(ctx.uid)  # from the gate until now
            problem = relabel_problem(self.network.relabelled(ctx.uid)) or network_problem(
                ctx.spec, network, self.network.opened(ctx.uid)
            )
            if problem is not None:
                raise Refusal.of(problem)
            measured = {str(e.content["name"]): str(e.content["root"]) for e in own if e.type == INPUT}
            spent = 0
            for item in ctx.spec.inputs:
                now = self._measure_input(ctx, item, f"input {item.name} again", spent=spent)
                spent += now.total_bytes
                if now.root != measured[item.name]:
                    raise Refusal(
                        Reason.INPUTS_CHANGED,
                        f"input {item.name} changed during training (root {measured[item.name]} became {now.root})",
                    )
            pinned = self._check_image(ctx)
            if not any(e.type == IMAGE for e in own):
                recorder.image(ctx.spec.image, pinned.digest)
            out_dir = self._output_path(ctx)
            for reserved in sorted(OUTPUT_EXCLUDED):
                if os.path.lexists(out_dir / reserved):
                    raise Refusal(
                        Reason.RESERVED_FILE,
                        f"the training wrote {reserved} into its output, a name aicert reserves",
                    )
            output = self._measure_output(ctx, out_dir)
            recorder.output(ctx.spec.output.name, output, network=network)
            write_atomic(out_dir / MANIFEST_FILE, output.to_bytes())
        self._publish(ctx, recorder)

    def _check_image(self, ctx: PodContext) -> PinnedImage:
        """The pinned image the train container ran, by kubelet's pod status and, with --cri-socket,
        by the runtime's own word (`train_image`); a Refusal otherwise."""
        pinned, problem = train_image_problem(ctx.pod, ctx.spec.image, self.runtime)
        if problem is not None:
            raise Refusal.of(problem)
        checked = (
            "kubelet's status and the runtime agree"
            if self.runtime
            else "no --cri-socket: kubelet's status only"
        )
        log.info("%s: the train container ran %s (%s)", ctx.training_name, pinned, checked)
        return pinned

    def _publish(self, ctx: PodContext, recorder: RunRecorder) -> None:
        self.sealer.publish(ctx, recorder, self._output_path(ctx), self._control(ctx.uid))

    def _refuse(self, ctx: PodContext, reason: Reason, message: str, *, own: bool = True) -> None:
        self.sealer.refuse(ctx, reason, message, self._control(ctx.uid), own=own)
        self.network.forget(ctx.uid)
        self._claims.pop(ctx.uid, None)

    def pod_gone(self, event_type: str, pod: dict[str, Any]) -> None:
        """A pod deleted or ended: nothing more to check for it, so its claims and wait are forgotten."""
        if event_type == "DELETED" or pod_facts(pod).terminal:
            self._claims.pop(str(pod["metadata"]["uid"]), None)
            self._waiting.pop(str(pod["metadata"]["uid"]), None)

    # --- loop --------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Work on the node's pods as the watch shows them change, until `stop`."""
        work = PodQueue(
            self.reconcile_pod,
            wanted=self.wants_work,
            workers=lanes(self.config.workers),
            lane=lambda pod: work_lane(pod_facts(pod)),
            stop=lambda pod: pod_facts(pod).terminal,  # being deleted, or ended: its hashing stops
        )

        def watcher(resource_version: str) -> None:
            while not stop.is_set():
                try:
                    for event_type, pod in self.kube.watch_pods(resource_version, timeout=30):
                        resource_version = str(pod["metadata"].get("resourceVersion") or resource_version)
                        meta = pod["metadata"]
                        self.network.pod_seen(
                            str(meta["uid"]), meta.get("labels") or {}, meta.get("annotations") or {}
                        )
                        work.update(event_type, pod)
                        self.pod_gone(event_type, pod)
                        if stop.is_set():
                            return
                except Exception as exc:  # restart from a fresh list: nothing missed stays missed
                    log.warning("pod watch ended: %s", exc)
                    stop.wait(1)
                    pods, resource_version = self.kube.pods_on_node()
                    work.replace_all(pods)

        pods, version = self.kube.pods_on_node()
        work.replace_all(pods)
        threading.Thread(target=watcher, args=(version,), name="pod-watch", daemon=True).start()
        try:
            while not stop.wait(self.config.resync_seconds):
                work.sweep()
                work.when_idle(self.rebase_if_idle)
        finally:
            work.close()
