"""`python -m revdsl` runs the command line."""

import sys

from revdsl.cli import main

sys.exit(main())
