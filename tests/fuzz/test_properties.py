"""Property tests (Hypothesis) on each parser the verifier runs on untrusted bytes.

Each parser either returns or raises its own error, which the verifier turns into exit 1 or 2:
TPMS_ATTEST and TPMT_SIGNATURE (`StructureError`), tpm2-tools PCR files (`StructureError`),
manifests (`ManifestError`), run events (`EventError`) and strict JSON (`MalformedError`). Inputs
are arbitrary bytes, edits of the genuine structures in the seed certificates and old proofs, and
structures built field by field; what a parser accepts must also mean what was built.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from rfc8785 import CanonicalizationError

from aicert.certificate import Statement, convert
from aicert.digest import FileEntry, Manifest, ManifestError
from aicert.events import EventError, parse_event, statement_from_events
from aicert.jcs import canonical
from aicert.tpm.attest import (
    ALG_SHA1,
    ALG_SHA256,
    ALG_SHA384,
    TPM_ST_ATTEST_QUOTE,
    Attest,
    ClockInfo,
    PcrSelection,
    parse_attest,
)
from aicert.tpm.pcrs import format_tpm2_tools_pcrs, parse_tpm2_tools_pcrs
from aicert.tpm.reader import StructureError
from aicert.tpm.signature import ALG_ECDSA, parse_signature, signature_problem
from aicert.trust.pem import load_any
from aicert.verify import MalformedError
from aicert.verify.jsonload import loads_strict
from tests.fuzz.genuine import AK_KEY, Oracle, Seed
from tests.fuzz.mutations import mutate_tree
from tests.fuzz.strategies import DrawChooser, edited_bytes, examples, json_values, mutated_document

pytestmark = pytest.mark.fuzz

BOOT = {i: bytes(32) for i in range(8)}
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _documents(seeds: list[Seed]) -> dict[str, Any]:
    return {s.name: json.loads(s.data) for s in seeds}


@pytest.fixture(scope="session")
def parts(seeds: list[Seed]) -> dict[str, list[bytes]]:
    """The genuine TPM structures of the seeds: quotes, signatures, PCR files."""
    docs = _documents(seeds)
    found: dict[str, list[bytes]] = {"attest": [], "signature": [], "pcr": []}
    for name, doc in docs.items():
        if name.startswith("certificate"):
            quote = doc["evidence"]["quote"]
            found["attest"].append(base64.b64decode(quote["attest"]))
            found["signature"].append(base64.b64decode(quote["signature"]))
        elif name.startswith("legacy"):
            quote = doc["remote_attestation"]["quote"]
            found["attest"].append(base64.b64decode(quote["message"]["base64"]))
            found["signature"].append(base64.b64decode(quote["signature"]["base64"]))
            found["pcr"].append(base64.b64decode(quote["pcr"]["base64"]))
    return found


# --- TPMS_ATTEST --------------------------------------------------------------------------------


def tpm2b(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def marshal_attest(attest: Attest, bitmaps: list[bytes], safe: int) -> bytes:
    clock = attest.clock_info
    return (
        struct.pack(">IH", attest.magic, attest.type)
        + tpm2b(attest.qualified_signer)
        + tpm2b(attest.extra_data)
        + struct.pack(
            ">QIIBQ", clock.clock, clock.reset_count, clock.restart_count, safe, attest.firmware_version
        )
        + struct.pack(">I", len(bitmaps))
        + b"".join(
            struct.pack(">HB", s.hash_alg, len(b)) + b
            for s, b in zip(attest.pcr_select, bitmaps, strict=True)
        )
        + tpm2b(attest.pcr_digest)
    )


def selected(bitmap: bytes) -> tuple[int, ...]:
    return tuple(i for i in range(len(bitmap) * 8) if bitmap[i // 8] >> (i % 8) & 1)


@settings(max_examples=examples(500))
@given(data=st.data())
def test_tpms_attest_parses_or_names_the_field(parts: dict[str, list[bytes]], data: st.DataObject) -> None:
    blob = data.draw(st.binary(max_size=160) | st.sampled_from(parts["attest"]).flatmap(edited_bytes))
    try:
        attest = parse_attest(blob)
    except StructureError as exc:
        assert str(exc).startswith("TPMS_ATTEST: ")
        return
    assert attest.type == TPM_ST_ATTEST_QUOTE
    assert all(0 <= i < 8 * 255 for s in attest.pcr_select for i in s.pcrs)


@settings(max_examples=examples(300))
@given(
    magic=st.integers(0, 2**32 - 1),
    signer=st.binary(max_size=70),
    extra=st.binary(max_size=64),
    clock=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    safe=st.integers(0, 255),
    firmware=st.integers(0, 2**64 - 1),
    selections=st.lists(
        st.tuples(st.sampled_from([ALG_SHA1, ALG_SHA256, ALG_SHA384, 0x1234]), st.binary(max_size=5)),
        max_size=16,
    ),
    digest=st.binary(max_size=64),
    cut=st.integers(1, 8),
)
def test_tpms_attest_reads_back_what_was_marshaled(
    magic: int,
    signer: bytes,
    extra: bytes,
    clock: tuple[int, int, int],
    safe: int,
    firmware: int,
    selections: list[tuple[int, bytes]],
    digest: bytes,
    cut: int,
) -> None:
    attest = Attest(
        magic,
        TPM_ST_ATTEST_QUOTE,
        signer,
        extra,
        ClockInfo(*clock, safe == 1),
        firmware,
        tuple(PcrSelection(alg, selected(bitmap)) for alg, bitmap in selections),
        digest,
    )
    blob = marshal_attest(attest, [bitmap for _, bitmap in selections], safe)
    assert parse_attest(blob) == attest
    with pytest.raises(StructureError, match="truncated"):
        parse_attest(blob[:-cut])
    with pytest.raises(StructureError, match="trailing bytes"):
        parse_attest(blob + bytes(cut))


# --- TPMT_SIGNATURE -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def keys(seeds: list[Seed]) -> list[tuple[PublicKeyTypes, bytes]]:
    """(AK, the attestation it signed): the soft AK and the Azure AK, with their quotes."""
    azure = json.loads(next(s.data for s in seeds if s.name == "legacy-azure.json"))["remote_attestation"]
    azure_ak: x509.Certificate = load_any(base64.b64decode(azure["cert_chain"][0]["base64"]))
    soft = json.loads(next(s.data for s in seeds if s.name == "certificate-full.json"))["evidence"]["quote"]
    return [
        (AK_KEY.public_key(), base64.b64decode(soft["attest"])),
        (azure_ak.public_key(), base64.b64decode(azure["quote"]["message"]["base64"])),
    ]


def signature_blobs(genuine: list[bytes]) -> st.SearchStrategy[bytes]:
    scheme = st.sampled_from([0x0014, 0x0016, 0x0018, 0x0000, 0xFFFF])
    hash_alg = st.sampled_from([0x000B, 0x000C, 0x000D, 0x0004, 0x0000])
    built = st.builds(
        lambda s, h, parts: struct.pack(">HH", s, h) + b"".join(tpm2b(p) for p in parts),
        scheme,
        hash_alg,
        st.lists(st.binary(max_size=300), max_size=3),
    )
    return st.one_of(st.binary(max_size=80), built, st.sampled_from(genuine).flatmap(edited_bytes))


@settings(max_examples=examples(500))
@given(data=st.data())
def test_tpmt_signature_verifies_only_the_genuine_signature(
    parts: dict[str, list[bytes]], keys: list[tuple[PublicKeyTypes, bytes]], data: st.DataObject
) -> None:
    blob = data.draw(signature_blobs(parts["signature"]))
    try:
        signature = parse_signature(blob)
    except StructureError as exc:
        assert str(exc).startswith("TPMT_SIGNATURE: ")
        return
    for key, message in keys:
        problem = signature_problem(signature, key, message)
        if problem is not None:
            assert isinstance(problem, str) and problem
            continue
        genuine = [parse_signature(g) for g in parts["signature"]]
        if signature.scheme == ALG_ECDSA:  # malleable: (r, s) and (r, n - s) both verify
            assert any(
                (g.hash_alg, g.ecdsa_r) == (signature.hash_alg, signature.ecdsa_r)
                and signature.ecdsa_s in (g.ecdsa_s, P256_ORDER - g.ecdsa_s)
                for g in genuine
            )
        else:
            assert signature in genuine
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert signature_problem(signature, other, keys[0][1]) is not None


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@settings(max_examples=examples(50))
@given(message=st.binary(max_size=200), scheme=st.sampled_from([0x0014, 0x0016]), data=st.data())
def test_tpmt_signature_rsa_schemes_check_the_message(
    rsa_key: rsa.RSAPrivateKey, message: bytes, scheme: int, data: st.DataObject
) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    pad: padding.AsymmetricPadding = (
        padding.PKCS1v15()
        if scheme == 0x0014
        else padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    )
    blob = struct.pack(">HH", scheme, 0x000B) + tpm2b(rsa_key.sign(message, pad, hashes.SHA256()))
    assert signature_problem(parse_signature(blob), rsa_key.public_key(), message) is None
    edited = data.draw(edited_bytes(blob))
    try:
        signature = parse_signature(edited)
    except StructureError:
        return
    if signature_problem(signature, rsa_key.public_key(), message) is None:
        assert (signature.scheme, signature.hash_alg, signature.rsa) == (scheme, 0x000B, blob[6:])


# --- tpm2-tools PCR files -----------------------------------------------------------------------


pcr_values = st.dictionaries(st.integers(0, 23), st.binary(min_size=32, max_size=32), max_size=24)


@settings(max_examples=examples(500))
@given(data=st.data())
def test_pcr_file_parses_or_names_the_problem(parts: dict[str, list[bytes]], data: st.DataObject) -> None:
    genuine = st.sampled_from(parts["pcr"]) | pcr_values.map(format_tpm2_tools_pcrs)
    blob = data.draw(st.binary(max_size=200) | genuine.flatmap(lambda b: edited_bytes(b, 8)))
    try:
        values = parse_tpm2_tools_pcrs(blob)
    except StructureError as exc:
        assert str(exc).startswith("PCR file: ")
        return
    assert all(0 <= i < 32 and len(v) == 32 for i, v in values.items())


@settings(max_examples=examples(300))
@given(values=pcr_values)
def test_pcr_file_reads_back_what_was_written(values: dict[int, bytes]) -> None:
    assert parse_tpm2_tools_pcrs(format_tpm2_tools_pcrs(values)) == values


# --- manifests ----------------------------------------------------------------------------------

HEX = "ab" * 32
path_component = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="/\x00"), min_size=1
).filter(lambda c: c not in (".", ".."))
file_entries = st.builds(
    FileEntry,
    st.lists(path_component, min_size=1, max_size=3).map("/".join),
    st.integers(0, 2**53 - 1),
    st.text("0123456789abcdef", min_size=64, max_size=64),
    st.booleans(),
)


def manifest_texts(genuine: bytes) -> st.SearchStrategy[bytes]:
    entry = '{"path": "a", "size": %s, "sha256": "' + HEX + '"}'
    return st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        mutated_document(genuine),
        st.integers(0, 100_000).map(lambda n: ("[" * n + "]" * n).encode()),  # nesting
        st.integers(1, 10_000).map(
            lambda n: ('{"root": "' + HEX + '", "files": [' + entry % ("9" * n) + "]}").encode()
        ),
    )


@settings(max_examples=examples(500))
@given(data=st.data())
def test_manifest_read_returns_or_raises_manifest_error(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    genuine = Manifest.from_files([FileEntry("a", 1, HEX), FileEntry("b/c", 2, HEX, symlink=True)])
    text = data.draw(manifest_texts(json.dumps(genuine.to_json()).encode()))
    path = tmp_path_factory.mktemp("manifest") / "manifest.json"
    path.write_bytes(text)
    try:
        manifest = Manifest.read(path)
    except ManifestError:
        return
    assert Manifest.from_json(manifest.to_json()) == manifest


@settings(max_examples=examples(500))
@given(value=json_values, data=st.data())
def test_manifest_from_json_returns_or_raises_manifest_error(value: Any, data: st.DataObject) -> None:
    genuine = Manifest.from_files([FileEntry("a", 1, HEX), FileEntry("é/x y", 0, HEX)]).to_json()
    document = data.draw(st.sampled_from([value, genuine]))
    for _ in range(data.draw(st.integers(0, 3))):
        document = mutate_tree(document, DrawChooser(data.draw))
    try:
        manifest = Manifest.from_json(document)
    except ManifestError as exc:
        assert str(exc)
        return
    assert Manifest.from_json(manifest.to_json()) == manifest


@settings(max_examples=examples(150))
@given(entries=st.lists(file_entries, max_size=6, unique_by=lambda e: e.path))
def test_manifest_reads_back_what_was_written(
    tmp_path_factory: pytest.TempPathFactory, entries: list[FileEntry]
) -> None:
    manifest = Manifest.from_files(entries)
    path = tmp_path_factory.mktemp("manifest") / "manifest.json"
    manifest.write(path)
    assert Manifest.read(path) == manifest


# --- events -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def run_events(seeds: list[Seed]) -> list[dict[str, Any]]:
    """A genuine run's events (run, input, image, output), without the seal."""
    certificate = json.loads(next(s.data for s in seeds if s.name == "certificate-full.json"))
    contents = [e["content"] for e in certificate["evidence"]["eventLog"] if "content" in e]
    return contents[:-1]


