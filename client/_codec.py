"""Encode client-side arrays as ``lossd.v1.Tensor`` and decode replies.

numpy is always available; torch is used only when the caller passes torch
tensors (this module never imports torch itself)::

    >>> msg = encode([[1.0, 2.0]])
    >>> msg.dtype, list(msg.shape)
    ('float32', [1, 2])
    >>> decode(msg).tolist()
    [[1.0, 2.0]]

Neither direction builds Python lists: :func:`encode` copies ``raw`` bytes
into the message, and for ``values`` frames the float64 memory as one packed
field and parses it (:mod:`lossd._framing`; 5-30x faster than a list), and
:func:`decode` wraps ``raw`` bytes with ``np.frombuffer``. Decoded numpy arrays are therefore **read-only** views of
the reply (``np.array(x)`` makes a writable copy); decoded torch tensors are
writable copies, since torch has no read-only tensors.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from .._framing import Buffer, tensor_body, tensor_message
from .._wire import DTYPES, check_tensor
from ..v1 import lossd_pb2

__all__ = ["ArrayLike", "Layouts", "encode", "decode", "is_torch_tensor", "raw_parts"]

ArrayLike = Any  # numpy array, torch tensor, nested list or scalar

_NUMPY_TO_WIRE = {np.dtype(d.numpy): name for name, d in DTYPES.items() if d.numpy}


def is_torch_tensor(x: object) -> bool:
    """True for a ``torch.Tensor``, without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _named(field: str, message: str) -> str:
    """``message`` after the field it is about (``inputs.y_pred: ...``), when there is one."""
    return f"{field}: {message}" if field else message


def _default_int(values: np.ndarray, field: str = "") -> np.ndarray:
    """Integers of a dtype the wire lacks (uint16, uint32, uint64, ...) as int64; refused when one does not fit."""
    if values.dtype.kind not in "iu" or values.dtype in _NUMPY_TO_WIRE:
        return values
    if values.dtype.kind == "u" and values.size and int(values.max()) > np.iinfo(np.int64).max:
        raise ValueError(_named(field, f"cannot send {values.dtype} values above 2**63 - 1 (the wire's widest "
                                f"integer is int64): found {int(values.max())}"))
    return values.astype(np.int64)


def encode(x: ArrayLike, encoding: str = "raw", field: str = "") -> lossd_pb2.Tensor:
    """Encode an array-like as a Tensor message.

    Python floats become float32 (torch's default dtype), Python complex
    numbers complex64 and Python ints int64; numpy and torch arrays keep
    their dtype. ``encoding`` is ``raw`` (bytes) or ``values`` (numbers; a
    complex element is two, real then imaginary). ``field`` (``inputs.y_pred``) prefixes a refusal.

    >>> m = encode([[1, 2, 3]], "values")
    >>> m.dtype, list(m.shape), list(m.values)
    ('int64', [1, 3], [1.0, 2.0, 3.0])
    """
    if encoding == "values":
        name, shape, values = _wire_array(x, values=True, field=field)
        return tensor_message(tensor_body(name, shape, values, "values"))
    name, shape, arr = _wire_array(x, field=field)
    return lossd_pb2.Tensor(dtype=name, shape=shape, raw=arr.tobytes())


def raw_parts(x: ArrayLike, field: str = "") -> list[Buffer]:
    """The fields of ``x``'s ``raw`` Tensor message as wire pieces over the array's own memory
    (copied only when ``x`` is not already C-contiguous little-endian in its wire dtype):
    the bytes upb would serialize for :func:`encode`'s message, without the copies.

    >>> b"".join(raw_parts([1.0])) == encode([1.0]).SerializeToString()
    True
    """
    name, shape, arr = _wire_array(x, field=field)
    return tensor_body(name, shape, arr, "raw")


