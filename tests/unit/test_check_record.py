"""Each check is recorded where it runs; what a verification reports is that record, never a difference.

For every path through the verifier (a tpm2-quote certificate at dev, with and without a policy,
--model and --data; one at cvm with its platform evidence; an old AICert proof with and without
--model; `kubectl aicert verify` and its binding checks) every named check either ran and passed
or was skipped with a reason. A check whose recording is taken out (its check function replaced by
one that does nothing, or its record dropped) is never reported as passed: the verification fails
closed with `IncompleteVerification` (exit 1, naming the check).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cryptography import x509
from tests.cvm_vectors import KNOWN_GOOD, MEASUREMENT, CvmVector, make_vector, rsa_key
from tests.soft_tpm import AT, IMAGE_EVENT, OUTPUTS_EVENT, Run, SoftTpm, certified_run

from aicert.cli import kubectl_plugin
from aicert.cli import main as aicert_main
from aicert.trust import TrustAnchor, TrustStore
from aicert.verify import BindingCheck, Check, IncompleteVerification, Policy, VerifiedTraining, Verifier
from aicert.verify.checklog import CheckLog
from aicert.verify.policy import MinimumTcb
from aicert_agent.bundling import sign_bundle

WHEN = dt.datetime.fromisoformat(AT.replace("Z", "+00:00"))
NO_EGRESS = {"egress": "none", "policies": [{"name": "deny-all", "spec": "ab" * 32}]}


class CvmRun(NamedTuple):
    run: Run
    vector: CvmVector


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> Run:
    return certified_run(tmp_path_factory.mktemp("dev"), azure_dir)


@pytest.fixture(scope="module")
def cvm(tmp_path_factory: pytest.TempPathFactory, azure_dir: Path) -> CvmRun:
    """A cvm certificate: an RSA AK (as Azure's) named by a genuine HCL report and SEV-SNP report
    (test AMD roots), under a root that vouches for vtpm, from a pod with no network egress."""
    key = rsa_key(0)
    vector = make_vector(quote_ak=key.public_key())
    run = certified_run(
        tmp_path_factory.mktemp("cvm"),
        azure_dir,
        ak_key=key,
        assurance="cvm",
        platform=vector.evidence_platform(),
        network=NO_EGRESS,
    )
    return CvmRun(run, vector)


class Scenario(NamedTuple):
    verifier: Verifier
    document: str
    options: dict[str, Any]

    def verify(self) -> VerifiedTraining:
        return self.verifier.verify(self.document, at=WHEN, **self.options)


def dev_trust(run: Run) -> TrustStore:
    return TrustStore.from_pem_file(run.ca_pem)


def scenario(name: str, run: Run, cvm: CvmRun) -> Scenario:
    both_inputs = {"data": run.data, "labels": run.data.parent / "labels"}
    dev_policy = Policy(minAssurance="dev", bootPcrs={"0": "00" * 32}, allowedImages=["sha256:" + "cd" * 32])
    certificate = json.dumps(run.certificate)
    proof = json.dumps(run.signed_legacy_proof([IMAGE_EVENT, OUTPUTS_EVENT]))
    if name == "certificate":
        return Scenario(Verifier(dev_trust(run)), certificate, {})
    if name == "bundle":  # the certificate as a Sigstore bundle, signed by the (ECC) AK
        bundle = sign_bundle(json.loads(certificate), SoftTpm(run.ak_key))
        return Scenario(Verifier(dev_trust(run)), json.dumps(bundle), {})
    if name == "certificate-policy-model-data":
        options = {"model_dir": run.model, "data_dirs": both_inputs}
        return Scenario(Verifier(dev_trust(run), dev_policy), certificate, options)
    if name == "legacy":
        return Scenario(Verifier(dev_trust(run)), proof, {})
    if name == "legacy-policy-model":
        policy = Policy(allowedImages=["sha256:" + "cd" * 32])  # the image IMAGE_EVENT names
        return Scenario(Verifier(dev_trust(run), policy), proof, {"model_dir": run.model})
    root = x509.load_pem_x509_certificate(cvm.run.ca_pem.read_bytes())
    vtpm = TrustStore((TrustAnchor(root, "vtpm", "test vTPM root"),))
    cvm_certificate = json.dumps(cvm.run.certificate)
    if name in ("cvm", "cvm-bundle"):  # the bundle: signed by the RSA AK
        if name == "cvm-bundle":
            cvm_certificate = json.dumps(sign_bundle(cvm.run.certificate, SoftTpm(cvm.run.ak_key)))
        return Scenario(
            Verifier(vtpm, ark_fingerprints=cvm.vector.ark_fingerprints, paravisor_measurements=KNOWN_GOOD),
            cvm_certificate,
            {},
        )
    assert name == "cvm-policy-model-data"
    policy = Policy(
        minAssurance="cvm",
        bootPcrs={"7": "00" * 32},
        allowedImages=["sha256:" + "cd" * 32],
        egress="none",
        minimumTcb=MinimumTcb(snp=8),
        allowedMeasurements=[MEASUREMENT.hex()],
    )
    options = {"model_dir": cvm.run.model, "data_dirs": {"data": cvm.run.data}}
    return Scenario(
        Verifier(
            vtpm, policy, ark_fingerprints=cvm.vector.ark_fingerprints, paravisor_measurements=KNOWN_GOOD
        ),
        cvm_certificate,
        options,
    )


SCENARIOS = (
    "certificate",
    "certificate-policy-model-data",
    "bundle",
    "cvm",
    "cvm-bundle",
    "cvm-policy-model-data",
    "legacy",
    "legacy-policy-model",
)


@pytest.fixture(params=SCENARIOS)
def path(request: pytest.FixtureRequest, run: Run, cvm: CvmRun) -> Scenario:
    return scenario(request.param, run, cvm)


def recording(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Check | BindingCheck]]:
    """Every outcome recorded, as (kind, check), as the checks record them."""
    seen: list[tuple[str, Check | BindingCheck]] = []
    real_passed, real_skipped = CheckLog.passed, CheckLog.skipped

    def passed(self: CheckLog[Any], check: Any) -> None:
        seen.append(("passed", check))
        real_passed(self, check)

    def skipped(self: CheckLog[Any], check: Any, reason: str) -> None:
        seen.append(("skipped", check))
        real_skipped(self, check, reason)

    monkeypatch.setattr(CheckLog, "passed", passed)
    monkeypatch.setattr(CheckLog, "skipped", skipped)
    return seen


def forgetting(monkeypatch: pytest.MonkeyPatch, forgotten: Check | BindingCheck) -> None:
    """Drop every record of `forgotten`: as if its code ran (or decided to skip it) but said nothing."""
    real_passed, real_skipped = CheckLog.passed, CheckLog.skipped

    def passed(self: CheckLog[Any], check: Any) -> None:
        if check != forgotten:
            real_passed(self, check)

    def skipped(self: CheckLog[Any], check: Any, reason: str) -> None:
        if check != forgotten:
            real_skipped(self, check, reason)

    monkeypatch.setattr(CheckLog, "passed", passed)
    monkeypatch.setattr(CheckLog, "skipped", skipped)


def test_every_scenario_is_genuine_and_verifies(path: Scenario) -> None:
    """The base of the tests below: each path verifies as it is."""
    assert path.verify().passed


def test_each_check_ran_or_was_skipped_with_a_reason(path: Scenario, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = recording(monkeypatch)
    result = path.verify()
    skipped = dict(result.skipped)
    assert not set(result.passed) & set(skipped)
    assert set(result.passed) | set(skipped) == set(Check)
    assert all(reason.strip() for reason in skipped.values())
    # what is reported passed is exactly what recorded itself as passed, in the plan's order
    assert result.passed == tuple(c for c in Check if ("passed", c) in seen)
    assert tuple(skipped) == tuple(c for c in Check if ("skipped", c) in seen)


def test_the_cvm_and_policy_path_runs_every_check_but_the_timestamp_and_the_epoch_replay(
    run: Run, cvm: CvmRun
) -> None:
    """A checkpointed certificate (what the agent makes) at cvm, with every option: only the token
    check and the other log format's replay do not run."""
    result = scenario("cvm-policy-model-data", run, cvm).verify()
    assert result.assurance == "cvm"
    assert [c for c, _ in result.skipped] == [
        Check.TIMESTAMP,
        Check.ENVELOPE_SIGNATURE,
        Check.TLOG_INCLUSION,
        Check.EVENT_REPLAY,
    ]


@pytest.mark.parametrize("forgotten", list(Check))
def test_a_check_that_does_not_record_itself_fails_closed(
    path: Scenario, forgotten: Check, monkeypatch: pytest.MonkeyPatch
) -> None:
    forgetting(monkeypatch, forgotten)
    with pytest.raises(IncompleteVerification) as caught:
        path.verify()
    assert caught.value.check == forgotten
    assert "neither ran nor was skipped" in caught.value.reason


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = aicert_main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def nothing(*_args: object, **_kwargs: object) -> None:
    """A check taken out: it neither runs nor records anything."""


def no_files(*_args: object, **_kwargs: object) -> tuple[object, ...]:
    """A file comparison taken out: nothing hashed, nothing compared, nothing left out."""
    return ()


@pytest.mark.parametrize(
    ("target", "more", "first_missing"),
    [
        ("aicert.verify.verifier.check_ak_key", [], "ak-key"),
        ("aicert.verify.verifier.check_event_log", [], "event-sequence"),
        ("aicert.verify.verifier.check_statement", [], "statement"),
        ("aicert.verify.verifier.check_policy", ["--policy", "POLICY"], "policy-assurance"),
        ("aicert.verify.local_files.check_model_dir", ["--model", "MODEL"], "model-files"),
        ("aicert.verify.local_files.check_data_dirs", ["--data", "DATA"], "data-files"),
    ],
)
def test_a_certificate_check_taken_out_is_reported_failed_not_passed(
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    target: str,
    more: list[str],
    first_missing: str,
) -> None:
    policy = run.write(tmp_path / "policy.json", {"minAssurance": "dev"})
    more = [
        {"POLICY": policy, "MODEL": str(run.model), "DATA": f"data={run.data}"}.get(arg, arg) for arg in more
    ]
    argv = run.verify_argv(run.write(tmp_path / "c.json", run.certificate), *more, "--json")
    assert run_cli(argv, capsys)[0] == 0
    monkeypatch.setattr(target, no_files if target.startswith("aicert.verify.local_files") else nothing)
    code, output = run_cli(argv, capsys)
    assert code == 1, output
    assert f"NOT VERIFIED  check {first_missing} failed: " in output
    assert json.loads(output.splitlines()[0])["check"] == first_missing


def test_an_old_proofs_model_check_taken_out_is_reported_failed(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    proof = run.write(tmp_path / "p.json", run.signed_legacy_proof([IMAGE_EVENT, OUTPUTS_EVENT]))
    argv = run.verify_argv(proof, "--model", str(run.model))
    assert run_cli(argv, capsys)[0] == 0
    monkeypatch.setattr("aicert.verify.local_files.check_legacy_model", no_files)
    code, output = run_cli(argv, capsys)
    assert code == 1 and "NOT VERIFIED  check model-files failed: " in output


def test_a_platform_check_that_does_not_report_its_checks_fails_closed(
    run: Run, cvm: CvmRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify_platform still runs, but no longer says which checks passed: cvm is not granted."""
    import aicert.cvm

    real: Callable[..., Any] = aicert.cvm.verify_platform

    def silent(*args: Any, passed: Callable[[Check], object] = nothing, **kwargs: Any) -> Any:
        return real(*args, **kwargs)

    monkeypatch.setattr(aicert.cvm, "verify_platform", silent)
    with pytest.raises(IncompleteVerification) as caught:
        scenario("cvm", run, cvm).verify()
    assert caught.value.check == Check.CVM_CHAIN


# --- kubectl aicert verify: the binding checks ----------------------------------------------------


def kubectl_verify(run: Run, kubectl: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`kubectl aicert verify digits --json` against the run's resource (the `kubectl` stand-in)."""
    kubectl.write_text(json.dumps(run.resource()))
    code = kubectl_plugin.main(["verify", "digits", "--trust-bundle", str(run.ca_pem), "--at", AT, "--json"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_kubectl_lists_the_binding_checks_that_ran(
    run: Run, kubectl: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = recording(monkeypatch)
    code, output = kubectl_verify(run, kubectl, capsys)
    assert code == 0, output
    doc = json.loads(output)
    assert doc["checks"][-3:] == [str(c) for c in BindingCheck]
    assert [c for kind, c in seen if isinstance(c, BindingCheck) and kind == "passed"] == list(BindingCheck)
    assert {*doc["checks"], *(s["check"] for s in doc["skipped"])} == {
        *map(str, Check),
        *map(str, BindingCheck),
    }


def test_kubectl_binding_checks_taken_out_are_not_reported_passed(
    run: Run, kubectl: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(kubectl_plugin, "check_binding", lambda *_args, **_kwargs: [])
    code, output = kubectl_verify(run, kubectl, capsys)
    assert code == 1, output
    assert "NOT VERIFIED  check resource-identity failed: " in output


@pytest.mark.parametrize("forgotten", list(BindingCheck))
def test_a_binding_check_that_does_not_record_itself_fails_closed(
    run: Run,
    kubectl: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    forgotten: BindingCheck,
) -> None:
    forgetting(monkeypatch, forgotten)
    code, output = kubectl_verify(run, kubectl, capsys)
    assert code == 1 and f"NOT VERIFIED  check {forgotten} failed: " in output


# --- the record itself ----------------------------------------------------------------------------


def test_a_check_recorded_twice_or_outside_the_plan_or_without_reason_is_refused() -> None:
    log: CheckLog[Check] = CheckLog([Check.AK_CHAIN, Check.ASSURANCE])
    log.passed(Check.AK_CHAIN)
    with pytest.raises(IncompleteVerification, match="recorded twice"):
        log.skipped(Check.AK_CHAIN, "changed its mind")
    with pytest.raises(IncompleteVerification, match="not in the plan"):
        log.passed(Check.STATEMENT)
    with pytest.raises(IncompleteVerification, match="without a reason"):
        log.skipped(Check.ASSURANCE, " ")
    with pytest.raises(IncompleteVerification) as caught:
        log.finish()
    assert caught.value.check == Check.ASSURANCE


def test_a_recorded_failure_is_never_finished_as_a_pass() -> None:
    log: CheckLog[BindingCheck] = CheckLog(BindingCheck)
    for check in BindingCheck:
        log.passed(check)
    log.failed(BindingCheck.RESOURCE_PHASE, "status.phase is Failed")
    with pytest.raises(Exception) as caught:
        log.finish()
    assert getattr(caught.value, "check", None) == BindingCheck.RESOURCE_PHASE
