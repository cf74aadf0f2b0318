"""torch dtypes by wire name and back: the names the registry, the codec and the docs use.

The wire names are torch's own (``lossd._wire.DTYPES`` holds their rules, torch-free)::

    >>> TORCH_DTYPES["bfloat16"], WIRE_NAMES[torch.int64]
    (torch.bfloat16, 'int64')
"""

from __future__ import annotations

import torch

__all__ = ["TORCH_DTYPES", "WIRE_NAMES"]

#: torch dtype for every wire dtype name.
TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "complex64": torch.complex64,
    "complex128": torch.complex128,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
#: wire dtype name for every torch dtype the wire knows.
WIRE_NAMES: dict[torch.dtype, str] = {v: k for k, v in TORCH_DTYPES.items()}
