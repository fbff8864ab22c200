import sys

if sys.argv[1:2] in (["gate"], ["seal"]):
    # The gate and seal containers start fast: they load the marker protocol and nothing else.
    from aicert_agent.markers import waiter_main

    sys.exit(waiter_main(sys.argv[1:]))

# Like the `aicert-agent` script: one line naming the "agent" extra when its libraries are missing.
from aicert_agent.entry_point import main

sys.exit(main())
