"""Server logs: plain text (default) or one JSON object per line.

``lossd serve --log-format json`` (env ``LOSSD_LOG_FORMAT=json``) makes every
log record one line of JSON, for a log collector; the fields an access line
adds (``method``, ``loss``, ``status``, ``duration_ms``, ``request_id``, ...)
become top-level keys. Nothing here logs tensor contents, request metadata or
tokens: an access line carries only the fields :mod:`._observability` picks.

>>> import io, json, logging
>>> stream = io.StringIO()
>>> logger = configure_logging("INFO", "json", stream=stream, logger=logging.getLogger("doctest"))
>>> logger.info("evaluated", extra=access_fields(method="EvaluateLoss", status="OK"))
>>> line = json.loads(stream.getvalue())
>>> line["message"], line["method"], line["status"], line["level"]
('evaluated', 'EvaluateLoss', 'OK', 'INFO')
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from typing import IO, Any, NoReturn

__all__ = [
    "LOG_FORMATS", "LOG_LEVELS", "PLAIN_FORMAT", "JsonFormatter", "configure_logging", "access_fields", "emit",
    "STARTUP_INTERRUPTED", "exit_interrupted_while_starting", "guard_grpc_logger", "interrupts_deferred",
    "parse_log_format", "parse_log_level", "say_line",
]

#: The one line of a server stopped by Ctrl-C while it starts (exit 130): while its modules load
#: (``python -m lossd.server``, ``lossd serve``) or before its signal handlers are in place (``main``).
STARTUP_INTERRUPTED = "lossd serve: interrupted (SIGINT) while starting; stopped"


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """While the server's modules load (torch): a Ctrl-C is noted, not raised, and ends the start once they
    have loaded (:func:`exit_interrupted_while_starting`). Raised, it came before any handler of lossd's (an
    import traceback, status -2), or inside torch's C++ initialisers, which abort the process (status -6).
    Main thread only (``python -m lossd.server``, ``lossd serve``)."""
    noted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if noted:
        exit_interrupted_while_starting()


def exit_interrupted_while_starting() -> NoReturn:
    """Say :data:`STARTUP_INTERRUPTED` on stderr (:func:`say_line`) and exit 130 at once (the interpreter's
    teardown, with torch half imported, would take seconds and may print more)."""
    say_line(STARTUP_INTERRUPTED)
    os._exit(130)


def say_line(message: str, log_format: str = "plain", level: int = logging.WARNING) -> None:
    """One line on stderr, in one write (as :func:`emit` writes its lines): as is, or JSON with
    ``--log-format json``; for what is said before logging is set up, or without it (a refused start).

    >>> say_line("lossd serve: error: --port: is -1")  # doctest: +SKIP
    """
    if log_format == "json":
        message = JsonFormatter().format(logging.LogRecord("lossd.server", level, __file__, 0, message, None, None))
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


#: The values of ``--log-format``.
LOG_FORMATS = ("plain", "json")

#: The levels of ``--log-level`` (any case; logging's aliases ``WARN`` and ``FATAL`` too).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "NOTSET")

#: The plain-text line format (the default).
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Attribute of a LogRecord that carries structured fields (see :func:`access_fields`).
_FIELDS = "lossd_fields"

#: The format chosen by :func:`configure_logging` (read by :func:`emit`).
_current_format = "plain"


def parse_log_level(text: str) -> str:
    """``--log-level``: a name of Python's logging levels, in any case, as logging spells it.

    >>> parse_log_level(" debug "), parse_log_level("Warn")
    ('DEBUG', 'WARN')
    >>> parse_log_level("bogus")
    Traceback (most recent call last):
    ...
    ValueError: not a logging level; use DEBUG, INFO, WARNING, ERROR, CRITICAL or NOTSET (any case)
    """
    name = text.strip().upper()
    if not name or not isinstance(logging.getLevelName(name), int):  # a name logging knows maps to its number
        raise ValueError(f"not a logging level; use {', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]} (any case)")
    return name


def parse_log_format(text: str) -> str:
    """``--log-format``: one of :data:`LOG_FORMATS` (any case).

    >>> parse_log_format("JSON")
    'json'
    >>> parse_log_format("xml")
    Traceback (most recent call last):
    ...
    ValueError: not a log format; use plain or json
    """
    name = text.strip().lower()
    if name not in LOG_FORMATS:
        raise ValueError(f"not a log format; use {' or '.join(LOG_FORMATS)}")
    return name


def access_fields(**fields: Any) -> dict[str, Any]:
    """``extra=`` for a log call: ``fields`` become top-level JSON keys (plain: ``k=v`` pairs)."""
    return {_FIELDS: fields}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, _FIELDS, None) or {})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _PlainFormatter(logging.Formatter):
    """The plain format, with structured fields appended as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, _FIELDS, None)
        if fields:
            pairs = " ".join(f"{k}={v}" for k, v in fields.items() if v not in (None, ""))
            text = f"{text} {pairs}" if pairs else text
        return text