def encodable(value: Any) -> bool:
    try:
        canonical(value)
    except CanonicalizationError:
        return False
    return True


@settings(max_examples=examples(500))
@given(data=st.data())
def test_events_give_a_statement_the_verifier_reads_back_or_say_why(
    run_events: list[dict[str, Any]], data: st.DataObject
) -> None:
    contents: Any = data.draw(st.sampled_from([run_events, []]) | st.lists(json_values, max_size=4))
    for _ in range(data.draw(st.integers(0, 3))):
        contents = mutate_tree(contents, DrawChooser(data.draw))
    assume(isinstance(contents, list) and all(isinstance(c, dict) for c in contents))
    assume(encodable(contents))  # a logged event is hashed as JCS: it holds no lone surrogate
    for content in contents:
        try:
            parse_event(content)
        except EventError as exc:
            assert str(exc)
    try:
        statement = statement_from_events(contents, assurance="dev", boot_pcrs=BOOT)
    except EventError:
        return
    document = statement.to_json()
    canonical(document)  # the agent can hash it
    assert convert(document, Statement) == statement  # and the verifier reads it back


# --- strict JSON --------------------------------------------------------------------------------


def hostile_json(seeds: list[Seed]) -> st.SearchStrategy[bytes | str]:
    return st.one_of(
        st.binary(max_size=100),
        st.text(max_size=100),
        json_values.map(json.dumps),
        st.sampled_from(["null", "true", "1", '"x"', "[]", "{}", "-0", "1e400", "NaN", '"\\ud800"']),
        st.integers(0, 100_000).map(lambda n: "[" * n + "]" * n),
        st.integers(1, 10_000).map(lambda n: '{"a": ' + "1" * n + "}"),
        st.sampled_from([s.data for s in seeds]).flatmap(lambda d: edited_bytes(d, 6)),
    )


@settings(max_examples=examples(500))
@given(data=st.data())
def test_strict_json_returns_what_jcs_can_encode_or_names_the_place(
    seeds: list[Seed], data: st.DataObject
) -> None:
    text = data.draw(hostile_json(seeds))
    try:
        value = loads_strict(text, what="the input")
    except MalformedError as exc:
        assert exc.reason and "\n" not in exc.field
        return
    canonical(value)


def test_the_fuzzers_start_from_genuine_documents(seeds: list[Seed], oracle: Oracle) -> None:
    documents = [s for s in seeds if not s.name.startswith("manifest")]
    assert {s.name for s in documents} == {
        "certificate-full.json",
        "certificate-redacted.json",
        "certificate-timestamped.json",
        "bundle-full.json",
        "bundle-timestamped.json",
        "legacy-azure.json",
        "legacy-soft.json",
    }
    assert [oracle.check(s.data) for s in documents] == [0, 0, 0, 0, 0, 0, 0]
