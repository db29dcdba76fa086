"""``python -m mloop.cli`` runs the command line."""

from mloop.cli import entry

entry()
