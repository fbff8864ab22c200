"""The operator's health, for kubelet's probes: is this replica alive, and is it ready for its role?

Every replica serves `GET /healthz` (liveness) and `GET /readyz` (readiness) on the health port
from the start of the process, whether it is a standby (waiting for the Lease) or the leader
(holding it and running kopf). The HTTP server runs on a thread of its own; what it answers is
decided by `liveness` and `readiness` from the facts the replica's own loops record in
`HealthState`, so a replica whose loops stopped (a hung API call, a blocked event loop) answers
503 although its HTTP thread still runs, and a process that stopped altogether does not answer.

- alive: the lease loop ran within `stall_seconds` (standby and leader alike) and, for the leader,
  kopf's event loop beat within `stall_seconds`. Not leading is not a failure: a standby is alive
  while it keeps polling the Lease. An API server that refuses or does not answer is not a
  failure of liveness either (a restart would not bring it back), only of readiness.
- ready: alive, and the API server answered a Lease call within `api_seconds`; the leader also
  has kopf started (its startup handlers done, its watches under way). A healthy standby is
  Ready: `kubectl rollout status` and PodDisruptionBudgets count it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("aicert_operator.health")

BEAT_SECONDS = 1.0  # how often kopf's event loop records that it runs


class Role(enum.Enum):
    STANDBY = "standby"
    LEADER = "leader"


@dataclass(frozen=True)
class Facts:
    """What a replica knows of itself at `now` (time.monotonic() seconds)."""

    now: float
    started: float  # the process began
    role: Role
    lease_attempted: float | None  # the last Lease call made, answered or not
    api_answered: float | None  # the last Lease call the API server answered
    leading_since: float | None  # the Lease was acquired (LEADER only)
    kopf_started: bool  # kopf's startup is done and its watches run (LEADER only)
    loop_beat: float | None  # kopf's event loop last ran its heartbeat (LEADER only)


@dataclass(frozen=True)
class Limits:
    stall_seconds: float  # a loop silent for longer is wedged
    api_seconds: float  # readiness needs an answer from the API server within this


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


def liveness(facts: Facts, limits: Limits) -> Verdict:
    """Is the replica alive: do its loops still run? (Never false for merely not leading.)"""
    lease_since = facts.lease_attempted if facts.lease_attempted is not None else facts.started
    silent = facts.now - lease_since
    if silent > limits.stall_seconds:
        return Verdict(False, f"the lease loop has not run for {silent:.0f}s")
    if facts.role is Role.LEADER:
        beat = facts.loop_beat
        if beat is None:
            beat = facts.leading_since if facts.leading_since is not None else facts.started
        silent = facts.now - beat
        if silent > limits.stall_seconds:
            return Verdict(False, f"kopf's event loop has not run for {silent:.0f}s")
    return Verdict(True, f"{facts.role.value}: alive")


def readiness(facts: Facts, limits: Limits) -> Verdict:
    """Is the replica ready for its role: alive, the API server answering, and (leader) kopf running."""
    alive = liveness(facts, limits)
    if not alive.ok:
        return alive
    if facts.api_answered is None:
        return Verdict(False, f"{facts.role.value}: the API server has not answered yet")
    silent = facts.now - facts.api_answered
    if silent > limits.api_seconds:
        return Verdict(False, f"{facts.role.value}: the API server has not answered for {silent:.0f}s")
    if facts.role is Role.LEADER:
        if not facts.kopf_started:
            return Verdict(False, "leader: kopf is starting")
        if facts.loop_beat is None:
            return Verdict(False, "leader: kopf's event loop has not run yet")
    return Verdict(True, f"{facts.role.value}: ready")


class WedgedError(RuntimeError):
    """The leader's own loops stopped: it must not renew the Lease."""


class HealthState:
    """The facts, recorded by the lease loop (a thread) and kopf's event loop, read by the server."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._role = Role.STANDBY
        self._lease_attempted: float | None = None
        self._api_answered: float | None = None
        self._leading_since: float | None = None
        self._loop_beat: float | None = None
        self.kopf_ready = threading.Event()  # kopf.operator(ready_flag=...) sets it

    def lease_attempted(self, *, answered: bool) -> None:
        with self._lock:
            now = time.monotonic()
            self._lease_attempted = now
            if answered:
                self._api_answered = now

    def became_leader(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._role, self._leading_since = Role.LEADER, now
            self._lease_attempted = self._api_answered = now  # the Lease call that won just answered

    def beat(self) -> None:
        with self._lock:
            self._loop_beat = time.monotonic()

    def facts(self) -> Facts:
        with self._lock:
            return Facts(
                now=time.monotonic(),
                started=self._started,
                role=self._role,
                lease_attempted=self._lease_attempted,
                api_answered=self._api_answered,
                leading_since=self._leading_since,
                kopf_started=self.kopf_ready.is_set(),
                loop_beat=self._loop_beat,
            )

    def check_before_renewal(self) -> None:
        """LeaseLock.hold's `healthy`: record the attempt; refuse to renew for a wedged leader, so
        that it loses the Lease (and stops) even when no probe restarts it."""
        self.lease_attempted(answered=False)
        verdict = liveness(self.facts(), self.limits)
        if not verdict.ok:
            raise WedgedError(verdict.reason)

    def renewed(self) -> None:
        """LeaseLock.hold's `on_renewed`."""
        self.lease_attempted(answered=True)


async def beat_forever(state: HealthState, interval: float = BEAT_SECONDS) -> None:
    """Run in kopf's event loop: its beat shows the loop still runs its tasks."""
    while True:
        state.beat()
        await asyncio.sleep(interval)


PATHS = {"/healthz": liveness, "/readyz": readiness}


def serve(state: HealthState, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve /healthz and /readyz on a daemon thread: 200 or 503 with the verdict's reason."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            decide = PATHS.get(self.path.split("?", 1)[0])
            if decide is None:
                self._answer(404, "not found")
                return
            verdict = decide(state.facts(), state.limits)
            self._answer(200 if verdict.ok else 503, verdict.reason)

        def _answer(self, code: int, text: str) -> None:
            body = (text + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug(format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
