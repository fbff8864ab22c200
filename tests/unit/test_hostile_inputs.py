"""Hostile input never crashes or hangs the verifier.

Every input below is something an attacker (or an accident) can hand `aicert verify` (or
`aicert-agent`): it must end with exit 2 (unusable input) or 1 (a check failed) and exactly one
line naming the problem, never a traceback, a hang or unbounded memory. Inputs that could hang or
exhaust memory run in a subprocess, with a timeout that only guards against a hang and an
address-space limit. The hostile certificates and old proofs are genuine ones (tests.soft_tpm)
with one thing changed, so each reaches the code it attacks.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from tests.pki import Issued
from tests.soft_tpm import (
    IMAGE_EVENT,
    OUTPUTS_EVENT,
    Json,
    Run,
    b64_der,
    certificate_with_key,
    certified_run,
    pem_key,
)

from aicert.cli import main as aicert_main
from aicert_agent.cli import main as agent_main

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> Run:
    return certified_run(tmp_path_factory.mktemp("certified"), azure_dir)


# --- hostile documents --------------------------------------------------------------------------


def with_value(document: Json, path: str, value: Any) -> Json:
    """A copy of `document` with the field at `a.b.0.c` set to `value`."""
    changed = copy.deepcopy(document)
    *parents, last = path.split(".")
    node: Any = changed
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return changed


def with_raw(document: Json, path: str, raw_json: str) -> str:
    """`document` as JSON text with the value at `path` replaced by `raw_json` verbatim."""
    return json.dumps(with_value(document, path, "@@RAW@@")).replace('"@@RAW@@"', raw_json)


def with_duplicate(document: Json, path: str, key: str, value: Any) -> str:
    """`document` as JSON text whose object at `path` has `key` a second time."""
    marked = with_value(document, f"{path}.@@DUP@@", 0) if path else {**document, "@@DUP@@": 0}
    return json.dumps(marked).replace('"@@DUP@@": 0', f"{json.dumps(key)}: {json.dumps(value)}")


ED25519_OID = bytes.fromhex("06032b6570")  # 1.3.101.112
UNKNOWN_OID = bytes.fromhex("06032b6572")  # 1.3.101.114: no key algorithm


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    length = (
        bytes([size])
        if size < 128
        else bytes([0x80 | ((size.bit_length() + 7) // 8)])
        + size.to_bytes((size.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + length + body


def certificate_with_unknown_key(ca: Issued) -> x509.Certificate:
    """Correctly signed by `ca`, for a key of an algorithm nobody knows."""
    tbs = certificate_with_key(ca, ed25519.Ed25519PrivateKey.generate().public_key()).tbs_certificate_bytes
    tbs = tbs.replace(ED25519_OID, UNKNOWN_OID)
    signature = ca.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    ecdsa_sha256 = _der(0x30, bytes.fromhex("06082a8648ce3d040302"))
    return x509.load_der_x509_certificate(_der(0x30, tbs + ecdsa_sha256 + _der(0x03, b"\0" + signature)))


def unknown_algorithm_key() -> str:
    der = pem_key(ed25519.Ed25519PrivateKey.generate().public_key())
    spki = base64.b64decode("".join(der.splitlines()[1:-1])).replace(ED25519_OID, UNKNOWN_OID)
    return "-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(spki).decode() + "-----END PUBLIC KEY-----\n"


def signed_legacy_case(events: list[str], says: str) -> Case:
    """A genuinely quoted old proof whose events are `events`, checked with --model."""

    def argv(run: Run, tmp: Path) -> list[str]:
        proof = run.signed_legacy_proof(events)
        return run.verify_argv(run.write(tmp / "proof.json", proof), "--model", str(run.model))

    return Case(argv, 2, says)


DEEP = "[" * 100_000 + "]" * 100_000
DIGITS_5000 = "1" + "0" * 4999


@dataclass(frozen=True)
class Case:
    argv: Callable[[Run, Path], list[str]]
    exit: int
    says: str
    program: str = "aicert"
    isolated: bool = False  # could hang or exhaust memory: run in a subprocess
    stdin: str | None = None


def cert_case(document: Callable[[Run], Json | str | bytes], exit: int, says: str) -> Case:
    return Case(
        lambda run, tmp: run.verify_argv(run.write(tmp / "certificate.json", document(run))), exit, says
    )


def legacy_case(document: Callable[[Run], Json | str | bytes], exit: int, says: str, *more: str) -> Case:
    return Case(
        lambda run, tmp: run.legacy_argv(run.write(tmp / "proof.json", document(run)), *more), exit, says
    )


def policy_case(policy: Callable[[Path], str], says: str, *, isolated: bool = False) -> Case:
    def argv(run: Run, tmp: Path) -> list[str]:
        return run.legacy_argv(run.write(tmp / "proof.json", run.legacy_proof), "--policy", policy(tmp))

    return Case(argv, 2, says, isolated=isolated)


def fifo(tmp: Path) -> str:
    os.mkfifo(tmp / "fifo")
    return str(tmp / "fifo")


def sparse(tmp: Path, size: int) -> str:
    with open(tmp / "big.json", "wb") as fh:
        fh.truncate(size)
    return str(tmp / "big.json")


def write(tmp: Path, text: str) -> str:
    (tmp / "policy.json").write_text(text)
    return str(tmp / "policy.json")


CASES: dict[str, Case] = {
    # nesting, numbers, text
    "100k-deep-nesting": cert_case(
        lambda r: with_raw(r.certificate, "statement.predicate.run.spec.gpus", DEEP),
        2,
        "deeper than 64 levels",
    ),
    "5000-digit-integer": cert_case(
        lambda r: with_raw(r.certificate, "statement.predicate.run.attempt", DIGITS_5000),
        2,
        "statement.predicate.run.attempt: integer 10000000000000000000… (5000 digits) is outside",
    ),
    "integer-beyond-jcs": cert_case(
        lambda r: with_value(r.certificate, "statement.predicate.run.spec.gpus", 2**53),
        2,
        "statement.predicate.run.spec.gpus: integer 9007199254740992 is outside ±(2^53-1)",
    ),
    "nan": cert_case(
        lambda r: with_raw(r.certificate, "statement.predicate.run.spec.gpus", "NaN"),
        2,
        "gpus: NaN is not a JSON number",
    ),
    "float-overflow": cert_case(
        lambda r: with_raw(r.certificate, "statement.predicate.run.spec.gpus", "1e400"),
        2,
        "gpus: number 1e400 is too large",
    ),
    "lone-surrogate": cert_case(
        lambda r: with_value(r.certificate, "statement.predicate.run.name", "digits\ud800"),
        2,
        "statement.predicate.run.name: contains a lone UTF-16 surrogate",
    ),
    "surrogate-as-utf8-bytes": cert_case(
        lambda r: (
            json.dumps(r.certificate)
            .replace("digits", "digits\\u00e9")
            .encode()
            .replace(b"\\u00e9", b"\xed\xa0\x80")
        ),
        2,
        "the certificate is not UTF-8",
    ),
    # duplicate keys: a first-key-wins reader would see another document
    "duplicate-statement": cert_case(
        lambda r: with_duplicate(r.certificate, "", "statement", {"_type": "another statement"}),
        2,
        "unusable input: has the key 'statement' more than once",
    ),
    "duplicate-run-name": cert_case(
        lambda r: with_duplicate(r.certificate, "statement.predicate.run", "name", "other"),
        2,
        "statement.predicate.run: has the key 'name' more than once",
    ),
    "duplicate-quoted-pcr": cert_case(
        lambda r: with_duplicate(r.certificate, "evidence.quote.pcrs", "23", "00" * 32),
        2,
        "evidence.quote.pcrs: has the key '23' more than once",
    ),
    # AK keys of an algorithm no TPM has, or nobody knows
    "ak-public-ed25519": cert_case(
        lambda r: with_value(
            r.certificate, "evidence.ak.public", pem_key(ed25519.Ed25519PrivateKey.generate().public_key())
        ),
        2,
        "evidence.ak.public: key type Ed25519: a TPM attestation key is RSA or ECC",
    ),
    "ak-public-dsa": cert_case(
        lambda r: with_value(
            r.certificate, "evidence.ak.public", pem_key(dsa.generate_private_key(1024).public_key())
        ),
        2,
        "evidence.ak.public: key type DSA",
    ),
    "ak-public-unknown-algorithm": cert_case(
        lambda r: with_value(r.certificate, "evidence.ak.public", unknown_algorithm_key()),
        2,
        "evidence.ak.public: unreadable public key",
    ),
    "ak-certificate-ed25519": cert_case(
        lambda r: with_value(
            r.certificate,
            "evidence.ak.certificateChain",
            [
                certificate_with_key(r.ca, ed25519.Ed25519PrivateKey.generate().public_key())
                .public_bytes(Encoding.PEM)
                .decode()
            ],
        ),
        1,
        "check ak-key failed",
    ),
    "ak-certificate-unknown-algorithm": cert_case(
        lambda r: with_value(
            r.certificate,
            "evidence.ak.certificateChain",
            [certificate_with_unknown_key(r.ca).public_bytes(Encoding.PEM).decode()],
        ),
        2,
        "evidence.ak.certificateChain[0]: unreadable certificate: its public key algorithm is not supported",
    ),
    # old AICert proofs: their events are JSON inside JSON strings
    "legacy-surrogate-in-event-string": signed_legacy_case(
        [IMAGE_EVENT.replace("sha256:", "sha256:\ud800"), OUTPUTS_EVENT],
        "event_log[0]: contains a lone UTF-16 surrogate",
    ),
    "legacy-surrogate-inside-event": signed_legacy_case(
        [IMAGE_EVENT.replace("sha256:", "sha256:\\ud800"), OUTPUTS_EVENT],
        "event_log[0].content.resolved.id: contains a lone UTF-16 surrogate",
    ),
    "legacy-duplicate-in-event": signed_legacy_case(
        [
            IMAGE_EVENT,
            OUTPUTS_EVENT.replace('"event_type": "outputs"', '"event_type": "outputs", "event_type": "x"'),
        ],
        "event_log[1]: has the key 'event_type' more than once",
    ),
    "legacy-duplicate-in-proof": legacy_case(
        lambda r: with_duplicate(r.legacy_proof, "", "event_log", [OUTPUTS_EVENT]),
        2,
        "has the key 'event_log' more than once",
    ),
    "legacy-image-content-not-object": signed_legacy_case(
        ['{"event_type": "input_image", "content": "sha256:2f13"}', OUTPUTS_EVENT],
        "event_log[0].content: is a string, not an object",
    ),
    "legacy-image-resolved-not-object": signed_legacy_case(
        ['{"event_type": "input_image", "content": {"resolved": ["sha256:2f13"]}}', OUTPUTS_EVENT],
        "event_log[0].content.resolved: is an array, not an object",
    ),
    "legacy-outputs-not-array": signed_legacy_case(
        [IMAGE_EVENT, '{"event_type": "outputs", "content": {"spec": {"path": "weights.bin"}}}'],
        "event_log[1].content: is an object, not an array",
    ),
    "legacy-output-not-object": signed_legacy_case(
        [IMAGE_EVENT, '{"event_type": "outputs", "content": ["weights.bin"]}'],
        "event_log[1].content[0]: is a string, not an object",
    ),
    "legacy-output-spec-not-object": signed_legacy_case(
        [
            IMAGE_EVENT,
            '{"event_type": "outputs", "content": [{"spec": "weights.bin", "resolved": {"hash": "00"}}]}',
        ],
        "event_log[1].content[0].spec: is a string, not an object",
    ),
    "legacy-ak-unknown-algorithm": Case(
        lambda r, tmp: r.verify_argv(
            r.write(
                tmp / "proof.json",
                with_value(
                    r.legacy_proof,
                    "remote_attestation.cert_chain",
                    [{"base64": b64_der(certificate_with_unknown_key(r.ca))}],
                ),
            )
        ),
        2,
        "remote_attestation.cert_chain[0]: is not a certificate: its public key algorithm is not supported",
    ),
    "legacy-ak-ed25519": Case(
        lambda r, tmp: r.verify_argv(
            r.write(
                tmp / "proof.json",
                with_value(
                    r.legacy_proof,
                    "remote_attestation.cert_chain",
                    [
                        {
                            "base64": b64_der(
                                certificate_with_key(r.ca, ed25519.Ed25519PrivateKey.generate().public_key())
                            )
                        }
                    ],
                ),
            )
        ),
        1,
        "check quote-signature failed: the quote has an rsassa-sha256 signature but the AK is not an RSA key",
    ),
    # --at at the ends of the calendar
    "at-year-1": legacy_case(
        lambda r: r.legacy_proof, 1, "check ak-chain failed", "--at", "0001-01-01T00:00:00Z"
    ),
    "at-year-9999": legacy_case(
        lambda r: r.legacy_proof, 1, "check ak-chain failed", "--at", "9999-12-31T23:59:59Z"
    ),
    "at-year-1-east": legacy_case(
        lambda r: r.legacy_proof,
        2,
        "--at: '0001-01-01T00:00:00+01:00' is outside years 1 to 9999",
        "--at",
        "0001-01-01T00:00:00+01:00",
    ),
    "at-year-9999-west": legacy_case(
        lambda r: r.legacy_proof,
        2,
        "--at: '9999-12-31T23:59:59-01:00' is outside",
        "--at",
        "9999-12-31T23:59:59-01:00",
    ),
    # files that are not regular files, or too large
    "certificate-fifo": Case(
        lambda r, tmp: r.verify_argv(fifo(tmp)), 2, "fifo is not a regular file (a FIFO)", isolated=True
    ),
    "certificate-dev-zero": Case(
        lambda r, tmp: r.verify_argv("/dev/zero"),
        2,
        "/dev/zero is not a regular file (a character device)",
        isolated=True,
    ),
    "certificate-stdin-endless": Case(
        lambda r, tmp: r.verify_argv("-"),
        2,
        "FILE: standard input is larger than 16 MiB",
        isolated=True,
        stdin="/dev/zero",
    ),
    "certificate-over-16-MiB": Case(
        lambda r, tmp: r.verify_argv(sparse(tmp, 16 * MiB + 1)), 2, "big.json is larger than 16 MiB"
    ),
    # trust and TSA bundles, and `trust install --from`: the same refusals (they hung, or read without end)
    "trust-bundle-fifo": Case(
        lambda r, tmp: [*r.verify_argv(r.write(tmp / "c.json", r.certificate)), "--trust-bundle", fifo(tmp)],
        2,
        "fifo is not a regular file (a FIFO)",
        isolated=True,
    ),
    "trust-bundle-dev-zero": Case(
        lambda r, tmp: [
            *r.verify_argv(r.write(tmp / "c.json", r.certificate)),
            "--trust-bundle",
            "/dev/zero",
        ],
        2,
        "/dev/zero is not a regular file (a character device)",
        isolated=True,
    ),
    "trust-bundle-over-1-MiB": Case(
        lambda r, tmp: [
            *r.verify_argv(r.write(tmp / "c.json", r.certificate)),
            "--trust-bundle",
            sparse(tmp, MiB + 1),
        ],
        2,
        "big.json is larger than 1 MiB",
    ),
    "tsa-bundle-fifo": Case(
        lambda r, tmp: [*r.verify_argv(r.write(tmp / "c.json", r.certificate)), "--tsa-bundle", fifo(tmp)],
        2,
        "fifo is not a regular file (a FIFO)",
        isolated=True,
    ),
    "trust-install-from-fifo": Case(
        lambda r, tmp: ["trust", "install", "dev", "--from", fifo(tmp)],
        2,
        "fifo is not a regular file (a FIFO)",
        isolated=True,
    ),
    "policy-fifo": policy_case(fifo, "--policy: ", isolated=True),
    "policy-dev-zero": policy_case(
        lambda tmp: "/dev/zero", "--policy: /dev/zero is not a regular file", isolated=True
    ),
    "policy-over-1-MiB": policy_case(lambda tmp: write(tmp, " " * MiB + "{}"), "is larger than 1 MiB"),
    "policy-duplicate-key": policy_case(
        lambda tmp: write(tmp, '{"minAssurance": "vtpm", "minAssurance": "legacy"}'),
        "policy: has the key 'minAssurance' more than once",
    ),
    "policy-duplicate-pcr": policy_case(
        lambda tmp: write(tmp, '{"bootPcrs": {"0": "' + "00" * 32 + '", "0": "' + "11" * 32 + '"}}'),
        "policy.bootPcrs: has the key '0' more than once",
    ),
    "policy-deep": policy_case(
        lambda tmp: write(tmp, '{"allowedImages": ' + DEEP + "}"), "deeper than 64 levels"
    ),
    # the agent
    "agent-bogus-tpm": Case(
        lambda r, tmp: ["--tpm", "bogus", "--state-dir", str(tmp / "state"), "rebase"],
        2,
        "aicert-agent: --tpm: unknown TPM kind 'bogus'",
        program="aicert-agent",
    ),
}


def _limit_memory() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (2048 * MiB, 2048 * MiB))


def run_isolated(argv: list[str], stdin: str | None) -> tuple[int, str]:
    source = open(stdin, "rb") if stdin else subprocess.DEVNULL  # noqa: SIM115
    try:
        done = subprocess.run(
            [sys.executable, "-m", "aicert.cli", *argv],
            stdin=source,
            capture_output=True,
            text=True,
            timeout=120,  # only a hang guard: a regression must fail, not block the suite
            preexec_fn=_limit_memory,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"aicert {' '.join(argv)} hung")
    finally:
        if stdin:
            source.close()  # type: ignore[union-attr]
    return done.returncode, done.stdout + done.stderr


def run_in_process(program: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    entry = agent_main if program == "aicert-agent" else aicert_main
    try:
        code = entry(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_ends_in_one_line_naming_the_problem(
    name: str, run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CASES[name]
    argv = case.argv(run, tmp_path)
    if case.isolated:
        code, output = run_isolated(argv, case.stdin)
    else:
        code, output = run_in_process(case.program, argv, capsys)
    assert "Traceback" not in output
    lines = output.splitlines()
    assert (code, len(lines)) == (case.exit, 1), output[-2000:]
    assert case.says in lines[0]
