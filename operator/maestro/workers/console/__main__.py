"""`python -m maestro.workers.console`: the console server (same as `maestro console`)."""

import sys

from maestro.workers.console.cli import main

sys.exit(main(sys.argv[1:]))
