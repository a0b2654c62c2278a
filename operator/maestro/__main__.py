"""`python -m maestro` is the same as the `maestro` console script."""

import sys

from maestro.cli import main

sys.exit(main())
