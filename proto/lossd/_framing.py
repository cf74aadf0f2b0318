"""Serialize ``lossd.v1.Tensor`` fields straight from array memory.

upb (protobuf's C runtime for Python) copies a ``bytes`` field on every set
and every read, copies a map of messages again when a message is built from
it, and fills ``repeated double`` from a Python list one float at a time. For
a 10**7-element tensor each copy costs milliseconds, and a list costs a
second. This module writes the protobuf wire format itself instead, with the
tensor's memory as the payload, so a reply costs one copy (the final join).

Two facts of the wire format make that sound: a serialized message is the
concatenation of its fields in any order, and a parser merges concatenated
messages (a map entry per key, the last scalar wins). So
``small.SerializeToString()`` followed by framed tensor fields is a valid
serialized message that any protobuf runtime, grpcurl included, reads::

    >>> import numpy as np
    >>> from lossd.v1 import lossd_pb2
    >>> grad = tensor_body("float32", (2,), np.array([0.5, -1.0], "<f4"), "raw")
    >>> parts = [lossd_pb2.EvaluateLossResponse(loss_name="mse_loss").SerializeToString()]
    >>> parts += map_entry(field_number(lossd_pb2.EvaluateLossResponse, "grads"), "y_pred", grad)
    >>> reply = lossd_pb2.EvaluateLossResponse.FromString(join(parts))
    >>> reply.loss_name, list(reply.grads["y_pred"].shape), len(reply.grads["y_pred"].raw)
    ('mse_loss', [2], 8)

Payloads are little-endian (the wire rule; :mod:`lossd._wire` refuses to
import elsewhere). ``values`` payloads are float64, written as one packed
field, which is how proto3 serializes ``repeated double`` anyway.

Reading goes the other way: :func:`split_payloads` parses a message with upb
but leaves the ``raw`` payloads of its tensor fields where they are in the
received bytes, returned as ``memoryview`` slices keyed by field path
(``inputs.y_pred``, ``grad_output``), so decoding copies nothing::

    >>> data = join([*map_entry(2, "y_pred", tensor_body("float32", (2,), np.ones(2, "<f4"), "raw"))])
    >>> request, payloads = split_payloads(data, lossd_pb2.EvaluateLossRequest, min_bytes=0)
    >>> list(request.inputs["y_pred"].shape), request.inputs["y_pred"].raw
    ([2], b'')
    >>> np.frombuffer(payloads["inputs.y_pred"], "<f4").tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ._wire import DTYPES
from .v1 import lossd_pb2

__all__ = [
    "Buffer",
    "field_number",
    "join",
    "length_delimited",
    "map_entry",
    "split_payloads",
    "tensor_body",
    "tensor_message",
    "varint", "varint_size",
    "wire_fields",
]

#: A piece of a serialized message: bytes, or a byte view of an array's memory.
Buffer = bytes | memoryview

_LEN = 2  # wire type of strings, bytes, messages and packed repeated fields
_ONE_BYTE = [bytes((i,)) for i in range(128)]


def varint_size(n: int) -> int:
    """How many bytes :func:`varint` takes for a non-negative ``n``, without making them.

    >>> [varint_size(n) == len(varint(n)) for n in (0, 127, 128, 16383, 16384, 2**63)]
    [True, True, True, True, True, True]
    """
    return max(1, (n.bit_length() + 6) // 7)


def varint(n: int) -> bytes:
    """The base-128 varint encoding of a non-negative int.

    >>> varint(1), varint(300)
    (b'\\x01', b'\\xac\\x02')
    """
    if 0 <= n < 128:
        return _ONE_BYTE[n]
    if n < 0:
        raise ValueError(f"varint needs a non-negative int, got {n}")
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field_number(message: Any, name: str) -> int:
    """The field number of ``name`` in a generated message class, from its descriptor."""
    number: int = message.DESCRIPTOR.fields_by_name[name].number
    return number


_TENSOR = {name: field_number(lossd_pb2.Tensor, name) for name in ("dtype", "shape", "raw", "values")}


def length_delimited(number: int, parts: Sequence[Buffer]) -> list[Buffer]:
    """Field ``number`` holding ``parts`` (a string, bytes, sub-message or packed list)."""
    size = sum(map(len, parts))  # memoryview len() counts items: views here are cast to bytes
    return [varint(number << 3 | _LEN) + varint(size), *parts]


def tensor_body(
    dtype: str, shape: Sequence[int], payload: Any, encoding: Literal["raw", "values"]
) -> list[Buffer]:
    """The fields of a ``Tensor`` message, without copying ``payload``.

    ``payload`` is a C-contiguous little-endian array (or any buffer) holding
    the elements: in ``dtype`` for ``raw``, as float64 for ``values``.
    """
    head = _DTYPE_FIELD.get(dtype) or (join(length_delimited(_TENSOR["dtype"], [dtype.encode()])) if dtype else b"")
    if shape:
        head += join(length_delimited(_TENSOR["shape"], [b"".join([varint(int(d)) for d in shape])]))
    view = _byte_view(payload)
    if not len(view):
        return [head]
    return [head, *length_delimited(_TENSOR["raw" if encoding == "raw" else "values"], [view])]


_DTYPE_FIELD = {name: b"".join(length_delimited(_TENSOR["dtype"], [name.encode()])) for name in DTYPES}


def _byte_view(payload: Any) -> memoryview:
    if isinstance(payload, np.ndarray):
        if not payload.flags.c_contiguous:
            raise ValueError("tensor payload must be C-contiguous")
        payload = payload.reshape(-1)  # a 0-d array has no byte view of its own
    view = memoryview(payload)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def tensor_message(parts: Sequence[Buffer]) -> lossd_pb2.Tensor:
    """A ``Tensor`` message from :func:`tensor_body` parts (one join, one parse)."""
    return lossd_pb2.Tensor.FromString(join(parts))


def map_entry(number: int, key: str, value: Sequence[Buffer]) -> list[Buffer]:
    """One entry of a ``map<string, Message>`` field: key 1, value 2."""
    entry = [*length_delimited(1, [key.encode()]), *length_delimited(2, value)]
    return length_delimited(number, entry)


def join(parts: Sequence[Buffer]) -> bytes:
    """The serialized bytes: one copy of every part."""
    return b"".join(parts)


# -- reading ------------------------------------------------------------------

#: Below this size a message is parsed by upb alone: scanning it in Python costs more.
SPLIT_MIN_BYTES = 1 << 16


def split_payloads(
    data: bytes, message_class: Any, min_bytes: int = SPLIT_MIN_BYTES
) -> tuple[Any, dict[str, memoryview]]:
    """Parse ``data`` as ``message_class``, keeping tensor payloads out of the message.

    Every top-level ``Tensor`` field and ``map<string, Tensor>`` field of the
    message is parsed without its ``raw`` bytes; those come back as slices of
    ``data`` keyed by field path (``grad_output``, ``inputs.<key>``), with the
    protobuf rules for repeats (the last ``raw``, the last map entry of a key).
    A path maps to an empty view when its tensor was sent without ``raw``. Small
    or unusual input (groups, malformed bytes) is parsed by upb as a whole, with
    no payloads split off: callers read ``raw`` from the message when a path is
    missing. Malformed input raises upb's ``DecodeError``, as ``FromString`` would.
    """
    if len(data) < min_bytes:
        return message_class.FromString(data), {}
    try:
        light, payloads = _split(memoryview(data), _tensor_fields(message_class))
    except (ValueError, IndexError):
        return message_class.FromString(data), {}
    return message_class.FromString(light), payloads


def _tensor_fields(message_class: Any) -> dict[int, tuple[str, bool]]:
    """``{field number: (name, is_map)}`` of the class's Tensor-valued fields."""
    fields = {}
    tensor = lossd_pb2.Tensor.DESCRIPTOR
    for f in message_class.DESCRIPTOR.fields:
        if f.message_type is tensor:
            fields[f.number] = (f.name, False)
        elif f.message_type is not None and f.message_type.GetOptions().map_entry:
            if f.message_type.fields_by_name["value"].message_type is tensor:
                fields[f.number] = (f.name, True)
    return fields


