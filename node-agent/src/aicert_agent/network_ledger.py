"""The network a training pod had from its gate to its seal: every policy state the agent saw.

A certificate's network claim must hold for the whole run, not at two snapshots: a tenant could
open egress between the gate and the seal (an allow-all NetworkPolicy that lives five seconds, a
relabel that brings the pod under another policy for a while, the deletion of the operator's
deny-all policy) and close it again before the seal looks. So the agent watches every policy kind
that could select a training pod, from the moment it registers a run (before its gate opens) to its
seal, and this ledger keeps, per run:

- every NetworkPolicy state (name, spec digest) that selected the pod at any moment;
- every moment the selecting NetworkPolicies left the pod some egress (`opened`);
- why the claim cannot be made at all (`unknown`): a policy kind the agent cannot evaluate
  (Cilium, Calico, AdminNetworkPolicy, ...) had an object that could select the pod, or the agent
  could not replay what it missed while it was down;
- whether the pod's labels or annotations changed after the gate (`relabelled`).

Pure apart from its state file (the agent's own state directory on the host), written whenever a
tracked run's record or a watch position changes, so a restarted agent resumes the watches where
they stopped. Everything a tenant can grow (policy edits, object names) is bounded.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aicert_contract.network import allows_egress, egress_denied, policy_record, selecting

MAX_POLICY_STATES = 64  # distinct (name, spec) NetworkPolicy states recorded for one run
MAX_NOTES = 8  # `opened` and `unknown` entries kept for one run
MAX_NOTE_CHARS = 480  # each (the certificate allows 512)
MAX_OBJECTS_PER_KIND = 100_000  # a watch beyond this stops being evaluated: every run is unknown
_STATE_VERSION = 1


class NotWatching(Exception):
    """A policy kind the agent must watch has not been listed yet: no run can be registered."""


@dataclass(frozen=True)
class PolicyKind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    evaluable: bool = False  # only NetworkPolicy: the others only make the claim unknown

    @property
    def key(self) -> str:
        return f"{self.plural}.{self.group}"


NETWORK_POLICIES = PolicyKind(
    "networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", namespaced=True, evaluable=True
)
# The policy kinds of the common network plugins and of SIG Network that can also allow or deny a
# pod's traffic. The agent cannot evaluate them (their semantics differ, tiers and orders apply), so
# any object of one that could select a training pod leaves its egress unknown.
OTHER_POLICY_KINDS = (
    PolicyKind("cilium.io", "v2", "ciliumnetworkpolicies", "CiliumNetworkPolicy", namespaced=True),
    PolicyKind(
        "cilium.io",
        "v2",
        "ciliumclusterwidenetworkpolicies",
        "CiliumClusterwideNetworkPolicy",
        namespaced=False,
    ),
    PolicyKind("crd.projectcalico.org", "v1", "networkpolicies", "Calico NetworkPolicy", namespaced=True),
    PolicyKind(
        "crd.projectcalico.org", "v1", "globalnetworkpolicies", "Calico GlobalNetworkPolicy", namespaced=False
    ),
    PolicyKind("projectcalico.org", "v3", "networkpolicies", "Calico NetworkPolicy", namespaced=True),
    PolicyKind(
        "projectcalico.org", "v3", "globalnetworkpolicies", "Calico GlobalNetworkPolicy", namespaced=False
    ),
    PolicyKind(
        "policy.networking.k8s.io", "v1alpha1", "adminnetworkpolicies", "AdminNetworkPolicy", namespaced=False
    ),
    PolicyKind(
        "policy.networking.k8s.io",
        "v1alpha1",
        "baselineadminnetworkpolicies",
        "BaselineAdminNetworkPolicy",
        namespaced=False,
    ),
)
POLICY_KINDS = (NETWORK_POLICIES, *OTHER_POLICY_KINDS)


@dataclass
class RunNetwork:
    """One run's record (JSON-serializable: it is the state file's entry)."""

    namespace: str
    labels: dict[str, str]  # as registered (before the gate): the pod's labels are frozen after that
    annotations: dict[str, str]
    labels_now: dict[str, str]  # as last seen: what policies select now
    policies: list[list[str]] = field(default_factory=list)  # [name, spec digest], first seen first
    opened: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    relabelled: str | None = None

    def note(self, notes: list[str], text: str) -> None:
        text = text if len(text) <= MAX_NOTE_CHARS else text[: MAX_NOTE_CHARS - 1] + "…"
        if text not in notes and len(notes) < MAX_NOTES:
            notes.append(text)


def _changes(what: str, before: Mapping[str, str], after: Mapping[str, str]) -> str | None:
    if before == after:
        return None
    keys = sorted(set(before) | set(after))
    parts = [
        f"{k} {'added' if k not in before else 'removed' if k not in after else 'changed'}"
        for k in keys
        if before.get(k) != after.get(k)
    ]
    more = f" and {len(parts) - 5} more" if len(parts) > 5 else ""
    return f"its {what} changed after the gate: {', '.join(parts[:5])}{more}"


def _name(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class NetworkLedger:
    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.RLock()
        self._objects: dict[str, dict[tuple[str, str], Mapping[str, Any]]] = {}
        self._kinds: dict[str, PolicyKind] = {}
        self._listed: set[str] = set()
        self._overflow: set[str] = set()
        self._unreadable: dict[str, str] = {}  # kind key -> why the agent cannot read that kind
        self._versions: dict[str, str] = {}
        self._runs: dict[str, RunNetwork] = {}
        self.damaged = False
        self._load()

    # --- the state file ------------------------------------------------------------------------

    def _load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        try:
            state = json.loads(self._path.read_text())
            if state.get("version") != _STATE_VERSION:
                raise ValueError(f"state version {state.get('version')!r}")
            self._versions = {str(k): str(v) for k, v in state["resourceVersions"].items()}
            self._runs = {str(uid): RunNetwork(**run) for uid, run in state["runs"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            # Nothing it said can be trusted: no run is tracked, so every run in flight gets an
            # unknown network record at its seal (never a claim the agent did not watch).
            self._versions, self._runs, self.damaged = {}, {}, True

    def _save(self) -> None:
        if self._path is None:
            return
        state = {
            "version": _STATE_VERSION,
            "resourceVersions": self._versions if self._runs else {},
            "runs": {uid: asdict(run) for uid, run in self._runs.items()},
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(f".{self._path.name}.tmp")
        tmp.write_text(json.dumps(state, separators=(",", ":")))
        os.replace(tmp, self._path)

    # --- what the watches say --------------------------------------------------------------------

    def watching(self, kind: PolicyKind) -> None:
        """`kind` is served by the API server: runs wait until it has been listed."""
        with self._lock:
            self._kinds[kind.key] = kind
            self._objects.setdefault(kind.key, {})

    def resume_from(self, kind: PolicyKind) -> str | None:
        """The resourceVersion a restarted agent must list and watch `kind` from, so that it misses
        nothing for the runs it tracks; None: nothing to resume, list afresh."""
        with self._lock:
            return self._versions.get(kind.key) if self._runs else None

    def listed(self, kind: PolicyKind, items: Iterable[Mapping[str, Any]], version: str) -> None:
        with self._lock:
            self.watching(kind)
            self._objects[kind.key] = {}
            self._overflow.discard(kind.key)
            for item in items:
                self._store(kind, "ADDED", item)
            self._listed.add(kind.key)
            self._unreadable.pop(kind.key, None)
            self._versions[kind.key] = version
            for run in self._runs.values():
                self._evaluate(run, version)
            self._save()

    def changed(self, kind: PolicyKind, event: str, obj: Mapping[str, Any], version: str) -> None:
        with self._lock:
            self.watching(kind)
            self._store(kind, event, obj)
            self._versions[kind.key] = version
            namespace, _ = _name(obj)
            for run in self._runs.values():
                if not kind.namespaced or namespace == run.namespace:
                    self._evaluate(run, version)
            if self._runs:
                self._save()

    def unreadable(self, kind: PolicyKind, why: str) -> None:
        """The agent may not read `kind`: runs are not held for it, but their egress is unknown."""
        with self._lock:
            self.watching(kind)
            self._unreadable[kind.key] = why
            self._listed.add(kind.key)
            for run in self._runs.values():
                self._evaluate(run, "?")
            self._save()

    def history_lost(self, kind: PolicyKind, why: str) -> None:
        """The watch of `kind` could not resume where it stopped: what happened meanwhile is unknown."""
        with self._lock:
            for run in self._runs.values():
                run.note(run.unknown, f"the agent could not replay the {kind.kind} changes it missed: {why}")
            self._save()

    def _store(self, kind: PolicyKind, event: str, obj: Mapping[str, Any]) -> None:
        objects = self._objects.setdefault(kind.key, {})
        if event == "DELETED":
            objects.pop(_name(obj), None)
        elif len(objects) < MAX_OBJECTS_PER_KIND:
            # only what the evaluation reads: a watch of a big cluster stays small
            keep = {"metadata": {"name": _name(obj)[1], "namespace": _name(obj)[0]}}
            if kind.evaluable:
                keep["spec"] = obj.get("spec") or {}
            objects[_name(obj)] = keep
        else:
            self._overflow.add(kind.key)

    # --- the runs --------------------------------------------------------------------------------

    def register(
        self, uid: str, namespace: str, labels: Mapping[str, str], annotations: Mapping[str, str]
    ) -> dict[str, Any]:
        """Start watching the network of pod `uid` (before its gate opens); returns the record as it
        stands now, which the run's first event carries. Registering again keeps the history."""
        with self._lock:
            missing = sorted(self._kinds[k].kind for k in self._kinds if k not in self._listed)
            if missing:
                raise NotWatching(f"the agent has not listed the {', '.join(missing)} objects yet")
            if uid not in self._runs:
                run = RunNetwork(namespace, dict(labels), dict(annotations), dict(labels))
                self._runs[uid] = run
                self._evaluate(run, self._versions.get(NETWORK_POLICIES.key, "?"))
                self._save()
            return self.record(uid)

    def pod_seen(self, uid: str, labels: Mapping[str, str], annotations: Mapping[str, str]) -> None:
        """The pod as a watch event shows it: a changed label or annotation is recorded for good."""
        with self._lock:
            run = self._runs.get(uid)
            if run is None:
                return
            dirty = False
            change = _changes("labels", run.labels, labels) or _changes(
                "annotations", run.annotations, annotations
            )
            if change is not None and run.relabelled is None:
                run.relabelled, dirty = change, True
            if run.labels_now != labels:
                run.labels_now, dirty = dict(labels), True
                self._evaluate(run, "a relabel")
            if dirty:
                self._save()

    def forget(self, uid: str) -> None:
        with self._lock:
            if self._runs.pop(uid, None) is not None:
                self._save()

    def tracked(self) -> set[str]:
        with self._lock:
            return set(self._runs)

    def relabelled(self, uid: str) -> str | None:
        with self._lock:
            run = self._runs.get(uid)
            return None if run is None else run.relabelled

    def opened(self, uid: str) -> list[str]:
        with self._lock:
            run = self._runs.get(uid)
            return [] if run is None else list(run.opened)

    def record(self, uid: str) -> dict[str, Any]:
        """What the certificate says of the pod's network from its registration until now:
        `egress` is `none` only when no moment was open and nothing left it unknown."""
        with self._lock:
            run = self._runs.get(uid)
            if run is None:
                return {
                    "egress": "unknown",
                    "policies": [],
                    "unknown": ["the agent did not watch this pod's network from its gate"],
                }
            egress = "allowed" if run.opened else "unknown" if run.unknown else "none"
            record: dict[str, Any] = {
                "egress": egress,
                "policies": [{"name": name, "spec": spec} for name, spec in run.policies],
            }
            if run.unknown:
                record["unknown"] = list(run.unknown)
            return record

    def _evaluate(self, run: RunNetwork, version: str) -> None:
        """The policies as they stand now, for one run: called on every change that could matter."""
        policies = [
            obj for (ns, _), obj in self._objects.get(NETWORK_POLICIES.key, {}).items() if ns == run.namespace
        ]
        chosen = selecting(policies, run.labels_now)
        for policy in chosen:
            seen = policy_record(policy)
            state = [seen["name"], seen["spec"]]
            if state in run.policies:
                continue
            if len(run.policies) < MAX_POLICY_STATES:
                run.policies.append(state)
            else:
                run.note(run.unknown, f"more than {MAX_POLICY_STATES} NetworkPolicy states selected the pod")
        if not egress_denied(chosen):
            allowing = sorted(_name(p)[1] for p in chosen if allows_egress(p))
            what = (
                f"NetworkPolicy {', '.join(allowing)} allowed egress"
                if allowing
                else "no NetworkPolicy isolates its egress"
            )
            where = f"resourceVersion {version}" if version[:1].isdigit() else version
            run.note(run.opened, f"{what} (at {where})")
        for key, why in self._unreadable.items():
            run.note(run.unknown, f"{self._kinds[key].kind} objects could select the pod: {why}")
        for key in self._overflow:
            run.note(run.unknown, f"more than {MAX_OBJECTS_PER_KIND} {self._kinds[key].kind} objects")
        for key, kind in self._kinds.items():
            if kind.evaluable:
                continue
            for ns, name in self._objects.get(key, {}):
                if not kind.namespaced or ns == run.namespace:
                    where = f"{ns}/{name}" if ns else name
                    run.note(
                        run.unknown, f"{kind.kind} {where} could select the pod and aicert cannot evaluate it"
                    )
