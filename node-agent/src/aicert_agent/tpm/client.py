"""A small, typed TPM 2.0 client over tpm2-pytss ESAPI: PCRs, the AK, its certificate, quotes.

The AK and its certificate are found where Azure's vTPM keeps them: the AK at persistent handle
`AK_PERSISTENT_HANDLE` and its X.509 certificate (DER, maybe followed by padding) in NV index
`AK_CERT_NV_INDEX`. `provision.dev_provision` makes a swtpm look the same, so production and tests
read the AK the same way.

Every transient object this module creates is flushed before the method returns (try/finally);
ESYS_TR handles created for persistent objects and NV indices are closed (metadata only).
tpm2_pytss ships no type information, so every value coming out of it is converted to a plain
Python type (bytes, int, dict) at this edge.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from aicert.bundle import starts_with_tpm_generated
from aicert.tpm.attest import ALG_SHA256, TPM_GENERATED_VALUE, parse_attest
from aicert.tpm.pcrs import pcr_digest
from aicert.tpm.reader import StructureError

from .tcti import TpmSpec, parse_tpm_spec

AK_PERSISTENT_HANDLE = 0x81000003
"""Persistent handle of the attestation key (Azure vTPM layout)."""

AK_CERT_NV_INDEX = 0x01C101D0
"""NV index holding the AK's X.509 certificate in DER (Azure vTPM layout)."""

PCR_COUNT = 24
SHA256_SIZE = 32
MAX_EXTRA_DATA = 64
"""TPM2B_DATA holds at most sizeof(TPMU_HA) = 64 bytes of qualifying data."""

MAX_DIGEST_BUFFER = 1024
"""The largest TPM2B_MAX_BUFFER a PC-client TPM must take (TPM2_PT_INPUT_BUFFER is at least this):
data up to it is hashed by TPM2_Hash, longer data by a hash sequence of chunks of it."""

QUOTE_ATTEMPTS = 5
"""How often `Tpm.quote` retries when the quoted PCRs change while it quotes."""

_HANDLE_TYPE_SHIFT = 24
_TSS_MAX_NV_BUFFER = 2048
"""sizeof(TPM2B_MAX_NV_BUFFER.buffer) in tss2: an upper bound whatever the TPM reports."""


class TpmError(RuntimeError):
    """The TPM is not in the expected state, or returned something inconsistent."""


@dataclass(frozen=True)
class Quote:
    """A TPM2_Quote over sha256 PCRs, in the wire formats the certificate carries.

    attest: marshaled TPMS_ATTEST (the body of TPM2B_ATTEST, without its size prefix);
    signature: marshaled TPMT_SIGNATURE;
    pcr_values: the quoted PCRs (index -> 32-byte sha256 bank value); their digest is the
    attest's pcrDigest (checked when the quote was taken).
    """

    attest: bytes
    signature: bytes
    pcr_values: dict[int, bytes]


def _check_pcr_index(index: int) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < PCR_COUNT:
        raise ValueError(f"PCR index must be an int in 0..{PCR_COUNT - 1}, got {index!r}")
    return index


def _check_pcr_indices(indices: Sequence[int]) -> list[int]:
    checked = [_check_pcr_index(i) for i in indices]
    if not checked:
        raise ValueError("no PCR selected")
    if len(set(checked)) != len(checked):
        raise ValueError(f"PCR indices repeat: {list(indices)}")
    return sorted(checked)