def _read_varint(view: memoryview, pos: int, max_bytes: int = 10) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; ``ValueError`` past ``max_bytes`` bytes (upb's
    limits: 10 for a value, 5 for a tag or a length, which upb refuses longer as corrupt)."""
    result = shift = 0
    end = pos + max_bytes
    while True:
        b = view[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if pos >= end:
            raise ValueError("varint too long")


def wire_fields(view: memoryview, start: int, end: int) -> Any:
    """``(number, wire_type, field_start, value_start, value_end)`` of each field in a span, read
    from the tags and lengths alone (nothing is copied or decoded). Raises ``ValueError`` or
    ``IndexError`` on bytes it does not handle (groups, truncation): leave those to upb.

    >>> [f[:2] for f in wire_fields(memoryview(b"\\x0a\\x03mse\\x10\\x01"), 0, 7)]
    [(1, 2), (2, 0)]
    """
    pos = start
    while pos < end:
        key, p = _read_varint(view, pos, 5)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, after = _read_varint(view, p)
            value_start = p
        elif wire_type == _LEN:
            n, value_start = _read_varint(view, p, 5)
            if n >= 1 << 31:
                raise ValueError("length past 2 GiB")
            after = value_start + n
        elif wire_type in (1, 5):
            value_start, after = p, p + (8 if wire_type == 1 else 4)
        else:
            raise ValueError(f"wire type {wire_type} is not handled here")
        if after > end or number == 0:
            raise ValueError("truncated or invalid field")
        yield number, wire_type, pos, value_start, after
        pos = after


def _strip_raw(view: memoryview, start: int, end: int) -> tuple[list[Buffer], memoryview | None]:
    """A Tensor's fields without ``raw``, and its last ``raw`` (None when absent)."""
    kept: list[Buffer] = []
    raw = None
    for number, wire_type, field_start, value_start, after in wire_fields(view, start, end):
        if number == _TENSOR["raw"] and wire_type == _LEN:
            raw = view[value_start:after]
        else:
            kept.append(view[field_start:after])
    return kept, raw


