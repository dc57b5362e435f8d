"""``python -m ffrt ...`` = the ``ffrt`` command."""

import sys

from .cli import main

sys.exit(main())
