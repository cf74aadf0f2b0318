"""The lossd server: ``lossd serve`` or ``python -m lossd.server``.

Its names are imported on first use, so that ``import lossd.server`` (which ``python -m lossd.server``
does first) does not import torch: the entry point sets OpenMP's wait policy before torch loads
(:mod:`lossd.server._openmp`).

>>> from lossd.server import ServerConfig
>>> ServerConfig(port=0).host
'127.0.0.1'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import LossdServer, ServerConfig, create_server, main, serve
    from .evaluation import evaluate
    from .losses import REGISTRY

__all__ = ["REGISTRY", "LossdServer", "ServerConfig", "create_server", "evaluate", "main", "serve"]

#: Where each public name lives.
_MODULES = {"REGISTRY": ".losses", "evaluate": ".evaluation",
            **{name: "._app" for name in ("LossdServer", "ServerConfig", "create_server", "main", "serve")}}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
