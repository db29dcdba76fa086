"""``python -m mloop.cli`` runs the command line."""

import sys

from mloop.cli import main

sys.exit(main())
