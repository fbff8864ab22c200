"""RFC 3161 timestamps against a real local TSA (localcluster/tsa, built from Go modules).

The AK certificate here was valid from 2025-01-01 to 2025-06-01, long before the tests run. A
certificate sealed with a token dated 2025-03-01 keeps verifying now, without --at; without the
token, or with a token the verifier cannot trust, it fails with the expiry named.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from tests.integration.certified_run import make_run
from tests.pki import issue
from tests.soft_tpm import Json, Run, certified_run
from tests.tsa_tokens import as_version_2, der, tsa_certificate, tsa_root, with_certificates

from aicert.cli import main as aicert_main
from aicert.trust import TrustError, install_named, load_trust_store
from aicert_agent.timestamping import TimestampError, add_timestamp, request_timestamp
from aicert_agent.tpm.swtpm import Swtpm
from aicert_localcluster.tsa import LocalTsa

pytestmark = pytest.mark.integration

AK_VALID = (dt.datetime(2025, 1, 1, tzinfo=dt.UTC), dt.datetime(2025, 6, 1, tzinfo=dt.UTC))
WHILE_VALID = "2025-03-01T00:00:00Z"
AFTER_EXPIRY = "2025-08-01T00:00:00Z"


def tsa_identity(root: Path, name: str) -> tuple[Path, Path, Path]:
    """A TSA root and a TSA certificate it issued (critical id-kp-timeStamping): root, cert, key."""
    ca = issue(
        f"{name} root",
        not_before=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2036, 1, 1, tzinfo=dt.UTC),
    )
    leaf = issue(
        f"{name} unit",
        ca,
        ca=False,
        not_before=dt.datetime(2024, 6, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2035, 1, 1, tzinfo=dt.UTC),
    )
    leaf.cert = (
        x509.CertificateBuilder()
        .subject_name(leaf.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(leaf.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(leaf.cert.not_valid_before_utc)
        .not_valid_after(leaf.cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    root.mkdir(parents=True, exist_ok=True)
    (root / "root.pem").write_bytes(ca.pem)
    (root / "tsa.pem").write_bytes(leaf.pem)
    (root / "tsa-key.pem").write_bytes(
        leaf.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    return root / "root.pem", root / "tsa.pem", root / "tsa-key.pem"


@pytest.fixture(autouse=True)
def own_trust_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Named stores go to a directory of the test's own, never the user's."""
    trust_dir = tmp_path / "trust"
    monkeypatch.setenv("AICERT_TRUST_DIR", str(trust_dir))
    return trust_dir


@pytest.fixture(scope="module")
def tsa_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return tsa_identity(tmp_path_factory.mktemp("tsa"), "test TSA")


@pytest.fixture(scope="module")
def tsa_url(tsa_files: tuple[Path, Path, Path]) -> Iterator[str]:
    _root, cert, key = tsa_files
    with LocalTsa(cert, key, at=WHILE_VALID) as tsa:
        yield tsa.url


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> Run:
    short_lived = issue("short-lived AK CA", not_before=AK_VALID[0], not_after=AK_VALID[1])
    return certified_run(tmp_path_factory.mktemp("run"), azure_dir, ca=short_lived)


def stamped(run: Run, url: str) -> Json:
    certificate = copy.deepcopy(run.certificate)
    add_timestamp(certificate, url)
    return certificate


def verify(
    run: Run, tmp_path: Path, certificate: Json, capsys: pytest.CaptureFixture[str], *more: str
) -> tuple[int, str]:
    path = run.write(tmp_path / "certificate.json", certificate)
    code = aicert_main(["verify", path, "--trust-bundle", str(run.ca_pem), "--json", *more])
    out = capsys.readouterr()
    return code, out.out + out.err


