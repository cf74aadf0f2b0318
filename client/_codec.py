"""Encode client-side arrays as ``lossd.v1.Tensor`` and decode replies.

numpy is always available; torch is used only when the caller passes torch
tensors (this module never imports torch itself)::

    >>> msg = encode([[1.0, 2.0]])
    >>> msg.dtype, list(msg.shape)
    ('float32', [1, 2])
    >>> decode(msg).tolist()
    [[1.0, 2.0]]
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from .._wire import DTYPES, check_tensor
from ..v1 import lossd_pb2

__all__ = ["ArrayLike", "encode", "decode", "is_torch_tensor"]

ArrayLike = Any  # numpy array, torch tensor, nested list or scalar

_NUMPY_TO_WIRE = {np.dtype(d.numpy): name for name, d in DTYPES.items() if d.numpy}


def is_torch_tensor(x: object) -> bool:
    """True for a ``torch.Tensor``, without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _default_int(values: np.ndarray) -> np.ndarray:
    return values.astype(np.int64) if values.dtype.kind in "iu" and values.dtype not in _NUMPY_TO_WIRE else values


def encode(x: ArrayLike, encoding: str = "raw") -> lossd_pb2.Tensor:
    """Encode an array-like as a Tensor message.

    Python floats become float32 (torch's default dtype) and Python ints
    int64; numpy and torch arrays keep their dtype. ``encoding`` is ``raw``
    (bytes) or ``values`` (numbers).
    """
    if is_torch_tensor(x):
        return _encode_torch(x, encoding)
    if isinstance(x, np.ndarray):
        arr = x
    else:
        arr = np.asarray(x)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
    arr = _default_int(arr)
    name = _NUMPY_TO_WIRE.get(arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype)
    if name is None:
        raise TypeError(f"cannot send dtype {arr.dtype}; supported: {', '.join(DTYPES)}")
    if encoding == "values":
        return lossd_pb2.Tensor(dtype=name, shape=list(arr.shape), values=arr.astype(np.float64).ravel().tolist())
    arr = np.require(arr, dtype=np.dtype(DTYPES[name].numpy), requirements="C")  # 0-d stays 0-d
    return lossd_pb2.Tensor(dtype=name, shape=list(arr.shape), raw=arr.tobytes())


def _encode_torch(x: Any, encoding: str) -> lossd_pb2.Tensor:
    torch = sys.modules["torch"]
    t = x.detach().cpu().contiguous()
    name = str(t.dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise TypeError(f"cannot send dtype {t.dtype}; supported: {', '.join(DTYPES)}")
    if encoding == "values":
        return lossd_pb2.Tensor(dtype=name, shape=list(t.shape), values=t.to(torch.float64).reshape(-1).tolist())
    raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
    return lossd_pb2.Tensor(dtype=name, shape=list(t.shape), raw=raw)


def decode(msg: lossd_pb2.Tensor, as_torch: bool = False) -> Any:
    """Decode a Tensor message to numpy (or torch with ``as_torch``).

    numpy has no bfloat16: such a tensor decodes to float32 in numpy (exact),
    or to bfloat16 in torch.
    """
    layout = check_tensor(msg, "tensor", max_elements=sys.maxsize)
    info = DTYPES[layout.dtype]
    if layout.encoding == "values":
        arr: np.ndarray[Any, Any] = np.asarray(msg.values, dtype=np.float64)
        arr = arr.astype(np.float32 if info.numpy is None else np.dtype(info.numpy)).reshape(layout.shape)
    elif info.numpy is None:  # bfloat16: the top half of a float32
        bits = np.frombuffer(msg.raw, dtype="<u2").astype(np.uint32) << 16
        arr = bits.view(np.float32).reshape(layout.shape)
    else:
        arr = np.frombuffer(msg.raw, dtype=np.dtype(info.numpy)).reshape(layout.shape).copy()
    if as_torch:
        torch = sys.modules["torch"]
        t = torch.from_numpy(np.require(arr, requirements=["C", "W"]))  # 0-d stays 0-d
        return t.to(torch.bfloat16) if layout.dtype == "bfloat16" else t
    return arr
