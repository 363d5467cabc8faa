"""Run charstudio's test suite: ``python run_tests.py [pytest options]``.

Creates or updates the environment (with the test tools) first; see bootstrap.py. Tests run
offline and, for the GUI, offscreen.
"""

from __future__ import annotations

import os
import sys

from bootstrap import uv_run

if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.exit(uv_run(["python", "-m", "pytest", *sys.argv[1:]], extras=("test",)))
