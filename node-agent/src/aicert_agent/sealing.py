"""How a run ends on this node: its certificate published, or a refusal; never a loop.

- **Publish**: seal (the quote), timestamp, have the AK sign the certificate's Sigstore bundle and
  the weights' OMS signature (`model.sig`), write them beside the weights (`write_atomic`: through no name a training could have prepared), put the
  certificate and the bundle's signature in the training's status, mark the pod sealed.
- **Refuse**: the decision is kept in the pod's control volume before anything else, so that it is
  finished (status, marker, Event) even when a write fails or the agent restarts, without running
  any step again; the message is one the API server accepts (`status_message`).
- **Bounded tries**: any other error while sealing (a TSA or the API server not answering, a write
  that fails) is counted in the control volume, which lives as long as the pod (so the count
  survives an agent restart), and the seal is tried again after a back-off; after
  `RetryPolicy.attempts` failures the run is refused as `SealFailed`, naming the last cause.

Every status write names the training's uid: a training deleted (and created again under its name)
while the run was sealed is gone for this run; nothing is retried for it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from aicert.bundle import bundle_bytes
from aicert.certificate import Assurance
from aicert.digest import BUNDLE_FILE, CERTIFICATE_FILE, MANIFEST_FILE, MODEL_SIGNATURE_FILE, Manifest
from aicert_agent import metrics
from aicert_agent.bundling import sign_bundle, sign_model
from aicert_agent.kube import AgentKube
from aicert_agent.markers import write_atomic, write_marker
from aicert_agent.pod_check import Problem
from aicert_agent.recorder import AkIdentity, RunRecorder
from aicert_agent.timestamping import add_timestamp
from aicert_agent.transparency import (
    LOG_RECORD,
    LogRecord,
    TransparencyLog,
    TransparencyLogError,
    entry_status_text,
    kept_entry,
    log_entry,
    reused,
    with_log_entry,
)
from aicert_contract.status import (
    REFUSALS,
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    set_condition,
    status_message,
)
from aicert_contract.training import CERTIFICATE_MAX_BYTES, MARKER_REFUSED, MARKER_SEALED, short_digest

if TYPE_CHECKING:
    from aicert_agent.node_agent import PodContext

log = logging.getLogger("aicert_agent")

# The agent's own files in a pod's control volume (the gate and seal containers read only the markers).
REFUSING = "refusing"  # a refusal decided, not yet finished
SEAL_FAILURES = "seal-failures"  # how often sealing failed, and when to try again


class Refusal(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        assert reason in REFUSALS, reason
        super().__init__(message)
        self.reason, self.message = reason, message

    @classmethod
    def of(cls, problem: Problem) -> Refusal:
        return cls(problem.reason, problem.message)


@dataclass(frozen=True)
class RetryPolicy:
    """How often a run's seal is tried before it is refused, and how long to wait in between."""

    attempts: int = 8
    first_seconds: float = 5.0
    max_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a seal is tried at least once")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure: doubling, capped."""
        return float(min(self.first_seconds * 2 ** max(failures - 1, 0), self.max_seconds))


