# The plugin is registered through the pytest11 entry point once mloop is installed from this tree;
# importing its fixtures here makes the tests independent of which checkout the venv installed.
from mloop.testing.fixtures import mloop_sample_file, mloop_workspace

__all__ = ["mloop_sample_file", "mloop_workspace"]
