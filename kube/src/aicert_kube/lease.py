"""A coordination.k8s.io Lease, renewed in the background.

The operator holds one to be the only active replica: a replica that cannot renew before the lease
expires stops (the process exits and the Deployment restarts it as a standby), so two replicas
never reconcile at once. Each node agent holds one for its node (`agent_lease_name`): it renews it
only while its TPM answers, and the operator takes a node whose agent lease expired out of
scheduling.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("aicert_kube.lease")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaseLock:
    def __init__(
        self, api: client.CoordinationV1Api, namespace: str, name: str, identity: str, seconds: float
    ) -> None:
        self.api, self.namespace, self.name, self.identity, self.seconds = (
            api,
            namespace,
            name,
            identity,
            seconds,
        )
        self._written: client.V1Lease | None = None  # the lease as this holder last wrote it

    def _spec(self, acquired: dt.datetime | None) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=int(self.seconds),
            acquire_time=acquired or _now(),
            renew_time=_now(),
        )

    def try_acquire(self) -> bool:
        """Take or renew the lease; False while another holder's lease is still valid.

        A renewal writes over the lease as this holder last wrote it, without reading it first:
        its resourceVersion makes the write fail (409) if anyone wrote the lease since, and only
        then is it read and judged afresh."""
        if self._renewed():
            return True
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name), spec=self._spec(None))
            try:
                self._written = self.api.create_namespaced_lease(self.namespace, body)
            except ApiException as exc2:
                if exc2.status == 409:
                    return False
                raise
            return True
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity
        if holder not in (None, self.identity) and not expired(lease, _now(), self.seconds):
            return False
        lease.spec = self._spec(spec.acquire_time if holder == self.identity else None)
        try:  # resourceVersion guards races
            self._written = self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _renewed(self) -> bool:
        """Renew by writing over our own last write; False (nothing written) when there is none,
        or someone wrote the lease since (or deleted it)."""
        written, self._written = self._written, None
        if written is None or written.spec is None:
            return False
        written.spec = self._spec(written.spec.acquire_time)
        try:
            self._written = self.api.replace_namespaced_lease(self.name, self.namespace, written)
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    def hold(
        self,
        on_lost: Callable[[], None],
        stop: threading.Event,
        *,
        healthy: Callable[[], None] | None = None,
        on_renewed: Callable[[], None] | None = None,
    ) -> threading.Thread:
        """Renew every third of the lease duration until `stop`; call `on_lost` if renewal fails
        until the lease would have expired. `healthy` runs before each renewal: when it raises, the
        lease is not renewed. `on_renewed` runs after each renewal."""

        def renew() -> None:
            deadline = time.monotonic() + self.seconds
            while not stop.wait(self.seconds / 3):
                try:
                    if healthy is not None:
                        healthy()
                    if self.try_acquire():
                        deadline = time.monotonic() + self.seconds
                        if on_renewed is not None:
                            on_renewed()
                        continue
                except Exception as exc:  # keep trying until the lease would have expired
                    log.warning("lease %s/%s not renewed: %s", self.namespace, self.name, exc)
                if time.monotonic() >= deadline:
                    log.error("lost the lease %s/%s; stopping", self.namespace, self.name)
                    on_lost()
                    return

        thread = threading.Thread(target=renew, name="lease", daemon=True)
        thread.start()
        return thread

    def wait_for(self, stop: threading.Event, *, on_attempt: Callable[[bool], None] | None = None) -> bool:
        """Try to take the lease every third of its duration until it is ours (True) or `stop` (False).
        With `on_attempt`, an API error is logged and tried again, and each attempt is reported
        (True: the API server answered); without it, an API error propagates."""
        while not stop.is_set():
            try:
                acquired = self.try_acquire()
            except Exception as exc:
                if on_attempt is None:
                    raise
                log.warning("lease %s/%s not read: %s", self.namespace, self.name, exc)
                on_attempt(False)
            else:
                if acquired:
                    log.info("acquired the lease %s/%s as %s", self.namespace, self.name, self.identity)
                    return True
                if on_attempt is not None:
                    on_attempt(True)
            stop.wait(self.seconds / 3)
        return False


def expired(lease: client.V1Lease, now: dt.datetime, default_seconds: float = 0) -> bool:
    """Has the lease's holder stopped renewing it in time? (`default_seconds` when it names no
    duration.)"""
    spec = lease.spec or client.V1LeaseSpec()
    if spec.renew_time is None:
        return True
    return bool(now > spec.renew_time + dt.timedelta(seconds=spec.lease_duration_seconds or default_seconds))
