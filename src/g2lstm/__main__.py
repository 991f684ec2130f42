"""``python -m g2lstm`` runs the command line."""

import sys

from g2lstm.cli import main

sys.exit(main())
