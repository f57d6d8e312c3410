"""``python -m benchmarks.rd``: see :mod:`benchmarks.rd`."""

import sys

from benchmarks.rd.cli import main

sys.exit(main())
