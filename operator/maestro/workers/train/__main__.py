"""`python -m maestro.workers.train` (what torchrun runs): same as `maestro train`."""

import sys

from maestro.workers.train.cli import main

sys.exit(main(sys.argv[1:]))
