import sys

from aicert_agent.cli import main

sys.exit(main())
