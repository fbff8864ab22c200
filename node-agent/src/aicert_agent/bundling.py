"""The certificate as a Sigstore bundle, `aicert.sigstore.json`, and the weights' OpenSSF Model
Signing signature, `model.sig`, both signed by the AK through the TPM.

The AK signs the DSSE pre-authentication encoding of the bundle's payload (aicert.bundle) as
external data: the TPM hashes it and gives a ticket saying it does not begin with
TPM_GENERATED_VALUE, which a PAE never does (it begins with `DSSEv1 `); a restricted key signs
nothing else. The bundle is read back and its envelope checked with the verifier's own code before
it is handed out.
"""

from __future__ import annotations

from typing import Any, Protocol

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from aicert.bundle import (
    DSSE_PAE_PREFIX,
    IN_TOTO_PAYLOAD_TYPE,
    assemble_bundle,
    bundle_document,
    dsse_signature,
    envelope_payload,
    pae,
    pem_chain_der,
    read_bundle,
    starts_with_tpm_generated,
)
from aicert.digest import OUTPUT_EXCLUDED, Manifest
from aicert.model_signature import oms_payload
from aicert.verify.envelope import dsse_signature_problem, envelope_problem
from aicert.verify.errors import MalformedError


class ExternalSigner(Protocol):
    def sign_external(self, data: bytes) -> bytes:
        """The AK's TPMT_SIGNATURE over sha256(data)."""
        ...


class BundleError(Exception):
    """The bundle could not be made, or would not verify; the message says why."""


def signing_input(payload: bytes) -> bytes:
    """What the AK signs for `payload`: its DSSE PAE, which never begins with TPM_GENERATED_VALUE."""
    signed = pae(IN_TOTO_PAYLOAD_TYPE, payload)
    if not signed.startswith(DSSE_PAE_PREFIX) or starts_with_tpm_generated(signed):
        raise BundleError("the DSSE PAE does not begin with 'DSSEv1 ': the AK must not sign it")
    return signed


def sign_bundle(certificate: dict[str, Any], signer: ExternalSigner) -> dict[str, Any]:
    """The Sigstore bundle of a sealed (and, if the agent has a TSA, timestamped) certificate."""
    payload = envelope_payload(certificate)
    try:
        signature = dsse_signature(signer.sign_external(signing_input(payload)))
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    bundle = assemble_bundle(certificate, payload, signature)
    try:
        _, envelope = read_bundle(bundle)
    except MalformedError as exc:
        raise BundleError(f"the bundle does not read back: {exc}") from None
    key = load_pem_public_key(certificate["evidence"]["ak"]["public"].encode())
    problem = envelope_problem(envelope, key, certificate["statement"]["subject"])
    if problem:
        raise BundleError(f"the bundle's envelope does not verify: {problem}")
    return bundle


def sign_model(certificate: dict[str, Any], manifest: Manifest, signer: ExternalSigner) -> dict[str, Any]:
    """`model.sig` for the certified output whose manifest is `manifest`: an OMS v1.0 signature over
    its files' sha256 digests (the files aicert writes beside them left out), by the AK."""
    outputs = certificate["statement"]["predicate"]["outputs"]
    if manifest.root != outputs["root"]:
        raise BundleError(
            f"the output's manifest (root {manifest.root}) is not the certified one ({outputs['root']})"
        )
    try:
        payload = oms_payload(manifest.files, str(outputs["name"]), OUTPUT_EXCLUDED)
        signed = signing_input(payload)
        signature = dsse_signature(signer.sign_external(signed))
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    key = load_pem_public_key(certificate["evidence"]["ak"]["public"].encode())
    problem = dsse_signature_problem(key, signature, signed)
    if problem:
        raise BundleError(f"model.sig does not verify: {problem}")
    # no token: the agent's token dates the quote's signature, and model_signing reads none
    return bundle_document(
        payload, signature, pem_chain_der(certificate["evidence"]["ak"]["certificateChain"])
    )
