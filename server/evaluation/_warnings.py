"""Per-request warning capture, correct with evaluations on several threads.

``warnings.catch_warnings`` swaps process-global state (the filters and
``showwarning``), so two evaluations on two threads would see or lose each
other's warnings. Instead, :func:`install` (idempotent) puts one thread-aware
hook in front of both ways a warning is raised:

* ``warnings.warn``, the function torch's Python code calls (``torch.nn.functional``:
  target-size broadcasting, kl_div's ``reduction='mean'``), and lossd's own
  domain warnings: on a thread inside :func:`capture` the warning is recorded
  there, before any filter or once-per-location registry could drop it (the
  caller's own filters decide when the SDK re-emits it; the categories Python
  hides by default, such as ``DeprecationWarning``, are dropped); elsewhere it
  goes to the original function.
* ``warnings.showwarning``, reached by warnings raised from C (torch's
  ``TORCH_WARN``): recorded on a capturing thread, else shown as before.

Nothing else in the process changes. Example::

    >>> install()
    >>> import warnings
    >>> with capture() as seen:
    ...     warnings.warn("target size differs")
    ...     warnings.warn("target size differs")
    >>> seen
    ['target size differs']
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["capture", "install"]

_local = threading.local()
_lock = threading.Lock()
_original_warn = warnings.warn
_original_showwarning = warnings.showwarning


def _sink() -> list[str] | None:
    return getattr(_local, "sink", None)


#: Categories Python's default filters hide from a local user (library chatter): not sent either.
_HIDDEN: tuple[type[Warning], ...] = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def _record(sink: list[str], message: Any, category: type[Warning] | None) -> None:
    if isinstance(message, Warning):
        category, message = type(message), str(message)
    if category is not None and issubclass(category, _HIDDEN):
        return
    text = str(message)
    if category is not None and not issubclass(category, UserWarning):  # UserWarnings read as plain sentences
        text = f"{category.__name__}: {text}"
    if text not in sink:  # each once per request, in order
        sink.append(text)


def _warn(message: Any, category: type[Warning] | None = None, stacklevel: int = 1, *args: Any,
          **kwargs: Any) -> None:
    sink = _sink()
    if sink is None:
        _original_warn(message, category, stacklevel + 1, *args, **kwargs)
        return
    _record(sink, message, category)


def _showwarning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                 line: str | None = None) -> None:
    sink = _sink()
    if sink is None:
        _chained(message, category, filename, lineno, file, line)
        return
    _record(sink, message, category)


#: What showed warnings before :func:`install` (restored by nothing: the hook stays).
_chained = _original_showwarning


def install() -> None:
    """Put the hooks in place (once; again if something replaced ``showwarning`` since).

    Called at the start of every :func:`capture`, so a ``catch_warnings(record=True)``
    elsewhere (pytest wraps every test in one) cannot leave a thread's warnings uncaught.
    """
    global _chained
    with _lock:
        if warnings.warn is not _warn:
            warnings.warn = _warn
        if warnings.showwarning is not _showwarning:
            _chained = warnings.showwarning
            warnings.showwarning = _showwarning


@contextlib.contextmanager
def capture() -> Iterator[list[str]]:
    """Record this thread's warnings inside the block: the texts, each once, in order."""
    if warnings.warn is not _warn or warnings.showwarning is not _showwarning:
        install()
    outer = _sink()
    sink: list[str] = []
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = outer

