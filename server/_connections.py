"""How the server keeps connections: HTTP/2 streams per connection and keepalive (gRPC server
arguments; the limits on calls in flight are an interceptor,
:mod:`lossd.server.interceptors._concurrency`).

:func:`connection_options` are the gRPC server arguments: HTTP/2
``max_concurrent_streams`` per connection (the two limits plus room for
health checks), and keepalive: the server pings an idle connection every
``keepalive_time_s`` and drops it when no answer comes in
``keepalive_timeout_s`` (dead peers are found; long quiet training streams
live), and accepts client pings as often as every ``min_ping_interval_s``
(more often, three times, and gRPC answers ``GOAWAY too_many_pings``; the
SDK's ``keepalive_s`` must be above it: at exactly the interval, timing jitter
makes some pings early — measured).

>>> dict(connection_options(256, 64, 60, 20, 10))["grpc.max_concurrent_streams"]
336
"""

from __future__ import annotations

from ._security import ConfigError

__all__ = [
    "DEFAULT_KEEPALIVE_TIME_S",
    "DEFAULT_KEEPALIVE_TIMEOUT_S",
    "DEFAULT_MIN_PING_INTERVAL_S",
    "HEALTH_HEADROOM",
    "connection_options",
    "raise_open_files",
]

DEFAULT_KEEPALIVE_TIME_S = 60.0
DEFAULT_KEEPALIVE_TIMEOUT_S = 20.0
DEFAULT_MIN_PING_INTERVAL_S = 10.0

#: Streams per connection beyond the two concurrency limits: health checks always find one.
HEALTH_HEADROOM = 16


def connection_options(max_rpcs: int, max_streams: int, keepalive_time_s: float, keepalive_timeout_s: float,
                       min_ping_interval_s: float) -> list[tuple[str, int]]:
    """gRPC server arguments: HTTP/2 streams per connection and keepalive (see the module doc).

    >>> dict(connection_options(256, 64, 60, 20, 10))["grpc.http2.min_ping_interval_without_data_ms"]
    10000
    """
    for name, value in (("keepalive_time_s", keepalive_time_s), ("keepalive_timeout_s", keepalive_timeout_s),
                        ("min_ping_interval_s", min_ping_interval_s)):
        if not value > 0:
            raise ConfigError(f"{name}: must be > 0 seconds, got {value}")
    return [
        ("grpc.max_concurrent_streams", max_rpcs + max_streams + HEALTH_HEADROOM),
        ("grpc.keepalive_time_ms", int(keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
        # gRPC closes a connection whose ping goes unanswered only after this (default 60 s),
        # whatever keepalive_timeout_ms says: measured, test_keepalive_finds_a_dead_peer...
        ("grpc.http2.ping_timeout_ms", int(keepalive_timeout_s * 1000)),
        # Ping idle connections too, and accept the SDK's pings whether or not a call is open.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(min_ping_interval_s * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def raise_open_files(most: int = 1 << 20) -> int | None:
    """Raise this process's soft limit on open files to its hard one (at most ``most``), and return it (None
    where there is no such limit). Every connection is a file: at systemd's soft default, 1024, a caller
    without the token held them all with idle connections, and no one else could connect (an audit,
    2026-12-06). The hard limit is the operator's (``LimitNOFILE=``, ``ulimit -Hn``, the container's)."""
    try:
        import resource  # not on Windows
    except ImportError:  # pragma: no cover
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = most if hard == resource.RLIM_INFINITY else min(hard, most)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):  # a platform with a lower ceiling of its own (macOS: OPEN_MAX): keep the limit
        return soft
    return wanted
