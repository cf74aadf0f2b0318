"""``python -m lossd.server`` runs the server."""

import sys

from ._openmp import quiet_openmp

quiet_openmp()  # before anything imports torch

from ._app import main  # noqa: E402 - after quiet_openmp

sys.exit(main())
