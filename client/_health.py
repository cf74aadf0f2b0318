"""``grpc.health.v1`` messages, hand-encoded so that the SDK needs no grpcio-health-checking.

>>> health_request("lossd.v1.LossService")
b'\\n\\x14lossd.v1.LossService'
>>> health_status(b"\\x08\\x01")
'SERVING'
"""

from __future__ import annotations

from .._framing import varint

__all__ = ["health_request", "health_status", "HEALTH_STATUS"]

#: grpc.health.v1.HealthCheckResponse.ServingStatus, by number.
HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def health_request(service: str) -> bytes:
    """A serialized ``HealthCheckRequest`` (field 1: service)."""
    data = service.encode()
    return b"\x0a" + varint(len(data)) + data if data else b""


def health_status(reply: bytes) -> str:
    """The ``status`` (field 1, varint) of a serialized ``HealthCheckResponse``, by name."""
    pos, status = 0, 0
    while pos < len(reply):
        key, pos = _varint(reply, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _varint(reply, pos)
            if number == 1:
                status = value
        elif wire_type == 2:
            size, pos = _varint(reply, pos)
            pos += size
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        else:
            raise ValueError(f"unexpected wire type {wire_type} in HealthCheckResponse")
    return HEALTH_STATUS.get(status, "UNKNOWN")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint in HealthCheckResponse")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos
