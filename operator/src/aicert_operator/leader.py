"""One active operator among replicas: a coordination.k8s.io Lease, renewed in the background.

A replica that cannot renew its lease before it expires stops (the process exits and the
Deployment restarts it as a standby): two replicas never reconcile at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("aicert_operator.leader")


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

    def _spec(self, acquired: dt.datetime | None) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=int(self.seconds),
            acquire_time=acquired or _now(),
            renew_time=_now(),
        )

    def try_acquire(self) -> bool:
        """Take or renew the lease; False while another holder's lease is still valid."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name), spec=self._spec(None))
            try:
                self.api.create_namespaced_lease(self.namespace, body)
            except ApiException as exc2:
                if exc2.status == 409:
                    return False
                raise
            return True
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity
        renewed = spec.renew_time
        expired = renewed is None or _now() > renewed + dt.timedelta(
            seconds=spec.lease_duration_seconds or self.seconds
        )
        if holder not in (None, self.identity) and not expired:
            return False
        lease.spec = self._spec(spec.acquire_time if holder == self.identity else None)
        try:
            self.api.replace_namespaced_lease(
                self.name, self.namespace, lease
            )  # resourceVersion guards races
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def hold(self, on_lost: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """Renew every third of the lease duration until `stop`; call `on_lost` if renewal fails."""

        def renew() -> None:
            deadline = time.monotonic() + self.seconds
            while not stop.wait(self.seconds / 3):
                try:
                    if self.try_acquire():
                        deadline = time.monotonic() + self.seconds
                        continue
                except Exception as exc:  # keep trying until the lease would have expired
                    log.warning("lease renewal failed: %s", exc)
                if time.monotonic() >= deadline:
                    log.error("lost the lease %s/%s; stopping", self.namespace, self.name)
                    on_lost()
                    return

        thread = threading.Thread(target=renew, name="lease", daemon=True)
        thread.start()
        return thread

    def wait_for(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            if self.try_acquire():
                log.info("acquired the lease %s/%s as %s", self.namespace, self.name, self.identity)
                return True
            stop.wait(self.seconds / 3)
        return False
