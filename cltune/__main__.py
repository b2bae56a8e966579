"""``python -m cltune``: the command line (same as the ``cltune`` script)."""

import sys

from cltune.cli import main

sys.exit(main())
