"""`kubectl aicert push NAME oci://REGISTRY/REPO[:TAG] --model DIR`: a certified model into a registry.

The certificate comes from the CertifiedTraining's status (as `kubectl aicert get` reads it), the
weights from a local directory (the plugin runs on your machine, not in the cluster). The weights
are hashed first, leaving out manifest.json and aicert-certificate.json as certificates do: unless
they hash to the root the certificate names as its subject, nothing is uploaded (exit 1). Then each
file goes up as an uncompressed ModelPack layer, the model manifest under its digest (and TAG), and
each attachment as a referrer of that manifest (`ATTACHMENTS`, then model.sig). model.sig from
beside the weights goes up only when it is the AK's signature over exactly these files (as the push
pod of spec.output.oci checks it); otherwise exit 1 and nothing is pushed. The certificate's own
checks are `aicert verify oci://…@sha256:…`'s, after pulling everything back.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aicert.cli.registry_flags import add_registry_flags, connect
from aicert.verify import MalformedError, TrainingResource

if TYPE_CHECKING:  # the registry client and the hashing code load only to push
    from aicert.oci.documents import Attachment


EXIT_OK, EXIT_MISMATCH, EXIT_UNUSABLE = 0, 1, 2


def _certificate(resource: TrainingResource, model: Path) -> Attachment | None:
    """The certificate as the file beside the weights (aicert.oci.publish.certificate_attachment)."""
    from aicert.oci.publish import certificate_attachment

    assert resource.certificate is not None
    return certificate_attachment(resource.certificate)


def _sigstore_bundle(resource: TrainingResource, model: Path) -> Attachment | None:
    """The certificate's Sigstore bundle, rebuilt from the status (the bytes `kubectl aicert get`
    writes); none when the status has no envelope signature (an agent before bundles)."""
    from aicert.oci.publish import bundle_attachment

    if resource.certificate is None or resource.envelope_signature is None:
        return None
    return bundle_attachment(
        resource.certificate, resource.envelope_signature, resource.transparency_log_entry
    )


# What is attached to the model, in order: each returns its Attachment, or None when there is none.
# The certificate and its Sigstore bundle (from the status); then the OpenSSF model signature the
# agent wrote beside the weights (model.sig, when DIR has it, checked against the hashed files in
# `run`); both bundles under Sigstore's artifactType.
ATTACHMENTS: tuple[Callable[[TrainingResource, Path], Attachment | None], ...] = (
    _certificate,
    _sigstore_bundle,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "push",
        help="push a certified model to an OCI registry, its certificate attached",
        description="Push the weights in DIR as a CNCF ModelPack artifact to oci://REGISTRY/REPO[:TAG] and "
        "attach the CertifiedTraining's certificate as a referrer. Exit 0: pushed; 1: the weights are not "
        "the certified ones (nothing pushed); 2: no certificate, kubectl or the registry failed, bad input.",
    )
    p.add_argument("name", metavar="NAME", help="the CertifiedTraining's name")
    p.add_argument("target", metavar="oci://REGISTRY/REPO[:TAG]", help="where to push the model")
    p.add_argument("--model", type=Path, required=True, metavar="DIR", help="the trained weights, locally")
    p.add_argument("-n", "--namespace", help="the CertifiedTraining's namespace (default: the context's)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--kubeconfig", help="kubeconfig file")
    add_registry_flags(p)
    p.set_defaults(json=False)


def _say(message: str) -> None:
    print(f"kubectl aicert: {message}", file=sys.stderr)


def certified_root(resource: TrainingResource) -> str:
    """The output root the certificate names as its subject. MalformedError naming the field."""
    from aicert.oci.publish import certified_root as root_of

    assert resource.certificate is not None
    return root_of(resource.certificate, field="status.certificate")


def run(args: argparse.Namespace, resource: TrainingResource) -> int:
    """`resource`: the CertifiedTraining as read from the cluster (by the caller)."""
    from aicert.digest.hashing import hash_tree
    from aicert.digest.manifest import OUTPUT_EXCLUDED
    from aicert.digest.walk import DigestError
    from aicert.oci.errors import OciError
    from aicert.oci.reference import parse_reference
    from aicert.oci.transfer import push_model

    try:
        reference = parse_reference(args.target)
        if reference.digest is not None:
            raise OciError(f"{args.target}: push names a tag or none; the digest comes from the weights")
        if resource.certificate is None:
            _say(
                f"CertifiedTraining {resource.namespace}/{resource.name} has no certificate "
                f"(phase {resource.phase or 'not set'})"
            )
            return EXIT_UNUSABLE
        if not args.model.is_dir():
            raise MalformedError("--model", f"{args.model} is not a directory")
        root = certified_root(resource)
        local = hash_tree(args.model, exclude=OUTPUT_EXCLUDED)
    except OciError as exc:
        _say(exc.reason)
        return EXIT_UNUSABLE
    except MalformedError as exc:
        _say(f"{exc.field}: {exc.reason}")
        return EXIT_UNUSABLE
    except (DigestError, OSError) as exc:
        _say(f"--model: {exc}")
        return EXIT_UNUSABLE
    if local.root != root:
        _say(
            f"the weights in {args.model} hash to {local.root} ({local.file_count} files), but the certificate "
            f"of {resource.namespace}/{resource.name} names {root}: these are not the certified weights, "
            "nothing was pushed"
        )
        return EXIT_MISMATCH
    from aicert.oci.publish import NotCertified, model_signature_attachment

    try:
        attachments = [a for make in ATTACHMENTS if (a := make(resource, args.model)) is not None]
        assert resource.certificate is not None
        signature = model_signature_attachment(args.model, resource.certificate, list(local.files))
    except MalformedError as exc:
        _say(f"{exc.field}: {exc.reason}")
        return EXIT_UNUSABLE
    except NotCertified as exc:
        _say(f"{exc.reason}: nothing was pushed")
        return EXIT_MISMATCH
    if signature is not None:
        attachments.append(signature)
    try:
        client = connect(reference, args)
        pushed = push_model(
            client, reference.repository, reference.tag, args.model, local.files, resource.name, attachments
        )
    except OciError as exc:
        _say(f"push to {reference}: {exc.reason}")
        return EXIT_UNUSABLE
    except OSError as exc:  # a file vanished or became unreadable after it was hashed
        _say(f"--model: {exc}")
        return EXIT_UNUSABLE
    print(reference.with_digest(pushed.manifest.digest))
    for artifact_type, digest in pushed.attached:
        _say(f"attached {artifact_type} as {digest}")
    _say(f"verify it with: aicert verify {reference.with_digest(pushed.manifest.digest)}")
    return EXIT_OK
