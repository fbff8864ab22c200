"""The TPM client, dev provisioning and quotes against a real swtpm (no mocks).

Quotes are checked three ways: with `cryptography` directly, by unmarshaling the TPMS_ATTEST with
tpm2-pytss, and with the real `tpm2_checkquote` from tpm2-tools.
"""

from __future__ import annotations

import datetime
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tests.integration.tpm_tools import tpm2_checkquote
from tpm2_pytss.constants import TPM2_ALG, TPM2_PT, TPM2_ST, TPMA_OBJECT
from tpm2_pytss.types import (
    TPMS_ATTEST,
    TPMT_SIGNATURE,
)

from aicert.tpm.pcrs import format_tpm2_tools_pcrs, pcr_digest
from aicert_agent.tpm.client import (
    AK_CERT_NV_INDEX,
    AK_PERSISTENT_HANDLE,
    Quote,
    Tpm,
    TpmError,
)
from aicert_agent.tpm.devca import DevCA
from aicert_agent.tpm.provision import (
    KeyType,
    ProvisionError,
    dev_provision,
    store_ak_certificate,
    undefine_ak_certificate,
)
from aicert_agent.tpm.swtpm import Swtpm

if TYPE_CHECKING:
    from conftest import ProvisionedTpm

pytestmark = pytest.mark.integration

ZERO = b"\0" * 32
BOOT_AND_MEASUREMENT = [0, 1, 2, 3, 4, 5, 6, 7, 23]
TPM2_HT_TRANSIENT = 0x80
TPM2_HT_LOADED_SESSION = 0x02


@pytest.fixture
def tpm(provisioned_tpm: ProvisionedTpm) -> Iterator[Tpm]:
    with provisioned_tpm.open() as opened:
        yield opened


def assert_nothing_loaded(tpm: Tpm) -> None:
    """No transient object or session left in the TPM (get_capability HANDLES)."""
    assert tpm.list_handles(TPM2_HT_TRANSIENT) == []
    assert tpm.transient_handles() == []
    assert tpm.list_handles(TPM2_HT_LOADED_SESSION) == []


def verify_quote_signature(quote: Quote, ak_pem: str) -> None:
    """Verify the TPMT_SIGNATURE over sha256(attest) with `cryptography` (raises InvalidSignature)."""
    signature, consumed = TPMT_SIGNATURE.unmarshal(quote.signature)
    assert consumed == len(quote.signature)
    key = serialization.load_pem_public_key(ak_pem.encode())
    if int(signature.sigAlg) == int(TPM2_ALG.ECDSA):
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert int(signature.signature.ecdsa.hash) == int(TPM2_ALG.SHA256)
        r = int.from_bytes(bytes(signature.signature.ecdsa.signatureR), "big")
        s = int.from_bytes(bytes(signature.signature.ecdsa.signatureS), "big")
        key.verify(encode_dss_signature(r, s), quote.attest, ec.ECDSA(hashes.SHA256()))
    elif int(signature.sigAlg) == int(TPM2_ALG.RSASSA):
        assert isinstance(key, rsa.RSAPublicKey)
        assert int(signature.signature.rsassa.hash) == int(TPM2_ALG.SHA256)
        key.verify(bytes(signature.signature.rsassa.sig), quote.attest, padding.PKCS1v15(), hashes.SHA256())
    else:
        pytest.fail(f"unexpected signature algorithm {signature.sigAlg}")


# -- provisioning ----------------------------------------------------------------------------------


def test_provision_ecc(provisioned_tpm: ProvisionedTpm) -> None:
    result = provisioned_tpm.result
    assert result.created_ak and result.issued_certificate
    assert result.key_type == "ecc"
    assert result.ak_handle == AK_PERSISTENT_HANDLE == 0x81000003
    key = serialization.load_pem_public_key(result.ak_public_pem.encode())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    with provisioned_tpm.open() as tpm:
        area = tpm.ak_public().publicArea
        attributes = int(area.objectAttributes)
        for flag in ("FIXEDTPM", "FIXEDPARENT", "SENSITIVEDATAORIGIN", "USERWITHAUTH", "RESTRICTED"):
            assert attributes & int(getattr(TPMA_OBJECT, flag)), flag
        assert attributes & int(TPMA_OBJECT.SIGN_ENCRYPT)
        assert not attributes & int(TPMA_OBJECT.DECRYPT)
        assert int(area.parameters.eccDetail.scheme.scheme) == int(TPM2_ALG.ECDSA)
        assert int(area.parameters.eccDetail.scheme.details.ecdsa.hashAlg) == int(TPM2_ALG.SHA256)
        assert tpm.has_nv_index(AK_CERT_NV_INDEX)
        assert_nothing_loaded(tpm)


