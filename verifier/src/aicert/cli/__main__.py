import sys

from aicert.cli import main

sys.exit(main())
