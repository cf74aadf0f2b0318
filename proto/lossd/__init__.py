"""lossd: PyTorch loss functions as a gRPC service.

The client SDK is re-exported here so ``import lossd; lossd.Client(...)`` works
without importing torch::

    >>> import lossd
    >>> lossd.__version__  # doctest: +SKIP
    '0.1.0'
"""

__version__ = "0.1.0"

__all__ = ["__version__", "Client", "AsyncClient", "EvaluateResult", "LossdError"]


def __getattr__(name: str) -> object:
    # Lazy so that ``import lossd.server`` does not pay for the client.
    if name in ("Client", "AsyncClient", "EvaluateResult", "LossdError"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'lossd' has no attribute {name!r}")