def test_provision_rsa(swtpm: Swtpm, dev_ca: DevCA) -> None:
    with Tpm(swtpm.spec) as tpm:
        result = dev_provision(tpm, dev_ca, key_type="rsa")
        assert_nothing_loaded(tpm)
        key = serialization.load_pem_public_key(result.ak_public_pem.encode())
        assert isinstance(key, rsa.RSAPublicKey)
        assert key.key_size == 2048
        area = tpm.ak_public().publicArea
        assert int(area.parameters.rsaDetail.scheme.scheme) == int(TPM2_ALG.RSASSA)
        assert int(area.objectAttributes) & int(TPMA_OBJECT.RESTRICTED)
        assert tpm.ak_certificate_der() == result.certificate_der
        assert result.certificate.public_key() == key


def test_reprovision_is_idempotent(provisioned_tpm: ProvisionedTpm) -> None:
    first = provisioned_tpm.result
    with provisioned_tpm.open() as tpm:
        again = dev_provision(tpm, provisioned_tpm.ca)
        assert not again.created_ak and not again.issued_certificate
        assert again.ak_public_pem == first.ak_public_pem
        assert again.certificate_der == first.certificate_der
        assert tpm.ak_certificate_der() == first.certificate_der
        assert_nothing_loaded(tpm)


def test_reprovision_survives_reboot(provisioned_tpm: ProvisionedTpm) -> None:
    provisioned_tpm.swtpm.restart()
    with provisioned_tpm.open() as tpm:
        again = dev_provision(tpm, provisioned_tpm.ca)
        assert not again.created_ak
        assert again.ak_public_pem == provisioned_tpm.result.ak_public_pem


def test_force_replaces_the_ak(provisioned_tpm: ProvisionedTpm) -> None:
    first = provisioned_tpm.result
    with provisioned_tpm.open() as tpm:
        replaced = dev_provision(tpm, provisioned_tpm.ca, force=True)
        assert replaced.created_ak and replaced.issued_certificate
        assert replaced.ak_public_pem != first.ak_public_pem  # a child key: a fresh one each time
        assert tpm.ak_public_pem() == replaced.ak_public_pem
        assert tpm.ak_certificate_der() == replaced.certificate_der
        rsa_now = dev_provision(tpm, provisioned_tpm.ca, key_type="rsa", force=True)
        assert isinstance(serialization.load_pem_public_key(rsa_now.ak_public_pem.encode()), rsa.RSAPublicKey)
        assert_nothing_loaded(tpm)


def test_existing_ak_of_other_type_needs_force(provisioned_tpm: ProvisionedTpm) -> None:
    with provisioned_tpm.open() as tpm, pytest.raises(ProvisionError, match="not an RSA key"):
        dev_provision(tpm, provisioned_tpm.ca, key_type="rsa")


def test_certificate_from_another_ca_is_not_replaced_without_force(
    provisioned_tpm: ProvisionedTpm, tmp_path: Path
) -> None:
    other_ca = DevCA.load_or_create(tmp_path / "other-ca")
    with provisioned_tpm.open() as tpm:
        with pytest.raises(ProvisionError, match="not issued by this dev CA"):
            dev_provision(tpm, other_ca)
        assert tpm.ak_certificate_der() == provisioned_tpm.result.certificate_der
        replaced = dev_provision(tpm, other_ca, force=True)
        assert other_ca.issued(replaced.certificate)
        assert_nothing_loaded(tpm)


def test_existing_ak_without_certificate_gets_certified(provisioned_tpm: ProvisionedTpm) -> None:
    with provisioned_tpm.open() as tpm:
        undefine_ak_certificate(tpm)
        assert not tpm.has_nv_index(AK_CERT_NV_INDEX)
        with pytest.raises(TpmError, match="no AK certificate"):
            tpm.ak_certificate_der()
        result = dev_provision(tpm, provisioned_tpm.ca)
        assert not result.created_ak and result.issued_certificate
        assert result.ak_public_pem == provisioned_tpm.result.ak_public_pem
        assert tpm.ak_certificate_der() == result.certificate_der


# -- AK certificate ----------------------------------------------------------------------------------


