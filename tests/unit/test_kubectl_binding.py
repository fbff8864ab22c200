"""`kubectl aicert verify NAME`: the certificate must belong to the resource it was read from.

The binding checks (aicert.verify.binding) get plain dicts: a CertifiedTraining as `kubectl get
-o json` prints it and a statement. Each test tampers with exactly one field and expects exactly
that check to fail. The CLI tests run the plugin against a stand-in kubectl (a script printing a
resource) with the cryptographic verification stubbed: it is tested elsewhere, on real quotes.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.pki import issue

from aicert.certificate import Statement, convert
from aicert.cli import kubectl_plugin
from aicert.cli.pipes import EXIT_CLOSED_PIPE
from aicert.tpm.attest import ClockInfo
from aicert.trust import TrustStore
from aicert.verify import (
    BindingCheck,
    Check,
    MalformedError,
    VerificationError,
    VerifiedTraining,
    Verifier,
    check_binding,
)

UID = "3f6d2c1e-0000-4000-8000-000000000001"
OTHER_UID = "9a1b7c3d-0000-4000-8000-000000000002"
ROOT = "5c" * 32


def statement_json(namespace: str | None = "default", name: str = "digits", uid: str | None = UID) -> Any:
    run: dict[str, Any] = {"id": f"{name}-0", "name": name, "attempt": 0, "spec": {"image": "job"}}
    if namespace is not None:
        run["namespace"] = namespace
    if uid is not None:
        run["uid"] = uid
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "model", "digest": {"sha256": ROOT}}],
        "predicateType": "https://aicert.dev/training/v1",
        "predicate": {
            "run": run,
            "image": {"ref": "registry.local/job:1", "digest": "sha256:" + "1" * 64},
            "inputs": [{"name": "data", "root": "2" * 64, "files": 1, "bytes": 12}],
            "outputs": {"name": "model", "root": ROOT, "files": 2, "bytes": 6338},
            "node": {"name": "gpu-1", "assurance": "dev", "bootPcrs": {"0": "0" * 64}},
            "startedOn": "2026-01-31T12:00:00Z",
            "finishedOn": "2026-01-31T12:01:00Z",
        },
    }


def verified(statement: Any | None) -> VerifiedTraining:
    """What Verifier.verify returns; the binding checks only read its statement."""
    return VerifiedTraining(
        format="aicert.dev/v1alpha1" if statement is not None else "aicert-legacy",
        assurance="dev",
        statement=convert(statement, Statement) if statement is not None else None,
        events=(),
        ak_subject="CN=ak",
        trust_root="CN=dev CA",
        trust_source="bundle",
        clock=ClockInfo(clock=1, reset_count=0, restart_count=0, safe=True),
        passed=(Check.AK_CHAIN, Check.STATEMENT),
    )


def resource_json(certificate: str = "{}") -> dict[str, Any]:
    return {
        "apiVersion": "aicert.dev/v1alpha1",
        "kind": "CertifiedTraining",
        "metadata": {"name": "digits", "namespace": "default", "uid": UID, "generation": 1},
        "spec": {"image": "job"},
        "status": {
            "phase": "Succeeded",
            "modelDigest": "sha256:" + ROOT,
            "certificate": certificate,
            "node": "gpu-1",
        },
    }


def tampered(path: str, value: Any) -> dict[str, Any]:
    """The matching resource with one field (`a.b`) set to `value`, or removed when value is ...."""
    resource = copy.deepcopy(resource_json())
    *parents, last = path.split(".")
    node = resource
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return resource


def failed_checks(resource: dict[str, Any], statement: Any | None = None) -> list[BindingCheck]:
    result = verified(statement_json() if statement is None else statement)
    return [f.check for f in check_binding(resource, result)]


# --- the checks ---------------------------------------------------------------------------------


def test_the_certificate_of_this_resource_passes() -> None:
    assert check_binding(resource_json(), verified(statement_json())) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.namespace", "team-b"),
        ("metadata.name", "other"),
        ("metadata.uid", OTHER_UID),  # same name, recreated: another run
    ],
)
def test_resource_identity_fails_for_another_resource(path: str, value: str) -> None:
    assert failed_checks(tampered(path, value)) == [BindingCheck.RESOURCE_IDENTITY]


@pytest.mark.parametrize(
    "statement",
    [
        statement_json(namespace="team-b"),
        statement_json(name="other"),
        statement_json(uid=OTHER_UID),
        statement_json(uid=None),  # a run outside Kubernetes (`aicert-agent run`) names no resource
        statement_json(namespace=None),
    ],
    ids=["namespace", "name", "uid", "no-uid", "no-namespace"],
)
def test_resource_identity_fails_for_the_certificate_of_another_run(statement: Any) -> None:
    assert failed_checks(resource_json(), statement) == [BindingCheck.RESOURCE_IDENTITY]


def test_resource_identity_names_both_runs() -> None:
    resource = tampered("metadata.uid", OTHER_UID)
    [failure] = check_binding(resource, verified(statement_json(name="other")))
    assert str(failure) == (
        f"resource-identity: the certificate is for default/other (uid {UID}), "
        f"not default/digits (uid {OTHER_UID})"
    )


@pytest.mark.parametrize(
    "value",
    ["sha256:" + "0" * 64, ROOT, "sha512:" + ROOT, "", ...],
    ids=["other-digest", "no-prefix", "other-algorithm", "empty", "missing"],
)
def test_resource_model_digest_fails_when_status_names_another_model(value: Any) -> None:
    assert failed_checks(tampered("status.modelDigest", value)) == [BindingCheck.RESOURCE_MODEL_DIGEST]


def test_resource_model_digest_fails_when_the_certificate_has_another_output() -> None:
    statement = statement_json()
    statement["predicate"]["outputs"]["root"] = "7" * 64
    [failure] = check_binding(resource_json(), verified(statement))
    assert failure.check == BindingCheck.RESOURCE_MODEL_DIGEST
    assert (
        failure.reason
        == f"status.modelDigest is sha256:{ROOT}, but the certificate's output is sha256:{'7' * 64}"
    )


@pytest.mark.parametrize("value", ["Failed", "Running", "succeeded", ...])
def test_resource_phase_fails_unless_succeeded(value: Any) -> None:
    assert failed_checks(tampered("status.phase", value)) == [BindingCheck.RESOURCE_PHASE]


def test_phase_reason() -> None:
    [failure] = check_binding(tampered("status.phase", "Failed"), verified(statement_json()))
    assert str(failure) == "resource-phase: status.phase is Failed, not Succeeded"


def test_an_old_aicert_proof_belongs_to_no_resource() -> None:
    failures = check_binding(resource_json(), verified(None))
    assert [f.check for f in failures] == [BindingCheck.RESOURCE_IDENTITY, BindingCheck.RESOURCE_MODEL_DIGEST]


def test_every_failure_is_reported_in_check_order() -> None:
    resource = tampered("status.phase", "Failed")
    resource["status"]["modelDigest"] = "sha256:" + "0" * 64
    resource["metadata"]["uid"] = OTHER_UID
    assert failed_checks(resource) == list(BindingCheck)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("metadata.uid", ..., "metadata.uid"),
        ("metadata.uid", "", "metadata.uid"),
        ("metadata.uid", 7, "metadata.uid"),
        ("metadata.name", ..., "metadata.name"),
        ("metadata.namespace", ..., "metadata.namespace"),
        ("metadata", ..., "metadata"),
        ("metadata", [], "metadata"),
        ("status", "Succeeded", "status"),
        ("status.phase", {"value": "Succeeded"}, "status.phase"),
        ("status.modelDigest", 42, "status.modelDigest"),
    ],
)
def test_an_odd_resource_is_unusable_and_the_field_named(path: str, value: Any, field: str) -> None:
    with pytest.raises(MalformedError) as err:
        check_binding(tampered(path, value), verified(statement_json()))
    assert err.value.field == field


def test_a_resource_that_is_not_an_object_is_unusable() -> None:
    with pytest.raises(MalformedError):
        check_binding([resource_json()], verified(statement_json()))  # type: ignore[arg-type]


# --- the plugin ---------------------------------------------------------------------------------


@pytest.fixture
def stub_verifier(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Verifier.verify returns a verified result for statement_json() if given b"genuine"."""
    seen: list[str] = []

    def verify(self: Verifier, document: str, **_: Any) -> VerifiedTraining:
        seen.append(document)
        if document != "genuine":
            raise VerificationError(Check.QUOTE_SIGNATURE, "the signature does not verify")
        return verified(statement_json())

    monkeypatch.setattr(Verifier, "verify", verify)
    monkeypatch.setattr(kubectl_plugin.verify_cmd, "trust_store", lambda *_: TrustStore())
    return seen


