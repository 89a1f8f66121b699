"""``python -m sasrec``."""

import sys

from sasrec.cli import main

sys.exit(main())
