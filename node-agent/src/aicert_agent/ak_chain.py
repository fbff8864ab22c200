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
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from aicert.trust import ChainError, TrustStore
from aicert.trust.issuers import Fetch, MissingIssuer, assemble_path, shipped_intermediates
from aicert_agent.aia import CACHE_DIR_NAME, AiaFetcher
from aicert_agent.recorder import AkIdentity

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


def chain_at_start(
    ak: AkIdentity, trust: TrustStore, state_dir: Path, *, fetch_aia: bool, at: dt.datetime | None = None
) -> AkIdentity:
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
        return ak
    except (ChainError, ValueError) as exc:
        log.error("cannot chain the AK certificate: %s", exc)
        return ak
    log.info(
        "AK chain: %d certificate(s) below the root, embedded in every certificate",
        len(chained.certificate_chain),
    )
    return chained
