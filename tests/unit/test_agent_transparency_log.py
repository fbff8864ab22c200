"""The agent's Rekor v2 client (aicert_agent.transparency) against a real HTTP server on loopback:
it sends the CreateEntryRequest rekor-tiles reads, keeps an answer only when it checks out against
the log key, and fails with a reason (never an exception the seal does not expect) on a log that is
down, refuses, answers too much, or answers with an entry of something else. The sealer then
publishes the certificate without the entry and its Certified condition says why.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from tests.local_http import serving
from tests.soft_tpm import Run, SoftTpm, certified_run
from tests.unit.test_tlog_inclusion import RECORDED, Log, envelope_entry_body

from aicert.bundle import read_bundle
from aicert.tlog import hashedrekord_request
from aicert_agent.bundling import sign_bundle
from aicert_agent.kube import AgentKube
from aicert_agent.recorder import AkIdentity
from aicert_agent.sealing import Sealer, certified_message
from aicert_agent.transparency import (
    ENTRIES_PATH,
    MAX_RESPONSE_BYTES,
    TransparencyLog,
    TransparencyLogError,
    log_entry,
    transparency_log,
)
from aicert_localcluster.rekor import free_port

Json = dict[str, Any]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> Run:
    return certified_run(tmp_path_factory.mktemp("agent-tlog"), azure_dir)


@pytest.fixture
def bundle(run: Run) -> Json:
    return sign_bundle(copy.deepcopy(run.certificate), SoftTpm(run.ak_key))


def ak_pem(run: Run) -> str:
    return str(run.certificate["evidence"]["ak"]["public"])


def test_the_request_is_rekor_v2s_and_a_genuine_answer_is_kept(run: Run, bundle: Json) -> None:
    log = Log()
    answer_entry = log.add(envelope_entry_body(run, bundle))
    with serving("/") as server:
        server.body = json.dumps({**answer_entry, "inclusionPromise": None}).encode()
        server.status = 201
        url = server.url.rstrip("/")
        kept = log_entry(bundle, ak_pem(run), url, log.key.public_key())
    ((path, body),) = server.posted
    _, envelope = read_bundle(bundle)
    expected = hashedrekord_request(
        envelope.signed_bytes, envelope.signature, load_pem_public_key(ak_pem(run).encode())
    )
    assert (path, json.loads(body)) == (ENTRIES_PATH, expected)
    assert kept == answer_entry  # the null promise left out


def test_a_log_that_is_down_fails_with_a_reason(run: Run, bundle: Json) -> None:
    with pytest.raises(TransparencyLogError, match="did not answer"):
        log_entry(bundle, ak_pem(run), f"http://127.0.0.1:{free_port()}", Log().key.public_key(), timeout=5)


def test_a_log_answering_slowly_is_given_up_at_the_time_out(run: Run, bundle: Json) -> None:
    """Each byte comes well within the socket's time-out, so only a deadline over the whole answer
    stops the agent's seal worker from waiting as long as the log likes."""
    with serving("/") as server:
        server.body = b"{" + b" " * 60 + b"}"
        server.drip = 0.05
        with pytest.raises(TransparencyLogError, match="longer than"):
            log_entry(bundle, ak_pem(run), server.url.rstrip("/"), Log().key.public_key(), timeout=0.5)


def test_a_refusal_fails_with_its_status(run: Run, bundle: Json) -> None:
    with serving("/") as server:
        server.status, server.body = 400, b'{"code":3,"message":"invalid hashedrekord request"}'
        with pytest.raises(TransparencyLogError, match=r"answered 400: .*invalid hashedrekord request"):
            log_entry(bundle, ak_pem(run), server.url, Log().key.public_key())


def test_an_oversized_answer_is_not_read(run: Run, bundle: Json) -> None:
    with serving("/") as server:
        server.body = b" " * (MAX_RESPONSE_BYTES + 1)
        with pytest.raises(TransparencyLogError, match="more than"):
            log_entry(bundle, ak_pem(run), server.url, Log().key.public_key())


def test_an_entry_of_something_else_is_not_kept(run: Run, bundle: Json) -> None:
    """A genuine answer of a real rekor-tiles, for another envelope, with that log's genuine key."""
    recorded = json.loads(RECORDED.read_text())
    with serving("/") as server:
        server.body = json.dumps(recorded["entries"][0]["response"]).encode()
        with pytest.raises(TransparencyLogError, match="does not check out: the logged entry is not this"):
            log_entry(bundle, ak_pem(run), server.url, load_pem_public_key(recorded["logPublicKey"].encode()))


def test_an_answer_under_another_logs_checkpoint_is_not_kept(run: Run, bundle: Json) -> None:
    with serving("/") as server:
        server.body = json.dumps(Log().add(envelope_entry_body(run, bundle))).encode()
        with pytest.raises(TransparencyLogError, match="not signed by a pinned log key"):
            log_entry(bundle, ak_pem(run), server.url, Log().key.public_key())


def test_url_and_key_go_together(tmp_path: Path) -> None:
    assert transparency_log(None, None) is None
    with pytest.raises(TransparencyLogError, match="go together"):
        transparency_log("http://127.0.0.1:1", None)
    (tmp_path / "key.pem").write_text("not a key")
    with pytest.raises(TransparencyLogError, match="not a PEM public key"):
        transparency_log("http://127.0.0.1:1", tmp_path / "key.pem")


def test_the_sealer_publishes_without_the_entry_and_says_why(run: Run, bundle: Json, tmp_path: Path) -> None:
    ctx = cast(Any, SimpleNamespace(namespace="ml", pod={"metadata": {"name": "run-1"}}))
    down = TransparencyLog(f"http://127.0.0.1:{free_port()}", Log().key.public_key(), timeout=5)
    sealer = Sealer(cast(AgentKube, None), "gpu-1", "dev", AkIdentity("", ()), tlog=down)
    published, said = sealer._log(ctx, run.certificate, bundle, tmp_path)
    assert published == bundle and published["verificationMaterial"]["tlogEntries"] == []
    assert said.startswith(
        "; the transparency log submission failed, the bundle has no log entry: the log at"
    )
    without = Sealer(cast(AgentKube, None), "gpu-1", "dev", AkIdentity("", ()))
    assert without._log(ctx, run.certificate, bundle, tmp_path) == (bundle, "")


def test_a_logs_own_words_cannot_make_the_status_write_fail(run: Run, bundle: Json, tmp_path: Path) -> None:
    """A log answering an error with text the API server would refuse (a character beyond the BMP,
    sent as a surrogate pair) or a very long one: the Certified message is still one it takes."""
    ctx = cast(Any, SimpleNamespace(namespace="ml", pod={"metadata": {"name": "run-1"}}))
    with serving("/") as server:
        server.status, server.body = 500, ("\U0001f600" * 400).encode()
        sealer = Sealer(
            cast(AgentKube, None),
            "gpu-1",
            "dev",
            AkIdentity("", ()),
            tlog=TransparencyLog(server.url, Log().key.public_key()),
        )
        _, said = sealer._log(ctx, run.certificate, bundle, tmp_path)
    assert "\U0001f600" in said
    message = certified_message("ab" * 32, "gpu-1", said)
    assert "\U0001f600" not in message and "\\U0001f600" in message
    assert message.startswith(
        f"model sha256:{'ab' * 32} certified by a TPM quote on gpu-1; the transparency log"
    )
