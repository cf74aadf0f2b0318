"""Hand-made HTTP/2 requests, for what no gRPC client sends: a ``:path`` that is not UTF-8.

Frames as RFC 9113 lays them out, the header block in HPACK literals without Huffman coding (RFC 7541
6.2.2): enough for one request's headers, with no HTTP/2 library.

>>> frame(4, 0, 0)  # an empty SETTINGS frame
b'\\x00\\x00\\x00\\x04\\x00\\x00\\x00\\x00\\x00'
"""

from __future__ import annotations

import socket
import struct
import time

__all__ = ["frame", "send_headers_only"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, HEADERS = 4, 1
END_STREAM, END_HEADERS = 0x1, 0x4


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _literal(name: bytes, value: bytes) -> bytes:
    """A header field, literal without indexing, new name; each string under 127 bytes."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def send_headers_only(host: str, port: int, path: bytes, linger_s: float = 1.0) -> None:
    """Open a connection, send one gRPC request's headers for ``path`` (ending the stream: no message), wait
    ``linger_s`` for the server to read it, and close."""
    block = b"".join(_literal(n, v) for n, v in [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", path), (b":authority", host.encode()),
        (b"content-type", b"application/grpc"), (b"te", b"trailers")])
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_STREAM | END_HEADERS, 1, block))
        time.sleep(linger_s)
