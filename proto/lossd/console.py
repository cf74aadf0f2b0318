"""The ``lossd`` console script. For ``lossd serve`` it first quiets gRPC's own logging, which gRPC reads
once, when it is imported (the SDK, which the command line is built on, imports it): then the rest of the
command line (:func:`lossd.client.cli.main`).

    >>> quiet_grpc({}, ["serve", "--port", "0"])
    {'GRPC_VERBOSITY': 'ERROR'}
    >>> quiet_grpc({}, ["eval", "mse"]), quiet_grpc({"GRPC_VERBOSITY": "DEBUG"}, ["serve"])
    ({}, {'GRPC_VERBOSITY': 'DEBUG'})
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping, Sequence

__all__ = ["main", "quiet_grpc"]


def quiet_grpc(environ: MutableMapping[str, str], argv: Sequence[str]) -> MutableMapping[str, str]:
    """``GRPC_VERBOSITY=ERROR`` in ``environ`` for a server (``serve`` among ``argv``), unless the operator set
    it: gRPC logs every failed TLS handshake at INFO, in plain text (with ``--log-format json`` every line
    must be JSON), and anyone who can connect can fail one. ``environ``, for the example above."""
    if "serve" in argv:
        environ.setdefault("GRPC_VERBOSITY", "ERROR")
    return environ


def main() -> int:
    """Entry point of the ``lossd`` console script."""
    quiet_grpc(os.environ, sys.argv[1:])
    from .client.cli import main as cli_main

    return cli_main()
