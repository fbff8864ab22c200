"""The agent's AK chain: the AK certificate from NV 0x01C101D0 and every intermediate up to a
trusted root, found once at start and embedded in every certificate the agent makes, so that a
verifier needs only the root.

Candidates: the certificates given with `--ak-chain`, those shipped in `aicert/trust/intermediates/`
and the trust store's intermediates; where none issued a certificate, its caIssuers URL (AIA) is
fetched through `aicert_agent.aia` (bounded, cached in the state directory). The search and the
checks are the verifier's (`aicert.trust.issuers.assemble_path`, then `build_path`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from aicert.trust import ChainError, TrustStore
from aicert.trust.issuers import Fetch, MissingIssuer, assemble_path, shipped_intermediates
from aicert_agent.aia import CACHE_DIR_NAME, AiaFetcher
from aicert_agent.recorder import AkIdentity
from aicert_contract.status import REPORTER_AGENT, object_event, timestamp
from aicert_contract.training import NODE_CONDITION_AK_CHAIN

log = logging.getLogger(__name__)


def chained_identity(
    ak: AkIdentity,
    trust: TrustStore,
    at: dt.datetime,
    fetch: Fetch | None,
    shipped: list[x509.Certificate] | None = None,
) -> AkIdentity:
    """`ak` whose certificate chain is its AK certificate and the intermediates of its path to a root
    of `trust` (the root itself left out: the verifier brings its own). Raises `MissingIssuer` naming
    the issuer nowhere to be found, `ChainError` when the path found is refused."""
    given = [x509.load_pem_x509_certificate(pem.encode()) for pem in ak.certificate_chain]
    candidates = [*given[1:], *(shipped_intermediates() if shipped is None else shipped)]
    path = assemble_path(given[0], candidates, trust, at, fetch)
    kept = path.certificates[:-1] or path.certificates[:1]  # an AK certificate that is itself a root
    chain = tuple(c.public_bytes(Encoding.PEM).decode() for c in kept)
    return replace(ak, certificate_chain=chain)


CONDITION_TYPE = NODE_CONDITION_AK_CHAIN
"""The node condition the agent sets at start: True when its AK chains to a trusted root."""

EVENT_NAMESPACE = "default"  # where Kubernetes keeps Events about cluster-scoped objects such as Nodes


@dataclass(frozen=True)
class ChainReport:
    """How the AK chain came out at start: for the node's condition and, on failure, an Event."""

    chained: bool
    reason: str  # AKChained, AKIssuerMissing, AKChainRefused
    message: str


def chain_at_start(
    ak: AkIdentity, trust: TrustStore, state_dir: Path, *, fetch_aia: bool, at: dt.datetime | None = None
) -> tuple[AkIdentity, ChainReport]:
    """`chained_identity` at the agent's start, caIssuers answers cached in `state_dir`/aia-cache.

    When the AK cannot be chained the error says which issuer is missing (its subject and key
    identifier) and `ak` comes back as it was: `NodeAgent.check_ak` then refuses it with the
    verifier's own message, and the node is not labelled."""
    fetch = AiaFetcher(state_dir / CACHE_DIR_NAME) if fetch_aia else None
    try:
        chained = chained_identity(ak, trust, at or dt.datetime.now(dt.UTC), fetch)
    except MissingIssuer as exc:
        log.error(
            "cannot chain the AK certificate: missing issuer subject=%s authorityKeyId=%s: %s",
            exc.issuer_subject,
            exc.authority_key_id or "-",
            exc,
        )
        message = (
            f"missing issuer subject={exc.issuer_subject} authorityKeyId={exc.authority_key_id or '-'}: {exc}"
        )
        return ak, ChainReport(False, "AKIssuerMissing", message)
    except (ChainError, ValueError) as exc:
        log.error("cannot chain the AK certificate: %s", exc)
        return ak, ChainReport(False, "AKChainRefused", str(exc))
    below = len(chained.certificate_chain)
    log.info("AK chain: %d certificate(s) below the root, embedded in every certificate", below)
    return chained, ChainReport(
        True, "AKChained", f"the AK chains to a trusted root through {below - 1} intermediate(s)"
    )


MESSAGE_MAX_CHARS = 1000  # an Event's note holds 1 KiB; a condition's message is kept as short


def node_condition(report: ChainReport, now: dt.datetime) -> dict[str, str]:
    """The node condition `AICertAKChain` (a strategic-merge patch of `status.conditions` by type)."""
    stamp = timestamp(now)
    return {
        "type": CONDITION_TYPE,
        "status": "True" if report.chained else "False",
        "reason": report.reason,
        "message": report.message[:MESSAGE_MAX_CHARS],
        "lastHeartbeatTime": stamp,
        "lastTransitionTime": stamp,
    }


def node_event(
    report: ChainReport, node: str, node_uid: str, instance: str, now: dt.datetime
) -> dict[str, Any]:
    """An events.k8s.io/v1 Warning about the Node whose AK cannot be chained (`kubectl describe node`)."""
    return object_event(
        regarding={"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid},
        namespace=EVENT_NAMESPACE,
        type_="Warning",
        reason=report.reason,
        message=report.message,
        controller=REPORTER_AGENT,
        instance=instance,
        action="ChainAK",
        now=now,
    )
