"""The measurement log against a real swtpm: restarts, crashes, mismatches, concurrent runs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import JsonValue

from aicert.digest import Manifest
from aicert.digest.manifest import FileEntry
from aicert.events import statement_from_events
from aicert.jcs import sha256_jcs
from aicert.tpm.pcrs import replay
from aicert.trust import TrustStore
from aicert.verify import Check, VerificationError, Verifier
from aicert_agent.evidence_log import evidence_log
from aicert_agent.measurement_log import LogError, MeasurementLog, Recovery
from aicert_agent.recorder import AkIdentity, RunRecorder
from aicert_agent.tpm.client import Tpm

pytestmark = pytest.mark.integration
PCR = 23


def manifest(tag: str) -> Manifest:
    return Manifest.from_files([FileEntry(path=f"{tag}.bin", size=len(tag), sha256=sha256_jcs(tag).hex())])


def recorder(log: MeasurementLog, tpm: Tpm, run: str) -> RunRecorder:
    return RunRecorder(log, tpm, run_id=run, salt=(run.encode().hex() * 32)[:32])


def measure_run(rec: RunRecorder, name: str) -> None:
    rec.begin(node="node-1", name=name, attempt=0, spec={"command": ["train"]})
    rec.input("data", manifest(f"{name}-data"))
    rec.output("model", manifest(f"{name}-model"))


def ak_of(tpm: Tpm) -> AkIdentity:
    from cryptography import x509

    leaf = x509.load_der_x509_certificate(tpm.ak_certificate_der())
    return AkIdentity(tpm.ak_public_pem(), (leaf.public_bytes(Encoding.PEM).decode(),))


def input_event(rec: RunRecorder, name: str) -> dict[str, JsonValue]:
    """The content of an aicert.input event of `rec`'s run, logged by hand."""
    return {
        "type": "aicert.input",
        "run": rec.run_id,
        "salt": rec.salt,
        "name": name,
        "root": "0" * 64,
        "files": 0,
        "bytes": 0,
    }


class ExtendFails:
    """The TPM, except that extending raises `error` (the agent killed, or a TPM error, after the
    entry was logged)."""

    def __init__(self, tpm: Tpm, error: BaseException) -> None:
        self.tpm, self.error = tpm, error

    def pcr_read(self, indices: list[int]) -> dict[int, bytes]:
        return self.tpm.pcr_read(indices)

    def pcr_reset(self, index: int) -> None:
        self.tpm.pcr_reset(index)

    def pcr_extend(self, index: int, digest: bytes) -> None:
        raise self.error

    def quote(self, pcrs: list[int], extra_data: bytes) -> object:
        return self.tpm.quote(pcrs, extra_data)


def pcr_value(tpm: Tpm) -> bytes:
    return tpm.pcr_read([PCR])[PCR]


@pytest.fixture
def trust(provisioned_tpm) -> TrustStore:  # type: ignore[no-untyped-def]
    return TrustStore.from_certificates([provisioned_tpm.ca.certificate], "dev", dev_level=True)


