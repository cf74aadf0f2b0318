"""The tensor wire format, shared by client and server: one place for its rules.

A ``lossd.v1.Tensor`` names a dtype in torch spelling, a shape, and carries
its elements either as ``raw`` little-endian bytes or as ``values`` numbers
(a complex element is its real then its imaginary part, in both forms).
:func:`check_tensor` validates a message before anything is allocated::

    >>> from lossd.v1 import lossd_pb2
    >>> t = lossd_pb2.Tensor(dtype="float32", shape=[2], values=[1.0, 2.0])
    >>> check_tensor(t, "inputs.input")
    TensorLayout(dtype='float32', shape=(2,), numel=2, encoding='values')
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ._settings import env_name, flag_name

__all__ = [
    "DTYPES",
    "DTypeInfo",
    "TensorLayout",
    "FieldError",
    "check_tensor",
    "explain_message_limit",
    "over_message_limit",
    "reply_too_large",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_REQUEST_ELEMENTS",
    "DEFAULT_MAX_TENSORS",
    "DEFAULT_MAX_TENSOR_ELEMENTS",
    "DEFAULT_MAX_TERMS",
    "MAX_DIMS",
    "MAX_LOSS_WORK",
    "TensorLimits",
    "check_tensors",
    "reply_encoding",
]

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("lossd's raw tensor encoding assumes a little-endian host")

#: Message size limit used by both server and SDK unless configured (256 MiB):
#: a 10**7-element float32 tensor pair plus gradients fits (80 MB each way), and
#: so does a 3 x 10**7-element one.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

#: How to raise each side's message limit.
_RAISE_LIMIT = {
    "server": "raise the server's limit with lossd serve --max-message-bytes (env LOSSD_MAX_MESSAGE_BYTES)",
    "client": "raise the SDK's limit with Client(max_message_bytes=...) (env LOSSD_MAX_MESSAGE_BYTES)",
}
_GRPC_LIMIT = re.compile(r"(CLIENT|SERVER): (?:Sent|Received) message larger than max \(\d+ vs\. \d+\)")


def explain_message_limit(text: str) -> str:
    """gRPC's "message larger than max" error text, with how to raise that limit.

    Other text comes back unchanged.

    >>> explain_message_limit("SERVER: Received message larger than max (300 vs. 200)").split("; ")[1]
    "raise the server's limit with lossd serve --max-message-bytes (env LOSSD_MAX_MESSAGE_BYTES)"
    """
    m = _GRPC_LIMIT.search(text)
    if m is None or "max-message-bytes" in text or "max_message_bytes" in text:
        return text
    return f"{text}; {_RAISE_LIMIT[m.group(1).lower()]}; both sides must allow a message"


def over_message_limit(text: str) -> bool:
    """Whether an error's text says a message passed a size limit: gRPC's own (either side's) or a reply the
    server refused to send (:func:`reply_too_large`).

    >>> over_message_limit("SERVER: Received message larger than max (300 vs. 200)"), over_message_limit("no")
    (True, False)
    """
    return _GRPC_LIMIT.search(text) is not None or _OVER_LIMIT in text


_OVER_LIMIT = "over the message limit of"


def reply_too_large(size: int, limit: int, items: int = 0) -> str:
    """The message for a reply the server cannot send: its size, the limit, the fix. ``items``: a batch's
    reply, refused once its first ``items`` items' replies (``size`` bytes) pass the limit.

    >>> reply_too_large(300, 200).split("; ")[0]
    'the reply is 300 bytes, over the message limit of 200 bytes'
    >>> reply_too_large(300, 200, items=3).split("; ")[:2]
    ['the reply is over the message limit of 200 bytes after 3 items (300 bytes)', 'send fewer items per batch']
    """
    what = (f"the reply is {_OVER_LIMIT} {limit} bytes after {items} items ({size} bytes); "
            "send fewer items per batch" if items else f"the reply is {size} bytes, {_OVER_LIMIT} {limit} bytes")
    return (f"{what}; {_RAISE_LIMIT['server']}, and the client's if it is lower, "
            "or ask for fewer gradients (grad_inputs)")
#: Largest number of elements accepted in one tensor unless configured.
DEFAULT_MAX_TENSOR_ELEMENTS = 50_000_000
#: Largest number of elements in all the tensors of one request unless configured: two
#: tensors of the per-tensor limit. (Decoded integer inputs widen to int64, so elements,
#: not bytes, bound what a request makes the server allocate.)
DEFAULT_MAX_REQUEST_ELEMENTS = 2 * DEFAULT_MAX_TENSOR_ELEMENTS
#: Most tensors in one request unless configured (inputs + parameters + grad_output; a
#: TrainJob's inline data and constant loss inputs): room for a large model's parameters.
DEFAULT_MAX_TENSORS = 1024
#: Most terms in one composite objective unless configured: each term evaluates a loss over
#: the request's inputs, so the count bounds the work one small request can ask for.
DEFAULT_MAX_TERMS = 64
#: Most elements a call's losses may build beyond their inputs (a similarity matrix, a lattice, a broadcast)
#: unless configured (``--max-loss-work``): 2^26, 256 MiB in float32, the (2N)² similarities of SimCLR's batch
#: of 4096 pairs or Barlow Twins' 8192 features; a graph holds a few such tensors. Counted from the shapes
#: before any loss runs (server/evaluation/_binding.py, ``check_work``): 16 KB of embeddings asked for 800 MB
#: and 2 s of CPU, 128 KB for 13 GB.
MAX_LOSS_WORK = 1 << 26
#: Most dimensions a tensor may have (numpy's own limit): a wire rule, not a setting.
MAX_DIMS = 64



def _hint(setting: str) -> str:
    """The ``lossd serve`` flag and variable of limit ``setting``, named in refusals: the
    conventional names (:mod:`lossd._settings`), which the server's settings table keeps for
    every limit (tests/unit/test_config.py checks it).

    >>> _hint("max_tensors")
    '--max-tensors, env LOSSD_MAX_TENSORS'
    """
    return f"{flag_name(setting)}, env {env_name(setting)}"


@dataclass(frozen=True)
class TensorLimits:
    """The server's size limits on the tensors (and objective terms) of one request, and on what its losses
    build beyond them (``lossd serve`` flags).

    >>> TensorLimits.of(1000)  # doctest: +NORMALIZE_WHITESPACE
    TensorLimits(max_tensor_elements=1000, max_request_elements=100000000, max_tensors=1024, max_terms=64,
                 max_loss_work=67108864)
    """

    max_tensor_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS
    max_request_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS
    max_tensors: int = DEFAULT_MAX_TENSORS
    max_terms: int = DEFAULT_MAX_TERMS
    max_loss_work: int = MAX_LOSS_WORK

    @classmethod
    def of(cls, limits: TensorLimits | int) -> TensorLimits:
        """``limits`` itself, or the defaults with a per-tensor element limit of ``limits``."""
        return limits if isinstance(limits, TensorLimits) else cls(max_tensor_elements=limits)


def _over(field: str, what: str, limit: int, unit: str, setting: str) -> FieldError:
    """A RESOURCE_EXHAUSTED refusal naming the field, the limit, its value and its flag."""
    return FieldError(field, f"{what}; the server's limit is {limit} {unit} ({_hint(setting)})",
                     "RESOURCE_EXHAUSTED")


@dataclass(frozen=True)
class DTypeInfo:
    """Facts about one wire dtype: its size, kind and numpy spelling."""

    name: str
    itemsize: int
    kind: Literal["float", "complex", "int", "bool"]
    numpy: str | None  # None: numpy has no such dtype (bfloat16)
    min: float = -math.inf
    max: float = math.inf

    @property
    def numbers(self) -> int:
        """Numbers per element in ``values``: 2 for complex (real, imaginary), else 1."""
        return 2 if self.kind == "complex" else 1


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
        DTypeInfo("complex64", 8, "complex", "<c8"),  # (real, imaginary) float32 pairs
        DTypeInfo("complex128", 16, "complex", "<c16"),  # (real, imaginary) float64 pairs
        _int("int64", 64),
        _int("int32", 32),
        _int("int16", 16),
        _int("int8", 8),
        _int("uint8", 8, signed=False),
        DTypeInfo("bool", 1, "bool", "|b1", 0, 1),
    )
}


class FieldError(ValueError):
    """A request field breaks a rule: the one error type for a refused field, raised by the wire
    rules, the server (binding, training specs) and the losses alike.

    ``field`` is the request path at fault (``inputs.target``, ``params.margin``; empty when the
    request as a whole is refused), ``message`` the rule, ``code`` the gRPC status code name the
    server answers with: ``INVALID_ARGUMENT`` (the default), ``RESOURCE_EXHAUSTED`` for a size
    limit, ``NOT_FOUND``, ``UNIMPLEMENTED``, ...

    >>> str(FieldError("params.margin", "must be positive")), FieldError("", "queue full", "UNAVAILABLE").code
    ('params.margin: must be positive', 'UNAVAILABLE')
    """

    def __init__(self, field: str, message: str, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.code = code


@dataclass(frozen=True)
class TensorLayout:
    """What a valid tensor message holds, before its elements are touched.

    ``raw`` is the tensor's ``raw`` payload, read once: upb copies a bytes
    field on every read, so decoders use this one rather than read it again.
    It is a ``memoryview`` when the caller passed the payload in (see
    :func:`lossd._framing.split_payloads`).
    """

    dtype: str
    shape: tuple[int, ...]
    numel: int
    encoding: Literal["raw", "values"]
    raw: bytes | memoryview = field(default=b"", repr=False, compare=False)


def check_tensor(
    tensor: object,
    field: str,
    max_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS,
    raw: bytes | memoryview | None = None,
) -> TensorLayout:
    """Validate a ``lossd.v1.Tensor`` message's header and payload size.

    Checks the dtype name, the number of dims (at most :data:`MAX_DIMS`), that
    dims are non-negative, the element cap, that exactly one of
    ``raw``/``values`` is used and that its length matches the shape. Shape
    arithmetic uses Python ints, so it cannot overflow: ``[2**40, 2**40]`` is
    refused as over the cap, and so is an empty tensor whose other dims
    multiply past it (``[0, 2**62, 2**62]``: torch cannot even compute its
    strides). Raises :class:`FieldError` naming ``field`` and the rule. ``raw``,
    when given, is the tensor's payload kept outside the message (its ``raw``
    field is then not read).

    >>> from lossd.v1 import lossd_pb2
    >>> check_tensor(lossd_pb2.Tensor(dtype="float32", shape=[2**40, 2**40]), "x", 10**6)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: x.shape: shape [1099511627776, 1099511627776] has 1208925819614629174706176 elements; ...
    """
    dtype = tensor.dtype  # type: ignore[attr-defined]
    info = DTYPES.get(dtype)
    if info is None:
        allowed = ", ".join(DTYPES)
        shown = repr(dtype) if dtype else "empty"
        raise FieldError(f"{field}.dtype", f"dtype is {shown}; must be one of: {allowed}")
    if len(tensor.shape) > MAX_DIMS:  # type: ignore[attr-defined]
        raise FieldError(f"{field}.shape", f"has {len(tensor.shape)} dimensions; "  # type: ignore[attr-defined]
                        f"a tensor may have at most {MAX_DIMS}")
    shape: tuple[int, ...] = tuple(tensor.shape)  # type: ignore[attr-defined]
    if shape and min(shape) < 0:
        i, d = next((i, d) for i, d in enumerate(shape) if d < 0)
        raise FieldError(f"{field}.shape", f"dimension {i} is {d}; dimensions must be >= 0")
    numel = math.prod(shape)
    if numel > max_elements:
        raise _over(f"{field}.shape", f"shape {list(shape)} has {numel} elements", max_elements,
                    "elements per tensor", "max_tensor_elements")
    span = math.prod(d for d in shape if d)
    if numel == 0 and span > max_elements:
        raise _over(f"{field}.shape", f"shape {list(shape)} is empty, but its other dimensions multiply to {span}",
                    max_elements, "elements per tensor", "max_tensor_elements")
    if raw is None:
        raw = tensor.raw  # type: ignore[attr-defined]  # a copy: read it once
    raw_len = raw.nbytes if isinstance(raw, memoryview) else len(raw)
    n_values = len(tensor.values)  # type: ignore[attr-defined]
    if raw_len and n_values:
        raise FieldError(field, "set either raw or values, not both")
    if n_values:
        encoding: Literal["raw", "values"] = "values"
        if n_values != numel * info.numbers:
            pairs = f" x 2 (real, imaginary interleaved) = {numel * 2}" if info.numbers == 2 else ""
            raise FieldError(
                f"{field}.values",
                f"has {n_values} numbers; shape {list(shape)} of {dtype} needs {numel}{pairs}",
            )
    else:
        encoding = "raw"
        if raw_len != numel * info.itemsize:
            raise FieldError(
                f"{field}.raw",
                f"has {raw_len} bytes; shape {list(shape)} of {dtype} needs "
                f"{numel} x {info.itemsize} = {numel * info.itemsize}",
            )
    return TensorLayout(dtype, shape, numel, encoding, raw)


def check_tensors(
    tensors: Sequence[tuple[str, object, bytes | memoryview | None]],
    limits: TensorLimits | int | None = None,
    terms: int = 0,
) -> list[TensorLayout]:
    """Validate every tensor of one request before any is decoded: the per-request rules.

    ``tensors`` lists ``(field, message, raw)`` (``raw`` as in :func:`check_tensor`);
    ``terms`` is the number of terms of a composite objective (``max_terms``).
    First the counts (``max_terms``, ``max_tensors``), then each tensor (:func:`check_tensor`),
    then their elements in all (``max_request_elements``): sizes come from the
    shapes, so nothing is allocated for a request that is refused.

    >>> from lossd.v1 import lossd_pb2
    >>> t = lossd_pb2.Tensor(dtype="float32", shape=[3], values=[1.0, 2.0, 3.0])
    >>> [x.numel for x in check_tensors([("inputs.input", t, None), ("inputs.target", t, None)])]
    [3, 3]
    >>> check_tensors([("inputs.input", t, None), ("inputs.target", t, None)],
    ...               TensorLimits(max_request_elements=5))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: inputs.target: ... limit is 5 elements per request (--max-request-elements, ...)
    """
    limits = TensorLimits.of(limits if limits is not None else TensorLimits())
    if terms > limits.max_terms:
        raise _over("terms", f"the objective has {terms} terms", limits.max_terms, "terms per request", "max_terms")
    if len(tensors) > limits.max_tensors:
        groups: dict[str, int] = {}
        for name, _, _ in tensors:
            groups[name.split(".")[0]] = groups.get(name.split(".")[0], 0) + 1
        listed = ", ".join(f"{n} in {g}" for g, n in groups.items())
        raise _over(tensors[limits.max_tensors][0], f"the request carries {len(tensors)} tensors ({listed})",
                    limits.max_tensors, "tensors per request", "max_tensors")
    layouts = [check_tensor(msg, name, limits.max_tensor_elements, raw) for name, msg, raw in tensors]
    total = sum(layout.numel for layout in layouts)
    if total > limits.max_request_elements:
        running, k = 0, 0
        while running + layouts[k].numel <= limits.max_request_elements:  # find the tensor that crosses it
            running += layouts[k].numel
            k += 1
        name = tensors[k][0]
        raise _over(name, f"the request's tensors hold {total} elements in all ({name}, with {layouts[k].numel}, "
                    "goes past the limit)", limits.max_request_elements, "elements per request",
                    "max_request_elements")
    return layouts


#: ``TensorEncoding`` (lossd.proto) numbers a request may set; 0 (unspecified) means "as the request's tensors".
_ENCODINGS = {1: "raw", 2: "values"}


def reply_encoding(requested: int, default: str, field: str = "output_encoding") -> str:
    """The encoding of a reply's tensors: ``requested`` (a ``TensorEncoding`` number), or ``default``
    when it is 0; any other number is refused (protobuf keeps unknown enum values as numbers).

    >>> reply_encoding(0, "raw"), reply_encoding(2, "raw")
    ('raw', 'values')
    >>> reply_encoding(7, "raw")
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: output_encoding: is 7; must be TENSOR_ENCODING_UNSPECIFIED (0), ...
    """
    if requested == 0:
        return default
    if requested not in _ENCODINGS:
        raise FieldError(field, f"is {requested}; must be TENSOR_ENCODING_UNSPECIFIED (0), TENSOR_ENCODING_RAW (1) "
                        "or TENSOR_ENCODING_VALUES (2)")
    return _ENCODINGS[requested]