def der_length(prefix: bytes) -> int:
    """Total length (header + content) of the DER SEQUENCE that `prefix` starts with.

    `prefix` needs only the tag and length octets (at most 6 bytes). An X.509 certificate stored
    in NV may be followed by padding; this tells where the certificate ends.
    """
    if len(prefix) < 2 or prefix[0] != 0x30:
        raise TpmError("NV data does not start with a DER SEQUENCE (is it an X.509 certificate?)")
    first = prefix[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > 4:
        raise TpmError(f"NV data has an invalid DER length encoding (0x{first:02x})")
    if len(prefix) < 2 + count:
        raise TpmError("NV data is too short for its DER length header")
    return 2 + count + int.from_bytes(prefix[2 : 2 + count], "big")


def _selected_pcrs(selection: Any) -> dict[int, list[int]]:
    """A TPML_PCR_SELECTION as {hash alg id: ascending PCR indices}."""
    banks: dict[int, list[int]] = {}
    for sel in selection:
        size = int(sel.sizeofSelect)
        bitmap = bytes(sel.pcrSelect)[:size]
        indices = [i for i in range(size * 8) if bitmap[i // 8] & (1 << (i % 8))]
        if indices:
            banks.setdefault(int(sel.hash), []).extend(indices)
    return {alg: sorted(indices) for alg, indices in banks.items()}


_TPM_ST_NO_SESSIONS = 0x8001
_TPM_CC_FLUSH_CONTEXT = 0x165

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _serialized(method: Callable[Concatenate[Tpm, _P], _R]) -> Callable[Concatenate[Tpm, _P], _R]:
    """One TPM operation at a time: an ESAPI context serves one command at a time, and an operation
    of several commands (a hash sequence, a quote and its PCR reads) must not interleave with
    another's. The node agent calls the TPM from its seal workers, its gate, its lease probe."""

    def serialized(self: Tpm, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return method(self, *args, **kwargs)

    functools.update_wrapper(serialized, method)  # the name and docstring
    return serialized


class Tpm:
    """A connection to one TPM. Use as a context manager. Thread-safe: its operations run one at a
    time (one ESAPI context); `esapi` itself is for single-threaded provisioning only.

    A swtpm serves one connection at a time: open one `Tpm` per swtpm at a time.
    """

    def __init__(self, spec: TpmSpec | str) -> None:
        self.spec = parse_tpm_spec(spec) if isinstance(spec, str) else spec
        self._lock = threading.RLock()  # an operation may call others (sign_external reads the AK)
        self._tcti: Any = None
        self._esys: Any = None
        self._nv_buffer_max: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @_serialized
    def open(self) -> Tpm:
        if self._esys is not None:
            return self
        from tpm2_pytss import ESAPI, TSS2_Exception

        try:
            tcti = self.spec.open()
        except TSS2_Exception as exc:
            raise TpmError(f"cannot reach the TPM at {self.spec}: {exc}") from None
        try:
            self._esys = ESAPI(tcti)
        except TSS2_Exception as exc:
            tcti.close()
            raise TpmError(f"the TPM at {self.spec} does not answer: {exc}") from None
        except BaseException:
            tcti.close()
            raise
        self._tcti = tcti
        return self

    @_serialized
    def close(self) -> None:
        esys, tcti = self._esys, self._tcti
        self._esys = self._tcti = None
        try:
            if esys is not None:
                esys.close()
        finally:
            if tcti is not None:
                tcti.close()

    def __enter__(self) -> Tpm:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def esapi(self) -> Any:
        """The underlying tpm2_pytss ESAPI context (for `provision`; keep TPM calls at the edge)."""
        if self._esys is None:
            raise TpmError(f"TPM {self.spec} is not open (use `with Tpm(spec) as tpm:`)")
        return self._esys

    # -- capabilities and handles ------------------------------------------------------------

    @_serialized
    def get_property(self, prop: int) -> int:
        """A TPM property (TPM2_PT_*) from TPM2_GetCapability(TPM_PROPERTIES)."""
        from tpm2_pytss.constants import TPM2_CAP

        _, data = self.esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, prop, 1)
        for p in data.data.tpmProperties:
            if int(p.property) == prop:
                return int(p.value)
        raise TpmError(f"TPM does not report property 0x{prop:x}")

    @_serialized
    def list_handles(self, handle_type: int) -> list[int]:
        """Handles in use of one type (TPM2_HT_*: 0x80 transient, 0x81 persistent, 0x01 NV, ...)."""
        from tpm2_pytss.constants import TPM2_CAP

        first = handle_type << _HANDLE_TYPE_SHIFT
        handles: list[int] = []
        more = True
        start = first
        while more:
            more, data = self.esapi.get_capability(TPM2_CAP.HANDLES, start, 64)
            batch = [int(h) for h in data.data.handles]
            batch = [h for h in batch if h >> _HANDLE_TYPE_SHIFT == handle_type]
            if not batch:
                break
            handles.extend(batch)
            start = batch[-1] + 1
        return handles

    @_serialized
    def transient_handles(self) -> list[int]:
        """Transient objects currently loaded (should be empty between operations)."""
        return self.list_handles(0x80)

    @_serialized
    def flush_transient_objects(self) -> int:
        """Flush every transient object loaded in the TPM; how many there were. For the agent's
        start: without a kernel resource manager an object outlives the connection that loaded it,
        so an agent killed inside a hash sequence leaves it loaded, and a few fill the TPM's object
        slots. ESAPI flushes only objects it has an ESYS_TR for, and a sequence object has no public
        area to make one from, so TPM2_FlushContext goes to the TCTI as a raw command (no session:
        tag TPM_ST_NO_SESSIONS, the handle as its parameter)."""
        import struct

        handles = self.transient_handles()  # raises TpmError when the TPM is not open
        for handle in handles:
            self._tcti.transmit(struct.pack(">HIII", _TPM_ST_NO_SESSIONS, 14, _TPM_CC_FLUSH_CONTEXT, handle))
            answer = bytes(self._tcti.receive())
            code = struct.unpack(">I", answer[6:10])[0] if len(answer) >= 10 else -1
            if code != 0:
                raise TpmError(f"TPM2_FlushContext of transient object {handle:#x} failed: {code:#x}")
        return len(handles)

    @_serialized
    def has_persistent(self, handle: int) -> bool:
        return handle in self.list_handles(0x81)

    @_serialized
    def has_nv_index(self, index: int) -> bool:
        return index in self.list_handles(0x01)

    @property
    @_serialized
    def nv_buffer_max(self) -> int:
        """Largest NV read/write chunk: TPM2_PT_NV_BUFFER_MAX, capped by the TSS buffer size."""
        if self._nv_buffer_max is None:
            from tpm2_pytss.constants import TPM2_PT_NV

            self._nv_buffer_max = min(self.get_property(int(TPM2_PT_NV.BUFFER_MAX)), _TSS_MAX_NV_BUFFER)
        return self._nv_buffer_max

    @contextmanager
    def tr_from_handle(self, handle: int) -> Iterator[Any]:
        """An ESYS_TR for a persistent object or NV index; its metadata is closed afterwards."""
        tr = self.esapi.tr_from_tpmpublic(handle)
        try:
            yield tr
        finally:
            self.tr_close(tr)

    def tr_close(self, tr: Any) -> None:
        """Forget an ESYS_TR (metadata only; the TPM object stays)."""
        if self._esys is not None:
            self._esys.tr_close(tr)

    @contextmanager
    def flushing(self, handle: Any) -> Iterator[Any]:
        """Yield a transient ESYS_TR and flush it from the TPM afterwards, whatever happens."""
        try:
            yield handle
        finally:
            if self._esys is not None:
                self._esys.flush_context(handle)

    # -- PCRs --------------------------------------------------------------------------------

    @staticmethod
    def _sha256_selection(indices: Sequence[int]) -> Any:
        from tpm2_pytss.constants import TPM2_ALG
        from tpm2_pytss.types import TPML_PCR_SELECTION, TPMS_PCR_SELECTION

        return TPML_PCR_SELECTION([TPMS_PCR_SELECTION(hash=TPM2_ALG.SHA256, pcrs=list(indices))])

    @staticmethod
    def _pcr_tr(index: int) -> Any:
        from tpm2_pytss.constants import ESYS_TR

        return ESYS_TR(int(ESYS_TR.PCR0) + _check_pcr_index(index))

    @_serialized
    def pcr_read(self, indices: Sequence[int]) -> dict[int, bytes]:
        """Read sha256-bank PCRs. A TPM returns at most 8 digests per TPM2_PCR_Read: loop."""
        from tpm2_pytss.constants import TPM2_ALG

        remaining = _check_pcr_indices(indices)
        values: dict[int, bytes] = {}
        while remaining:
            _, selection_out, digests = self.esapi.pcr_read(self._sha256_selection(remaining))
            banks = _selected_pcrs(selection_out)
            got = banks.pop(int(TPM2_ALG.SHA256), [])
            digest_list = [bytes(d) for d in digests]
            if banks or not got or len(got) != len(digest_list) or not set(got) <= set(remaining):
                raise TpmError(
                    f"TPM returned an unexpected PCR read for sha256:{remaining} "
                    f"(selected {got}, {len(digest_list)} digests; is the sha256 bank allocated?)"
                )
            for index, digest in zip(got, digest_list, strict=True):
                if len(digest) != SHA256_SIZE:
                    raise TpmError(f"PCR {index} returned a {len(digest)}-byte digest, expected 32")
                values[index] = digest
            remaining = [i for i in remaining if i not in values]
        return values

    @_serialized
    def pcr_extend(self, index: int, digest: bytes) -> None:
        """PCR[index] := sha256(PCR[index] || digest), in the sha256 bank only."""
        from tpm2_pytss.constants import TPM2_ALG
        from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

        if not isinstance(digest, bytes) or len(digest) != SHA256_SIZE:
            raise ValueError("pcr_extend takes a 32-byte sha256 digest")
        values = TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=digest))])
        self.esapi.pcr_extend(self._pcr_tr(index), values)

    @_serialized
    def pcr_reset(self, index: int) -> None:
        """Reset a resettable PCR (16 and 23 from locality 0 on a PC-client TPM) to zeros."""
        self.esapi.pcr_reset(self._pcr_tr(index))

    # -- AK and its certificate --------------------------------------------------------------

    def _require_ak(self) -> None:
        if not self.has_persistent(AK_PERSISTENT_HANDLE):
            raise TpmError(
                f"no attestation key at persistent handle 0x{AK_PERSISTENT_HANDLE:08x} "
                "(on swtpm run the dev provisioning first)"
            )

    @_serialized
    def ak_public(self) -> Any:
        """The AK's TPM2B_PUBLIC (tpm2_pytss object)."""
        self._require_ak()
        with self.tr_from_handle(AK_PERSISTENT_HANDLE) as ak:
            public, _, _ = self.esapi.read_public(ak)
        return public

    @_serialized
    def ak_public_pem(self) -> str:
        """The AK public key as SubjectPublicKeyInfo PEM."""
        return bytes(self.ak_public().to_pem()).decode("ascii")

    @_serialized
    def nv_read(self, index: int, size: int, offset: int = 0) -> bytes:
        """Read `size` bytes at `offset` of an NV index, in chunks of at most `nv_buffer_max`."""
        from tpm2_pytss.constants import ESYS_TR, TPMA_NV

        with self.tr_from_handle(index) as nv:
            public, _ = self.esapi.nv_read_public(nv)
            attributes = int(public.nvPublic.attributes)
            data_size = int(public.nvPublic.dataSize)
            if not attributes & int(TPMA_NV.WRITTEN):
                raise TpmError(f"NV index 0x{index:08x} has never been written")
            if offset < 0 or size < 0 or offset + size > data_size:
                raise TpmError(
                    f"NV read of {size} bytes at {offset} is past the end of index 0x{index:08x} "
                    f"({data_size} bytes)"
                )
            # Azure documents reading the AK certificate with owner authorization; prefer it.
            if attributes & int(TPMA_NV.OWNERREAD):
                auth = ESYS_TR.OWNER
            elif attributes & int(TPMA_NV.AUTHREAD):
                auth = nv
            else:
                raise TpmError(f"NV index 0x{index:08x} is readable neither with owner nor index auth")
            chunks: list[bytes] = []
            done = 0
            while done < size:
                step = min(self.nv_buffer_max, size - done)
                chunk = bytes(self.esapi.nv_read(nv, step, offset + done, auth_handle=auth))
                if not chunk:
                    raise TpmError(f"NV read of index 0x{index:08x} returned no data")
                chunks.append(chunk)
                done += len(chunk)
            return b"".join(chunks)

    @_serialized
    def nv_size(self, index: int) -> int:
        with self.tr_from_handle(index) as nv:
            public, _ = self.esapi.nv_read_public(nv)
            return int(public.nvPublic.dataSize)

    @_serialized
    def read_nv(self, index: int) -> bytes:
        """The whole content of NV index `index` (all of its defined size), read in chunks."""
        if not self.has_nv_index(index):
            raise TpmError(f"NV index 0x{index:08x} is not defined")
        return self.nv_read(index, self.nv_size(index))

    @_serialized
    def ak_certificate_der(self) -> bytes:
        """The AK certificate (DER) from NV index `AK_CERT_NV_INDEX`, without any trailing padding."""
        if not self.has_nv_index(AK_CERT_NV_INDEX):
            raise TpmError(f"no AK certificate: NV index 0x{AK_CERT_NV_INDEX:08x} is not defined")
        size = self.nv_size(AK_CERT_NV_INDEX)
        head = self.nv_read(AK_CERT_NV_INDEX, min(size, 6))
        length = der_length(head)
        if length > size:
            raise TpmError(
                f"AK certificate in NV index 0x{AK_CERT_NV_INDEX:08x} claims {length} bytes "
                f"but the index holds only {size}"
            )
        return self.nv_read(AK_CERT_NV_INDEX, length)

    # -- quote -------------------------------------------------------------------------------

    @staticmethod
    def _quote_scheme(public_area: Any) -> Any:
        """Scheme argument for TPM2_Quote: NULL when the AK has a scheme (the TPM uses it), else the
        usual one for the key type (ECDSA-SHA256 or RSASSA-SHA256)."""
        from tpm2_pytss.constants import TPM2_ALG
        from tpm2_pytss.types import TPMT_SIG_SCHEME

        if int(public_area.parameters.asymDetail.scheme.scheme) != int(TPM2_ALG.NULL):
            return TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
        key_type = int(public_area.type)
        if key_type == int(TPM2_ALG.ECC):
            scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
        elif key_type == int(TPM2_ALG.RSA):
            scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.RSASSA)
        else:
            raise TpmError(f"AK has unsupported key type {key_type:#x}")
        scheme.details.any.hashAlg = TPM2_ALG.SHA256
        return scheme

    @_serialized
    def quote(self, pcrs: Sequence[int], extra_data: bytes) -> Quote:
        """Quote sha256 PCRs with the AK, qualified by `extra_data` (at most 64 bytes).

        The returned PCR values are those the quote covers: PCRs are read before and after the
        quote (retried a bounded number of times if they moved) and their digest must equal the
        attest's pcrDigest.
        """
        from tpm2_pytss.types import TPM2B_DATA

        indices = _check_pcr_indices(pcrs)
        if not isinstance(extra_data, bytes) or len(extra_data) > MAX_EXTRA_DATA:
            raise ValueError(f"extra_data must be at most {MAX_EXTRA_DATA} bytes")
        self._require_ak()
        with self.tr_from_handle(AK_PERSISTENT_HANDLE) as ak:
            public, _, _ = self.esapi.read_public(ak)
            scheme = self._quote_scheme(public.publicArea)
            selection = self._sha256_selection(indices)
            for _attempt in range(QUOTE_ATTEMPTS):
                before = self.pcr_read(indices)
                attest_2b, signature = self.esapi.quote(ak, selection, TPM2B_DATA(extra_data), scheme)
                after = self.pcr_read(indices)
                if before != after:
                    continue
                attest = bytes(attest_2b)
                check_quote_attest(attest, indices, extra_data, before)
                return Quote(attest=attest, signature=bytes(signature.marshal()), pcr_values=before)
        raise TpmError(f"PCRs {indices} kept changing during {QUOTE_ATTEMPTS} quote attempts")

    # -- signing external data with the (restricted) AK ------------------------------------------

    def _hash_with_ticket(self, data: bytes) -> tuple[Any, Any]:
        """sha256(data) computed by the TPM, with the TPMT_TK_HASHCHECK ticket (owner hierarchy)
        that lets a restricted key sign it: TPM2_Hash for data up to MAX_DIGEST_BUFFER bytes, a
        hash sequence (TPM2_HashSequenceStart, SequenceUpdate, SequenceComplete) beyond. The TPM
        gives a real ticket only for data that does not begin with TPM_GENERATED_VALUE."""
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
        from tpm2_pytss.types import TPM2B_AUTH, TPM2B_MAX_BUFFER

        if len(data) <= MAX_DIGEST_BUFFER:
            digest, ticket = self.esapi.hash(TPM2B_MAX_BUFFER(data), TPM2_ALG.SHA256, ESYS_TR.OWNER)
            return digest, ticket
        sequence = self.esapi.hash_sequence_start(TPM2B_AUTH(b""), TPM2_ALG.SHA256)
        completed = False
        try:
            last = (len(data) - 1) // MAX_DIGEST_BUFFER * MAX_DIGEST_BUFFER
            for offset in range(0, last, MAX_DIGEST_BUFFER):
                self.esapi.sequence_update(
                    sequence, TPM2B_MAX_BUFFER(data[offset : offset + MAX_DIGEST_BUFFER])
                )
            digest, ticket = self.esapi.sequence_complete(
                sequence, TPM2B_MAX_BUFFER(data[last:]), ESYS_TR.OWNER
            )
            completed = True  # SequenceComplete flushed the sequence object
            return digest, ticket
        finally:
            if not completed and self._esys is not None:
                self._esys.flush_context(sequence)

    @_serialized
    def sign_external(self, data: bytes) -> bytes:
        """The AK's signature over sha256(`data`), as a marshaled TPMT_SIGNATURE (the AK's scheme,
        else RSASSA or ECDSA with SHA-256, as for quotes).

        The AK is a restricted signing key: it signs a digest only with the ticket the TPM gives when
        it hashed the data itself and the data does not begin with TPM_GENERATED_VALUE, so that
        nothing it signs can pass for one of its attestations. Data that begins with it is refused
        here, before the TPM is asked (a DSSE PAE begins with `DSSEv1`, never with it)."""
        if not isinstance(data, bytes):
            raise TypeError("sign_external takes bytes")
        if starts_with_tpm_generated(data):
            raise ValueError(
                "the data begins with TPM_GENERATED_VALUE: the AK signs it only as one of its own attestations"
            )
        self._require_ak()
        with self.tr_from_handle(AK_PERSISTENT_HANDLE) as ak:
            public, _, _ = self.esapi.read_public(ak)
            scheme = self._quote_scheme(public.publicArea)
            digest, ticket = self._hash_with_ticket(data)
            signature = self.esapi.sign(ak, digest, scheme, ticket)
        return bytes(signature.marshal())


