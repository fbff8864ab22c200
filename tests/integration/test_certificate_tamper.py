"""A real certificate from swtpm verifies; every mutation fails exactly the check it targets.

The agent makes checkpointed certificates; the same run's log as a whole epoch (the format of the
agent before checkpoints, with the same final quote) goes through the epoch's own mutations."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from tests.integration.certified_run import CertifiedRun, make_run

from aicert.jcs import sha256_jcs
from aicert.trust import TrustStore
from aicert.verify import Check, MalformedError, VerificationError, Verifier
from aicert_agent.evidence_log import epoch_log
from aicert_agent.local_run import LOG_FILE
from aicert_agent.measurement_log import MeasurementLog
from aicert_agent.tpm.client import Tpm
from aicert_agent.tpm.devca import DevCA
from aicert_agent.tpm.swtpm import Swtpm

pytestmark = pytest.mark.integration
Cert = dict[str, Any]


@pytest.fixture(scope="module")
def certified(tpm_server: Swtpm, tmp_path_factory: pytest.TempPathFactory) -> CertifiedRun:
    return make_run(tmp_path_factory.mktemp("run"), tpm_server.spec)


def verify(run: CertifiedRun, cert: Cert, trust: TrustStore | None = None, **kwargs: Any) -> Any:
    return Verifier(trust or run.trust).verify(json.dumps(cert), **kwargs)


def expect(run: CertifiedRun, cert: Cert, check: Check, reason: str, **kwargs: Any) -> None:
    with pytest.raises(VerificationError) as err:
        verify(run, cert, **kwargs)
    assert (err.value.check, reason in err.value.reason) == (check, True), err.value.reason


def flip_b64(value: str, offset: int) -> str:
    data = bytearray(base64.b64decode(value))
    data[offset] ^= 0x01
    return base64.b64encode(bytes(data)).decode()


def requote(run: CertifiedRun, cert: Cert, extra_data: bytes) -> None:
    """A genuine quote from the same TPM and AK over other extraData (what a compromised agent could get)."""
    with Tpm(run.tpm_spec) as tpm:
        quote = tpm.quote(sorted(int(k) for k in cert["evidence"]["quote"]["pcrs"]), extra_data)
    cert["evidence"]["quote"]["attest"] = base64.b64encode(quote.attest).decode()
    cert["evidence"]["quote"]["signature"] = base64.b64encode(quote.signature).decode()
    cert["evidence"]["quote"]["pcrs"] = {str(i): v.hex() for i, v in sorted(quote.pcr_values.items())}


def test_the_real_certificate_verifies_with_files(certified: CertifiedRun) -> None:
    result = verify(
        certified, certified.certificate, model_dir=certified.model, data_dirs={"data": certified.data}
    )
    assert result.assurance == "dev"
    predicate = result.statement.predicate
    assert predicate.run.name == "tamper-suite"
    assert predicate.inputs[0].files == 2
    assert predicate.image.digest == "sha256:" + "cd" * 32
    assert Check.MODEL_FILES in result.passed and Check.DATA_FILES in result.passed
    assert len(json.dumps(certified.certificate)) < 64 * 1024


def _event(cert: Cert, kind: str) -> dict[str, Any]:
    return next(e for e in cert["evidence"]["eventLog"] if e["type"] == kind)


def _swap(cert: Cert, renumber: bool) -> None:
    log = cert["evidence"]["eventLog"]
    log[2], log[3] = log[3], log[2]
    if renumber:
        log[2]["seq"], log[3]["seq"] = 2, 3


MUTATIONS: list[tuple[str, Callable[[Cert], None], Check, str]] = [
    (
        "attest byte",
        lambda c: c["evidence"]["quote"].update(attest=flip_b64(c["evidence"]["quote"]["attest"], 50)),
        Check.QUOTE_SIGNATURE,
        "does not verify with the AK",
    ),
    (
        "signature byte",
        lambda c: c["evidence"]["quote"].update(signature=flip_b64(c["evidence"]["quote"]["signature"], 20)),
        Check.QUOTE_SIGNATURE,
        "does not verify with the AK",
    ),
    (
        "measurement pcr value",
        lambda c: c["evidence"]["quote"]["pcrs"].update({"23": "00" * 32}),
        Check.PCR_DIGEST,
        "pcrDigest",
    ),
    (
        "boot pcr value",
        lambda c: c["evidence"]["quote"]["pcrs"].update({"0": "11" * 32}),
        Check.PCR_DIGEST,
        "pcrDigest",
    ),
    (
        "pcr left out",
        lambda c: c["evidence"]["quote"]["pcrs"].pop("7"),
        Check.PCR_SELECTION,
        "but the evidence lists",
    ),
    (
        "subject digest",
        lambda c: c["statement"]["subject"][0]["digest"].update(sha256="0" * 64),
        Check.QUOTE_BINDING,
        "the quote certifies another statement",
    ),
    (
        "statement field",
        lambda c: c["statement"]["predicate"]["run"].update(name="other"),
        Check.QUOTE_BINDING,
        "the quote certifies another statement",
    ),
    (
        "foreign AK key",
        lambda c: c["evidence"]["ak"].update(public=_other_key_pem()),
        Check.AK_KEY,
        "not the key the AK certificate certifies",
    ),
    (
        "claims vtpm on a dev CA",
        lambda c: c["evidence"].update(assurance="vtpm"),
        Check.ASSURANCE,
        "vouches for dev at most",
    ),
    (
        "claims cvm",
        lambda c: c["evidence"].update(assurance="cvm"),
        Check.ASSURANCE,
        "cvm needs an AK certified by the Azure vTPM root",
    ),
]


def epoch_form(run: CertifiedRun) -> Cert:
    """The run's certificate with its log as a whole epoch: what the agent before checkpoints gave
    for it (`aicert-agent run` re-bases first, so the epoch is the run's entries; same final quote)."""
    cert = copy.deepcopy(run.certificate)
    entries = MeasurementLog(run.root / "state" / LOG_FILE, 23).entries()
    del cert["evidence"]["eventLogFormat"]
    cert["evidence"]["eventLog"] = epoch_log(entries, cert["statement"]["predicate"]["run"]["id"])
    return cert


EPOCH_MUTATIONS: list[tuple[str, Callable[[Cert], None], Check, str]] = [
    (
        "event content",
        lambda c: _event(c, "aicert.input")["content"].update(files=3),
        Check.EVENT_DIGEST,
        "does not match the content",
    ),
    (
        "event type label",
        lambda c: _event(c, "aicert.image").update(type="aicert.input"),
        Check.EVENT_DIGEST,
        "the content says type 'aicert.image'",
    ),
    (
        "event dropped",
        lambda c: c["evidence"]["eventLog"].pop(1),
        Check.EVENT_SEQUENCE,
        "has seq 2, expected 1",
    ),
    ("events reordered", lambda c: _swap(c, renumber=False), Check.EVENT_SEQUENCE, "has seq 3, expected 2"),
    ("events reordered and renumbered", lambda c: _swap(c, renumber=True), Check.EVENT_REPLAY, "replaying"),
    (
        "last event dropped",
        lambda c: c["evidence"]["eventLog"].pop(),
        Check.EVENT_REPLAY,
        "replaying 4 entries",
    ),
    (
        "redacted entry with content",
        lambda c: _event(c, "aicert.input").update(type="redacted"),
        Check.EVENT_DIGEST,
        "is redacted but carries content",
    ),
    (
        "own entry hidden",
        lambda c: _event(c, "aicert.input").pop("content"),
        Check.EVENT_DIGEST,
        "has no content and is not marked redacted",
    ),
]


def _swap_renumbered(cert: Cert, first: int) -> None:
    log = cert["evidence"]["eventLog"]
    log[first], log[first + 1] = log[first + 1], log[first]
    log[first]["seq"], log[first + 1]["seq"] = log[first + 1]["seq"], log[first]["seq"]


def _drop_image_renumbered(cert: Cert) -> None:
    log = cert["evidence"]["eventLog"]
    log.pop(1)
    for position, logged in enumerate(log):
        logged["seq"] = position


CHECKPOINTED_MUTATIONS: list[tuple[str, Callable[[Cert], None], Check, str]] = [
    (
        "event content",
        lambda c: _event(c, "aicert.input")["content"].update(files=3),
        Check.EVENT_DIGEST,
        "does not match the content",
    ),
    ("image event dropped", lambda c: c["evidence"]["eventLog"].pop(1), Check.EVENT_SEQUENCE, "has seq 2"),
    ("image event dropped, renumbered", _drop_image_renumbered, Check.STATEMENT, "predicate.image"),
    ("events reordered", lambda c: _swap(c, renumber=False), Check.EVENT_SEQUENCE, "has seq 3, expected 2"),
    (
        "image and input reordered and renumbered",
        lambda c: _swap_renumbered(c, 1),
        Check.LOG_CLOCK,
        "not after",
    ),
    (
        "quote of another entry",
        lambda c: _event(c, "aicert.input").update(quote=_event(c, "aicert.image")["quote"]),
        Check.LOG_CHECKPOINTS,
        "not the entry's digest",
    ),
    (
        "pcrBefore",
        lambda c: _event(c, "aicert.output").update(pcrBefore="11" * 32),
        Check.LOG_CHECKPOINTS,
        "does not attest PCR 23",
    ),
    (
        "seal's pcrBefore",
        lambda c: _event(c, "aicert.seal").update(pcrBefore="11" * 32),
        Check.LOG_CHECKPOINTS,
        "the final quote says",
    ),
]


def _other_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.mark.parametrize("form", ["checkpointed", "epoch"])
@pytest.mark.parametrize(("what", "mutate", "check", "reason"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_mutation_fails_its_check(
    certified: CertifiedRun, form: str, what: str, mutate: Callable[[Cert], None], check: Check, reason: str
) -> None:
    cert = copy.deepcopy(certified.certificate) if form == "checkpointed" else epoch_form(certified)
    mutate(cert)
    expect(certified, cert, check, reason)


def test_the_epoch_form_verifies(certified: CertifiedRun) -> None:
    assert certified.certificate["evidence"]["eventLogFormat"] == "checkpointed"
    assert Check.EVENT_REPLAY in verify(certified, epoch_form(certified)).passed


@pytest.mark.parametrize(
    ("what", "mutate", "check", "reason"), EPOCH_MUTATIONS, ids=[m[0] for m in EPOCH_MUTATIONS]
)
def test_epoch_mutation_fails_its_check(
    certified: CertifiedRun, what: str, mutate: Callable[[Cert], None], check: Check, reason: str
) -> None:
    cert = epoch_form(certified)
    mutate(cert)
    expect(certified, cert, check, reason)


@pytest.mark.parametrize(
    ("what", "mutate", "check", "reason"), CHECKPOINTED_MUTATIONS, ids=[m[0] for m in CHECKPOINTED_MUTATIONS]
)
def test_checkpointed_mutation_fails_its_check(
    certified: CertifiedRun, what: str, mutate: Callable[[Cert], None], check: Check, reason: str
) -> None:
    cert = copy.deepcopy(certified.certificate)
    mutate(cert)
    expect(certified, cert, check, reason)


def test_genuine_quote_over_other_extra_data(certified: CertifiedRun) -> None:
    cert = copy.deepcopy(certified.certificate)
    requote(certified, cert, b"\x42" * 32)
    expect(certified, cert, Check.QUOTE_BINDING, "extraData is " + "42" * 32)


def test_genuine_quote_over_an_altered_statement(certified: CertifiedRun) -> None:
    # The agent's TPM signs whatever statement digest it is asked to: the log must still disagree.
    cert = copy.deepcopy(certified.certificate)
    cert["statement"]["predicate"]["outputs"]["root"] = "0" * 64
    requote(certified, cert, sha256_jcs(cert["statement"]))
    expect(certified, cert, Check.STATEMENT, "seals another statement")


def test_wrong_root(certified: CertifiedRun, tmp_path: Path) -> None:
    other = DevCA.load_or_create(tmp_path / "other-ca")
    trust = TrustStore.from_pem_file(tmp_path / "other-ca" / "dev-ca.pem")
    assert other.certificate_pem
    expect(certified, certified.certificate, Check.AK_CHAIN, "to a trusted root", trust=trust)


def test_expired_at_a_later_time(certified: CertifiedRun) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3 * 365)
    expect(certified, certified.certificate, Check.AK_CHAIN, "AK certificate expired on", at=later)


def test_foreign_ak_certificate_from_the_same_ca(certified: CertifiedRun) -> None:
    ca = DevCA.load(certified.ca_dir)
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    cert = copy.deepcopy(certified.certificate)
    cert["evidence"]["ak"]["certificateChain"] = [
        ca.issue_ak_certificate(stranger, "stranger").public_bytes(Encoding.PEM).decode()
    ]
    expect(certified, cert, Check.AK_KEY, "not the key the AK certificate certifies")
    cert["evidence"]["ak"]["public"] = stranger.public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    ).decode()
    expect(certified, cert, Check.QUOTE_SIGNATURE, "does not verify with the AK")


def test_changed_local_weights(certified: CertifiedRun, tmp_path: Path) -> None:
    copy_dir = tmp_path / "model"
    copy_dir.mkdir()
    for f in certified.model.iterdir():
        (copy_dir / f.name).write_bytes(f.read_bytes())
    (copy_dir / "weights.bin").write_bytes(b"tampered")
    expect(certified, certified.certificate, Check.MODEL_FILES, "changed: weights.bin", model_dir=copy_dir)
    (copy_dir / "extra.bin").write_bytes(b"")
    expect(certified, certified.certificate, Check.MODEL_FILES, "extra: extra.bin", model_dir=copy_dir)


def test_changed_local_data(certified: CertifiedRun, tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("x,y\n1,2\n3,5\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "labels.txt").write_text("a\nb\n")
    expect(
        certified,
        certified.certificate,
        Check.DATA_FILES,
        "certified input 'data'",
        data_dirs={"data": tmp_path},
    )


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda c: c["evidence"]["quote"].update(attest="***"), "evidence.quote.attest"),
        (lambda c: c["statement"].pop("predicateType"), "statement.predicateType"),
        (lambda c: c["evidence"].update(pcr=14), "evidence.pcr"),
        (lambda c: c["evidence"]["quote"]["pcrs"].update({"24": "00" * 32}), "evidence.quote.pcrs"),
        (lambda c: c.update(extra=True), "extra"),
        (lambda c: c["evidence"]["eventLog"].pop(), "evidence.eventLog"),
        (lambda c: _event(c, "aicert.input").update(type="redacted"), "evidence.eventLog"),
        (lambda c: _event(c, "aicert.input").pop("content"), "evidence.eventLog"),
    ],
    ids=["base64", "missing", "pcr14", "pcr-index", "unknown-field", "seal-dropped", "redacted", "hidden"],
)
def test_malformed_certificate_names_the_field(
    certified: CertifiedRun, mutate: Callable[[Cert], None], field: str
) -> None:
    cert = copy.deepcopy(certified.certificate)
    mutate(cert)
    with pytest.raises(MalformedError) as err:
        verify(certified, cert)
    assert err.value.field.startswith(field)


def test_cli_exit_codes(certified: CertifiedRun, tmp_path: Path) -> None:
    import subprocess
    import sys

    base = [
        sys.executable,
        "-m",
        "aicert.cli",
        "verify",
        "--trust-bundle",
        str(certified.ca_dir / "dev-ca.pem"),
    ]
    ok = subprocess.run(
        [*base, str(certified.certificate_path), "--model", str(certified.model)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "VERIFIED  assurance: dev" in ok.stdout
    bad = copy.deepcopy(certified.certificate)
    bad["statement"]["predicate"]["run"]["attempt"] = 9
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    failed = subprocess.run([*base, str(tmp_path / "bad.json")], capture_output=True, text=True)
    assert failed.returncode == 1 and "check quote-binding failed" in failed.stderr
    (tmp_path / "junk.json").write_text('{"apiVersion": "aicert.dev/v1alpha1"}')
    junk = subprocess.run([*base, str(tmp_path / "junk.json")], capture_output=True, text=True)
    assert junk.returncode == 2 and "unusable input" in junk.stderr
