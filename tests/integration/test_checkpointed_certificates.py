"""Checkpointed certificates on a real swtpm: a run's certificate is the same size however many
other runs' entries went into the log around it, and a checkpoint quoted in another boot, another
TPM restart, or by another TPM, fails exactly its check."""

from __future__ import annotations

import base64
import copy
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from tests.integration.conftest import ProvisionedTpm

from aicert.digest import FileEntry, Manifest
from aicert.jcs import sha256_jcs
from aicert.tpm.attest import parse_attest
from aicert.trust import TrustStore
from aicert.verify import Check, VerificationError, Verifier
from aicert_agent.evidence_log import epoch_log
from aicert_agent.measurement_log import MeasurementLog
from aicert_agent.recorder import AkIdentity, RunRecorder
from aicert_agent.tpm.client import Tpm
from aicert_agent.tpm.devca import DevCA
from aicert_agent.tpm.provision import dev_provision
from aicert_agent.tpm.swtpm import Swtpm, _tpm_command

pytestmark = pytest.mark.integration
PCR = 23
FOREIGN = 200
Cert = dict[str, Any]


def manifest(tag: str) -> Manifest:
    return Manifest.from_files([FileEntry(path=f"{tag}.bin", size=len(tag), sha256=sha256_jcs(tag).hex())])


def ak_of(tpm: Tpm) -> AkIdentity:
    leaf = x509.load_der_x509_certificate(tpm.ak_certificate_der())
    return AkIdentity(tpm.ak_public_pem(), (leaf.public_bytes(Encoding.PEM).decode(),))


