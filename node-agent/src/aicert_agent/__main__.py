import sys

if sys.argv[1:2] in (["gate"], ["seal"]):
    # The gate and seal containers start fast: they load the marker protocol and nothing else.
    from aicert_agent.markers import waiter_main

    sys.exit(waiter_main(sys.argv[1:]))

if sys.argv[1:2] == ["push"]:
    # The push pod of spec.output.oci: hashes the output and pushes it; no TPM, no Kubernetes client.
    from aicert_agent.push import main as push_main

    sys.exit(push_main(sys.argv[2:]))

# Like the `aicert-agent` script: one line naming the "agent" extra when its libraries are missing.
from aicert_agent.entry_point import main

sys.exit(main())
