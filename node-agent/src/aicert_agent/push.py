"""`python -m aicert_agent push`: the push pod of `spec.output.oci` (aicert_contract.publish builds it).

The operator starts it after the run Succeeded, with the attempt's output claim mounted read-only at
--model, the pull secret (if any) at --registry-config, and, as arguments, the sha256 of the
certificate in the status and the status's envelope signature. Before anything is uploaded it
checks that aicert-certificate.json beside the weights is that certificate, that the weights hash to
the root it names, and that model.sig (when there) is the AK's signature of exactly these files;
any difference is exit 1 and nothing is pushed. Then the weights go up as a ModelPack artifact with
the certificate, its Sigstore bundle and model.sig attached as referrers (aicert.oci.transfer).

It has no Kubernetes credentials: what it did is its termination message, one small JSON object
the operator reads from the pod's status (`{"digest": "sha256:…"}` or `{"error": "…"}`, see
aicert_contract.publish.parse_push_message). Exit 0: pushed; 1: not the certified files; 2: the
registry or the input failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aicert_contract.publish import (
    PUSH_MESSAGE_MAX_BYTES,
    PUSH_NOT_CERTIFIED_EXIT,
    TERMINATION_LOG,
    push_message,
)

EXIT_OK, EXIT_NOT_CERTIFIED, EXIT_UNUSABLE = 0, PUSH_NOT_CERTIFIED_EXIT, 2


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="aicert_agent push", description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="the attempt's output, mounted read-only")
    p.add_argument("--reference", required=True, help="REGISTRY/REPOSITORY[:TAG] (spec.output.oci.reference)")
    p.add_argument("--name", required=True, help="the model's name in its ModelPack config (the training)")
    p.add_argument("--certificate-sha256", required=True, help="sha256 (hex) of status.certificate")
    p.add_argument("--envelope-signature", default="", help="status.envelopeSignature (empty: no bundle)")
    p.add_argument("--transparency-log-entry", default="", help="status.transparencyLogEntry (empty: none)")
    p.add_argument("--registry-config", type=Path, help="the pull secret's .dockerconfigjson")
    p.add_argument("--plain-http", action="store_true", help="plain http (spec.output.oci.plainHttp)")
    p.add_argument("--termination-log", type=Path, default=Path(TERMINATION_LOG))
    return p.parse_args(argv)


def push(args: argparse.Namespace) -> str:
    """The pushed model manifest's digest. NotCertified, MalformedError, OciError, DigestError or
    OSError otherwise."""
    from aicert.digest.hashing import hash_tree
    from aicert.digest.manifest import OUTPUT_EXCLUDED
    from aicert.oci.auth import load_credentials
    from aicert.oci.client import RegistryClient
    from aicert.oci.errors import OciError
    from aicert.oci.publish import (
        bundle_attachment,
        certificate_attachment,
        certificate_beside_weights,
        certified_root,
        check_weights,
        model_signature_attachment,
    )
    from aicert.oci.reference import parse_reference

    reference = parse_reference(f"oci://{args.reference}")
    if reference.digest is not None:
        raise OciError(f"{args.reference}: names a digest; the digest comes from the weights")
    text = certificate_beside_weights(args.model, args.certificate_sha256)
    root = certified_root(text, field="certificate")
    local = hash_tree(args.model, exclude=OUTPUT_EXCLUDED)
    check_weights(local, root, str(args.model))
    attachments = [certificate_attachment(text)]
    if args.envelope_signature:
        attachments.append(
            bundle_attachment(text, args.envelope_signature, args.transparency_log_entry or None)
        )
    signature = model_signature_attachment(args.model, text, list(local.files))
    if signature is not None:
        attachments.append(signature)
    client = RegistryClient(
        reference.registry,
        plain_http=bool(args.plain_http) or reference.loopback,
        credentials=load_credentials(reference.registry, args.registry_config)
        if args.registry_config is not None
        else None,
    )
    from aicert.oci.transfer import push_model

    pushed = push_model(
        client, reference.repository, reference.tag, args.model, local.files, args.name, attachments
    )
    return pushed.manifest.digest


def _write(path: Path, message: bytes) -> None:
    try:
        path.write_bytes(message[:PUSH_MESSAGE_MAX_BYTES])
    except OSError as exc:  # the message is also on stderr, which kubectl logs shows
        print(f"aicert push: could not write {path}: {exc}", file=sys.stderr)


def main(argv: list[str]) -> int:
    from aicert.digest.walk import DigestError
    from aicert.oci.errors import OciError
    from aicert.oci.publish import NotCertified
    from aicert.verify.errors import MalformedError

    args = parse_args(argv)
    try:
        digest = push(args)
    except NotCertified as exc:
        code, error = EXIT_NOT_CERTIFIED, exc.reason
    except MalformedError as exc:
        code, error = EXIT_UNUSABLE, f"{exc.field}: {exc.reason}"
    except OciError as exc:
        code, error = EXIT_UNUSABLE, f"push to {args.reference}: {exc.reason}"
    except (DigestError, OSError) as exc:
        code, error = EXIT_UNUSABLE, f"{args.model}: {exc}"
    else:
        _write(args.termination_log, push_message(digest=digest))
        print(json.dumps({"pushed": f"oci://{args.reference}", "digest": digest}))
        return EXIT_OK
    print(f"aicert push: {error}", file=sys.stderr)
    _write(args.termination_log, push_message(error=error))
    return code
