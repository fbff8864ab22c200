"""`kubectl aicert verify NAME`: verify a CertifiedTraining's certificate straight from the cluster.

(`kubectl aicert get NAME` keeps the certificate in a file; `kubectl aicert describe NAME` shows the
training in a few lines; `kubectl aicert push NAME oci://…` puts the model in a registry with its
certificate attached.)

kubectl runs plugins named kubectl-*; this one reads the resource with `kubectl get -o json`
(so your context, namespace and kubeconfig apply), runs the same verifier as `aicert verify` on
its `.status.certificate`, then checks that the certificate belongs to that resource: its run is
this resource (namespace, name, uid), it certifies `status.modelDigest`, and the phase is
Succeeded (`aicert.verify.binding`). Only fetching needs the cluster; the cryptography needs
only the certificate and your trust roots. Exit codes as `aicert verify`: 0, 1, 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

from aicert.cli import kubectl_describe, kubectl_get, kubectl_push
from aicert.cli import verify as verify_cmd
from aicert.cli.pipes import quiet_on_closed_pipe
from aicert.trust import TrustError
from aicert.verify import (
    BindingCheck,
    CheckLog,
    MalformedError,
    TrainingResource,
    VerificationError,
    VerifiedTraining,
    check_binding,
)

RESOURCE = "certifiedtrainings.aicert.dev"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl aicert", description=__doc__.splitlines()[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    verify_cmd.register(sub, oci=False)
    p = sub.choices["verify"]
    p.description = (
        "Verify a CertifiedTraining's certificate against trusted roots, then check that it belongs to "
        "the resource (resource-identity, resource-model-digest, resource-phase). "
        "Exit 0: verified; 1: a check failed; 2: unusable input or usage error."
    )
    # the certificate comes from the cluster: NAME replaces FILE
    for action in p._actions:
        if action.dest == "certificate":
            action.metavar = "NAME"
            action.help = "the CertifiedTraining's name"
    p.add_argument("-n", "--namespace", help="the CertifiedTraining's namespace (default: the context's)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--kubeconfig", help="kubeconfig file")
    kubectl_get.register(sub)
    kubectl_describe.register(sub)
    kubectl_push.register(sub)
    return parser


def fetch_resource(
    name: str, namespace: str | None, context: str | None, kubeconfig: str | None
) -> dict[str, Any]:
    """The whole CertifiedTraining as JSON. Raises LookupError (kubectl failed) or MalformedError."""
    argv = [os.environ.get("KUBECTL", "kubectl"), "get", RESOURCE, name, "-o", "json"]
    for flag, value in (("--namespace", namespace), ("--context", context), ("--kubeconfig", kubeconfig)):
        if value:
            argv += [flag, value]
    done = subprocess.run(argv, capture_output=True, check=False)
    if done.returncode != 0:
        raise LookupError(done.stderr.decode(errors="replace").strip() or f"kubectl exited {done.returncode}")
    try:
        loaded = json.loads(done.stdout)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedError("", f"kubectl get -o json did not print JSON: {exc}") from None
    if not isinstance(loaded, dict):
        raise MalformedError("", "kubectl get -o json did not print a JSON object")
    return loaded


# Failures go to stderr before --json goes to stdout, so that they are seen even when stdout is closed.


def unusable(args: argparse.Namespace, field: str | None, reason: str) -> int:
    print(f"kubectl aicert: {field}: {reason}" if field else f"kubectl aicert: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps({"verified": False, "error": "unusable-input", "field": field, "reason": reason}))
    return verify_cmd.EXIT_UNUSABLE


def failed(args: argparse.Namespace, failures: Sequence[tuple[str, str]]) -> int:
    """Report failed checks as `aicert verify` does; when several fail, each is named."""
    for check, reason in failures:
        print(f"NOT VERIFIED  check {check} failed: {reason}", file=sys.stderr)
    if args.json:
        check, reason = failures[0]
        doc: dict[str, Any] = {"verified": False, "check": check, "reason": reason}
        if len(failures) > 1:
            doc["failures"] = [{"check": c, "reason": r} for c, r in failures]
        print(json.dumps(doc))
    return verify_cmd.EXIT_FAILED


def verify_resource(args: argparse.Namespace) -> int:
    try:  # the flags first: a bad one needs no trip to the cluster
        if args.lineage or args.lineage_partial:  # never accepted and left unchecked
            raise MalformedError(
                "--lineage",
                "kubectl aicert verify does not follow lineage: write the certificate with kubectl aicert get "
                "NAME --dir DIR, then aicert verify DIR/aicert-certificate.json --lineage DIR|oci://REGISTRY/REPO",
            )
        # the status holds the certificate, never a log entry: --require-tlog fails tlog-inclusion
        verifier = verify_cmd.verifier_from_args(args)
        data_dirs = verify_cmd.parse_data(args.data)
        if args.ignore:  # a bad pattern needs no trip to the cluster either
            from aicert.verify.local_files import ignore_patterns  # the hashing code: only with files

            ignore_patterns(args.ignore)
        at = verify_cmd.parse_time(args.at) if args.at else None
    except MalformedError as exc:
        return unusable(args, exc.field, exc.reason)
    except TrustError as exc:
        return unusable(args, None, str(exc))
    resource = load_resource(args, args.certificate)
    if isinstance(resource, int):
        return resource
    if resource.certificate is None:
        return unusable(
            args,
            "status.certificate",
            f"CertifiedTraining {resource.namespace}/{resource.name} has no certificate yet "
            f"(phase {resource.phase or 'not set'}; kubectl get ct {resource.name} shows why)",
        )
    try:
        result = verifier.verify(
            resource.certificate, model_dir=args.model, data_dirs=data_dirs, at=at, ignore=args.ignore
        )
    except MalformedError as exc:
        # a field of the certificate, or a flag (--model, --data) that does not fit it
        if exc.field.startswith("--"):
            return unusable(args, exc.field, exc.reason)
        return unusable(args, f"status.certificate.{exc.field}".rstrip("."), exc.reason)
    except VerificationError as exc:
        return failed(args, [(str(exc.check), exc.reason)])
    binding: CheckLog[BindingCheck] = CheckLog(BindingCheck)
    failures = check_binding(resource, result, binding)
    if failures:
        return failed(args, [(str(f.check), f.reason) for f in failures])
    try:
        bound = with_binding_checks(result, binding)
    except VerificationError as exc:  # a binding check that neither passed nor failed
        return failed(args, [(str(exc.check), exc.reason)])
    print(json.dumps(bound.to_json(), indent=2) if args.json else verify_cmd.summary(bound))
    return verify_cmd.EXIT_OK


def with_binding_checks(result: VerifiedTraining, binding: CheckLog[BindingCheck]) -> VerifiedTraining:
    """The result with the resource checks that passed, as `binding` recorded them, listed after the
    verifier's. Raises IncompleteVerification when one of them neither passed nor failed."""
    passed, _ = binding.finish()
    return msgspec.structs.replace(result, passed=(*result.passed, *passed))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse exits 2 on usage errors
    if args.command == "get":
        return quiet_on_closed_pipe(lambda: get_resource(args))
    if args.command == "push":
        return quiet_on_closed_pipe(lambda: push_model(args))
    if args.command == "describe":
        return quiet_on_closed_pipe(lambda: describe_resource(args))
    return quiet_on_closed_pipe(lambda: verify_resource(args))


