"""Decode ``lossd.v1.Tensor`` messages into torch tensors and back.

The wire rules live in :mod:`lossd._wire`; this module only converts::

    >>> from lossd.v1 import lossd_pb2
    >>> t, enc = decode_tensor(lossd_pb2.Tensor(dtype="int64", shape=[2], values=[0, 2]), "inputs.target")
    >>> t.tolist(), enc
    ([0, 2], 'values')
    >>> encode_tensor(torch.tensor([0.5, 2.0]), "values").values
    [0.5, 2.0]

Decoding wraps ``raw`` bytes without a copy. Encoding never builds a Python
list: :func:`tensor_parts` exposes the tensor's own memory (float64 memory for
``values``) as protobuf wire pieces (:mod:`lossd._framing`), which a reply
joins once; :func:`encode_tensor` parses those pieces into a message for
callers that want one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from ..._framing import Buffer, tensor_body, tensor_message
from ..._wire import (
    DEFAULT_MAX_TENSOR_ELEMENTS,
    DTYPES,
    FieldError,
    TensorLayout,
    TensorLimits,
    check_tensor,
    check_tensors,
)
from ...v1 import lossd_pb2
from ..losses import TORCH_DTYPES, WIRE_NAMES

__all__ = ["all_finite", "check_finite", "decode_tensor", "decode_tensors", "encode_tensor", "from_raw",
           "payload_array", "probably_finite", "tensor_parts"]

#: Payloads smaller than this are copied on decode, larger ones wrapped in place.
_COPY_BELOW = 1 << 16


def _spend_readonly_warning() -> None:
    """Wrapping read-only bytes makes torch warn once per process ("The given buffer is not
    writable"); lossd does it on purpose (it never writes to inputs), so the one warning is
    spent here, at import, rather than under a filter swapped while other threads evaluate
    (``warnings.catch_warnings`` is process-global)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.frombuffer(bytes(4), dtype=torch.float32)


_spend_readonly_warning()


def decode_tensor(
    msg: lossd_pb2.Tensor,
    field: str,
    max_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS,
    raw: bytes | memoryview | None = None,
) -> tuple[torch.Tensor, str]:
    """Validate ``msg`` and return ``(tensor, encoding)``; raises :class:`FieldError`.

    Raw bytes are wrapped without a copy (``torch.frombuffer`` over the bytes
    the message handed out, or over ``raw``: the payload as received, see
    :func:`lossd._framing.split_payloads`), so the tensor shares memory with an
    immutable ``bytes``: lossd never writes to its inputs, and
    ``tests/integration/test_performance.py`` checks that no registered loss does.
    """
    return _decode(msg, field, check_tensor(msg, field, max_elements, raw))


def decode_tensors(
    tensors: list[tuple[str, lossd_pb2.Tensor, bytes | memoryview | None]], limits: TensorLimits | int, terms: int = 0
) -> list[tuple[torch.Tensor, str]]:
    """Decode every tensor of one request, each as :func:`decode_tensor` does, after checking them
    all against the per-request limits (:func:`lossd._wire.check_tensors`): nothing is built for a
    request that is refused (``terms``: the objective's term count, checked with them).

    >>> t = lossd_pb2.Tensor(dtype="float32", shape=[2], values=[1.0, 2.0])
    >>> [x.tolist() for x, _ in decode_tensors([("inputs.input", t, None)], TensorLimits())]
    [[1.0, 2.0]]
    """
    layouts = check_tensors(tensors, limits, terms)
    return [_decode(msg, field, layout) for (field, msg, _), layout in zip(tensors, layouts)]


def _decode(msg: lossd_pb2.Tensor, field: str, layout: TensorLayout) -> tuple[torch.Tensor, str]:
    dtype = TORCH_DTYPES[layout.dtype]
    if layout.numel == 0:
        return torch.empty(layout.shape, dtype=dtype), layout.encoding
    if layout.encoding == "raw":
        return from_raw(layout.raw, dtype, layout.shape), "raw"
    values = np.asarray(msg.values, dtype=np.float64)
    info = DTYPES[layout.dtype]
    if info.kind == "complex":  # (real, imaginary) pairs
        return torch.from_numpy(values.view(np.complex128)).to(dtype).reshape(layout.shape), "values"
    if info.kind != "float":
        if not np.all(np.isfinite(values)) or not np.all(values == np.floor(values)):
            raise FieldError(f"{field}.values", f"{layout.dtype} tensors need whole numbers")
        if float(values.min()) < info.min or float(values.max()) > info.max:  # exact: 2.0**63 > 2**63 - 1
            raise FieldError(
                f"{field}.values",
                f"values must lie in [{int(info.min)}, {int(info.max)}] for {layout.dtype}",
            )
    return torch.from_numpy(values).to(dtype).reshape(layout.shape), "values"


def from_raw(raw: bytes | memoryview, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """The tensor over a checked, non-empty ``raw`` payload: small ones copied, larger ones
    wrapped in place (read-only memory: see :func:`decode_tensor`)."""
    if len(raw) < _COPY_BELOW:  # a small copy costs less than a read-only view's bookkeeping
        flat = torch.frombuffer(bytearray(raw), dtype=dtype)
    else:  # torch's one "buffer is not writable" warning was spent at import (_spend_readonly_warning)
        flat = torch.frombuffer(raw, dtype=dtype)
    return flat.reshape(shape)


#: Below this many elements :func:`check_finite` asks numpy (a few microseconds) rather than
#: torch (three dispatches); above it torch's sum, which allocates nothing.
_NUMPY_FINITE_BELOW = 1 << 14
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64, torch.complex64, torch.complex128)


def probably_finite(tensor: torch.Tensor) -> bool:
    """``True`` when ``tensor`` holds no NaN or infinity (or is not floating-point), in one pass: numpy's
    ``isfinite`` for a small tensor (a few microseconds, one small mask), else torch's sum, which allocates
    nothing and is NaN or infinite when an element is; ``False`` may also mean finite numbers whose sum
    overflows (then look closer, as :func:`check_finite` does).

    >>> probably_finite(torch.tensor([1.0, 2.0])), probably_finite(torch.tensor([1.0, float("nan")]))
    (True, False)
    """
    n = tensor.numel()
    if n == 0 or not (tensor.is_floating_point() or tensor.is_complex()):
        return True
    if n < _NUMPY_FINITE_BELOW and tensor.dtype in _NUMPY_FLOATS and tensor.device.type == "cpu":
        return bool(np.isfinite(tensor.detach().numpy()).all())
    return bool(torch.isfinite(tensor.sum()))


def all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or infinity in ``tensor``: :func:`probably_finite`, then an exact look when its sum overflowed.

    >>> all_finite(torch.tensor([6e4, 6e4], dtype=torch.float16)), all_finite(torch.tensor([1.0, float("inf")]))
    (True, False)
    """
    return probably_finite(tensor) or bool(torch.isfinite(tensor).all())


def check_finite(tensor: torch.Tensor, field: str, allow: str, sent: Sequence[float] | None = None) -> None:
    """Refuse a floating-point ``tensor`` holding NaN or infinity: the one non-finite rule.

    The message names ``field``, what was found and its first flat index, and
    ``allow`` (how to let such values through, or that nothing can). One pass
    over the memory (:func:`probably_finite`); only a tensor that fails it pays
    for the exact scan. ``sent``: the ``values`` the tensor was decoded from, if any; a finite
    number there that the dtype cannot hold (torch makes it infinite) is named as such.

    >>> check_finite(torch.tensor([0.0, float("inf"), float("nan")]), "inputs.input", "no way")
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: inputs.input: contains Inf at flat index 1 (the first non-finite value); \
NaN and infinite values are refused: no way
    >>> check_finite(torch.tensor([1e39]), "inputs.input", "no way", sent=[1e39])
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: inputs.input: the value at flat index 0, 1e+39, is beyond float32's range \
(largest finite 3.4028234663852886e+38) and becomes Inf; send the tensor as float64, or: no way
    """
    if all_finite(tensor):
        return
    flat = tensor.reshape(-1)
    i = int(torch.logical_not(torch.isfinite(flat)).nonzero()[0])
    if tensor.is_complex():
        found = "NaN" if bool(torch.isnan(flat[i])) else "Inf"
    else:
        found = "NaN" if bool(torch.isnan(flat[i])) else ("Inf" if float(flat[i]) > 0 else "-Inf")
    if sent is not None and found != "NaN":
        numbers = sent[2 * i:2 * i + 2] if tensor.is_complex() else sent[i:i + 1]
        if all(math.isfinite(v) for v in numbers):
            shown = ", ".join(repr(v) for v in numbers)
            largest = torch.finfo(tensor.dtype).max
            raise FieldError(field, f"the value at flat index {i}, {shown}, is beyond {WIRE_NAMES[tensor.dtype]}'s "
                                    f"range (largest finite {largest!r}) and becomes {found}; send the tensor as "
                                    f"{'complex128' if tensor.is_complex() else 'float64'}, or: {allow}")
    raise FieldError(field, f"contains {found} at flat index {i} (the first non-finite value); "
                    f"NaN and infinite values are refused: {allow}")


def payload_array(tensor: torch.Tensor, encoding: str) -> tuple[str, np.ndarray]:
    """The wire dtype name and the C-contiguous CPU array of elements to send.

    ``values``: float64, a (real, imaginary) pair per element for complex.
    """
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    name = WIRE_NAMES[t.dtype]
    if encoding == "values":
        t = torch.view_as_real(t.to(torch.complex128)) if t.is_complex() else t.to(torch.float64)
    elif t.dtype == torch.bfloat16:
        t = t.view(torch.int16)  # numpy has no bfloat16; the bytes are the same
    return name, t.contiguous().numpy()


def tensor_parts(tensor: torch.Tensor, encoding: str) -> list[Buffer]:
    """The fields of a ``Tensor`` message for ``tensor``, as wire pieces over its memory.

    ``raw`` exposes the (contiguous, CPU) tensor's bytes; ``values`` its
    float64 conversion, written as one packed field. No Python list, no copy
    until the pieces are joined.
    """
    name, arr = payload_array(tensor, encoding)
    return tensor_body(name, tuple(tensor.shape), arr, "values" if encoding == "values" else "raw")


def encode_tensor(tensor: torch.Tensor, encoding: str) -> lossd_pb2.Tensor:
    """Encode ``tensor`` as a ``Tensor`` message with ``raw`` bytes or ``values`` numbers.

    ``raw`` copies the bytes into the message (upb's own path, the fastest
    for small tensors); ``values`` parses a packed field framed over the
    float64 memory, which beats filling the field from a Python list by 5-30x.
    """
    name, arr = payload_array(tensor, encoding)
    if encoding == "values":
        return tensor_message(tensor_body(name, tuple(tensor.shape), arr, "values"))
    return lossd_pb2.Tensor(dtype=name, shape=arr.shape, raw=arr.tobytes())