def certify(log: MeasurementLog, tpm: Tpm, run: str, *, foreign: int = 0) -> Cert:
    """A run (run, image, input, output, seal) with `foreign` entries of other runs spread between
    its measurements, as concurrent runs on the node would put them."""
    rec = RunRecorder(log, tpm, run_id=run, salt=(run.encode().hex() * 32)[:32])
    steps = [
        lambda: rec.begin(node="node-1", name="train", attempt=0, spec={"gpus": 1}),
        lambda: rec.image("registry.example/train@sha256:" + "cd" * 32, "sha256:" + "cd" * 32),
        lambda: rec.input("data", manifest("data")),
        lambda: rec.output("model", manifest("model")),
    ]
    for index, step in enumerate(steps):
        step()
        for n in range(foreign // len(steps) + (index < foreign % len(steps))):
            other = RunRecorder(log, tpm, run_id=f"other-{index}-{n}", salt="ef" * 16)
            other.begin(node="node-1", name="other", attempt=0, spec={})
    return rec.seal(assurance="dev", ak=ak_of(tpm))


@dataclass
class Certified:
    node: ProvisionedTpm
    certificate: Cert
    log: MeasurementLog

    def verify(self, cert: Cert) -> Any:
        trust = TrustStore.from_certificates([self.node.ca.certificate], "dev", dev_level=True)
        return Verifier(trust).verify(json.dumps(cert))

    def expect(self, cert: Cert, check: Check, reason: str) -> None:
        with pytest.raises(VerificationError) as err:
            self.verify(cert)
        assert (err.value.check, reason in err.value.reason) == (check, True), err.value


@pytest.fixture
def certified(provisioned_tpm: ProvisionedTpm, tmp_path: Path) -> Iterator[Certified]:
    with provisioned_tpm.open() as tpm:
        log = MeasurementLog(tmp_path / "m.log", PCR)
        log.rebase(tpm)
        certificate = certify(log, tpm, "run-1")
    yield Certified(provisioned_tpm, certificate, log)


def entry(cert: Cert, kind: str) -> dict[str, Any]:
    return next(e for e in cert["evidence"]["eventLog"] if e["type"] == kind)


def quote_from_zero(tpm: Tpm, logged: dict[str, Any]) -> None:
    """Give `logged` a genuine checkpoint of `tpm`: PCR 23 reset, the entry's digest extended onto
    zero, quoted with the digest as extraData; pcrBefore becomes zero. Only its origin is wrong."""
    digest = bytes.fromhex(logged["digest"])
    tpm.pcr_reset(PCR)
    tpm.pcr_extend(PCR, digest)
    quote = tpm.quote([PCR], digest)
    logged["pcrBefore"] = "00" * 32
    logged["quote"] = {
        "attest": base64.b64encode(quote.attest).decode(),
        "signature": base64.b64encode(quote.signature).decode(),
    }


def test_the_certificate_does_not_grow_with_200_foreign_entries(
    provisioned_tpm: ProvisionedTpm, tmp_path: Path
) -> None:
    with provisioned_tpm.open() as tpm:
        log = MeasurementLog(tmp_path / "m.log", PCR)
        log.rebase(tpm)
        alone = certify(log, tpm, "run-1")
        log.rebase(tpm)
        crowded = certify(log, tpm, "run-1", foreign=FOREIGN)
        entries = log.entries()
    run = Certified(provisioned_tpm, crowded, log)
    assert run.verify(crowded).statement.predicate.run.id == "run-1"
    size_alone, size_crowded = len(json.dumps(alone)), len(json.dumps(crowded))
    assert abs(size_crowded - size_alone) <= 16  # seq numbers with more digits
    # the whole epoch, as the agent before checkpoints gave it, carried every foreign entry
    seal = max(e.seq for e in entries if e.run == "run-1")
    whole_epoch = len(json.dumps(epoch_log(entries[: seal + 1], "run-1")))
    assert whole_epoch - len(json.dumps(crowded["evidence"]["eventLog"])) > FOREIGN * 80


def test_the_real_checkpoints_are_in_clock_order(certified: Certified) -> None:
    result = certified.verify(certified.certificate)
    assert Check.LOG_CHECKPOINTS in result.passed and Check.LOG_CLOCK in result.passed
    clocks = [
        parse_attest(base64.b64decode(e["quote"]["attest"])).clock_info.clock
        for e in certified.certificate["evidence"]["eventLog"][:-1]
    ]
    assert clocks == sorted(set(clocks)) and clocks[-1] < result.clock.clock


def test_a_checkpoint_from_another_boot(certified: Certified) -> None:
    cert = copy.deepcopy(certified.certificate)
    certified.node.swtpm.restart()  # a reboot: resetCount + 1, PCRs reset
    with certified.node.open() as tpm:
        quote_from_zero(tpm, entry(cert, "aicert.input"))
    certified.expect(cert, Check.LOG_CLOCK, "in another boot or TPM restart")


def test_a_checkpoint_from_another_tpm_restart(certified: Certified) -> None:
    """TPM2_Shutdown(STATE), then TPM2_Startup(CLEAR): a TPM Restart, restartCount + 1."""
    cert = copy.deepcopy(certified.certificate)
    swtpm = certified.node.swtpm
    assert _tpm_command(swtpm.host, swtpm.port, 0x145, struct.pack(">H", 0x0001), timeout=5.0) == 0
    swtpm.stop(orderly=False)
    swtpm.start()
    with certified.node.open() as tpm:
        quote_from_zero(tpm, entry(cert, "aicert.input"))
        counts = parse_attest(tpm.quote([PCR], b"").attest).clock_info
    final = parse_attest(base64.b64decode(cert["evidence"]["quote"]["attest"])).clock_info
    assert (counts.reset_count, counts.restart_count) == (final.reset_count, final.restart_count + 1)
    certified.expect(cert, Check.LOG_CLOCK, f"restartCount {final.restart_count + 1}, the final quote")


def test_a_checkpoint_by_another_tpm(certified: Certified, tmp_path: Path) -> None:
    cert = copy.deepcopy(certified.certificate)
    with Swtpm(tmp_path / "other-swtpm") as other:
        other.start()
        with Tpm(other.spec) as tpm:
            dev_provision(tpm, DevCA.load_or_create(tmp_path / "other-ca"))
            quote_from_zero(tpm, entry(cert, "aicert.input"))
    certified.expect(cert, Check.LOG_CHECKPOINTS, "does not verify with the AK")