def _split(view: memoryview, tensor_fields: dict[int, tuple[str, bool]]) -> tuple[bytes, dict[str, memoryview]]:
    kept: list[Buffer] = []
    payloads: dict[str, memoryview] = {}
    for number, wire_type, field_start, value_start, after in wire_fields(view, 0, len(view)):
        spec = tensor_fields.get(number)
        if spec is None or wire_type != _LEN:
            kept.append(view[field_start:after])
            continue
        name, is_map = spec
        if not is_map:
            parts, raw = _strip_raw(view, value_start, after)
            kept += length_delimited(number, parts)
            if raw is not None:  # repeats of a message field merge: the last raw wins
                payloads[name] = raw
            else:
                payloads.setdefault(name, view[0:0])
            continue
        key = b""
        value: list[Buffer] = []
        raw = None
        for n, wt, _, v_start, v_after in wire_fields(view, value_start, after):
            if n == 1 and wt == _LEN:  # the last key counts, but upb refuses any that is not UTF-8
                key = bytes(view[v_start:v_after])
                key.decode("utf-8")
            elif n == 2 and wt == _LEN:  # repeated value fields merge: concatenate them
                parts, found = _strip_raw(view, v_start, v_after)
                value += parts
                raw = found if found is not None else raw
            else:
                raise ValueError("unexpected field in a map entry")  # upb parses such input as a whole
        path = f"{name}.{key.decode('utf-8')}"
        kept += length_delimited(number, [*length_delimited(1, [key]), *length_delimited(2, value)])
        payloads[path] = raw if raw is not None else view[0:0]
    return join(kept), payloads
