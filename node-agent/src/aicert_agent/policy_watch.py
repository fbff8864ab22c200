"""List and watch every policy kind the API server serves that could select a training pod, and
feed what they say to the `NetworkLedger`. The Kubernetes edge of the whole-run network claim.

One thread per kind. A watch that ends is resumed from the last resourceVersion it saw (bookmarks
keep that recent); a restarted agent that tracks runs lists each kind exactly as it was at the
resourceVersion it had reached, and watches from there. When the API server no longer has that
history (410 Gone), the ledger is told: those runs' egress becomes unknown, never assumed none.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aicert_agent.network_ledger import POLICY_KINDS, NetworkLedger, PolicyKind
from aicert_kube import raw_json

log = logging.getLogger("aicert_agent")

GONE = 410


class HistoryGone(Exception):
    """The API server no longer holds the events since the resourceVersion asked for."""


class PolicyWatch:
    def __init__(
        self,
        api_client: client.ApiClient,
        ledger: NetworkLedger,
        stop: threading.Event,
        *,
        timeout: int = 60,
        rediscover_seconds: float = 60.0,
    ) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.ledger = ledger
        self.stop = stop
        self.timeout = timeout
        self.rediscover_seconds = rediscover_seconds
        self._following: set[str] = set()

    # --- which kinds -----------------------------------------------------------------------------

    def served(self) -> list[PolicyKind]:
        """The policy kinds this API server serves now (API discovery, readable by every user)."""
        served: dict[tuple[str, str], set[str]] = {}
        for kind in POLICY_KINDS:
            if (kind.group, kind.version) not in served:
                served[kind.group, kind.version] = self._resources(kind.group, kind.version)
        return [k for k in POLICY_KINDS if k.plural in served[k.group, k.version]]

    def _resources(self, group: str, version: str) -> set[str]:
        try:
            data = raw_json(self.custom.get_api_resources, group, version)
        except ApiException as exc:
            if exc.status == 404:
                return set()  # the group or version is not served
            raise
        return {str(r.get("name")) for r in data.get("resources") or []}

    def start(self) -> None:
        """Declare every served kind to the ledger (runs wait until each is listed), then follow
        them; a manager thread picks up kinds installed later."""
        self._follow_new(self.served())
        threading.Thread(target=self._rediscover, name="policy-discovery", daemon=True).start()

    def _follow_new(self, kinds: list[PolicyKind]) -> None:
        for kind in kinds:
            if kind.key in self._following:
                continue
            self._following.add(kind.key)
            self.ledger.watching(kind)
            threading.Thread(
                target=self._follow, args=(kind,), name=f"watch-{kind.plural}", daemon=True
            ).start()

    def _rediscover(self) -> None:
        while not self.stop.wait(self.rediscover_seconds):
            try:
                self._follow_new(self.served())
            except Exception as exc:  # the watches already running go on; try again later
                log.warning("policy kind discovery failed: %s", exc)

    # --- one kind --------------------------------------------------------------------------------

    def _list(self, kind: PolicyKind, version: str | None) -> tuple[list[dict[str, Any]], str]:
        kwargs: dict[str, Any] = {}
        if version is not None:
            kwargs = {"resource_version": version, "resource_version_match": "Exact"}
        try:
            result = raw_json(
                self.custom.list_cluster_custom_object, kind.group, kind.version, kind.plural, **kwargs
            )
        except ApiException as exc:
            if exc.status == GONE:
                raise HistoryGone(f"resourceVersion {version} is no longer available") from None
            raise
        return list(result.get("items") or []), str((result.get("metadata") or {}).get("resourceVersion", ""))

    def _events(self, kind: PolicyKind, version: str) -> Iterator[tuple[str, dict[str, Any]]]:
        response: Any = self.custom.list_cluster_custom_object(
            kind.group,
            kind.version,
            kind.plural,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.timeout,
            watch=True,
            _preload_content=False,
        )
        try:
            for line in response:
                if self.stop.is_set():
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    if status.get("code") == GONE:
                        raise HistoryGone(str(status.get("message") or "the watch expired"))
                    raise ApiException(status=status.get("code"), reason=status.get("message"))
                yield str(event.get("type")), event.get("object") or {}
        finally:
            response.release_conn()

    def _follow(self, kind: PolicyKind) -> None:
        version: str | None = None
        while not self.stop.is_set():
            try:
                if version is None:
                    version = self._start(kind)
                for event, obj in self._events(kind, version):
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if event == "BOOKMARK":
                        continue
                    self.ledger.changed(kind, event, obj, version)
            except HistoryGone as exc:
                log.warning("%s watch cannot resume: %s; listing afresh", kind.kind, exc)
                self.ledger.history_lost(kind, str(exc))
                version = None
            except ApiException as exc:
                if exc.status == 403:
                    # fail closed, and live: runs are not held, their egress is unknown
                    self.ledger.unreadable(kind, f"the API server forbids it ({exc.reason})")
                    log.error("the agent may not read %s objects: egress of every run is unknown", kind.kind)
                    self.stop.wait(self.rediscover_seconds)
                else:
                    log.warning("%s watch ended: %s", kind.kind, exc)
                    self.stop.wait(1)
            except Exception as exc:
                log.warning("%s watch ended: %s", kind.kind, exc)
                self.stop.wait(1)

    def _start(self, kind: PolicyKind) -> str:
        """List `kind`: as it stood where a previous agent stopped, if it tracked runs, else now."""
        resume = self.ledger.resume_from(kind)
        if resume is not None:
            try:
                items, _ = self._list(kind, resume)
                self.ledger.listed(kind, items, resume)
                log.info("%s: resumed at resourceVersion %s", kind.kind, resume)
                return resume
            except HistoryGone as exc:
                self.ledger.history_lost(kind, str(exc))
        items, version = self._list(kind, None)
        self.ledger.listed(kind, items, version)
        return version