def load_resource(args: argparse.Namespace, name: str) -> TrainingResource | int:
    """The CertifiedTraining NAME from the cluster, or the exit code after saying why not."""
    try:
        return TrainingResource.from_json(fetch_resource(name, args.namespace, args.context, args.kubeconfig))
    except LookupError as exc:
        return unusable(args, None, str(exc))
    except OSError as exc:  # kubectl not found or not executable
        return unusable(args, None, f"cannot run kubectl: {exc}")
    except MalformedError as exc:
        return unusable(args, exc.field, exc.reason)


def get_resource(args: argparse.Namespace) -> int:
    resource = load_resource(args, args.name)
    return resource if isinstance(resource, int) else kubectl_get.run(args, resource)


def push_model(args: argparse.Namespace) -> int:
    resource = load_resource(args, args.name)
    return resource if isinstance(resource, int) else kubectl_push.run(args, resource)


def describe_resource(args: argparse.Namespace) -> int:
    try:
        resource = fetch_resource(args.name, args.namespace, args.context, args.kubeconfig)
        lines = kubectl_describe.describe(resource, dt.datetime.now(dt.UTC))
    except LookupError as exc:
        return unusable(args, None, str(exc))
    except OSError as exc:  # kubectl not found or not executable
        return unusable(args, None, f"cannot run kubectl: {exc}")
    except MalformedError as exc:
        return unusable(args, exc.field, exc.reason)
    print("\n".join(lines))
    return kubectl_describe.EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
