"""Launch charstudio: ``python main.py [PROJECT]`` opens the app (any ``charstudio`` command
line works too, e.g. ``python main.py info image.png``).

The first run on a fresh machine creates the environment from the pinned lock; see
bootstrap.py.
"""

from __future__ import annotations

import sys

from bootstrap import in_project_env, run_in_env

if __name__ == "__main__":
    if in_project_env():
        from charstudio.launcher import main

        sys.exit(main(sys.argv[1:]))
    sys.exit(run_in_env(["-m", "charstudio", *sys.argv[1:]]))
