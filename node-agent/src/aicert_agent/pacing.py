"""How often the agent asks the API server for what it could ask less often. Pure.

docs/performance.md ("The request budget") has what each saves.
"""

from __future__ import annotations

RELABEL_SECONDS = 60.0  # the node's label is written again at most this often (NodeAgent.relabel)
# A pod whose training does not name it yet (check_pod: WAIT) is looked at again after a delay that
# doubles from the first to the last, not at every sweep: a hundred pods waiting for a busy operator
# would otherwise read their trainings every two seconds each.
WAIT_FIRST_SECONDS, WAIT_MAX_SECONDS = 2.0, 8.0


def next_wait(previous: float | None) -> float:
    """Seconds until a waiting pod's training is read again, after waiting `previous` (None: first)."""
    return WAIT_FIRST_SECONDS if previous is None else min(previous * 2, WAIT_MAX_SECONDS)


def relabel_due(labelled_at: float | None, now: float, every: float = RELABEL_SECONDS) -> bool:
    """Is it time to write the node's label again? (monotonic seconds; None: never written)"""
    return labelled_at is None or now - labelled_at >= every
