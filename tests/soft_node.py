"""A node on a `SoftTpm`: the agent's own log and recorder, runs measured with other runs' entries
in between, and the verifier that trusts the node's AK. For tests of the measurement log's formats."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from aicert.digest import FileEntry, Manifest
from aicert.trust import TrustStore
from aicert.verify import VerifiedTraining, Verifier
from aicert_agent.measurement_log import MeasurementLog
from aicert_agent.recorder import AkIdentity, RunRecorder
from tests.pki import NOW, Issued, issue
from tests.soft_tpm import SoftTpm, certificate_with_key, pem_key

Json = dict[str, Any]
PCR = 23


def manifest(tag: str) -> Manifest:
    digest = hashlib.sha256(tag.encode()).hexdigest()
    return Manifest.from_files([FileEntry(path=f"{tag}.bin", size=len(tag), sha256=digest)])


@dataclass
class SoftNode:
    ca: Issued
    ak_key: ec.EllipticCurvePrivateKey
    tpm: SoftTpm
    log: MeasurementLog
    ak: AkIdentity
    foreign_entries: int = 0

    def recorder(self, run: str) -> RunRecorder:
        return RunRecorder(self.log, self.tpm, run_id=run, salt=(run.encode().hex() * 32)[:32])

    def foreign(self, count: int) -> None:
        """`count` entries of other runs (inputs of runs that are never sealed)."""
        for _ in range(count):
            self.foreign_entries += 1
            other = self.recorder(f"foreign-{self.foreign_entries}")
            other.begin(node="node-1", name="other", attempt=0, spec={})

    def certify(self, run: str, *, foreign_between: int = 0) -> Json:
        """A run (run, image, two inputs, output, seal) with `foreign_between` other runs' entries
        after each of its own measurements."""
        rec = self.recorder(run)
        steps = [
            lambda: rec.begin(node="node-1", name=run, attempt=0, spec={"gpus": 1}),
            lambda: rec.image("registry.example/train@sha256:" + "cd" * 32, "sha256:" + "cd" * 32),
            lambda: rec.input("data", manifest(f"{run}-data")),
            lambda: rec.input("labels", manifest(f"{run}-labels")),
            lambda: rec.output("model", manifest(f"{run}-model")),
        ]
        for step in steps:
            step()
            self.foreign(foreign_between)
        return rec.seal(assurance="dev", ak=self.ak)

    def verify(self, certificate: Json | str) -> VerifiedTraining:
        text = certificate if isinstance(certificate, str) else json.dumps(certificate)
        trust = TrustStore.from_certificates([self.ca.cert], "soft node CA", dev_level=True)
        return Verifier(trust).verify(text, at=NOW + dt.timedelta(days=1))


def soft_node(root: Path, tpm_type: type[SoftTpm] = SoftTpm) -> SoftNode:
    ca = issue("soft node CA")
    ak_key = ec.generate_private_key(ec.SECP256R1())
    ak_pem = certificate_with_key(ca, ak_key.public_key()).public_bytes(Encoding.PEM).decode()
    tpm = tpm_type(ak_key)
    log = MeasurementLog(root / "measurements.log", PCR)
    log.recover(tpm)
    return SoftNode(ca, ak_key, tpm, log, AkIdentity(pem_key(ak_key.public_key()), (ak_pem,)))
