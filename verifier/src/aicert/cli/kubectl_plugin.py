"""`kubectl aicert verify NAME`: verify a CertifiedTraining's certificate straight from the cluster.

kubectl runs plugins named kubectl-*; this one reads `.status.certificate` with `kubectl get`
(so your context, namespace and kubeconfig apply) and runs the same verifier as `aicert verify`.
The verification itself needs nothing from the cluster: only the certificate and your trust roots.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from aicert.cli import verify as verify_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl aicert", description=__doc__.splitlines()[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    verify_cmd.register(sub)
    p = sub.choices["verify"]
    # the certificate comes from the cluster: NAME replaces FILE
    for action in p._actions:
        if action.dest == "certificate":
            action.metavar = "NAME"
            action.help = "the CertifiedTraining's name"
    p.add_argument("-n", "--namespace", help="the CertifiedTraining's namespace (default: the context's)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--kubeconfig", help="kubeconfig file")
    return parser


def fetch_certificate(name: str, namespace: str | None, context: str | None, kubeconfig: str | None) -> bytes:
    argv = [
        os.environ.get("KUBECTL", "kubectl"),
        "get",
        "certifiedtrainings.aicert.dev",
        name,
        "-o",
        "jsonpath={.status.certificate}",
    ]
    for flag, value in (("--namespace", namespace), ("--context", context), ("--kubeconfig", kubeconfig)):
        if value:
            argv += [flag, value]
    done = subprocess.run(argv, capture_output=True, check=False)
    if done.returncode != 0:
        raise LookupError(done.stderr.decode(errors="replace").strip() or f"kubectl exited {done.returncode}")
    if not done.stdout.strip():
        raise LookupError(
            f"CertifiedTraining {name} has no certificate yet (kubectl get ct {name} shows its phase)"
        )
    return done.stdout


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        data = fetch_certificate(args.certificate, args.namespace, args.context, args.kubeconfig)
    except (LookupError, OSError) as exc:
        print(f"kubectl aicert: {exc}", file=sys.stderr)
        return verify_cmd.EXIT_UNUSABLE
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "certificate.json"
        path.write_bytes(data)
        args.certificate = str(path)
        code: int = verify_cmd.run(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
