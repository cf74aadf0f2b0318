"""``python -m lossd.server`` runs the server."""

import sys

from ._app import main

sys.exit(main())
