"""`aicert-agent serve`: wire the node agent to the TPM, the log and the API server."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import signal
import threading

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server

from aicert.trust import TrustError, load_trust_store
from aicert.trust.measurements import load_paravisor_measurements, read_paravisor_measurements
from aicert_agent.ak_chain import ChainReport, chain_at_start, node_condition, node_event
from aicert_agent.kube import AgentKube
from aicert_agent.local_run import LOG_FILE, ak_identity
from aicert_agent.measurement_log import MeasurementLog
from aicert_agent.measuring import LimitsError, MeasureLimits
from aicert_agent.network_ledger import NetworkLedger
from aicert_agent.node_agent import AgentConfig, NodeAgent
from aicert_agent.platform import PlatformError
from aicert_agent.policy_watch import PolicyWatch
from aicert_agent.tpm.client import Tpm, TpmError
from aicert_agent.transparency import TransparencyLogError, transparency_log
from aicert_contract.pod import ContractError, PodSettings
from aicert_contract.training import agent_lease_name
from aicert_kube.lease import LeaseLock

NETWORK_FILE = "network.json"  # the network ledger's state, beside the measurement log


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log = logging.getLogger("aicert_agent")
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            config.load_kube_config()
    except config.ConfigException as exc:  # no service account and no kubeconfig: say so, in one line
        log.error("cannot reach the API server: %s", exc)
        return 2
    try:
        trust = load_trust_store(args.trust, args.trust_bundle)
        paravisor = None  # only level cvm needs the known-good paravisor measurements
        if args.paravisor_measurements:
            paravisor = read_paravisor_measurements(args.paravisor_measurements)
        elif args.assurance == "cvm":
            paravisor = load_paravisor_measurements()
        pod_settings = PodSettings.from_env()
        limits = MeasureLimits.from_env()
        tlog = transparency_log(args.tlog_url, args.tlog_key, args.tlog_read_url)
    except (TrustError, ContractError, LimitsError, TransparencyLogError) as exc:
        log.error("%s", exc)
        return 2
    runtime = None
    if args.cri_socket is not None:
        if not args.cri_socket.is_socket():
            log.error(
                "--cri-socket %s is not a socket (is the runtime's socket directory mounted?)",
                args.cri_socket,
            )
            return 2
        from aicert_agent.cri_client import CriClient

        runtime = CriClient(args.cri_socket)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    start_http_server(args.metrics_port)
    limits.publish()
    api = client.ApiClient()
    kube = AgentKube(api, args.node)
    # Liveness: the lease says this node's agent and TPM work; the operator unlabels a node whose
    # lease lapses. It is taken before the node is labelled, and renewed only while the TPM answers.
    lease = LeaseLock(
        client.CoordinationV1Api(api),
        args.lease_namespace,
        agent_lease_name(args.node),
        args.node,
        args.lease_seconds,
    )
    lost = threading.Event()
    try:
        with Tpm(args.tpm) as tpm:
            if flushed := tpm.flush_transient_objects():  # left by an agent killed mid-operation
                log.warning("flushed %d transient object(s) left loaded in the TPM", flushed)
            ak, chain_report = chain_at_start(
                ak_identity(tpm, tuple(args.ak_chain), assurance=args.assurance, thim_url=args.thim_url),
                trust,
                args.state_dir,
                fetch_aia=args.aia_fetch,
            )
            report_ak_chain(kube, chain_report)
            agent = NodeAgent(
                AgentConfig(
                    node=args.node,
                    kubelet_root=args.kubelet_root,
                    assurance=args.assurance,
                    pod=pod_settings,
                    tsa_url=args.tsa_url,
                    limits=limits,
                    seal_attempts=args.seal_attempts,
                    paravisor_measurements=paravisor,
                    tlog=tlog,
                ),
                kube,
                tpm,
                MeasurementLog(args.state_dir / LOG_FILE, args.pcr),
                ak,
                trust,
                NetworkLedger(args.state_dir / NETWORK_FILE),
                runtime=runtime,
            )
            lease.try_acquire()
            if not agent.start():
                log.error("this node cannot certify; the assurance label was removed")
                stop.wait()
                return 1

            def on_lost() -> None:
                lost.set()
                stop.set()

            lease.hold(on_lost, stop, healthy=agent.probe_tpm, on_renewed=agent.relabel)
            PolicyWatch(api, agent.network, stop).start()
            agent.run(stop)
    except (TpmError, PlatformError) as exc:
        kube.label_node(None)
        log.error("%s", exc)
        return 3
    if lost.is_set():
        kube.label_node(None)
        log.error(
            "the TPM or the API server stopped answering for %s s; the node was unlabelled",
            args.lease_seconds,
        )
        return 3
    return 0


def report_ak_chain(kube: AgentKube, report: ChainReport) -> None:
    """The AK chain's outcome on the Node: its AICertAKChain condition, and a Warning Event when the
    AK cannot be chained. Only a report: the node stays unlabelled whether or not it is written."""
    log = logging.getLogger("aicert_agent")
    now = dt.datetime.now(dt.UTC)
    try:
        event = None if report.chained else node_event(report, kube.node, kube.node_uid(), kube.instance, now)
        kube.report_ak_chain(node_condition(report, now), event)
    except ApiException as exc:
        log.error("cannot report the AK chain on node %s: %s %s", kube.node, exc.status, exc.reason)