def check_quote_attest(
    attest: bytes, indices: Sequence[int], extra_data: bytes, values: dict[int, bytes]
) -> None:
    """Check that a marshaled TPMS_ATTEST is a quote of exactly these sha256 PCR values and extraData.

    Uses the verifier's own parser, so the agent never hands out a quote the verifier would refuse.
    """
    try:
        parsed = parse_attest(attest)
    except StructureError as exc:
        raise TpmError(f"the TPM returned an unreadable quote: {exc}") from None
    if parsed.magic != TPM_GENERATED_VALUE:
        raise TpmError(f"attest magic is {parsed.magic:#x}, expected {TPM_GENERATED_VALUE:#x}")
    if parsed.extra_data != extra_data:
        raise TpmError("attest extraData differs from the requested qualifying data")
    banks = {s.hash_alg for s in parsed.pcr_select if s.pcrs}
    if banks != {ALG_SHA256} or parsed.selected(ALG_SHA256) != tuple(sorted(indices)):
        raise TpmError(f"quote selects {parsed.pcr_select}, expected sha256:{sorted(indices)}")
    if sorted(values) != sorted(indices):
        raise TpmError("PCR values do not match the quoted selection")
    if parsed.pcr_digest != pcr_digest(values):
        raise TpmError("quote pcrDigest does not match the PCR values read around it")
