import sys

from charstudio.launcher import main

sys.exit(main())
