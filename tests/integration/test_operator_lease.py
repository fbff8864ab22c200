"""Leases: of two operator replicas only the holder acts, a holder that stops renewing is replaced;
a node agent renews its lease only while healthy."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest
import urllib3
from kubernetes import client, config

from aicert_kube.lease import LeaseLock, expired
from aicert_localcluster import free_port
from aicert_localcluster.cluster import LocalCluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[client.CoordinationV1Api]:
    with LocalCluster(tmp_path_factory.mktemp("lease-cluster")) as cluster:
        cluster.kubectl("create", "namespace", "aicert-system")
        yield client.CoordinationV1Api(config.new_client_from_config(str(cluster.admin_kubeconfig)))


def lock(api: client.CoordinationV1Api, identity: str, name: str) -> LeaseLock:
    return LeaseLock(api, "aicert-system", name, identity, seconds=3)


def test_only_one_replica_holds_the_lease(api: client.CoordinationV1Api) -> None:
    first, second = lock(api, "replica-a", "one"), lock(api, "replica-b", "one")
    assert first.try_acquire() is True
    assert second.try_acquire() is False
    assert first.try_acquire() is True  # renewing is not competing
    assert api.read_namespaced_lease("one", "aicert-system").spec.holder_identity == "replica-a"


class CountingReads:
    """The API as the lock sees it, counting its reads of the lease."""

    def __init__(self, api: client.CoordinationV1Api) -> None:
        self.api, self.reads = api, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)

    def read_namespaced_lease(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return self.api.read_namespaced_lease(*args, **kwargs)


def test_a_renewal_writes_without_reading_unless_someone_else_wrote(api: client.CoordinationV1Api) -> None:
    counting = CountingReads(api)
    holder = LeaseLock(cast(client.CoordinationV1Api, counting), "aicert-system", "renew", "replica-a", 3)
    assert holder.try_acquire() and counting.reads == 1  # taken: read (not found), then created
    assert holder.try_acquire() and holder.try_acquire() and counting.reads == 1  # renewed twice, unread
    assert api.read_namespaced_lease("renew", "aicert-system").spec.holder_identity == "replica-a"
    # someone else takes the lease: the next renewal conflicts, reads, and sees a valid foreign lease
    lease = api.read_namespaced_lease("renew", "aicert-system")
    lease.spec.holder_identity = "replica-b"
    lease.spec.renew_time = dt.datetime.now(dt.UTC)
    api.replace_namespaced_lease("renew", "aicert-system", lease)
    assert holder.try_acquire() is False and counting.reads == 2
    assert api.read_namespaced_lease("renew", "aicert-system").spec.holder_identity == "replica-b"


def test_a_silent_holder_is_replaced_after_expiry(api: client.CoordinationV1Api) -> None:
    first, second = lock(api, "replica-a", "two"), lock(api, "replica-b", "two")
    assert first.try_acquire()
    stop = threading.Event()
    assert second.wait_for(stop) is True  # returns once the 3 s lease expired unrenewed
    assert api.read_namespaced_lease("two", "aicert-system").spec.holder_identity == "replica-b"
    assert first.try_acquire() is False


def test_a_holder_that_cannot_renew_stops(api: client.CoordinationV1Api) -> None:
    first, usurper = lock(api, "replica-a", "three"), lock(api, "replica-b", "three")
    assert first.try_acquire()
    lost = threading.Event()
    stop = threading.Event()
    first.hold(on_lost=lost.set, stop=stop)
    # someone else takes the lease (as after a network partition): first's renewals now fail
    lease = api.read_namespaced_lease("three", "aicert-system")
    lease.spec.holder_identity = "replica-b"
    api.replace_namespaced_lease("three", "aicert-system", lease)
    usurper_lost = threading.Event()
    usurper.hold(on_lost=usurper_lost.set, stop=stop)  # the new holder is alive and renews
    assert lost.wait(timeout=30), "the old holder kept running without its lease"
    assert not usurper_lost.is_set()
    assert api.read_namespaced_lease("three", "aicert-system").spec.holder_identity == "replica-b"
    stop.set()


def test_an_unhealthy_holder_stops_renewing_and_its_lease_lapses(api: client.CoordinationV1Api) -> None:
    """The node agent's lease: renewed only while its TPM answers (`healthy`); when the TPM fails the
    lease lapses (the operator then unlabels the node) and the agent is told (`on_lost`)."""
    agent = lock(api, "gpu-1", "aicert-agent-gpu-1")
    assert agent.try_acquire()
    tpm_ok = threading.Event()
    tpm_ok.set()
    renewed = threading.Event()

    def probe() -> None:
        if not tpm_ok.is_set():
            raise RuntimeError("TPM does not answer")

    lost, stop = threading.Event(), threading.Event()
    agent.hold(on_lost=lost.set, stop=stop, healthy=probe, on_renewed=renewed.set)
    assert renewed.wait(timeout=10)
    tpm_ok.clear()
    assert lost.wait(timeout=30), "a holder whose TPM failed kept its lease"
    lease = api.read_namespaced_lease("aicert-agent-gpu-1", "aicert-system")
    assert expired(lease, dt.datetime.now(dt.UTC))
    stop.set()


def test_a_standby_reports_each_answered_attempt_while_another_holds(api: client.CoordinationV1Api) -> None:
    holder, standby = lock(api, "replica-a", "four"), lock(api, "replica-b", "four")
    assert holder.try_acquire()
    stop = threading.Event()
    holder.hold(on_lost=stop.set, stop=stop)  # the holder keeps renewing
    attempts: list[bool] = []

    def on_attempt(answered: bool) -> None:
        attempts.append(answered)
        if len(attempts) == 3:
            stop.set()

    try:
        assert standby.wait_for(stop, on_attempt=on_attempt) is False  # never acquired: stopped
    finally:
        stop.set()
    assert attempts == [True, True, True]  # the API server answered: it is another's lease


def test_a_standby_keeps_polling_an_api_server_that_does_not_answer() -> None:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"  # nothing listens
    unreachable = client.CoordinationV1Api(client.ApiClient(configuration))
    standby = lock(unreachable, "replica-b", "five")
    stop = threading.Event()
    attempts: list[bool] = []

    def on_attempt(answered: bool) -> None:
        attempts.append(answered)
        if len(attempts) == 2:
            stop.set()

    assert standby.wait_for(stop, on_attempt=on_attempt) is False
    assert attempts == [False, False]  # reported, and tried again rather than crashing
    with pytest.raises(urllib3.exceptions.MaxRetryError):  # without on_attempt, it still propagates
        standby.wait_for(threading.Event())
