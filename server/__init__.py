"""The lossd server: ``lossd serve`` or ``python -m lossd.server``.

>>> from lossd.server import ServerConfig
>>> ServerConfig(port=0).host
'127.0.0.1'
"""

from ._app import LossdServer, ServerConfig, create_server, main, serve
from .evaluation import evaluate
from .losses import REGISTRY

__all__ = ["REGISTRY", "LossdServer", "ServerConfig", "create_server", "evaluate", "main", "serve"]
