"""``python -m gctm_mini``: see :mod:`gctm_mini.cli`."""

import sys

from .cli import main

sys.exit(main(prog="python -m gctm_mini"))
