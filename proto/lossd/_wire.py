"""The tensor wire format, shared by client and server: one place for its rules.

A ``lossd.v1.Tensor`` names a dtype in torch spelling, a shape, and carries
its elements either as ``raw`` little-endian bytes or as ``values`` numbers.
:func:`check_tensor` validates a message before anything is allocated::

    >>> from lossd.v1 import lossd_pb2
    >>> t = lossd_pb2.Tensor(dtype="float32", shape=[2], values=[1.0, 2.0])
    >>> check_tensor(t, "inputs.input")
    TensorLayout(dtype='float32', shape=(2,), numel=2, encoding='values')
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DTYPES",
    "DTypeInfo",
    "TensorLayout",
    "WireError",
    "check_tensor",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_TENSOR_ELEMENTS",
]

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("lossd's raw tensor encoding assumes a little-endian host")

#: Message size limit used by both server and SDK unless configured (256 MiB):
#: a 10**7-element float32 tensor pair plus gradients fits.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
#: Largest number of elements accepted in one tensor unless configured.
DEFAULT_MAX_TENSOR_ELEMENTS = 50_000_000


@dataclass(frozen=True)
class DTypeInfo:
    """Facts about one wire dtype: its size, kind and numpy spelling."""

    name: str
    itemsize: int
    kind: Literal["float", "int", "bool"]
    numpy: str | None  # None: numpy has no such dtype (bfloat16)
    min: float = -math.inf
    max: float = math.inf


def _int(name: str, bits: int, signed: bool = True) -> DTypeInfo:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return DTypeInfo(name, bits // 8, "int", f"<{'i' if signed else 'u'}{bits // 8}", lo, hi)


#: Every dtype the wire format knows, by torch name.
DTYPES: dict[str, DTypeInfo] = {
    d.name: d
    for d in (
        DTypeInfo("float32", 4, "float", "<f4"),
        DTypeInfo("float64", 8, "float", "<f8"),
        DTypeInfo("float16", 2, "float", "<f2"),
        DTypeInfo("bfloat16", 2, "float", None),
        _int("int64", 64),
        _int("int32", 32),
        _int("int16", 16),
        _int("int8", 8),
        _int("uint8", 8, signed=False),
        DTypeInfo("bool", 1, "bool", "|b1", 0, 1),
    )
}


class WireError(ValueError):
    """A tensor message breaks a wire rule; ``field`` names the culprit.

    ``code`` is the gRPC status code name: ``INVALID_ARGUMENT`` for a malformed
    tensor, ``RESOURCE_EXHAUSTED`` for one over a size limit.
    """

    def __init__(self, field: str, message: str, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.code = code


@dataclass(frozen=True)
class TensorLayout:
    """What a valid tensor message holds, before its elements are touched."""

    dtype: str
    shape: tuple[int, ...]
    numel: int
    encoding: Literal["raw", "values"]


def check_tensor(
    tensor: object, field: str, max_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS
) -> TensorLayout:
    """Validate a ``lossd.v1.Tensor`` message's header and payload size.

    Checks the dtype name, that dims are non-negative, the element cap, that
    exactly one of ``raw``/``values`` is used and that its length matches the
    shape. Shape arithmetic uses Python ints, so it cannot overflow. Raises
    :class:`WireError` naming ``field`` and the rule.
    """
    dtype = tensor.dtype  # type: ignore[attr-defined]
    info = DTYPES.get(dtype)
    if info is None:
        allowed = ", ".join(DTYPES)
        shown = repr(dtype) if dtype else "empty"
        raise WireError(f"{field}.dtype", f"dtype is {shown}; must be one of: {allowed}")
    shape = tuple(int(d) for d in tensor.shape)  # type: ignore[attr-defined]
    for i, d in enumerate(shape):
        if d < 0:
            raise WireError(f"{field}.shape", f"dimension {i} is {d}; dimensions must be >= 0")
    numel = math.prod(shape)
    if numel > max_elements:
        raise WireError(
            f"{field}.shape",
            f"shape {list(shape)} has {numel} elements; the limit is {max_elements} per tensor",
            "RESOURCE_EXHAUSTED",
        )
    raw_len = len(tensor.raw)  # type: ignore[attr-defined]
    n_values = len(tensor.values)  # type: ignore[attr-defined]
    if raw_len and n_values:
        raise WireError(field, "set either raw or values, not both")
    if n_values:
        encoding: Literal["raw", "values"] = "values"
        if n_values != numel:
            raise WireError(
                f"{field}.values",
                f"has {n_values} numbers; shape {list(shape)} needs {numel}",
            )
    else:
        encoding = "raw"
        if raw_len != numel * info.itemsize:
            raise WireError(
                f"{field}.raw",
                f"has {raw_len} bytes; shape {list(shape)} of {dtype} needs "
                f"{numel} x {info.itemsize} = {numel * info.itemsize}",
            )
    return TensorLayout(dtype, shape, numel, encoding)

