"""Recording one run: its events into the log, then the seal, the quote and the certificate.

Used by `aicert-agent run` and by the Kubernetes agent alike. The seal entry's checkpoint is the
certificate's final quote (aicert_agent.checkpoints), kept in the log with it. Sealing is
idempotent: a run whose seal is already logged (the agent restarted after logging it) gets the
same certificate again, from the log, whatever was measured on the node since.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aicert.certificate import (
    API_VERSION,
    BOOT_PCRS,
    EVIDENCE_TYPE,
    KIND,
    Assurance,
    ParentRecord,
)
from aicert.digest import Manifest
from aicert.events import IMAGE, INPUT, OUTPUT, RUN, SEAL, statement_from_events
from aicert.jcs import sha256_jcs
from aicert.tpm.pcrs import replay
from aicert_agent.checkpoints import AttestingDevice, Checkpoint
from aicert_agent.evidence_log import evidence_log, is_checkpointed, log_problem
from aicert_agent.measurement_log import MeasurementLog


class SealError(Exception):
    """The run cannot be certified; the message says why."""


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
    tpm: AttestingDevice  # quotes; its AK signs the certificate's Sigstore bundle (aicert_agent.bundling)
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
        agent_image: str | None = None,
    ) -> None:
        """`agent_image`: the image of the pod's gate and seal containers (Kubernetes runs)."""
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
        if agent_image is not None:
            fields["agentImage"] = agent_image
        self._record(RUN, fields)

    def image(self, ref: str, digest: str) -> None:
        self._record(IMAGE, {"ref": ref, "digest": digest})

    def input(self, name: str, manifest: Manifest, *, parent: ParentRecord | None = None) -> None:
        """`parent`: the input is an earlier certified run's output (aicert.lineage)."""
        fields: dict[str, Any] = {
            "name": name,
            "root": manifest.root,
            "files": manifest.file_count,
            "bytes": manifest.total_bytes,
        }
        if parent is not None:
            fields["parent"] = parent.to_json()
        self._record(INPUT, fields)

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
            if sealed:  # its checkpoint, if a TPM error left it untaken
                self.log.catch_up(self.tpm)
            else:
                self._record(SEAL, {"statement": digest.hex()})  # its checkpoint is the final quote
            entries = self.log.entries()
            seal = next(e for e in reversed(entries) if e.run == self.run_id)
            if seal.checkpoint is not None:
                quote = seal.checkpoint
                entries = entries[: seal.seq + 1]
            else:  # sealed by an agent before checkpoints: quoted now, over the whole epoch so far
                taken = self.tpm.quote([*BOOT_PCRS, self.log.pcr], digest)
                quote = Checkpoint(taken.attest, taken.signature, dict(taken.pcr_values))
        if any(quote.pcr_values[i] != boot[i] for i in BOOT_PCRS):
            raise SealError("the boot PCRs changed while the run was sealed")
        if (
            not is_checkpointed(entries, self.run_id)
            and replay(e.digest for e in entries) != quote.pcr_values[self.log.pcr]
        ):
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
            **evidence_log(entries, self.run_id),
            "ak": {"public": ak.public_pem, "certificateChain": list(ak.certificate_chain)},
        }
        if ak.platform is not None:
            evidence["platform"] = ak.platform
        certificate = {"apiVersion": API_VERSION, "kind": KIND, "statement": statement, "evidence": evidence}
        # never hand out a document we could not parse, nor one whose log a verifier refuses
        problem = log_problem(certificate)
        if problem:
            raise SealError(f"the run's measurement log does not verify: {problem}")
        return certificate
