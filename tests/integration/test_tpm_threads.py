"""One TPM, many threads: the node agent seals several runs at once (its seal workers), renews its
lease after a TPM probe, and extends its PCR for the runs it gates, all over one ESAPI context.

An ESAPI context serves one command at a time: two threads in it at once make it fail ("Function
called in the wrong order") and can leave a hash sequence loaded in the TPM, whose few object slots
then run out ("out of memory for object contexts") and every later seal on that node fails. The
scale benchmark found it: the Sigstore bundle and the model signature were signed outside the lock
that ordered the other TPM calls. `Tpm` now serializes its own operations.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from tests.integration.conftest import ProvisionedTpm

from aicert_agent.tpm.client import MAX_DIGEST_BUFFER, Tpm, TpmError

pytestmark = pytest.mark.integration

ROUNDS = 12
DEBUG_PCR = 16  # resettable, unused by the agent


def test_one_tpm_serves_signatures_extends_quotes_and_probes_from_several_threads(
    provisioned_tpm: ProvisionedTpm,
) -> None:
    failures: list[BaseException] = []
    large = b"DSSEv1 " + b"x" * (3 * MAX_DIGEST_BUFFER + 5)  # a hash sequence of several commands

    with Tpm(provisioned_tpm.spec) as tpm:
        start = threading.Barrier(4)

        def repeat(work: Callable[[int], object]) -> Callable[[], None]:
            def run() -> None:
                start.wait()
                try:
                    for round_ in range(ROUNDS):
                        work(round_)
                except BaseException as exc:  # reported below, with the others
                    failures.append(exc)

            return run

        workers = [
            threading.Thread(target=repeat(lambda r: tpm.sign_external(large + bytes([r])))),
            threading.Thread(target=repeat(lambda r: tpm.sign_external(b"DSSEv1 small" + bytes([r])))),
            threading.Thread(target=repeat(lambda r: tpm.pcr_extend(DEBUG_PCR, bytes([r]) * 32))),
            threading.Thread(target=repeat(lambda r: tpm.quote([DEBUG_PCR], bytes([r]) * 16))),
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert failures == []
        assert tpm.transient_handles() == []  # no sequence left loaded


def test_objects_left_loaded_by_an_agent_killed_mid_sequence_are_flushed_at_start(
    provisioned_tpm: ProvisionedTpm,
) -> None:
    """Without a kernel resource manager (a TPM device used directly, or swtpm), an object stays
    loaded after the connection that loaded it is gone: an agent killed inside a hash sequence
    leaves it there, and a few of them fill the TPM's object slots for every later seal. The agent
    flushes them when it starts (it is the TPM's only user on its node)."""
    from tpm2_pytss import TSS2_Exception
    from tpm2_pytss.constants import TPM2_ALG
    from tpm2_pytss.types import TPM2B_AUTH

    large = b"DSSEv1 " + b"x" * (2 * MAX_DIGEST_BUFFER)
    with Tpm(provisioned_tpm.spec) as killed:  # sequences started, never completed nor flushed
        left = 0
        while True:
            try:
                killed.esapi.hash_sequence_start(TPM2B_AUTH(b""), TPM2_ALG.SHA256)
            except TSS2_Exception:
                break
            left += 1
        assert left >= 1
    with Tpm(provisioned_tpm.spec) as tpm:
        assert len(tpm.transient_handles()) == left
        with pytest.raises((TSS2_Exception, TpmError)):
            tpm.sign_external(large)  # what every seal on that node met
        assert tpm.flush_transient_objects() == left
        assert tpm.transient_handles() == []
        assert tpm.sign_external(large)
        assert tpm.flush_transient_objects() == 0
