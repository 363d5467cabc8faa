"""Run charstudio's test suite: ``python run_tests.py [pytest options]``.

Creates or updates the environment from the pinned lock first (see bootstrap.py). Tests run
offline and, for the GUI, offscreen.
"""

from __future__ import annotations

import os
import sys

from bootstrap import run_in_env

if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.exit(run_in_env(["-m", "pytest", *sys.argv[1:]]))