class _GrpcRecords(logging.Filter):
    """Two kinds of record from gRPC's own logger (``grpc._cython.cygrpc``) that lossd rewrites:

    - a metadata value that is not UTF-8: gRPC logs it whole, with a traceback, on every call that carries
      one (``Invalid encoding on b'...'``) and reads it as latin-1, so a bearer token with a stray byte
      would be logged in clear. The first such record becomes one WARNING without the value; later ones
      are dropped.
    - ``ExecuteBatchError raised in core by servicer method [...]``: a handler finished a call that gRPC
      had already ended itself (a compressed message over the size limit once inflated, whose client has
      RESOURCE_EXHAUSTED; or a client gone). An ERROR with a traceback of gRPC's frames for a request
      answered as it should be; it becomes one INFO line naming the method.
    """

    def __init__(self) -> None:
        super().__init__()
        self.undecodable = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Invalid encoding on "):
            self.undecodable += 1
            if self.undecodable > 1:
                return False
            _rewrite(record, logging.WARNING, "a call's metadata held a value that is not UTF-8 (gRPC reads it "
                     "as latin-1); metadata values are not logged, and this is said once")
        elif message.startswith("ExecuteBatchError raised in core by servicer method"):
            method = message.rpartition("[")[2].rstrip("]")
            _rewrite(record, logging.INFO, f"{method}: gRPC had ended the call before its handler answered "
                     "(a message over the size limit once inflated, or the client gone)")
        return True


def _rewrite(record: logging.LogRecord, level: int, message: str) -> None:
    record.msg, record.args, record.exc_info, record.exc_text = message, (), None, None
    record.levelno, record.levelname = level, logging.getLevelName(level)


#: gRPC's logger that the filter above guards.
_GRPC_LOGGER = "grpc._cython.cygrpc"


def guard_grpc_logger() -> None:
    """Install :class:`_GrpcRecords` on gRPC's logger, once per process (``create_server`` does)."""
    grpc_logger = logging.getLogger(_GRPC_LOGGER)
    if not any(isinstance(f, _GrpcRecords) for f in grpc_logger.filters):
        grpc_logger.addFilter(_GrpcRecords())


def configure_logging(
    level: str = "INFO", fmt: str = "plain", *, stream: IO[str] | None = None,
    logger: logging.Logger | None = None,
) -> logging.Logger:
    """Send ``logger`` (default: the root logger) to ``stream`` (stderr) in ``fmt``.

    Replaces the handlers it had, so calling it twice does not double lines.
    """
    global _current_format
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: must be one of {', '.join(LOG_FORMATS)}")
    name = parse_log_level(level)  # before anything changes: a bad level leaves the logger as it was
    _current_format = fmt
    target = logger if logger is not None else logging.getLogger()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else _PlainFormatter(PLAIN_FORMAT))
    for old in list(target.handlers):
        target.removeHandler(old)
    target.addHandler(handler)
    target.setLevel(name)
    return target


def emit(message: str) -> None:
    """Print a lifecycle line on stdout ("listening on", "stopped"): as is, or as JSON.

    Tools and tests read these lines; in JSON mode they stay parseable and keep
    the same ``message``. The line and its newline go out in one write: ``print``
    writes them separately on an unbuffered stdout (``PYTHONUNBUFFERED``), and a
    log line that another thread wrote in between (stderr, the same pipe) was
    read as part of the port (``:40397`` + ``2026-12-04 …`` → port 403972026).

    >>> import io, logging
    >>> _ = configure_logging("INFO", "plain", stream=io.StringIO(), logger=logging.getLogger("doctest"))
    >>> emit("lossd 0.1.0 listening on 127.0.0.1:40397")
    lossd 0.1.0 listening on 127.0.0.1:40397
    """
    if _current_format == "json":
        record = logging.LogRecord("lossd.server", logging.INFO, __file__, 0, message, None, None)
        message = JsonFormatter().format(record)
    sys.stdout.write(message + "\n")
    sys.stdout.flush()
