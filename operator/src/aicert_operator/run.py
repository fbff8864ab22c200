"""The operator process (`python -m aicert_operator`, through __main__): health, lease, metrics,
then the kopf handlers."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from typing import Any

import kopf
from kubernetes import client, config
from prometheus_client import start_http_server

from aicert_contract.pod import ContractError
from aicert_kube.lease import LeaseLock
from aicert_operator import handlers
from aicert_operator.compat import version_problem
from aicert_operator.health import HealthState, Limits, beat_forever, serve
from aicert_operator.kube import Kube
from aicert_operator.liveness import watch_agents
from aicert_operator.settings import Settings


def _load_kube_config() -> client.ApiClient:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        config.load_kube_config()
    return client.ApiClient()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        operator_settings = Settings.from_env()
    except (ContractError, ValueError) as exc:
        logging.getLogger("aicert_operator").error("bad settings: %s", exc)
        return 2
    api = _load_kube_config()
    version = client.VersionApi(api).get_code()
    problem = version_problem(str(version.major), str(version.minor))
    if problem is not None:
        logging.getLogger("aicert_operator").error("%s", problem)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    health = HealthState(
        Limits(
            stall_seconds=operator_settings.health_stall_seconds, api_seconds=operator_settings.lease_seconds
        )
    )
    serve(health, operator_settings.health_port)  # standby and leader alike: kubelet probes both
    lease = LeaseLock(
        client.CoordinationV1Api(api),
        operator_settings.lease_namespace,
        operator_settings.lease_name,
        operator_settings.identity,
        operator_settings.lease_seconds,
    )
    if not lease.wait_for(stop, on_attempt=lambda answered: health.lease_attempted(answered=answered)):
        return 0
    health.became_leader()
    lease.hold(  # never two active operators; a wedged leader stops renewing, so it loses the lease
        on_lost=lambda: os._exit(1),
        stop=stop,
        healthy=health.check_before_renewal,
        on_renewed=health.renewed,
    )
    start_http_server(operator_settings.metrics_port)
    kube = Kube(api, instance=operator_settings.identity)
    watch_agents(
        kube,
        handlers.labelled_nodes,
        operator_settings.lease_namespace,
        operator_settings.agent_check_seconds,
        stop,
    )

    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        # kopf passes arguments by name: this `settings` is kopf's; ours is `operator_settings`.
        settings.peering.standalone = True  # the Lease, not kopf peering, picks the active replica
        settings.persistence.finalizer = handlers.FINALIZER
        settings.posting.enabled = False  # our own Events, with reasons, not kopf's log mirror
        settings.watching.server_timeout = 60
        memo["kube"] = kube
        memo["settings"] = operator_settings

    namespaces = [operator_settings.namespace] if operator_settings.namespace else []

    async def operate() -> None:
        beat = asyncio.create_task(beat_forever(health))  # the event loop's heartbeat, for /healthz
        try:
            await kopf.operator(
                clusterwide=not namespaces,
                namespaces=namespaces,
                stop_flag=stop,
                ready_flag=health.kopf_ready,
            )
        finally:
            beat.cancel()

    asyncio.run(operate())
    return 0