def verify_trusting_another_tsa(
    run: Run, tsa_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """A certificate stamped by the test TSA, verified with --tsa-bundle naming only another TSA's root."""
    other_root, _cert, _key = tsa_identity(tmp_path / "other", "other TSA")
    return verify(run, tmp_path, stamped(run, tsa_url), capsys, "--tsa-bundle", str(other_root))


def failure(out: str) -> Json:
    """The --json document among the output lines (the failure line itself goes to stderr)."""
    found: Json = next(json.loads(line) for line in out.splitlines() if line.startswith("{"))
    return found


def test_a_token_dated_while_the_ak_certificate_was_valid_verifies_after_it_expired(
    run: Run,
    tsa_url: str,
    tsa_files: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = verify(run, tmp_path, stamped(run, tsa_url), capsys, "--tsa-bundle", str(tsa_files[0]))
    assert code == 0, out
    doc = json.loads(out)
    assert "timestamp" in doc["checks"] and "ak-chain" in doc["checks"]
    assert any(
        "timestamp: 2025-03-01T00:00:00Z ± 1 s by CN=test TSA unit; the AK certificate was checked at both ends"
        in note
        for note in doc["notes"]
    )


def test_without_a_token_the_expiry_is_named_with_what_to_do(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = verify(run, tmp_path, run.certificate, capsys)
    assert code == 1
    doc = failure(out)
    assert doc["check"] == "ak-chain"
    assert (
        "expired on 2025-06-01T00:00:00Z" in doc["reason"]
        and "--at" in doc["reason"]
        and "timestamp" in doc["reason"]
    )


def test_a_token_without_a_trusted_tsa_is_skipped_and_changes_nothing(
    run: Run, tsa_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = verify(run, tmp_path, stamped(run, tsa_url), capsys)
    assert code == 1 and "expired on 2025-06-01" in out  # checked now, as without a token
    code, out = verify(run, tmp_path, stamped(run, tsa_url), capsys, "--at", "2025-02-01T00:00:00Z")
    assert code == 0, out
    assert {
        "check": "timestamp",
        "reason": "no trusted TSA root (--tsa-bundle, or the tsa store): the AK certificate is checked at --at or now",
    } in json.loads(out)["skipped"]


def test_the_installed_tsa_store_dates_the_certificate_without_a_flag(
    run: Run,
    tsa_url: str,
    tsa_files: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert aicert_main(["trust", "install", "tsa", "--from", str(tsa_files[0])]) == 0
    capsys.readouterr()
    code, out = verify(run, tmp_path, stamped(run, tsa_url), capsys)
    assert code == 0, out
    assert "timestamp" in json.loads(out)["checks"]
    # --tsa-bundle replaces the store: a bundle of another TSA alone does not trust this one
    code, out = verify_trusting_another_tsa(run, tsa_url, tmp_path, capsys)
    assert code == 1 and failure(out)["check"] == "timestamp"


def test_the_tsa_store_is_never_an_ak_root(tsa_files: tuple[Path, Path, Path], own_trust_dir: Path) -> None:
    install_named("tsa", tsa_files[0].read_bytes(), "root.pem", own_trust_dir)
    with pytest.raises(TrustError, match="time-stamping authorities, not AK roots"):
        load_trust_store(["tsa"], [], own_trust_dir)


def test_a_token_from_an_untrusted_tsa_fails_the_timestamp_check(
    run: Run, tsa_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = verify_trusting_another_tsa(run, tsa_url, tmp_path, capsys)
    assert code == 1
    assert failure(out)["check"] == "timestamp"


def test_a_token_over_other_bytes_fails_the_timestamp_check(
    run: Run,
    tsa_url: str,
    tsa_files: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    certificate = copy.deepcopy(run.certificate)
    certificate["evidence"]["timestamp"] = request_timestamp(tsa_url, b"another quote's signature")
    code, out = verify(run, tmp_path, certificate, capsys, "--tsa-bundle", str(tsa_files[0]))
    assert code == 1
    doc = failure(out)
    assert doc["check"] == "timestamp" and "over other bytes" in doc["reason"]


def test_a_token_dated_after_the_ak_certificate_expired_fails_the_chain(
    run: Run, tsa_files: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, cert, key = tsa_files
    with LocalTsa(cert, key, at=AFTER_EXPIRY) as late:
        certificate = stamped(run, late.url)
    code, out = verify(run, tmp_path, certificate, capsys, "--tsa-bundle", str(root))
    assert code == 1
    doc = failure(out)
    assert doc["check"] == "ak-chain" and "expired on 2025-06-01T00:00:00Z" in doc["reason"]


def test_a_mangled_token_is_unusable_input(
    run: Run, tsa_files: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certificate = copy.deepcopy(run.certificate)
    certificate["evidence"]["timestamp"] = base64.b64encode(b"\x30\x03\x02\x01\x00").decode()
    code, out = verify(run, tmp_path, certificate, capsys, "--tsa-bundle", str(tsa_files[0]))
    assert code == 2 and "evidence.timestamp" in out


def test_an_unreachable_tsa_is_a_clear_error() -> None:
    with pytest.raises(TimestampError, match="did not answer"):
        request_timestamp("http://127.0.0.1:9/", b"signature", timeout=2)


def test_the_agent_run_seals_with_a_timestamp(
    tsa_files: tuple[Path, Path, Path], swtpm: Swtpm, tmp_path: Path
) -> None:
    made = make_run(tmp_path, swtpm.spec)
    out = tmp_path / "stamped" / "certificate.json"
    root, cert, key = tsa_files
    with LocalTsa(cert, key) as tsa:  # the real clock: the dev AK certificate was made just now
        made.agent(
            "run",
            "--inputs",
            f"data={made.data}",
            "--outputs",
            str(tmp_path / "model2"),
            "--certificate",
            str(out),
            "--tsa-url",
            tsa.url,
            "--",
            sys.executable,
            "-c",
            "pass",
        )
    assert json.loads(out.read_text())["evidence"]["timestamp"]
    argv = ["verify", str(out), "--trust-bundle", str(made.ca_dir / "dev-ca.pem"), "--tsa-bundle", str(root)]
    assert aicert_main(argv) == 0


# --- the token's accuracy and its time against the verification time ------------------------------


def stamped_at(run: Run, tsa_files: tuple[Path, Path, Path], at: str) -> Json:
    _root, cert, key = tsa_files
    with LocalTsa(cert, key, at=at) as tsa:
        return stamped(run, tsa.url)


@pytest.mark.parametrize(
    ("gen_time", "reason"),
    [
        ("2025-06-01T00:00:00Z", "expired on 2025-06-01T00:00:00Z (checked at 2025-06-01T00:00:01Z)"),
        ("2025-01-01T00:00:00Z", "not valid before 2025-01-01T00:00:00Z (checked at 2024-12-31T23:59:59Z)"),
    ],
)
def test_the_ak_certificate_must_be_valid_over_the_tokens_whole_accuracy(
    run: Run,
    tsa_files: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    gen_time: str,
    reason: str,
) -> None:
    """The Go TSA states an accuracy of 1 s: a token dated at the edge of the AK certificate's
    validity does not show that the quote was signed inside it."""
    certificate = stamped_at(run, tsa_files, gen_time)
    code, out = verify(run, tmp_path, certificate, capsys, "--tsa-bundle", str(tsa_files[0]))
    assert code == 1
    doc = failure(out)
    assert doc["check"] == "ak-chain" and reason in doc["reason"]


def test_a_token_dated_after_the_verification_time_fails_the_timestamp_check(
    run: Run,
    tsa_url: str,
    tsa_files: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = verify(
        run,
        tmp_path,
        stamped(run, tsa_url),
        capsys,
        "--tsa-bundle",
        str(tsa_files[0]),
        "--at",
        "2025-02-01T00:00:00Z",
    )
    assert code == 1
    doc = failure(out)
    assert doc["check"] == "timestamp"
    assert "dated 2025-03-01T00:00:00Z ± 1 s, after 2025-02-01T00:00:00Z" in doc["reason"]


def test_a_token_dated_in_the_future_fails_the_timestamp_check(
    run: Run, tsa_files: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A TSA whose clock (or key) went wrong dates a signature years ahead: never trusted."""
    certificate = stamped_at(run, tsa_files, "2034-06-01T00:00:00Z")  # the TSA certificate is still valid
    code, out = verify(run, tmp_path, certificate, capsys, "--tsa-bundle", str(tsa_files[0]))
    assert code == 1
    doc = failure(out)
    assert doc["check"] == "timestamp" and "dated 2034-06-01T00:00:00Z" in doc["reason"]


# --- what the token carries besides its signature --------------------------------------------------


def test_the_tsa_named_is_the_one_that_signed_not_a_certificate_appended_to_the_token(
    run: Run,
    tsa_url: str,
    tsa_files: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Attack: the token's certificate list is not signed. A certificate with the TSA's issuer and
    serial number but another subject, appended to a genuine token, must not be shown as the TSA."""
    root, cert, _key = tsa_files
    real = x509.load_pem_x509_certificate(cert.read_bytes())
    impostor_root, impostor_root_key = tsa_root("test TSA root")  # the real root's name, another key
    impostor, _ = tsa_certificate(
        impostor_root, impostor_root_key, common_name="Trusted Big TSA", serial=real.serial_number
    )
    certificate = stamped(run, tsa_url)
    response = base64.b64decode(certificate["evidence"]["timestamp"])
    certificate["evidence"]["timestamp"] = base64.b64encode(
        with_certificates(response, [der(impostor)])
    ).decode()
    code, out = verify(run, tmp_path, certificate, capsys, "--tsa-bundle", str(root))
    assert code == 0, out
    notes = json.loads(out)["notes"]
    assert any("by CN=test TSA unit;" in note for note in notes) and "Trusted Big TSA" not in out


def test_an_appended_x509_v2_certificate_is_unusable_input_not_a_traceback(
    run: Run,
    tsa_url: str,
    tsa_files: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tsa_files[0]
    v2 = as_version_2(x509.load_pem_x509_certificate(root.read_bytes()).public_bytes(Encoding.DER))
    certificate = stamped(run, tsa_url)
    response = base64.b64decode(certificate["evidence"]["timestamp"])
    certificate["evidence"]["timestamp"] = base64.b64encode(with_certificates(response, [v2])).decode()
    code, out = verify(run, tmp_path, certificate, capsys, "--tsa-bundle", str(root))
    assert code == 2
    doc = failure(out)
    assert doc["error"] == "unusable-input" and doc["field"].startswith("evidence.timestamp.certificates[")
    assert "X509 version" in doc["reason"]


def test_the_same_tsa_root_given_twice_is_not_a_traceback(
    run: Run,
    tsa_url: str,
    tsa_files: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tsa_files[0]
    twice = tmp_path / "twice.pem"
    twice.write_bytes(root.read_bytes() * 2)
    certificate = stamped(run, tsa_url)
    code, out = verify(
        run, tmp_path, certificate, capsys, "--tsa-bundle", str(root), "--tsa-bundle", str(root)
    )
    assert code == 0, out
    code, out = verify(run, tmp_path, certificate, capsys, "--tsa-bundle", str(twice))
    assert code == 0, out


def test_the_sigstore_bundle_carries_the_token_and_verifies_after_the_ak_certificate_expired(
    run: Run,
    tsa_url: str,
    tsa_files: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The Go TSA's token, as the agent puts it in aicert.sigstore.json, dates the bundle as it dates
    the certificate; the bundle without it fails ak-chain, as the certificate without it does."""
    from tests.soft_tpm import SoftTpm

    from aicert_agent.bundling import sign_bundle

    certificate = stamped(run, tsa_url)
    bundle = sign_bundle(certificate, SoftTpm(run.ak_key))
    (token,) = bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
    assert token["signedTimestamp"] == certificate["evidence"]["timestamp"]
    code, out = verify(run, tmp_path, bundle, capsys, "--tsa-bundle", str(tsa_files[0]))
    assert code == 0, out
    assert {"timestamp", "ak-chain", "envelope-signature"} <= set(json.loads(out)["checks"])
    del bundle["verificationMaterial"]["timestampVerificationData"]
    code, out = verify(run, tmp_path, bundle, capsys, "--tsa-bundle", str(tsa_files[0]))
    assert code == 1 and failure(out)["check"] == "ak-chain", out
