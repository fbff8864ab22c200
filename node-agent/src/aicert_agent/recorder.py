"""Recording one run: its events into the log, then the seal, the quote and the certificate.

Used by `aicert-agent run` and by the Kubernetes agent alike. Sealing is idempotent: a run whose
seal is already logged (the agent restarted after logging it) is quoted again over the same
statement, so a restart never yields a second, different certificate for one run.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aicert.certificate import (
    API_VERSION,
    BOOT_PCRS,
    EVIDENCE_TYPE,
    KIND,
    Assurance,
    TrainingCertificate,
    convert,
)
from aicert.digest import Manifest
from aicert.events import IMAGE, INPUT, OUTPUT, RUN, SEAL, statement_from_events
from aicert.jcs import sha256_jcs
from aicert.tpm.pcrs import replay
from aicert_agent.measurement_log import MeasurementLog, PcrDevice, certificate_log


class SealError(Exception):
    """The run cannot be certified; the message says why."""


class QuoteLike(Protocol):
    @property
    def attest(self) -> bytes: ...
    @property
    def signature(self) -> bytes: ...
    @property
    def pcr_values(self) -> dict[int, bytes]: ...


class QuotingDevice(PcrDevice, Protocol):
    def quote(self, pcrs: Sequence[int], extra_data: bytes) -> QuoteLike: ...


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_salt() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class AkIdentity:
    public_pem: str
    certificate_chain: tuple[str, ...]  # PEM, AK certificate first
    # `evidence.platform` on a confidential VM (level cvm): the HCL report that binds this AK to the
    # chip's SEV-SNP report, and the chip's AMD certificates (aicert_agent.platform)
    platform: dict[str, Any] | None = None


@dataclass
class RunRecorder:
    log: MeasurementLog
    tpm: QuotingDevice
    run_id: str
    salt: str

    def _record(self, kind: str, fields: Mapping[str, Any]) -> None:
        self.log.append(
            self.tpm, self.run_id, {"type": kind, "run": self.run_id, "salt": self.salt, **fields}
        )

    def begin(
        self,
        *,
        node: str,
        name: str,
        attempt: int,
        spec: dict[str, Any],
        namespace: str | None = None,
        uid: str | None = None,
        network: dict[str, Any] | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "node": node,
            "startedOn": utc_now(),
            "name": name,
            "attempt": attempt,
            "spec": spec,
        }
        if namespace is not None:
            fields["namespace"] = namespace
        if uid is not None:
            fields["uid"] = uid
        if network is not None:
            fields["network"] = network
        self._record(RUN, fields)

    def image(self, ref: str, digest: str) -> None:
        self._record(IMAGE, {"ref": ref, "digest": digest})

    def input(self, name: str, manifest: Manifest) -> None:
        self._record(
            INPUT,
            {
                "name": name,
                "root": manifest.root,
                "files": manifest.file_count,
                "bytes": manifest.total_bytes,
            },
        )

    def output(self, name: str, manifest: Manifest, *, network: dict[str, Any] | None = None) -> None:
        """`network`: the pod's network from its gate until now (Kubernetes runs)."""
        fields: dict[str, Any] = {
            "name": name,
            "root": manifest.root,
            "files": manifest.file_count,
            "bytes": manifest.total_bytes,
            "finishedOn": utc_now(),
        }
        if network is not None:
            fields["network"] = network
        self._record(OUTPUT, fields)

    def own_events(self) -> list[dict[str, Any]]:
        return [e.content for e in self.log.entries() if e.run == self.run_id]

    def seal(self, *, assurance: Assurance, ak: AkIdentity) -> dict[str, Any]:
        """Seal the run and return its certificate (a JSON object)."""
        with self.log.locked():
            events = self.own_events()
            sealed = bool(events) and events[-1].get("type") == SEAL
            measured = events[:-1] if sealed else events
            boot = self.tpm.pcr_read(BOOT_PCRS)
            statement = statement_from_events(measured, assurance=assurance, boot_pcrs=boot).to_json()
            digest = sha256_jcs(statement)
            if sealed and events[-1].get("statement") != digest.hex():
                raise SealError(
                    f"run {self.run_id} was sealed over another statement; the node's boot PCRs changed"
                )
            if not sealed:
                self._record(SEAL, {"statement": digest.hex()})
            quote = self.tpm.quote([*BOOT_PCRS, self.log.pcr], digest)
            entries = self.log.entries()
        if any(quote.pcr_values[i] != boot[i] for i in BOOT_PCRS):
            raise SealError("the boot PCRs changed while the run was sealed")
        if replay(e.digest for e in entries) != quote.pcr_values[self.log.pcr]:
            raise SealError(
                f"PCR {self.log.pcr} does not match the measurement log: something else extended it"
            )
        evidence: dict[str, Any] = {
            "type": EVIDENCE_TYPE,
            "pcrBank": "sha256",
            "pcr": self.log.pcr,
            "assurance": assurance,
            "quote": {
                "attest": base64.b64encode(quote.attest).decode(),
                "signature": base64.b64encode(quote.signature).decode(),
                "pcrs": {str(i): v.hex() for i, v in sorted(quote.pcr_values.items())},
            },
            "eventLog": certificate_log(entries, self.run_id),
            "ak": {"public": ak.public_pem, "certificateChain": list(ak.certificate_chain)},
        }
        if ak.platform is not None:
            evidence["platform"] = ak.platform
        certificate = {"apiVersion": API_VERSION, "kind": KIND, "statement": statement, "evidence": evidence}
        convert(certificate, TrainingCertificate)  # never hand out a document we could not parse
        return certificate
