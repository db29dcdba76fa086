"""``python -m mloop`` runs the command line."""

import sys

from mloop.cli import main

sys.exit(main())
