"""`aicert pull oci://REGISTRY/REPO@sha256:… DIR`: a certified model into DIR, verified first.

DIR gets the weights and, beside them, the certificate's exact bytes as aicert-certificate.json (and
aicert.sigstore.json and model.sig when they belong to it): the layout of an agent's output, so a
training that reads DIR (copied into its claim) records the certificate as its parent. The model is
verified as `aicert verify oci://…` verifies it, with the same trust flags; nothing is written
unless it verifies (aicert.oci.pulling). Exit 0: pulled and verified; 1: no certificate verified
against the weights (nothing written); 2: unusable input, DIR not empty, or the registry failed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aicert.cli import verify as verify_cmd
from aicert.cli.registry_flags import add_registry_flags, connect
from aicert.cli.verify_oci import CONTENT_CHECK, failed, unusable
from aicert.trust import TrustError
from aicert.verify import MalformedError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pull",
        help="pull a certified model from a registry into a directory, verified first",
        description="Pull the model oci://REGISTRY/REPO@sha256:… into DIR with its certificate beside the "
        "weights (aicert-certificate.json, the exact bytes attached, and aicert.sigstore.json and model.sig "
        "when they belong to it), after verifying it as `aicert verify oci://…` does. A training whose input "
        "holds DIR records that certificate as its parent. Nothing is written unless the model verifies. "
        "Exit 0: pulled; 1: no certificate verified against the weights; 2: unusable input or usage error.",
    )
    p.add_argument("reference", metavar="oci://REGISTRY/REPO@sha256:…", help="the model, by digest")
    p.add_argument(
        "directory",
        metavar="DIR",
        type=Path,
        help="where to write it: a new directory (or an empty one), made whole or not at all",
    )
    verify_cmd.add_trust_flags(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_registry_flags(p)
    p.set_defaults(func=run)


def _unusable(args: argparse.Namespace, field: str | None, reason: str) -> int:
    return unusable(args, field, reason, command="pull", key="pulled")


def _failed(args: argparse.Namespace, failures: list[dict[str, str]]) -> int:
    return failed(
        args, failures, key="pulled", afterwards=f"aicert pull: nothing written to {args.directory}"
    )


def run(args: argparse.Namespace) -> int:
    from aicert.oci.errors import OciContentError, OciError
    from aicert.oci.pulling import NotVerified, check_destination, pull_certified
    from aicert.oci.reference import parse_reference

    try:
        reference = parse_reference(args.reference)
        if reference.digest is None:
            raise MalformedError(
                "REFERENCE",
                f"{args.reference} names no digest: pull a model by its digest, oci://REGISTRY/REPO@sha256:… "
                "(`aicert verify` of the tag shows the digest it names now)",
            )
        check_destination(args.directory)
        verifier = verify_cmd.verifier_from_args(args)
        at = verify_cmd.parse_time(args.at) if args.at else None
        client = connect(reference, args)
    except MalformedError as exc:
        return _unusable(args, exc.field, exc.reason)
    except TrustError as exc:
        return _unusable(args, None, str(exc))
    except OciError as exc:
        return _unusable(args, "REFERENCE", exc.reason)
    try:  # DIR is checked again there: it may have changed meanwhile
        pulled = pull_certified(client, reference, args.directory, verifier, at=at)
    except MalformedError as exc:
        return _unusable(args, exc.field, exc.reason)
    except NotVerified as exc:
        failures = [
            {"check": f.check, "reason": f.reason, "referrer": f.referrer} for f in exc.attempts.failed
        ]
        if failures:
            return _failed(args, failures)
        digest, problem = exc.attempts.unusable[0]
        return _unusable(args, f"referrer {digest}: {problem.field}".rstrip(": "), problem.reason)
    except OciContentError as exc:
        return _failed(args, [{"check": CONTENT_CHECK, "reason": exc.reason}])
    except OciError as exc:
        return _unusable(args, "oci", exc.reason)
    except OSError as exc:
        return _unusable(args, "DIR", f"cannot write the pulled model: {exc}")
    if args.json:
        doc = pulled.result.to_json()
        doc["pulled"] = {
            "directory": str(pulled.directory),
            "model": str(reference),
            "referrer": pulled.certificate.digest,
            "written": list(pulled.written),
            "notWritten": list(pulled.not_written),
            "notUsed": list(pulled.not_used),
        }
        print(json.dumps(doc, indent=2))
        return verify_cmd.EXIT_OK
    print(verify_cmd.summary(pulled.result))
    lines = [
        f"  oci      {reference}",
        f"  referrer {pulled.certificate.digest}  ({pulled.certificate.artifact_type}), the certificate verified",
        f"  pulled   {pulled.directory}: {len(pulled.files)} files, and beside them {', '.join(pulled.written)}",
    ]
    lines += [f"  not written {line}" for line in pulled.not_written]
    lines += [f"  not used {line}" for line in pulled.not_used]
    print("\n".join(verify_cmd.printable(line) for line in lines))
    return verify_cmd.EXIT_OK
