"""``python -m afxest``."""

import sys

from afxest.cli import main

sys.exit(main())
