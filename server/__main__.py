"""``python -m lossd.server`` runs the server."""

import sys

from ._logging import interrupts_deferred
from ._openmp import quiet_openmp

with interrupts_deferred():  # a Ctrl-C while torch and the server load: one line and exit 130, once loaded
    quiet_openmp()  # before anything imports torch
    from ._app import main

sys.exit(main())
