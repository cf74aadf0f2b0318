"""The server's warnings, re-emitted on the client.

Every ``EvaluateLossResponse`` carries the warnings raised while it was
computed (torch's own, such as kl_div's note on ``reduction='mean'``, and
lossd's, such as a target outside the loss's documented domain). The SDK
re-emits each with :func:`warnings.warn` as a :class:`ServerWarning`, a
``UserWarning`` subclass, so ``-W error``, ``warnings.filterwarnings`` and
``pytest.warns`` treat them like local torch's::

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     emit_server_warnings(["kl_div: reduction: 'mean' divides the total loss by ..."])
    >>> seen[0].category.__name__, str(seen[0].message)[:7]
    ('ServerWarning', 'kl_div:')
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

__all__ = ["ServerWarning", "emit_server_warnings"]


class ServerWarning(UserWarning):
    """A warning the lossd server raised while evaluating a request (torch's or lossd's).

    A ``UserWarning``, so ``-W error``, filters and ``pytest.warns`` apply:

    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", ServerWarning)
    ...     client.evaluate("kl_div", [-1.0, -2.0], [0.3, 0.7])   # doctest: +SKIP
    Traceback (most recent call last):
    ...
    lossd.client._warnings.ServerWarning: reduction: 'mean' divides the total loss by ...
    """


def emit_server_warnings(messages: Iterable[str]) -> None:
    """``warnings.warn(message, ServerWarning)`` for each message, in order."""
    for message in messages:
        warnings.warn(message, ServerWarning, stacklevel=3)
