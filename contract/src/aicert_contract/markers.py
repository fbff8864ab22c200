"""The control protocol between the node agent and a training pod's gate and seal containers.

The agent writes marker files into a small control volume that only the gate and seal containers
mount; they wait for them and exit with these codes. No imports: the gate and seal containers load
this and nothing else, so each starts in a few milliseconds.
"""

from typing import Final

CONTROL_VOLUME: Final = "aicert-control"
CONTROL_MOUNT: Final = "/run/aicert-control"
MARKER_GATE: Final = "inputs-measured"  # written by the agent: the train container may start
MARKER_SEALED: Final = "sealed"  # written by the agent: the certificate is in the status
MARKER_REFUSED: Final = "refused"  # written by the agent: no certificate; the file says why
SEAL_REFUSED_EXIT: Final = 3  # exit code of aicert-gate/aicert-seal when the agent refused the pod
GATE_TIMEOUT_EXIT: Final = 4  # exit code of aicert-gate when the agent never opened the gate
