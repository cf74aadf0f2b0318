"""OpenMP's wait policy for the server process: torch's worker threads sleep once a parallel region ends.

torch runs a large tensor operation on OpenMP threads (GNU libgomp in torch's Linux wheels). By
default each worker spins for a while after every parallel region (libgomp: 300,000 iterations), in
case another region follows (about 10 ms of a CPU on a 2-CPU cloud VM). In a server, that spin takes a
CPU from whatever comes next: after a 10^6-element ``mse_loss`` the worker spun while gRPC sent the
reply and the client read it, and the reply took 5.9–8.4 ms to reach the client against 4.5–5.7 ms
for an echo of the same bytes; with the policy ``PASSIVE`` it took as long as the echo's
(docs/performance.md, "OpenMP's wait policy").

libgomp reads its environment once, when ``import torch`` loads it, so :func:`quiet_openmp` must run
before that: the server's entry points (``python -m lossd.server``, ``lossd serve``) call it first.
An operator's own ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` wins; :func:`openmp_policy` says what the
process runs with, and the server logs it at start.

>>> env = {}
>>> quiet_openmp(env, torch_loaded=False), env
(True, {'OMP_WAIT_POLICY': 'PASSIVE'})
>>> quiet_openmp({"GOMP_SPINCOUNT": "10000"}, torch_loaded=False)
False
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

__all__ = ["OPENMP_SETTINGS", "OPENMP_VARIABLES", "openmp_policy", "quiet_openmp"]

#: What :func:`quiet_openmp` sets, as environment variables.
OPENMP_SETTINGS = {"OMP_WAIT_POLICY": "PASSIVE"}

#: The variables by which an operator chooses the policy themselves (then :func:`quiet_openmp` sets nothing).
OPENMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def quiet_openmp(environ: MutableMapping[str, str] | None = None, *, torch_loaded: bool | None = None) -> bool:
    """Set :data:`OPENMP_SETTINGS` in ``environ`` (this process's environment), which torch's OpenMP
    reads when torch is imported; child processes (data-parallel ranks) inherit it.

    Returns whether it set them: not when the operator chose a policy (:data:`OPENMP_VARIABLES`), nor
    once torch is imported (``torch_loaded``; default: whether ``torch`` is in ``sys.modules``),
    since OpenMP has then read its environment already.
    """
    environ = os.environ if environ is None else environ
    loaded = "torch" in sys.modules if torch_loaded is None else torch_loaded
    if loaded or any(environ.get(name) for name in OPENMP_VARIABLES):
        return False
    environ.update(OPENMP_SETTINGS)
    return True


def openmp_policy(environ: MutableMapping[str, str] | None = None) -> str | None:
    """The OpenMP wait settings this process's environment holds (``"OMP_WAIT_POLICY=PASSIVE"``), or
    ``None`` when it holds none: OpenMP's default, workers spinning after each parallel region.

    >>> openmp_policy({"OMP_WAIT_POLICY": "PASSIVE", "PATH": "/bin"})
    'OMP_WAIT_POLICY=PASSIVE'
    """
    environ = os.environ if environ is None else environ
    set_ = [f"{name}={environ[name]}" for name in OPENMP_VARIABLES if environ.get(name)]
    return " ".join(set_) or None
