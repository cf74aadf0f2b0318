"""The bare echo's method names and payload rule, shared by the bench's server and its load processes.

Kept free of lossd's server (and so of torch): a load process imports only what it sends.

>>> answer(echo_payload(16, 4)), len(answer(echo_payload(16, 16)))
(b'\\x04\\x00\\x00\\x00', 16)
"""

from __future__ import annotations

__all__ = ["ECHO", "answer", "echo_payload"]

ECHO = "/lossd.bench.Echo/Echo"


def echo_payload(request_size: int, reply_size: int) -> bytes:
    """An echo request of ``request_size`` bytes asking for ``reply_size`` bytes back."""
    return reply_size.to_bytes(8, "little") + bytes(max(0, request_size - 8))


def answer(request: bytes) -> bytes:
    """The echo's reply to ``request``: as many bytes as its first 8 ask for, from the request itself."""
    n = int.from_bytes(request[:8], "little")
    if n == len(request):
        return request
    return request[:n] if n < len(request) else request + bytes(n - len(request))
