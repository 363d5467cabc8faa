"""Run by the installed app's launcher (``uvw run ... app\\start.pyw``): puts the app folder first
on the path and hands over to the first run. No logic here."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from charstudio.install.first_run_window import main

sys.exit(main(sys.argv[1:]))