def plugin(*args: str) -> int:
    return kubectl_plugin.main(["verify", "digits", *args])


def test_plugin_fetches_the_whole_resource_with_the_users_flags(
    kubectl: Path, stub_verifier: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    kubectl.write_text(json.dumps(resource_json("genuine")))
    assert plugin("-n", "default", "--context", "kind", "--kubeconfig", "/k") == 0
    argv = json.loads((kubectl.parent / "argv.json").read_text())
    assert argv == [
        "get",
        "certifiedtrainings.aicert.dev",
        "digits",
        "-o",
        "json",
        "--namespace",
        "default",
        "--context",
        "kind",
        "--kubeconfig",
        "/k",
    ]
    assert stub_verifier == ["genuine"]
    out = capsys.readouterr().out
    assert out.startswith("VERIFIED  assurance: dev")
    assert "  checks   ak-chain, statement, resource-identity, resource-model-digest, resource-phase\n" in out


def test_plugin_lists_the_binding_checks_in_json(
    kubectl: Path, stub_verifier: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    kubectl.write_text(json.dumps(resource_json("genuine")))
    assert plugin("--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] is True
    assert doc["checks"][-3:] == ["resource-identity", "resource-model-digest", "resource-phase"]


@pytest.mark.parametrize(
    ("path", "value", "check"),
    [
        ("metadata.uid", OTHER_UID, "resource-identity"),
        ("status.modelDigest", "sha256:" + "0" * 64, "resource-model-digest"),
        ("status.phase", "Failed", "resource-phase"),
    ],
)
def test_plugin_fails_a_certificate_of_another_resource(
    kubectl: Path,
    stub_verifier: list[str],
    capsys: pytest.CaptureFixture[str],
    path: str,
    value: str,
    check: str,
) -> None:
    resource = tampered(path, value)
    resource["status"]["certificate"] = "genuine"
    kubectl.write_text(json.dumps(resource))
    assert plugin() == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"NOT VERIFIED  check {check} failed: ")
    assert err.count("\n") == 1
    assert plugin("--json") == 1
    assert json.loads(capsys.readouterr().out)["check"] == check


def test_plugin_checks_the_cryptography_before_the_binding(
    kubectl: Path, stub_verifier: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    resource = tampered("metadata.uid", OTHER_UID)
    resource["status"]["certificate"] = "forged"
    kubectl.write_text(json.dumps(resource))
    assert plugin() == 1
    assert (
        capsys.readouterr().err
        == "NOT VERIFIED  check quote-signature failed: the signature does not verify\n"
    )


def test_plugin_without_a_certificate_is_unusable(
    kubectl: Path, stub_verifier: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    resource = tampered("status.certificate", ...)
    resource["status"]["phase"] = "Running"
    kubectl.write_text(json.dumps(resource))
    assert plugin() == 2
    assert "CertifiedTraining default/digits has no certificate yet (phase Running" in capsys.readouterr().err
    assert stub_verifier == []


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [("metadata.uid", ..., "metadata.uid"), ("status", "Succeeded", "status")],
)
def test_plugin_names_an_odd_field(
    kubectl: Path,
    stub_verifier: list[str],
    capsys: pytest.CaptureFixture[str],
    path: str,
    value: Any,
    field: str,
) -> None:
    kubectl.write_text(json.dumps(tampered(path, value)))
    assert plugin("--json") == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["field"] == field
    assert err.startswith(f"kubectl aicert: {field}: ")
    assert stub_verifier == []


def test_plugin_reports_kubectl_errors(
    kubectl: Path, stub_verifier: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    kubectl.with_name("kubectl").write_text(
        f"#!{sys.executable}\nimport sys\n"
        "sys.exit('Error from server (NotFound): certifiedtrainings.aicert.dev \"digits\" not found')\n"
    )
    assert plugin() == 2
    assert capsys.readouterr().err == (
        'kubectl aicert: Error from server (NotFound): certifiedtrainings.aicert.dev "digits" not found\n'
    )


def test_plugin_checks_its_flags_before_asking_the_cluster(
    kubectl: Path, stub_verifier: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    kubectl.write_text(json.dumps(resource_json("genuine")))
    assert plugin("--at", "yesterday") == 2
    assert capsys.readouterr().err.startswith("kubectl aicert: --at: ")
    assert not (kubectl.parent / "argv.json").exists()


def test_plugin_ends_quietly_on_a_closed_pipe(kubectl: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(issue("test CA").pem)
    kubectl.write_text(json.dumps(tampered("status.certificate", ...)))  # exit 2, but --json prints
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written, like `| head -0`
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "aicert.cli.kubectl_plugin",
                "verify",
                "digits",
                "--json",
                "--trust-bundle",
                str(bundle),
            ],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (kubectl.parent / "argv.json").exists()  # it got as far as the cluster
    assert "Traceback" not in done.stderr, done.stderr
    assert "has no certificate yet" in done.stderr
    assert done.returncode == EXIT_CLOSED_PIPE
