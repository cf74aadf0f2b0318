"""A minimal HTTP/2 client for one gRPC call whose metadata holds bytes grpcio's client refuses to send
(values that are not UTF-8): the server must still cope with them.

>>> literal(b"te", b"trailers")
b'\\x00\\x02te\\x08trailers'
"""

from __future__ import annotations

import socket
import struct
import time

__all__ = ["call", "literal"]


def _int(value: int, prefix_bits: int) -> bytes:
    """HPACK's integer encoding with a ``prefix_bits``-bit prefix."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([value])
    out = [top]
    value -= top
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    return bytes([*out, value])


def literal(name: bytes, value: bytes) -> bytes:
    """A header field as an HPACK literal without indexing, new name, no Huffman coding."""
    return b"\x00" + _int(len(name), 7) + name + _int(len(value), 7) + value


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def call(address: str, path: str, headers: list[tuple[bytes, bytes]], message: bytes, wait_s: float = 5.0) -> bytes:
    """Send one gRPC call on stream 1 and return the raw bytes received until its ``grpc-status``
    (or ``wait_s``)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=wait_s) as s:
        block = b"".join(literal(k, v) for k, v in [
            (b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()), (b":authority", b"localhost"),
            (b"content-type", b"application/grpc"), (b"te", b"trailers"), *headers])
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b"")  # preface and SETTINGS
                  + _frame(1, 4, 1, block)  # HEADERS, END_HEADERS
                  + _frame(0, 1, 1, b"\x00" + struct.pack(">I", len(message)) + message))  # DATA, END_STREAM
        data, deadline = b"", time.monotonic() + wait_s
        while b"grpc-status" not in data and time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
        return data
