"""Root pytest configuration: every notebook runs in smoke mode under pytest.

The notebooks read ``GCTM_SMOKE`` in their ``parameters`` cell; nbval starts their kernels
from this process, so they inherit the variable set here.
"""

import os

os.environ.setdefault("GCTM_SMOKE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