@dataclass(frozen=True)
class SealFailures:
    count: int
    not_before: float  # Unix time: no new try before
    cause: str  # the latest failure

    def to_bytes(self) -> bytes:
        return json.dumps({"count": self.count, "notBefore": self.not_before, "cause": self.cause}).encode()

    @classmethod
    def read(cls, control: Path) -> SealFailures | None:
        try:
            raw = json.loads((control / SEAL_FAILURES).read_bytes())
            return cls(int(raw["count"]), float(raw["notBefore"]), str(raw["cause"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:  # only the agent writes it, whole
            log.warning(
                "%s/%s is unreadable (%s); counting seal failures afresh", control, SEAL_FAILURES, exc
            )
            return None


def after_failure(previous: SealFailures | None, cause: str, now: float, policy: RetryPolicy) -> SealFailures:
    """The record after one more failure. Pure."""
    count = (previous.count if previous else 0) + 1
    return SealFailures(count, now + policy.delay(count), cause)


def describe(exc: BaseException) -> str:
    """What failed, in words (the API client's text would carry every HTTP header)."""
    if isinstance(exc, ApiException):
        return f"the API server answered {exc.status} {exc.reason}"
    return str(exc) or type(exc).__name__


def certified_message(root: str, node: str, logged: str) -> str:
    """The Certified condition's message; `logged` (what the transparency log said, which may be
    the log's own words) passes `status_message` with the rest, so no answer of a log can make the
    API server refuse the status write."""
    return status_message(f"model sha256:{root} certified by a TPM quote on {node}{logged}")


def certified_status(
    assurance: Assurance, text: str, bundle: dict[str, Any], root: str, condition: Condition
) -> dict[str, Any]:
    """The status of a certified run, in one write: the certificate and what rebuilds its bundle,
    the envelope's signature and its transparency log entry, if it has one (kubectl aicert get)."""
    status: dict[str, Any] = {
        "assurance": assurance,
        "certificate": text,
        "envelopeSignature": bundle["dsseEnvelope"]["signatures"][0]["sig"],
        "modelDigest": f"sha256:{root}",
        "modelShortDigest": short_digest(root),
        "conditions": [condition],
    }
    for entry in bundle["verificationMaterial"]["tlogEntries"]:  # at most one
        status["transparencyLogEntry"] = entry_status_text(entry)
    return status


@dataclass
class Sealer:
    kube: AgentKube
    node: str
    assurance: Assurance
    ak: AkIdentity
    tsa_url: str | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    tlog: TransparencyLog | None = None  # a Rekor v2 log each bundle is submitted to (None: none)
    clock: Callable[[], float] = time.time  # wall clock: a back-off outlives an agent restart

    # --- bounded tries ------------------------------------------------------------------------

    def waiting(self, control: Path) -> bool:
        """Is this pod's seal backing off after a failure? (Never longer than the longest back-off,
        should the wall clock have gone back.)"""
        failures = SealFailures.read(control)
        now = self.clock()
        return failures is not None and now < failures.not_before <= now + self.policy.max_seconds

    def failed(self, ctx: PodContext, control: Path, exc: Exception) -> None:
        """Sealing raised `exc`: try again after a back-off, or refuse the run once the tries are used."""
        cause = describe(exc)
        failures = after_failure(SealFailures.read(control), cause, self.clock(), self.policy)
        metrics.SEAL_FAILURES.inc()
        if failures.count >= self.policy.attempts:
            self.refuse(
                ctx,
                Reason.SEAL_FAILED,
                f"sealing failed {failures.count} times; the last time: {cause}",
                control,
            )
            return
        write_atomic(control / SEAL_FAILURES, failures.to_bytes(), sync=False)
        log.warning(
            "%s/%s: sealing failed (%d of %d tries): %s; trying again in %g s",
            ctx.namespace,
            ctx.pod["metadata"]["name"],
            failures.count,
            self.policy.attempts,
            cause,
            self.policy.delay(failures.count),
        )

    # --- publish ------------------------------------------------------------------------------

    def publish(self, ctx: PodContext, recorder: RunRecorder, output: Path, control: Path) -> None:
        started = time.perf_counter()
        certificate = recorder.seal(assurance=self.assurance, ak=self.ak)
        metrics.QUOTE_SECONDS.observe(time.perf_counter() - started)
        if self.tsa_url:  # a TSA outage raises: tried again after a back-off, then SealFailed
            add_timestamp(certificate, self.tsa_url)
        root = certificate["statement"]["predicate"]["outputs"]["root"]
        text = json.dumps(certificate, separators=(",", ":"))
        if len(text.encode()) > CERTIFICATE_MAX_BYTES:
            raise Refusal(
                Reason.CERTIFICATE_TOO_LARGE,
                f"the certificate has {len(text.encode())} bytes; the status holds at most {CERTIFICATE_MAX_BYTES}",
            )
        bundle = sign_bundle(certificate, recorder.tpm)  # after the timestamp, which it carries
        bundle, logged = self._log(ctx, certificate, bundle, control)
        # the weights' OMS signature, over the manifest the agent wrote beside them (checked against
        # the certified root)
        model_signature = sign_model(certificate, Manifest.read(output / MANIFEST_FILE), recorder.tpm)
        # Beside the weights and their manifest first, so that a certificate in the status is also
        # in the output volume (it travels with the weights and outlives the resource).
        write_atomic(output / MODEL_SIGNATURE_FILE, json.dumps(model_signature).encode() + b"\n")
        write_atomic(output / BUNDLE_FILE, bundle_bytes(bundle))
        write_atomic(output / CERTIFICATE_FILE, text.encode() + b"\n")
        condition = self._condition(ctx, "True", Reason.CERTIFIED, certified_message(root, self.node, logged))
        status = certified_status(self.assurance, text, bundle, root, condition)
        written = self.kube.apply_status(
            ctx.namespace, ctx.training_name, ctx.training_uid, status, known_version=ctx.training_version
        )
        if written is None:
            self._gone(ctx, "its certificate is in the output volume only")
            return
        ctx.training = written
        write_marker(control, MARKER_SEALED)
        metrics.CERTIFICATES.labels("issued").inc()
        self.kube.emit(
            ctx.namespace,
            ctx.training_name,
            ctx.training_uid,
            "Normal",
            Reason.CERTIFIED,
            f"model sha256:{root}",
            "Certify",
        )

    def _log(
        self, ctx: PodContext, certificate: dict[str, Any], bundle: dict[str, Any], control: Path
    ) -> tuple[dict[str, Any], str]:
        """The bundle, with its transparency log entry when a log is configured and answers, and
        what the Certified condition says about it. A log that fails costs the certificate nothing:
        it is published without the entry, and the condition says why (one bounded try: a retry
        would hold this seal worker).

        Restart-safe: the envelope's signature is kept in the control volume (`LogRecord`, durably)
        before the log sees it, and the entry as soon as the log answered, so that a seal tried
        again submits the same envelope (the log holds one entry of it) and keeps the entry it has;
        when the agent stopped between the log's answer and that write, the log refuses the second
        submission as a duplicate and the entry is recovered from its read API (log_entry)."""
        if self.tlog is None:
            return bundle, ""
        ak_pem = certificate["evidence"]["ak"]["public"]
        record = LogRecord.read(control)
        signed = reused(record, bundle, ak_pem)
        if signed is None or record is None:
            record = LogRecord.of(bundle)
            write_atomic(control / LOG_RECORD, record.to_bytes())
        else:
            bundle = signed
        if record.entry is not None:
            try:
                entry = kept_entry(record.entry, bundle, ak_pem, self.tlog.key)
            except TransparencyLogError as exc:
                log.warning("%s: the kept transparency log entry is not used: %s", control, exc)
            else:
                return with_log_entry(
                    bundle, entry
                ), f"; logged at index {entry['logIndex']} of {self.tlog.url}"
        try:
            entry = log_entry(
                bundle,
                ak_pem,
                self.tlog.url,
                self.tlog.key,
                timeout=self.tlog.timeout,
                read_url=self.tlog.read_url,
            )
        except TransparencyLogError as exc:
            metrics.TLOG_SUBMISSIONS.labels("failed").inc()
            log.warning(
                "%s/%s: the transparency log submission failed; the bundle has no log entry: %s",
                ctx.namespace,
                ctx.pod["metadata"]["name"],
                exc,
            )
            return bundle, f"; the transparency log submission failed, the bundle has no log entry: {exc}"
        write_atomic(control / LOG_RECORD, LogRecord.of(bundle, entry).to_bytes())
        metrics.TLOG_SUBMISSIONS.labels("logged").inc()
        return with_log_entry(bundle, entry), f"; logged at index {entry['logIndex']} of {self.tlog.url}"

    # --- refuse -------------------------------------------------------------------------------

    def refuse(
        self, ctx: PodContext, reason: Reason, message: str, control: Path, *, own: bool = True
    ) -> None:
        """No certificate for this pod. `own`: it is the training's current pod, so the refusal goes
        into the training's status; otherwise (a pod posing as the training's) only the pod is
        stopped and an Event says why: the honest run's status stays as it is."""
        message = status_message(message)
        log.warning("%s/%s: refused (%s): %s", ctx.namespace, ctx.pod["metadata"]["name"], reason, message)
        if own:
            decided = json.dumps({"reason": str(reason), "message": message}).encode()
            write_atomic(control / REFUSING, decided, sync=False)
            self._write_refusal(ctx, reason, message)
        write_marker(control, MARKER_REFUSED, f"{reason}: {message}")
        metrics.CERTIFICATES.labels("refused").inc()
        self.kube.emit(
            ctx.namespace, ctx.training_name, ctx.training_uid, "Warning", reason, message, "Certify"
        )

    def finish_refusal(self, ctx: PodContext, control: Path) -> bool:
        """A refusal decided earlier whose writes did not all land: finish it, run no step again."""
        try:
            decided = json.loads((control / REFUSING).read_bytes())
            reason, message = Reason(decided["reason"]), str(decided["message"])
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason, message = Reason.SEAL_FAILED, f"the agent's record of its refusal is unreadable: {exc}"
        if reason not in REFUSALS:
            reason = Reason.SEAL_FAILED
        self.refuse(ctx, reason, message, control)
        return True

    def _write_refusal(self, ctx: PodContext, reason: Reason, message: str) -> None:
        status = {"conditions": [self._condition(ctx, "False", reason, message)]}
        try:
            written = self.kube.apply_status(
                ctx.namespace, ctx.training_name, ctx.training_uid, status, known_version=ctx.training_version
            )
        except ApiException as exc:
            if exc.status is None or exc.status >= 500 or exc.status == 429:
                raise  # the API server may answer later: tried again, the decision is kept
            # Refused for good (4xx): writing again would be refused again. The pod is stopped all
            # the same; the operator then shows CertificationRefused.
            log.error(
                "%s: the API server refused the refusal's status (%s); stopping the pod without it",
                ctx.training_name,
                describe(exc),
            )
            return
        if written is None:
            self._gone(ctx, "the pod is stopped")

    def _gone(self, ctx: PodContext, what: str) -> None:
        log.warning(
            "%s/%s: the CertifiedTraining (uid %s) was deleted, or replaced by another of that name, "
            "while this run was sealed; its status is not written: %s",
            ctx.namespace,
            ctx.training_name,
            ctx.training_uid,
            what,
        )

    def _condition(self, ctx: PodContext, status: ConditionStatus, reason: Reason, message: str) -> Condition:
        return set_condition(
            (ctx.training.get("status") or {}).get("conditions"),
            ConditionType.CERTIFIED,
            status,
            reason,
            message,
            generation=int(ctx.training["metadata"].get("generation") or 0),
            now=dt.datetime.now(dt.UTC),
        )
