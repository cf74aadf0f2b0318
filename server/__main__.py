"""``python -m lossd.server`` runs the server."""

import os
import sys

from ..console import quiet_grpc

quiet_grpc(os.environ, ["serve"])  # before anything imports gRPC (it reads its verbosity once)

from ._logging import interrupts_deferred  # noqa: E402
from ._openmp import quiet_openmp  # noqa: E402

with interrupts_deferred():  # a Ctrl-C while torch and the server load: one line and exit 130, once loaded
    quiet_openmp()  # before anything imports torch
    from ._config import read_command_line

    # Before torch loads: a refused flag or security setting (exit 2) or --help answers at once
    read = read_command_line()
    if read is None:
        sys.exit(2)
    from ._app import run

sys.exit(run(*read))
