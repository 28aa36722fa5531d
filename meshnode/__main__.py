"""``python -m meshnode``: the command line (see :mod:`meshnode.cli`)."""

import sys

from meshnode.cli import main

sys.exit(main())