def _wire_array(x: ArrayLike, values: bool = False, field: str = "") -> tuple[str, tuple[int, ...], np.ndarray]:
    """``x``'s wire dtype name, shape and C-contiguous little-endian array of elements: in the
    wire dtype (bfloat16 as its int16 bits), or float64 when ``values`` (complex: real and imaginary
    parts). The one place for the
    SDK's dtype rules."""
    if is_torch_tensor(x):
        torch = sys.modules["torch"]
        if x.layout != torch.strided:
            raise TypeError(_named(field, f"cannot send a {str(x.layout).removeprefix('torch.')} tensor; "
                                          "send its .to_dense()"))
        if x.is_meta:
            raise TypeError(_named(field, "cannot send a tensor on the meta device: it holds no data"))
        t = x.detach().cpu().resolve_conj().resolve_neg()  # the values, not a view's lazy conjugate or negation
        name = str(t.dtype).removeprefix("torch.")
        if name not in DTYPES:
            raise TypeError(_named(field, f"cannot send dtype {t.dtype}; supported: {', '.join(DTYPES)}"))
        if values:
            if t.dtype == torch.int64:
                _exact_in_float64(t.contiguous().numpy(), field)
            t = torch.view_as_real(t.to(torch.complex128)) if t.is_complex() else t.to(torch.float64)
        elif t.dtype == torch.bfloat16:
            t = t.view(torch.int16)  # numpy has no bfloat16; the bytes are the same
        return name, tuple(x.shape), t.contiguous().numpy()
    try:
        arr = np.asarray(x)
    except ValueError as e:  # a ragged list
        raise ValueError(_named(field, f"cannot read it as an array: {e}")) from None
    # Python numbers and lists of them: torch's default dtypes, as torch.tensor(x) gives; anything typed (numpy,
    # buffers, __array__) keeps its dtype, and so does a list holding a double-precision numpy or torch value
    # (torch.tensor([np.float64(1)]) is float64).
    if arr.dtype in (np.float64, np.complex128) and isinstance(x, (float, complex, list, tuple)) and not _has_double(x):
        with np.errstate(over="ignore"):  # a number beyond float32 becomes Inf, silently, as in torch.tensor(x)
            arr = arr.astype(np.float32 if arr.dtype == np.float64 else np.complex64)
    arr = _default_int(arr, field)
    wire = _NUMPY_TO_WIRE.get(arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype)
    if wire is None:
        raise TypeError(_named(field, f"cannot send dtype {arr.dtype}; supported: {', '.join(DTYPES)}"))
    if values:
        return wire, arr.shape, _values(arr, field)
    dtype = np.dtype(DTYPES[wire].numpy)
    if arr.dtype != dtype or not arr.flags.c_contiguous:  # np.require costs microseconds even when it keeps arr
        arr = np.require(arr, dtype=dtype, requirements="C")  # 0-d stays 0-d
    return wire, arr.shape, arr


def _has_double(x: Any) -> bool:
    """Whether nested lists ``x`` hold a numpy or torch value of a 64-bit float or 128-bit complex dtype
    (whose dtype torch.tensor(x) keeps), rather than Python numbers only.

    >>> _has_double([1.0, [np.float64(2.0)]]), _has_double([1.0, np.float32(2.0)]), _has_double(memoryview(b""))
    (True, False, False)
    """
    if isinstance(x, (list, tuple)):
        return any(_has_double(v) for v in x)
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return False
    return str(dtype).removeprefix("torch.") in ("float64", "complex128")


def _values(arr: np.ndarray, field: str = "") -> np.ndarray:
    """The float64 numbers ``values`` carries: one per element, two (real, imaginary) for complex."""
    if arr.dtype.kind == "c":
        return np.ascontiguousarray(arr, dtype="<c16").view("<f8")
    if arr.dtype.kind in "iu" and arr.dtype.itemsize == 8:
        _exact_in_float64(arr, field)
    return np.ascontiguousarray(arr, dtype="<f8")


#: Integers a float64 holds exactly, whatever their last bits: magnitude at most 2**53.
_EXACT_INT = 2**53


def _exact_in_float64(arr: np.ndarray, field: str = "") -> None:
    """Refuse 64-bit integers that a float64 number (``values``) would round, naming the first.

    >>> _exact_in_float64(np.array([2**53, -2**53, 2**60]))  # exact: kept
    >>> _exact_in_float64(np.array([0, 2**53 + 1]), "inputs.target")
    Traceback (most recent call last):
    ...
    ValueError: inputs.target: int64 value 9007199254740993 (flat index 1) cannot travel exactly with \
encoding='values' (a float64 number holds integers exactly only up to 2**53 in magnitude); use encoding='raw'
    """
    big = (arr > _EXACT_INT) | (arr < -_EXACT_INT)
    if not big.any():
        return
    flat = np.flatnonzero(big)
    ints = arr.reshape(-1)[flat]
    floats = ints.astype(np.float64)
    # 2.0**63 and above does not fit back into int64 (numpy's cast would be undefined there): never exact
    exact = (floats < 2.0**63) & (np.where(floats < 2.0**63, floats, 0).astype(np.int64) == ints)
    if exact.all():
        return
    k = int(np.argmin(exact))
    raise ValueError(_named(field, f"{arr.dtype} value {int(ints[k])} (flat index {int(flat[k])}) cannot travel "
                                   "exactly with encoding='values' (a float64 number holds integers exactly only "
                                   "up to 2**53 in magnitude); use encoding='raw'"))


