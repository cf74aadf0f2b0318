"""Decode ``lossd.v1.Tensor`` messages into torch tensors and back.

The wire rules live in :mod:`lossd._wire`; this module only converts::

    >>> from lossd.v1 import lossd_pb2
    >>> t, enc = decode_tensor(lossd_pb2.Tensor(dtype="int64", shape=[2], values=[0, 2]), "inputs.target")
    >>> t.tolist(), enc
    ([0, 2], 'values')
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .._wire import DEFAULT_MAX_TENSOR_ELEMENTS, DTYPES, WireError, check_tensor
from ..v1 import lossd_pb2

__all__ = ["TORCH_DTYPES", "WIRE_NAMES", "decode_tensor", "encode_tensor"]

#: torch dtype for every wire dtype name.
TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
#: wire dtype name for every torch dtype the wire knows.
WIRE_NAMES: dict[torch.dtype, str] = {v: k for k, v in TORCH_DTYPES.items()}


def decode_tensor(
    msg: lossd_pb2.Tensor, field: str, max_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS
) -> tuple[torch.Tensor, str]:
    """Validate ``msg`` and return ``(tensor, encoding)``; raises :class:`WireError`.

    Raw bytes are wrapped without a copy: the tensor is read-only in spirit and
    lossd never writes to its inputs.
    """
    layout = check_tensor(msg, field, max_elements)
    dtype = TORCH_DTYPES[layout.dtype]
    if layout.numel == 0:
        return torch.empty(layout.shape, dtype=dtype), layout.encoding
    if layout.encoding == "raw":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "buffer is not writable"
            flat = torch.frombuffer(msg.raw, dtype=dtype)
        return flat.reshape(layout.shape), "raw"
    values = np.asarray(msg.values, dtype=np.float64)
    info = DTYPES[layout.dtype]
    if info.kind != "float":
        if not np.all(np.isfinite(values)) or not np.all(values == np.floor(values)):
            raise WireError(f"{field}.values", f"{layout.dtype} tensors need whole numbers")
        if values.min() < info.min or values.max() > info.max:
            raise WireError(
                f"{field}.values",
                f"values must lie in [{int(info.min)}, {int(info.max)}] for {layout.dtype}",
            )
    return torch.from_numpy(values).to(dtype).reshape(layout.shape), "values"


def encode_tensor(tensor: torch.Tensor, encoding: str) -> lossd_pb2.Tensor:
    """Encode ``tensor`` as ``raw`` bytes or ``values`` numbers."""
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    name = WIRE_NAMES[t.dtype]
    shape = list(t.shape)
    if encoding == "values":
        as_double = t.to(torch.float64) if t.dtype != torch.float64 else t
        return lossd_pb2.Tensor(dtype=name, shape=shape, values=as_double.reshape(-1).tolist())
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return lossd_pb2.Tensor(dtype=name, shape=shape, raw=t.numpy().tobytes())
