"""A plugin module that calls ``sys.exit()`` on import: the loader refuses it like any import that fails."""

import sys

sys.exit(3)