#: What :func:`decode` learned from a tensor header that passed :func:`~lossd._wire.check_tensor`:
#: by (dtype, shape), the numpy dtype and the payload's length in bytes.
Layouts = dict[tuple[str, tuple[int, ...]], tuple[np.dtype[Any], int]]


def decode(msg: lossd_pb2.Tensor, as_torch: bool = False, raw: bytes | memoryview | None = None,
           layouts: Layouts | None = None) -> Any:
    """Decode a Tensor message to numpy (or torch with ``as_torch``).

    numpy results are read-only: ``raw`` payloads are wrapped without a copy
    (``np.frombuffer``), and ``values`` results are marked the same way so
    that every array behaves alike; ``np.array(x)`` gives a writable copy.
    torch results are writable copies. ``raw``: the payload when it was kept outside
    ``msg`` (:func:`lossd._framing.split_payloads`). numpy has no bfloat16: such a tensor
    decodes to float32 in numpy (exact), or to bfloat16 in torch.

    ``layouts`` (many replies of the same shapes: ``evaluate_many``): a ``raw`` tensor whose dtype
    and shape passed the check before, and whose payload has their length, is not checked again.

    >>> decode(encode([0.5, 2.0])).tolist()
    [0.5, 2.0]
    """
    if layouts is not None and not as_torch:
        key = (msg.dtype, tuple(msg.shape[:]))  # [:]: a list; iterating the field itself ends in an IndexError
        known = layouts.get(key)
        if known is not None:
            data = msg.raw if raw is None else raw
            if len(data) == known[1] and known[1] and not msg.values:  # raw views here are cast to bytes
                fast: np.ndarray[Any, Any] = np.ndarray(key[1], known[0], data)  # frombuffer + reshape in one
                if not isinstance(data, bytes):  # a view of bytes (read-only already) or a caller's buffer
                    fast.flags.writeable = False  # setting it costs a microsecond
                return fast
    layout = check_tensor(msg, "tensor", max_elements=sys.maxsize, raw=raw)
    info = DTYPES[layout.dtype]
    if layouts is not None and layout.encoding == "raw" and info.numpy is not None:
        layouts[(layout.dtype, layout.shape)] = (np.dtype(info.numpy), layout.numel * info.itemsize)
    if info.numpy is None:  # bfloat16: its bits are the top half of a float32's
        if layout.encoding == "values":
            bits = _bfloat16_bits(np.asarray(msg.values, dtype=np.float64).astype(np.float32))
        else:
            bits = np.frombuffer(layout.raw, dtype="<u2")
        if as_torch:  # from the bits: a conversion would not keep a NaN's sign and payload
            torch = sys.modules["torch"]
            t = torch.from_numpy(np.require(bits, dtype=np.int16, requirements=["C", "W"]))
            return t.view(torch.bfloat16).reshape(layout.shape)
        arr: np.ndarray[Any, Any] = (bits.astype(np.uint32) << 16).view(np.float32).reshape(layout.shape)
    elif layout.encoding == "values":
        arr = np.asarray(msg.values, dtype=np.float64)
        if info.kind == "complex":
            arr = arr.view(np.complex128)
        arr = arr.astype(np.dtype(info.numpy)).reshape(layout.shape)
    else:
        arr = np.frombuffer(layout.raw, dtype=np.dtype(info.numpy)).reshape(layout.shape)
    if as_torch:
        torch = sys.modules["torch"]
        return torch.from_numpy(np.require(arr, requirements=["C", "W"]))  # copies a read-only view; 0-d stays 0-d
    arr.flags.writeable = False
    return arr


def _bfloat16_bits(f32: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) of float32 numbers, rounded to the nearest even as torch rounds; a NaN
    keeps its sign and the top of its payload (``values`` carries a bfloat16 NaN's bits that way).

    >>> [hex(b) for b in _bfloat16_bits(np.array([1.0, -np.nan, 1 + 2**-8, 1 + 3 * 2**-8], np.float32))]
    ['0x3f80', '0xffc0', '0x3f80', '0x3f82']
    """
    u = np.ascontiguousarray(f32, dtype=np.float32).view(np.uint32)
    rounded = (u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16
    return np.where(np.isnan(f32), (u >> 16) | np.uint32(0x40), rounded).astype(np.uint16)