def test_ak_certificate_from_nv(provisioned_tpm: ProvisionedTpm) -> None:
    ca, issued = provisioned_tpm.ca, provisioned_tpm.result.certificate
    with provisioned_tpm.open() as tpm:
        der = tpm.ak_certificate_der()
        ak_pem = tpm.ak_public_pem()
        assert_nothing_loaded(tpm)
    assert der == issued.public_bytes(serialization.Encoding.DER)
    cert = x509.load_der_x509_certificate(der)
    # the certified key is the AK
    assert cert.public_key() == serialization.load_pem_public_key(ak_pem.encode())
    assert (
        cert.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
        == ak_pem
    )
    # it chains to the dev CA
    assert cert.issuer == ca.certificate.subject
    cert.verify_directly_issued_by(ca.certificate)
    assert ca.issued(cert)
    # end-entity, signing only
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    common_name = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert isinstance(common_name, str) and common_name.startswith("aicert dev AK ")
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now - datetime.timedelta(minutes=4)
    assert cert.not_valid_after_utc >= now + datetime.timedelta(days=364)


def test_dev_ca_files(tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    ca = DevCA.load_or_create(directory)
    assert (directory / "dev-ca.key").stat().st_mode & 0o777 == 0o600
    assert (directory / "dev-ca.pem").read_text() == ca.certificate_pem
    again = DevCA.load_or_create(directory)
    assert again.certificate == ca.certificate
    root = ca.certificate
    assert root.subject == root.issuer
    assert "NOT FOR PRODUCTION" in root.subject.rfc4514_string()
    basic = root.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca and basic.path_length == 0
    usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    root.verify_directly_issued_by(root)
    (directory / "dev-ca.key").unlink()
    with pytest.raises(FileExistsError):
        DevCA.load_or_create(directory)


def test_padded_certificate_read_in_small_chunks(provisioned_tpm: ProvisionedTpm) -> None:
    """Like Azure: the NV index is larger than the certificate; reads go in several chunks."""
    der = provisioned_tpm.result.certificate_der
    with provisioned_tpm.open() as tpm:
        assert tpm.nv_buffer_max == 1024  # swtpm's TPM2_PT_NV_BUFFER_MAX
        tpm._nv_buffer_max = 100  # force chunked writes and reads
        store_ak_certificate(tpm, der + b"\xff" * 300, replace=True)
        assert tpm.nv_size(AK_CERT_NV_INDEX) == len(der) + 300
        assert tpm.ak_certificate_der() == der
        assert tpm.nv_read(AK_CERT_NV_INDEX, len(der) + 300) == der + b"\xff" * 300
        assert_nothing_loaded(tpm)


def test_garbage_in_nv_is_reported(provisioned_tpm: ProvisionedTpm) -> None:
    with provisioned_tpm.open() as tpm:
        store_ak_certificate(tpm, b"\x04\x03abc", replace=True)
        with pytest.raises(TpmError, match="DER SEQUENCE"):
            tpm.ak_certificate_der()
        store_ak_certificate(tpm, b"\x30\x82\x10\x00" + b"\0" * 10, replace=True)
        with pytest.raises(TpmError, match="claims 4100 bytes"):
            tpm.ak_certificate_der()


# -- PCRs --------------------------------------------------------------------------------------------


def test_extend_is_sha256_of_old_and_digest(tpm: Tpm) -> None:
    old = tpm.pcr_read([23])[23]
    digest = hashlib.sha256(b"first event").digest()
    tpm.pcr_extend(23, digest)
    expected = hashlib.sha256(old + digest).digest()
    assert tpm.pcr_read([23]) == {23: expected}
    second = hashlib.sha256(b"second event").digest()
    tpm.pcr_extend(23, second)
    assert tpm.pcr_read([23])[23] == hashlib.sha256(expected + second).digest()
    assert_nothing_loaded(tpm)


def test_pcr_23_is_resettable_from_locality_0(tpm: Tpm) -> None:
    tpm.pcr_extend(23, b"\x01" * 32)
    assert tpm.pcr_read([23])[23] != ZERO
    try:
        tpm.pcr_reset(23)
    except Exception as e:  # pragma: no cover - say it loudly: the design relies on this
        pytest.fail(f"PCR 23 IS NOT RESETTABLE FROM LOCALITY 0 ON THIS TPM: {e}")
    assert tpm.pcr_read([23])[23] == ZERO


def test_boot_pcrs_are_not_resettable(tpm: Tpm) -> None:
    with pytest.raises(Exception, match="locality"):
        tpm.pcr_reset(7)


def test_pcr_read_more_than_eight(tpm: Tpm) -> None:
    tpm.pcr_extend(5, hashlib.sha256(b"boot").digest())
    tpm.pcr_extend(23, hashlib.sha256(b"run").digest())
    values = tpm.pcr_read(BOOT_AND_MEASUREMENT)
    assert sorted(values) == BOOT_AND_MEASUREMENT
    assert all(len(v) == 32 for v in values.values())
    assert values[5] == hashlib.sha256(ZERO + hashlib.sha256(b"boot").digest()).digest()
    assert values[23] == hashlib.sha256(ZERO + hashlib.sha256(b"run").digest()).digest()
    everything = tpm.pcr_read(list(range(24)))
    assert sorted(everything) == list(range(24))
    assert {i: everything[i] for i in BOOT_AND_MEASUREMENT} == values
    assert tpm.pcr_read([23, 0]) == {0: values[0], 23: values[23]}


def test_pcr_read_matches_tpm2_pcrread(provisioned_tpm: ProvisionedTpm, tmp_path: Path) -> None:
    with provisioned_tpm.open() as tpm:
        tpm.pcr_extend(23, hashlib.sha256(b"x").digest())
        ours = tpm.pcr_read(BOOT_AND_MEASUREMENT)
    out = tmp_path / "pcrs.bin"
    selection = "sha256:" + ",".join(map(str, BOOT_AND_MEASUREMENT))
    subprocess.run(["tpm2_pcrread", "-T", provisioned_tpm.swtpm.tcti, "-o", str(out), selection], check=True)
    assert out.read_bytes() == b"".join(ours[i] for i in BOOT_AND_MEASUREMENT)


def test_reboot_resets_pcrs_and_keeps_the_ak(provisioned_tpm: ProvisionedTpm) -> None:
    with provisioned_tpm.open() as tpm:
        tpm.pcr_extend(23, b"\x02" * 32)
    provisioned_tpm.swtpm.restart()
    with provisioned_tpm.open() as tpm:
        assert tpm.pcr_read([23])[23] == ZERO
        assert tpm.ak_public_pem() == provisioned_tpm.result.ak_public_pem
        assert tpm.ak_certificate_der() == provisioned_tpm.result.certificate_der
        assert tpm.get_property(int(TPM2_PT.LOCKOUT_COUNTER)) == 0


def test_unorderly_restarts_do_not_lock_the_ak_out(provisioned_tpm: ProvisionedTpm) -> None:
    # swtpm allows 3 authorization failures; each unorderly restart counts as one for DA-protected
    # objects once they were used. The AK is NODA, so quoting keeps working.
    for _ in range(5):
        with provisioned_tpm.open() as tpm:
            tpm.quote([23], b"nonce")
        provisioned_tpm.swtpm.restart(orderly=False)
    with provisioned_tpm.open() as tpm:
        tpm.quote([23], b"nonce")


@pytest.mark.parametrize(
    ("indices", "message"),
    [([24], r"0\.\.23"), ([-1], r"0\.\.23"), ([1, 1], "repeat"), ([], "no PCR")],
)
def test_pcr_arguments_are_checked(tpm: Tpm, indices: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tpm.pcr_read(indices)


def test_extend_takes_32_bytes(tpm: Tpm) -> None:
    with pytest.raises(ValueError, match="32-byte"):
        tpm.pcr_extend(23, b"\x01" * 20)
    with pytest.raises(ValueError, match=r"0\.\.23"):
        tpm.pcr_extend(24, b"\x01" * 32)


# -- quotes ------------------------------------------------------------------------------------------


def check_attest(quote: Quote, indices: list[int], extra_data: bytes) -> None:
    attest, consumed = TPMS_ATTEST.unmarshal(quote.attest)
    assert consumed == len(quote.attest)
    assert int(attest.magic) == 0xFF544347
    assert int(attest.type) == int(TPM2_ST.ATTEST_QUOTE)
    assert bytes(attest.extraData) == extra_data
    selections = list(attest.attested.quote.pcrSelect)
    assert len(selections) == 1
    assert int(selections[0].hash) == int(TPM2_ALG.SHA256)
    bitmap = bytes(selections[0].pcrSelect)[: int(selections[0].sizeofSelect)]
    assert [i for i in range(24) if bitmap[i // 8] >> (i % 8) & 1] == indices
    assert sorted(quote.pcr_values) == indices
    expected_digest = hashlib.sha256(b"".join(quote.pcr_values[i] for i in indices)).digest()
    assert bytes(attest.attested.quote.pcrDigest) == expected_digest == pcr_digest(quote.pcr_values)


@pytest.mark.parametrize("key_type", ["ecc", "rsa"])
def test_quote_verifies(swtpm: Swtpm, dev_ca: DevCA, key_type: KeyType) -> None:
    with Tpm(swtpm.spec) as tpm:
        result = dev_provision(tpm, dev_ca, key_type=key_type)
        tpm.pcr_extend(23, hashlib.sha256(b"measured").digest())
        nonce = hashlib.sha256(b"statement").digest()
        quote = tpm.quote(BOOT_AND_MEASUREMENT, nonce)
        assert quote.pcr_values == tpm.pcr_read(BOOT_AND_MEASUREMENT)
        assert_nothing_loaded(tpm)
    verify_quote_signature(quote, result.ak_public_pem)
    check_attest(quote, BOOT_AND_MEASUREMENT, nonce)
    # the AK certificate's key verifies it too
    cert_pem = (
        result.certificate.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    verify_quote_signature(quote, cert_pem)


def test_quote_signature_fails_on_tampering(tpm: Tpm, provisioned_tpm: ProvisionedTpm) -> None:
    from cryptography.exceptions import InvalidSignature

    quote = tpm.quote([23], b"nonce")
    tampered = Quote(
        attest=quote.attest[:-1] + bytes([quote.attest[-1] ^ 1]),
        signature=quote.signature,
        pcr_values=quote.pcr_values,
    )
    with pytest.raises(InvalidSignature):
        verify_quote_signature(tampered, provisioned_tpm.result.ak_public_pem)


def test_quote_extra_data_round_trips(tpm: Tpm) -> None:
    for extra in (b"", b"n", bytes(range(64))):
        quote = tpm.quote([0, 23], extra)
        check_attest(quote, [0, 23], extra)
    with pytest.raises(ValueError, match="at most 64"):
        tpm.quote([23], b"x" * 65)
    assert_nothing_loaded(tpm)


def test_quote_all_pcrs(tpm: Tpm) -> None:
    quote = tpm.quote(list(range(24)), b"all")
    check_attest(quote, list(range(24)), b"all")


def test_quote_without_ak_says_so(swtpm: Swtpm) -> None:
    with Tpm(swtpm.spec) as tpm:
        with pytest.raises(TpmError, match="no attestation key at persistent handle 0x81000003"):
            tpm.quote([23], b"")
        with pytest.raises(TpmError, match="no attestation key"):
            tpm.ak_public_pem()
        assert_nothing_loaded(tpm)


@pytest.mark.parametrize("key_type", ["ecc", "rsa"])
def test_tpm2_checkquote_accepts_our_quote(
    swtpm: Swtpm, dev_ca: DevCA, tmp_path: Path, key_type: KeyType
) -> None:
    with Tpm(swtpm.spec) as tpm:
        result = dev_provision(tpm, dev_ca, key_type=key_type)
        tpm.pcr_extend(23, hashlib.sha256(b"measured").digest())
        nonce = hashlib.sha256(b"statement").digest()
        quote = tpm.quote(BOOT_AND_MEASUREMENT, nonce)
    ak_pem = result.ak_public_pem

    assert tpm2_checkquote(tmp_path / "good", quote, ak_pem, nonce) == 0

    flipped = bytearray(quote.attest)
    flipped[len(flipped) // 2] ^= 0x01
    bad_attest = Quote(bytes(flipped), quote.signature, quote.pcr_values)
    assert tpm2_checkquote(tmp_path / "flipped", bad_attest, ak_pem, nonce) != 0

    assert tpm2_checkquote(tmp_path / "nonce", quote, ak_pem, b"\x01" * 32) != 0

    bad_pcrs = Quote(quote.attest, quote.signature, {**quote.pcr_values, 23: ZERO})
    assert tpm2_checkquote(tmp_path / "pcrs", bad_pcrs, ak_pem, nonce) != 0


def test_our_pcr_file_matches_tpm2_quote(provisioned_tpm: ProvisionedTpm, tmp_path: Path) -> None:
    """The serialized PCR file written for tpm2_checkquote is byte-identical to tpm2_quote's."""
    with provisioned_tpm.open() as tpm:
        quote = tpm.quote(BOOT_AND_MEASUREMENT, b"n")
    selection = "sha256:" + ",".join(map(str, BOOT_AND_MEASUREMENT))
    args = ["tpm2_quote", "-T", provisioned_tpm.swtpm.tcti, "-c", hex(AK_PERSISTENT_HANDLE), "-l", selection]
    args += ["-q", "6e", "-m", "m.bin", "-s", "s.bin", "-o", "pcrs.bin", "-g", "sha256"]
    subprocess.run(args, cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "pcrs.bin").read_bytes() == format_tpm2_tools_pcrs(quote.pcr_values)
    assert (tmp_path / "s.bin").read_bytes()[:6] == quote.signature[:6]  # same TPMT_SIGNATURE header
