"""Which image did the train container run? kubelet's pod status, and the runtime's own word.

The pod status's imageID must prove the digest spec.image pins (`image_proof`). With a runtime
reader (--cri-socket), the runtime is asked too, read-only (`cri`): the container the status names
must be the pod's own train container, and what the runtime says it ran must agree with the status. Without
one, the status alone decides, and the agent says so in its log.
"""

from __future__ import annotations

from typing import Any

from aicert_agent.cri import RuntimeReader, runtime_container_id, runtime_problem
from aicert_agent.image_proof import PinnedImage, image_ref_problem, spec_image
from aicert_agent.pod_check import Problem
from aicert_agent.pod_state import container_status
from aicert_contract.status import Reason
from aicert_contract.training import CONTAINER_TRAIN


def train_image_problem(
    pod: dict[str, Any], image: str, runtime: RuntimeReader | None
) -> tuple[PinnedImage, Problem | None]:
    """spec.image as pinned, and why the pod's train container does not prove it ran that image
    (None: it does). A runtime that does not answer raises (cri_client.CriError): at the seal, the
    step is tried again, then refused as SealFailed."""
    pinned = spec_image(image)
    train = container_status(pod, CONTAINER_TRAIN)
    image_id = str(train.get("imageID") or "")
    problem = image_ref_problem(image_id, pinned, who="kubelet's pod status")
    if problem is not None or runtime is None:
        return pinned, problem
    container_id = str(train.get("containerID") or "")
    runtime_id = runtime_container_id(container_id)
    if runtime_id is None:
        return pinned, Problem(
            Reason.IMAGE_UNKNOWN,
            f"kubelet's pod status names no runtime container for the train container ({container_id[:200]!r})",
        )
    container = runtime.container_status(runtime_id)
    pod_uid = str((pod.get("metadata") or {}).get("uid") or "")
    held = runtime.image_status(str(pinned))
    return pinned, runtime_problem(pinned, pod_uid, image_id, runtime_id, container, held)
