import sys

if sys.argv[1:2] in (["gate"], ["seal"]):
    # The gate and seal containers start fast: they load the marker protocol and nothing else.
    from aicert_agent.markers import waiter_main

    sys.exit(waiter_main(sys.argv[1:]))

from aicert_agent.cli import main

sys.exit(main())
