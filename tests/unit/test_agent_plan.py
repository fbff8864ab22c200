"""What the node agent does next for a pod, from what survives a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from aicert_agent.pod_plan import Markers, PodFacts, RunProgress, Step, plan
from aicert_agent.volumes import VolumeNotFound, empty_dir_path, pvc_path

GATING = PodFacts(terminal=False, gate_running=True, gate_done=False, train_exit=None, seal_running=False)
TRAINING = PodFacts(terminal=False, gate_running=False, gate_done=True, train_exit=None, seal_running=False)
TRAINED = PodFacts(terminal=False, gate_running=False, gate_done=True, train_exit=0, seal_running=True)
NOTHING = RunProgress(started=False, inputs_measured=0, output_measured=False, sealed=False)
MEASURED = RunProgress(started=True, inputs_measured=2, output_measured=False, sealed=False)
NO_MARKERS = Markers(gate=False, sealed=False, refused=False)


def test_nothing_is_touched_before_kubelet_started_the_gate() -> None:
    # before a container runs, the host paths may be bare mount points: hashing them would
    # certify an empty input, and a marker written there would be hidden by the later mount
    starting = PodFacts(
        terminal=False, gate_running=False, gate_done=False, train_exit=None, seal_running=False
    )
    assert plan(starting, NOTHING, NO_MARKERS, 2, False) == []


def test_seal_steps_wait_for_the_seal_container() -> None:
    sealed = RunProgress(started=True, inputs_measured=2, output_measured=True, sealed=True)
    not_yet = PodFacts(terminal=False, gate_running=False, gate_done=True, train_exit=0, seal_running=False)
    assert plan(not_yet, MEASURED, Markers(True, False, False), 2, False) == []
    assert plan(not_yet, sealed, Markers(True, False, False), 2, False) == []
    assert plan(not_yet, sealed, Markers(True, False, False), 2, certified=True) == []


def test_a_new_pod_is_measured_then_let_in() -> None:
    assert plan(GATING, NOTHING, NO_MARKERS, 2, False) == [Step.BEGIN, Step.MEASURE_INPUTS, Step.OPEN_GATE]


def test_restart_half_way_through_the_inputs_measures_only_the_rest() -> None:
    half = RunProgress(started=True, inputs_measured=1, output_measured=False, sealed=False)
    assert plan(GATING, half, NO_MARKERS, 2, False) == [Step.MEASURE_INPUTS, Step.OPEN_GATE]


def test_restart_after_measuring_but_before_the_gate_opens_only_the_gate() -> None:
    assert plan(GATING, MEASURED, NO_MARKERS, 2, False) == [Step.OPEN_GATE]


def test_nothing_to_do_while_training() -> None:
    assert plan(TRAINING, MEASURED, Markers(True, False, False), 2, False) == []


def test_trained_pod_is_finished() -> None:
    assert plan(TRAINED, MEASURED, Markers(True, False, False), 2, False) == [Step.FINISH]


def test_failed_training_is_not_sealed() -> None:
    failed = PodFacts(terminal=False, gate_running=False, gate_done=True, train_exit=1, seal_running=False)
    assert plan(failed, MEASURED, Markers(True, False, False), 2, False) == []


def test_restart_after_sealing_publishes_the_same_run_again() -> None:
    sealed = RunProgress(started=True, inputs_measured=2, output_measured=True, sealed=True)
    assert plan(TRAINED, sealed, Markers(True, False, False), 2, False) == [Step.PUBLISH]


def test_restart_after_publishing_only_marks() -> None:
    sealed = RunProgress(started=True, inputs_measured=2, output_measured=True, sealed=True)
    assert plan(TRAINED, sealed, Markers(True, False, False), 2, certified=True) == [Step.MARK_SEALED]


def test_lost_log_mid_run_is_refused() -> None:
    assert plan(TRAINED, NOTHING, Markers(True, False, False), 2, False) == [Step.REFUSE_LOG_LOST]


@pytest.mark.parametrize("markers", [Markers(True, True, False), Markers(True, False, True)])
def test_finished_or_refused_pods_are_left_alone(markers: Markers) -> None:
    assert plan(TRAINED, MEASURED, markers, 2, False) == []


def test_terminal_pods_are_left_alone() -> None:
    done = PodFacts(terminal=True, gate_running=False, gate_done=True, train_exit=0, seal_running=False)
    assert plan(done, NOTHING, NO_MARKERS, 2, False) == []


def test_kubelet_volume_paths(tmp_path: Path) -> None:
    volumes = tmp_path / "pods" / "u1" / "volumes"
    (volumes / "kubernetes.io~local-volume" / "pv-data").mkdir(parents=True)
    (volumes / "kubernetes.io~csi" / "pv-csi" / "mount").mkdir(parents=True)
    assert pvc_path(tmp_path, "u1", "pv-data") == volumes / "kubernetes.io~local-volume" / "pv-data"
    assert pvc_path(tmp_path, "u1", "pv-csi") == volumes / "kubernetes.io~csi" / "pv-csi" / "mount"
    assert empty_dir_path(tmp_path, "u1", "output") == volumes / "kubernetes.io~empty-dir" / "output"
    with pytest.raises(VolumeNotFound, match="not mounted"):
        pvc_path(tmp_path, "u1", "pv-missing")


def test_log_is_kept_only_while_a_run_is_between_gate_and_end() -> None:
    from aicert_agent.pod_plan import PodRun, run_in_flight

    measuring = PodRun("a", terminal=False, finished=False)
    assert run_in_flight([measuring], {"a"})
    # an idle pod (not yet measured), a finished one and a terminal one never hold the epoch open
    assert not run_in_flight([PodRun("b", terminal=False, finished=False)], {"a"})
    assert not run_in_flight([PodRun("a", terminal=False, finished=True)], {"a"})
    assert not run_in_flight([PodRun("a", terminal=True, finished=False)], {"a"})
    assert run_in_flight([PodRun("b", terminal=True, finished=False), measuring], {"a", "b"})


def test_an_opened_gate_is_not_opened_again_from_a_stale_view_of_the_pod() -> None:
    """The pod list the agent works from may predate its own gate marker: the gate still looks
    running while training already writes its output. Opening it again would re-check an output
    that is (rightly) no longer empty."""
    assert plan(GATING, MEASURED, Markers(True, False, False), 2, False) == []


@pytest.mark.parametrize(
    ("facts", "markers", "expected"),
    [
        (GATING, NO_MARKERS, True),
        (GATING, Markers(True, False, False), False),  # gate already open
        (TRAINING, Markers(True, False, False), False),  # nothing to do while training
        (TRAINED, Markers(True, False, False), True),  # seal running
        (TRAINED, Markers(True, True, False), False),
        (TRAINED, Markers(True, False, True), False),
        (PodFacts(True, False, False, None, False), NO_MARKERS, False),  # terminal
    ],
)
def test_the_agent_acts_only_while_gate_or_seal_runs(
    facts: PodFacts, markers: Markers, expected: bool
) -> None:
    from aicert_agent.pod_plan import may_act

    assert may_act(facts, markers) is expected
