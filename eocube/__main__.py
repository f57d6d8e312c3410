import sys

from eocube.cli import main

sys.exit(main())