def test_restart_replays_the_log(provisioned_tpm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with provisioned_tpm.open() as tpm:
        log = MeasurementLog(tmp_path / "m.log", PCR)
        log.rebase(tpm)
        measure_run(recorder(log, tpm, "r1"), "a")
        again = MeasurementLog(tmp_path / "m.log", PCR)  # a restarted agent
        assert again.recover(tpm) is Recovery.IN_STEP
        assert replay(e.digest for e in again.entries()) == pcr_value(tpm)
        assert len(again.entries()) == 3


def test_crash_after_logging_before_extending_is_completed_once(provisioned_tpm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with provisioned_tpm.open() as tpm:
        log = MeasurementLog(tmp_path / "m.log", PCR)
        log.rebase(tpm)
        rec = recorder(log, tpm, "r1")
        rec.begin(node="n", name="a", attempt=0, spec={})
        with pytest.raises(KeyboardInterrupt):
            log.append(ExtendFails(tpm, KeyboardInterrupt("agent killed")), "r1", input_event(rec, "d"))
        restarted = MeasurementLog(tmp_path / "m.log", PCR)
        assert restarted.recover(tpm) is Recovery.COMPLETE_LAST_EXTEND
        assert restarted.recover(tpm) is Recovery.IN_STEP  # not extended twice
        assert replay(e.digest for e in restarted.entries()) == pcr_value(tpm)


def test_torn_last_line_is_dropped(provisioned_tpm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with provisioned_tpm.open() as tpm:
        log = MeasurementLog(tmp_path / "m.log", PCR)
        log.rebase(tpm)
        measure_run(recorder(log, tpm, "r1"), "a")
        with open(tmp_path / "m.log", "ab") as f:
            f.write(b'{"seq":3,"digest":"ab')  # a write cut short by a crash, never extended
        assert MeasurementLog(tmp_path / "m.log", PCR).recover(tpm) is Recovery.IN_STEP
        assert len(log.entries()) == 3
        assert (tmp_path / "m.log").read_bytes().endswith(b"}\n")


def test_foreign_extend_is_refused_until_rebase(provisioned_tpm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with provisioned_tpm.open() as tpm:
        log = MeasurementLog(tmp_path / "m.log", PCR)
        log.rebase(tpm)
        measure_run(recorder(log, tpm, "r1"), "a")
        tpm.pcr_extend(PCR, b"\x66" * 32)  # someone else
        with pytest.raises(LogError, match="something other than the agent extended the PCR"):
            MeasurementLog(tmp_path / "m.log", PCR).recover(tpm)
        log.rebase(tpm)
        assert log.recover(tpm) is Recovery.IN_STEP and log.entries() == []


def test_reboot_with_a_stale_log_is_refused(provisioned_tpm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with provisioned_tpm.open() as tpm:
        log = MeasurementLog(tmp_path / "m.log", PCR)
        log.rebase(tpm)
        measure_run(recorder(log, tpm, "r1"), "a")
    provisioned_tpm.swtpm.restart()  # PCRs are back to zero, the log is not
    with provisioned_tpm.open() as tpm, pytest.raises(LogError, match="re-based"):
        MeasurementLog(tmp_path / "m.log", PCR).recover(tpm)


def test_foreign_extend_during_a_run_refuses_the_seal(provisioned_tpm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with provisioned_tpm.open() as tpm:
        log = MeasurementLog(tmp_path / "m.log", PCR)
        log.rebase(tpm)
        rec = recorder(log, tpm, "r1")
        measure_run(rec, "a")
        tpm.pcr_extend(PCR, b"\x66" * 32)
        # caught as the seal event is logged, before anything is quoted
        with pytest.raises(LogError, match="something other than the agent extended the PCR"):
            rec.seal(assurance="dev", ak=ak_of(tpm))


def test_interleaved_runs_carry_only_their_own_entries_and_both_verify(
    provisioned_tpm, tmp_path: Path, trust: TrustStore
) -> None:  # type: ignore[no-untyped-def]
    with provisioned_tpm.open() as tpm:
        log = MeasurementLog(tmp_path / "m.log", PCR)
        log.rebase(tpm)
        a, b = recorder(log, tpm, "run-a"), recorder(log, tpm, "run-b")
        a.begin(node="n", name="a", attempt=0, spec={})
        b.begin(node="n", name="b", attempt=0, spec={})
        a.input("data", manifest("secret-a"))
        b.input("data", manifest("secret-b"))
        a.output("model", manifest("model-a"))
        b.output("model", manifest("model-b"))
        cert_a = a.seal(assurance="dev", ak=ak_of(tpm))
        cert_b = b.seal(assurance="dev", ak=ak_of(tpm))
    verifier = Verifier(trust)
    for cert, mine, other in ((cert_a, "run-a", "secret-b"), (cert_b, "run-b", "secret-a")):
        text = json.dumps(cert)
        assert other not in text and sha256_jcs(other).hex() not in text
        result = verifier.verify(text)
        assert result.statement.predicate.run.id == mine
        assert {e["content"]["run"] for e in cert["evidence"]["eventLog"]} == {mine}
        assert Check.LOG_CLOCK in result.passed
    assert len(cert_a["evidence"]["eventLog"]) == len(cert_b["evidence"]["eventLog"]) == 4


def test_seal_is_idempotent_across_a_restart(provisioned_tpm, tmp_path: Path, trust: TrustStore) -> None:  # type: ignore[no-untyped-def]
    with provisioned_tpm.open() as tpm:
        log = MeasurementLog(tmp_path / "m.log", PCR)
        log.rebase(tpm)
        rec = recorder(log, tpm, "r1")
        measure_run(rec, "a")
        first = rec.seal(assurance="dev", ak=ak_of(tpm))
        measure_run(recorder(log, tpm, "r2"), "b")  # measured since: the PCR moved on
        again = recorder(MeasurementLog(tmp_path / "m.log", PCR), tpm, "r1").seal(
            assurance="dev", ak=ak_of(tpm)
        )
    assert again == first  # the seal's checkpoint, from the log
    assert [e["type"] for e in again["evidence"]["eventLog"]].count("aicert.seal") == 1
    Verifier(trust).verify(json.dumps(again))


def test_statement_that_differs_from_the_events_is_named(
    provisioned_tpm, tmp_path: Path, trust: TrustStore
) -> None:  # type: ignore[no-untyped-def]
    """A compromised agent logs honest events but seals and quotes a statement with another model."""
    with provisioned_tpm.open() as tpm:
        log = MeasurementLog(tmp_path / "m.log", PCR)
        log.rebase(tpm)
        rec = recorder(log, tpm, "r1")
        measure_run(rec, "a")
        boot = tpm.pcr_read(list(range(8)))
        statement = statement_from_events(rec.own_events(), assurance="dev", boot_pcrs=boot).to_json()
        statement["predicate"]["outputs"]["root"] = "0" * 64
        digest = sha256_jcs(statement)
        rec._record("aicert.seal", {"statement": digest.hex()})
        quote = tpm.quote([*range(8), PCR], digest)
        ak = ak_of(tpm)
        entries = log.entries()
    forged = {
        "apiVersion": "aicert.dev/v1alpha1",
        "kind": "TrainingCertificate",
        "statement": statement,
        "evidence": {
            "type": "tpm2-quote",
            "pcrBank": "sha256",
            "pcr": PCR,
            "assurance": "dev",
            "quote": {
                "attest": base64.b64encode(quote.attest).decode(),
                "signature": base64.b64encode(quote.signature).decode(),
                "pcrs": {str(i): v.hex() for i, v in sorted(quote.pcr_values.items())},
            },
            **evidence_log(entries, "r1"),
            "ak": {"public": ak.public_pem, "certificateChain": list(ak.certificate_chain)},
        },
    }
    with pytest.raises(VerificationError) as err:
        Verifier(trust).verify(json.dumps(forged))
    assert err.value.check is Check.STATEMENT
    assert err.value.reason.startswith(
        'statement.predicate.outputs.root is "' + "0" * 64 + '" but the measured events say'
    )


def test_a_failed_extend_is_completed_before_the_next_measurement(provisioned_tpm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A TPM error after the entry was logged leaves the log one ahead; the next append catches up
    instead of leaving the log out of step until the node is idle."""

    with provisioned_tpm.open() as tpm:
        log = MeasurementLog(tmp_path / "m.log", PCR)
        log.rebase(tpm)
        rec = recorder(log, tpm, "r1")
        rec.begin(node="n", name="a", attempt=0, spec={})
        with pytest.raises(RuntimeError, match="TPM busy"):
            log.append(ExtendFails(tpm, RuntimeError("TPM busy")), "r1", input_event(rec, "d"))
        assert replay(e.digest for e in log.entries()) != pcr_value(tpm)  # one entry ahead
        log.append(tpm, "r1", input_event(rec, "e"))
        assert len(log.entries()) == 3
        assert replay(e.digest for e in log.entries()) == pcr_value(tpm)  # in step, nothing extended twice


def test_a_second_reader_sees_appends_and_rebases_through_its_cache(provisioned_tpm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Entries are parsed once and kept; another writer's appends and a re-base are still seen."""
    with provisioned_tpm.open() as tpm:
        writer = MeasurementLog(tmp_path / "m.log", PCR)
        writer.rebase(tpm)
        reader = MeasurementLog(tmp_path / "m.log", PCR)
        measure_run(recorder(writer, tpm, "r1"), "a")
        assert [e.type for e in reader.entries()] == [e.type for e in writer.entries()]
        measure_run(recorder(writer, tpm, "r2"), "b")
        assert len(reader.entries()) == len(writer.entries()) == 6
        assert replay(e.digest for e in reader.entries()) == pcr_value(tpm)
        writer.rebase(tpm)
        assert reader.entries() == [] and reader.epoch == writer.epoch
