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

from aicert_agent.tpm.client import MAX_DIGEST_BUFFER, Tpm

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
