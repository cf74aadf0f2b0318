"""What the training workers' forkserver imports once, before it forks any worker: the worker's module and
``torch._dynamo``, which ``torch.optim`` imports on a job's first step (about 1.5 s). The server's own process
never needs ``torch._dynamo``: imported with the worker's module, it made every ``lossd serve`` start 1.5 s
slower (``python -X importtime -m lossd.server --help``).

>>> import sys; from lossd.server.training import _preload; "torch._dynamo" in sys.modules
True
"""

import torch._dynamo  # noqa: F401

from . import _worker  # noqa: F401

__all__: list[str] = []
