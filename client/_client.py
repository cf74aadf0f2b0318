"""The synchronous SDK client.

>>> with Client("127.0.0.1:50051") as c:          # doctest: +SKIP
...     r = c.evaluate("cross_entropy", [[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]], [0, 2])
...     round(r.value, 4)
0.5493
"""

from __future__ import annotations

import array
import collections
import functools
import inspect
import itertools
import math
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, overload

import grpc
import numpy as np
from google.protobuf import struct_pb2

from .._framing import (
    Buffer,
    field_number,
    join,
    length_delimited,
    map_entry,
    split_payloads,
    tensor_body,
    varint,
    wire_fields,
)
from .._wire import over_message_limit
from ..v1 import lossd_pb2
from ._calls import (
    EVALUATE_LOSS,
    EVALUATE_LOSS_BATCH,
    EVALUATE_LOSS_STREAM,
    HEALTH_CHECK,
    LIST_LOSSES,
    ClientBase,
    Method,
    RequestSource,
    stream_requests,
)
from ._codec import _NUMPY_TO_WIRE, ArrayLike, Layouts, decode, encode, is_torch_tensor, raw_parts
from ._config import DEFAULT_TARGET
from ._errors import (
    DeadlineExceeded,
    LossdError,
    ResourceExhausted,
    Unimplemented,
    from_rpc_error,
    from_status_name,
    raising_lossd_errors,
)
from ._health import health_request, health_status
from ._jobs import Jobs
from ._modules import accepted, is_module, module_request, param_value
from ._warnings import emit_server_warnings

__all__ = [
    "Client",
    "EvaluateResult",
    "Evaluating",
    "Framed",
    "ItemFramer",
    "LossSpecifier",
    "ManyRequests",
    "Packed",
    "batch_outcomes",
    "build_request",
    "frame_request",
    "iter_prepared",
    "kept",
    "many_batch_bytes",
    "outcome_by_id",
    "pack_many",
    "prepare_many",
    "time_left",
    "stream_outcome",
    "streams_instead",
    "DEFAULT_TARGET",
    "MANY_BATCH_ITEMS",
    "MANY_BATCH_BYTES",
    "MANY_IN_FLIGHT",
]

R = TypeVar("R")
T = TypeVar("T")
ResultT = TypeVar("ResultT")
_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass
class EvaluateResult:
    """One evaluation: ``value`` (float, or ``None`` for a non-scalar loss),
    ``loss`` (array) and ``grads`` (arrays by input name), as numpy arrays or
    torch tensors (when the inputs were torch tensors).

    >>> r = client.evaluate("mse", [0.5, 2.0], [1.0, 1.0])   # doctest: +SKIP
    >>> r.value, r.loss_name, r.grads["y_pred"]               # doctest: +SKIP
    (0.625, 'mse_loss', array([-0.5,  1. ], dtype=float32))
    """

    value: float | None
    loss: Any
    grads: dict[str, Any]
    loss_name: str
    timing: dict[str, float] = field(default_factory=dict)
    #: Parts of a composite/regularized objective: each term, "loss", "l1", "l2".
    parts: dict[str, float] = field(default_factory=dict)
    #: Gradients of the objective for each sent parameter tensor.
    parameter_grads: dict[str, Any] = field(default_factory=dict)
    #: Parameters the regularization covered.
    regularized: list[str] = field(default_factory=list)
    #: The server's warnings for this evaluation (torch's and lossd's), also re-emitted as
    #: :class:`~lossd.client.ServerWarning` when the reply is decoded.
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_response(cls, reply: lossd_pb2.EvaluateLossResponse, as_torch: bool = False,
                      payloads: Mapping[str, memoryview] | None = None,
                      layouts: Layouts | None = None) -> EvaluateResult:
        """Decode a reply message. Its maps come sorted by name (protobuf map order is random).
        ``payloads``: tensors' ``raw`` bytes kept outside the message, by field path; ``layouts``:
        tensor headers checked before (:func:`~lossd.client._codec.decode`).

        Each of the reply's ``warnings`` is re-emitted with ``warnings.warn(msg, ServerWarning)``.
        """
        # len() first: iterating a upb repeated field ends in an IndexError, formatted even when empty.
        warnings = list(reply.warnings) if len(reply.warnings) else []
        if warnings:
            emit_server_warnings(warnings)
        raw = payloads or {}
        grads, parameter_grads, parts = reply.grads, reply.parameter_grads, reply.parts
        return cls(
            value=reply.value if reply.HasField("value") else None,
            loss=decode(reply.loss, as_torch, raw.get("loss"), layouts),
            grads={k: decode(grads[k], as_torch, raw.get(f"grads.{k}"), layouts) for k in sorted(grads)},
            loss_name=reply.loss_name,
            timing=_timing(reply.timing),
            parts=dict(sorted(parts.items())) if len(parts) else {},
            parameter_grads={k: decode(parameter_grads[k], as_torch, raw.get(f"parameter_grads.{k}"), layouts)
                             for k in sorted(parameter_grads)} if len(parameter_grads) else {},
            regularized=list(reply.regularized) if len(reply.regularized) else [],
            warnings=warnings,
        )

    @classmethod
    def from_bytes(cls, data: bytes, as_torch: bool = False, layouts: Layouts | None = None) -> EvaluateResult:
        """Decode a serialized reply; a large one is parsed with its tensors' payloads left where
        they are in ``data`` (:func:`lossd._framing.split_payloads`), which numpy results then view.
        ``layouts`` as in :meth:`from_response`."""
        reply, payloads = split_payloads(data, lossd_pb2.EvaluateLossResponse)
        return cls.from_response(reply, as_torch, payloads, layouts)


_TIMING_FIELDS = tuple(f.name for f in lossd_pb2.Timing.DESCRIPTOR.fields)


def _timing(timing: lossd_pb2.Timing) -> dict[str, float]:
    """The fields set (non-zero bits: -0.0 included), as ``ListFields`` and MessageToDict list them,
    read field by field (``ListFields`` costs several times as much)."""
    return {name: v for name in _TIMING_FIELDS
            if (v := getattr(timing, name)) != 0 or math.copysign(1.0, v) < 0}


#: A loss name, or the terms of a composite objective: ``[{"loss": "bce", "weight": 0.5}, ...]``.
LossSpecifier = str | Sequence[Mapping[str, Any]]


def build_request(
    loss: LossSpecifier,
    y_pred: ArrayLike | None = None,
    y_true: ArrayLike | None = None,
    *,
    inputs: Mapping[str, ArrayLike] | None = None,
    params: Mapping[str, Any] | None = None,
    grad_inputs: Sequence[str] = (),
    grad_output: ArrayLike | None = None,
    encoding: str = "raw",
    parameters: Mapping[str, ArrayLike] | None = None,
    regularization: Mapping[str, Any] | None = None,
    allow_non_finite: bool = False,
    strict: bool = False,
    **params_and_inputs: Any,
) -> tuple[lossd_pb2.EvaluateLossRequest, bool]:
    """Build an ``EvaluateLossRequest``; also says whether any input was torch.

    ``loss`` is a name or alias, the terms of a composite objective, or a
    configured ``torch.nn`` loss module (``nn.CrossEntropyLoss(weight=w,
    label_smoothing=0.1)``): its settings become parameters and its buffers
    (``weight``, ``pos_weight``) inputs; explicit arguments override them.
    ``strict=True`` has the server refuse inputs outside a loss's documented
    domain instead of computing them with a warning.

    Keyword arguments that are arrays (numpy, torch, lists) are inputs
    (``weight=...``, ``var=...``); scalars and strings are loss parameters.
    List-valued parameters (``cutoffs``) go in ``params=``.
    ``y_pred``/``y_true`` go first, in PyTorch's order. The server refuses NaN
    and infinite values in the tensors unless ``allow_non_finite=True``, which
    has it compute them as torch would.

    >>> request, as_torch = build_request("ce", [[2.0, 0.5]], [0], label_smoothing=0.1)
    >>> request.loss, sorted(request.inputs), dict(request.params), as_torch
    ('ce', ['y_pred', 'y_true'], {'label_smoothing': 0.1}, False)
    """
    if encoding not in ("raw", "values"):
        raise ValueError(f"encoding: must be 'raw' or 'values', got {encoding!r}")
    if isinstance(grad_inputs, str):  # list("y_pred") would ask for the gradients of 'y', '_', 'p', ...
        raise TypeError(f"grad_inputs: a list of input names, got the string {grad_inputs!r} "
                        f"(write [{grad_inputs!r}])")
    loss, tensors, all_params = _split_arguments(loss, y_pred, y_true, inputs, params, params_and_inputs)
    terms: Sequence[Mapping[str, Any]] = () if isinstance(loss, str) else loss
    request = lossd_pb2.EvaluateLossRequest(
        loss=loss if isinstance(loss, str) else "",
        inputs={k: encode(v, encoding, f"inputs.{k}") for k, v in tensors.items()},
        grad_inputs=list(grad_inputs),
        allow_non_finite=allow_non_finite,
        strict=strict,
    )
    if all_params:
        request.params.CopyFrom(params_struct(all_params, "params"))
    if grad_output is not None:
        request.grad_output.CopyFrom(encode(grad_output, encoding, "grad_output"))
    for k, term in enumerate(terms):
        unknown = set(term) - {"loss", "weight", "params", "name", "inputs", "transforms"}
        if unknown:
            raise TypeError(f"terms[{k}]: unknown keys {sorted(unknown)}; use loss, weight, params, name, inputs, "
                            "transforms")
        if "loss" not in term:
            raise TypeError(f"terms[{k}]: needs 'loss', the name of the term's loss")
        t = request.terms.add(loss=term["loss"], name=term.get("name", ""), inputs=dict(term.get("inputs", {})),
                              transforms=dict(term.get("transforms", {})))
        if "weight" in term:
            try:
                t.weight = float(term["weight"])
            except (TypeError, ValueError):
                raise TypeError(f"terms[{k}].weight: must be a number, got {term['weight']!r}") from None
        if term.get("params"):
            field = f"terms[{len(request.terms) - 1}].params"
            t.params.CopyFrom(params_struct({k: param_value(k, v) for k, v in dict(term["params"]).items()}, field))
    for name, value in (parameters or {}).items():
        request.parameters[name].CopyFrom(encode(value, encoding, f"parameters.{name}"))
    if regularization is not None:
        request.regularization.CopyFrom(lossd_pb2.Regularization(**regularization))
    as_torch = any(is_torch_tensor(v) for v in [*tensors.values(), *(parameters or {}).values()])
    return request, as_torch


def params_struct(params: Mapping[str, Any], field: str) -> struct_pb2.Struct:
    """``params`` (as :func:`~._modules.param_value` leaves them) as a ``Struct``; a value JSON cannot
    carry is a ``TypeError`` naming its key in ``field``.

    >>> params_struct({"margin": 0.5}, "params")["margin"]
    0.5
    >>> params_struct({"margin": 1j}, "params")
    Traceback (most recent call last):
    ...
    TypeError: params.margin: cannot send a complex as a parameter; parameters are numbers, strings, ...
    """
    struct = struct_pb2.Struct()
    for key, value in params.items():
        try:
            struct.update({key: value})
        except (TypeError, ValueError):
            leaf = _unsendable(value)
            raise TypeError(f"{field}.{key}: cannot send a {type(leaf).__qualname__} as a parameter; parameters "
                            "are numbers, strings, booleans, None, and lists and dicts of them") from None
    return struct


def _unsendable(value: Any) -> Any:
    """The first part of ``value`` that a ``Struct`` cannot hold (``value`` itself when none is found)."""
    if isinstance(value, (list, tuple)):
        parts = list(value)
    elif isinstance(value, dict):
        parts = list(value.values())
    else:
        return value
    for part in parts:
        if part is not None and not isinstance(part, (bool, int, float, str)):
            return _unsendable(part)
    return value


def frame_request(
    loss: LossSpecifier,
    y_pred: ArrayLike | None = None,
    y_true: ArrayLike | None = None,
    *,
    inputs: Mapping[str, ArrayLike] | None = None,
    params: Mapping[str, Any] | None = None,
    grad_output: ArrayLike | None = None,
    encoding: str = "raw",
    parameters: Mapping[str, ArrayLike] | None = None,
    **rest: Any,
) -> tuple[bytes, bool]:
    """:func:`build_request`'s request, serialized: the bytes upb writes for it (deterministic
    map order), but framed around the arrays' own memory (:mod:`lossd._framing`), so each payload
    is copied once, by the final join, instead of three or four times through upb.
    ``Client.evaluate`` sends these bytes. ``values`` requests go through upb.

    >>> data, _ = frame_request("mse", [1.0, 2.0], [0.0, 0.0], reduction="sum")
    >>> data == build_request("mse", [1.0, 2.0], [0.0, 0.0], reduction="sum")[0].SerializeToString(deterministic=True)
    True
    """
    loss, tensors, all_params = _split_arguments(loss, y_pred, y_true, inputs, params, rest)
    kept = {k: v for k, v in rest.items() if k in _NOT_PARAMS}
    if encoding != "raw":
        request, as_torch = build_request(loss, inputs=tensors, params=all_params, grad_output=grad_output,
                                          encoding=encoding, parameters=parameters, **kept)
        return request.SerializeToString(deterministic=True), as_torch
    # Everything but the tensors through upb (small), then the tensors framed in field order:
    # upb writes fields by number and, deterministic, map entries by key.
    light, as_torch = build_request(loss, params=all_params, **kept)
    framed: dict[int, list[Buffer]] = {
        _INPUTS: [piece for k in sorted(tensors)
                  for piece in map_entry(_INPUTS, k, raw_parts(tensors[k], f"inputs.{k}"))],
        _PARAMETERS: [piece for k in sorted(parameters or {})
                      for piece in map_entry(_PARAMETERS, k, raw_parts((parameters or {})[k], f"parameters.{k}"))],
    }
    if grad_output is not None:
        framed[_GRAD_OUTPUT] = length_delimited(_GRAD_OUTPUT, raw_parts(grad_output, "grad_output"))
    head = memoryview(light.SerializeToString(deterministic=True))
    pieces: list[Buffer] = []
    for number, _, start, _, end in wire_fields(head, 0, len(head)):
        for n in sorted(k for k in framed if k < number):
            pieces += framed.pop(n)
        pieces.append(head[start:end])
    for n in sorted(framed):
        pieces += framed.pop(n)
    as_torch = as_torch or any(is_torch_tensor(v) for v in [*tensors.values(), *(parameters or {}).values()])
    return join(pieces), as_torch


#: build_request's keyword arguments that frame_request passes on as they are (neither tensors
#: nor loss parameters): its keyword-only parameters but those frame_request handles itself.
_NOT_PARAMS = frozenset(
    name for name, p in inspect.signature(build_request).parameters.items() if p.kind is p.KEYWORD_ONLY
) - {"inputs", "params", "grad_output", "encoding", "parameters"}
_INPUTS, _GRAD_OUTPUT, _PARAMETERS = (field_number(lossd_pb2.EvaluateLossRequest, name)
                                      for name in ("inputs", "grad_output", "parameters"))


def _split_arguments(
    loss: Any, y_pred: ArrayLike | None, y_true: ArrayLike | None, inputs: Mapping[str, ArrayLike] | None,
    params: Mapping[str, Any] | None, params_and_inputs: Mapping[str, Any],
) -> tuple[LossSpecifier, dict[str, ArrayLike], dict[str, Any]]:
    """``build_request``'s arguments as (loss name or terms, inputs by name, loss parameters); a
    torch loss module gives its name, parameters and tensors, which explicit arguments override
    (whether either was given as a tensor or a parameter). A name given twice as the same kind
    (``y_pred`` and ``inputs["y_pred"]``, ``beta=0.5`` and ``params["beta"]``) is a ``TypeError``."""
    module_params: dict[str, Any] = {}
    module_tensors: dict[str, Any] = {}
    if is_module(loss):
        loss, module_params, module_tensors = module_request(loss)
    elif not isinstance(loss, str) and not (
            isinstance(loss, Sequence) and all(isinstance(t, Mapping) for t in loss)):
        raise TypeError(f"cannot send a {type(loss).__module__}.{type(loss).__qualname__} as a loss; "
                        f"the loss must be {accepted()}")
    given = named_inputs(y_pred, y_true, inputs)
    explicit: dict[str, Any] = dict(params or {})
    for k, v in params_and_inputs.items():
        if k in _NOT_PARAMS:
            continue
        kind, into = ("inputs", given) if _is_array(v) else ("params", explicit)
        if k in into:
            raise TypeError(f"{k} was given twice: as a keyword argument and in {kind}")
        into[k] = v
    # One name may be an input and a parameter (adaptive_log_softmax's head_bias tensor and its head_bias
    # switch); a parameter sent as a tensor and in params is the server's refusal.
    tensors, all_params = under_explicit(module_tensors, module_params, given, explicit)
    return loss, tensors, {k: param_value(k, v) for k, v in all_params.items()}


def named_inputs(y_pred: Any, y_true: Any, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``inputs`` with ``y_pred`` and ``y_true`` (when given); one of them also in ``inputs`` is a ``TypeError``."""
    given = dict(inputs or {})
    for name, value in (("y_pred", y_pred), ("y_true", y_true)):
        if value is not None:
            if name in given:
                raise TypeError(f"{name} was given twice: as an argument and in inputs")
            given[name] = value
    return given


def under_explicit(module_tensors: Mapping[str, Any], module_params: Mapping[str, Any], inputs: Mapping[str, Any],
                   params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, params): a torch loss module's tensors and settings, each overridden by an explicit input or
    parameter of its name, whichever way either was given (a setting sent as a tensor, a buffer as ``None``).

    >>> under_explicit({"weight": "w"}, {"reduction": "mean"}, {"y_pred": "x"}, {"weight": None})
    ({'y_pred': 'x'}, {'reduction': 'mean', 'weight': None})
    """
    tensors = {**{k: v for k, v in module_tensors.items() if k not in params}, **inputs}
    return tensors, {**{k: v for k, v in module_params.items() if k not in inputs}, **params}


def _shared_inputs(named: Mapping[str, Any]) -> list[list[str]]:
    """Groups of input names bound to one and the same array object (``loss(x, x)``)."""
    groups: dict[int, list[str]] = {}
    for name, value in named.items():
        if value is not None and _is_array(value) and not isinstance(value, (list, tuple)):
            groups.setdefault(id(value), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _sharing(y_pred: Any, y_true: Any, kwargs: dict[str, Any]) -> tuple[list[list[str]], list[str], dict[str, Any]]:
    """Among ``evaluate``'s arguments, the groups of input names bound to one array object (``loss(x, x)``),
    the names added to ``grad_inputs`` so that each group's gradients can be summed (:func:`_sum_shared`),
    and ``kwargs`` asking for them."""
    shared = _shared_inputs({"y_pred": y_pred, "y_true": y_true, **dict(kwargs.get("inputs") or {}),
                             **{k: v for k, v in kwargs.items() if k not in _NAMED and _is_array(v)}})
    if not shared:
        return [], [], kwargs
    asked = list(kwargs.get("grad_inputs") or ())
    extra = [n for group in shared if set(group) & set(asked) for n in group if n not in asked]
    return shared, extra, ({**kwargs, "grad_inputs": [*asked, *extra]} if extra else kwargs)


class SharedSums:
    """``evaluate_many``'s dict items that pass one array object as several inputs (``{"y_pred": x,
    "y_true": x}``): each is sent as :meth:`Evaluating.evaluate` sends it, and :meth:`apply` gives each
    name the sum of the group's gradients, as ``evaluate`` (and local autograd) does."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[list[list[str]], list[str]]] = {}

    def items(self, requests: ManyRequests) -> Iterator[lossd_pb2.EvaluateLossRequest | Mapping[str, Any]]:
        """``requests``, the dicts that share an array asking for every gradient to sum."""
        for i, item in enumerate(requests):
            if isinstance(item, Mapping) and ("inputs" in item or len({id(v) for v in item.values()}) < len(item)):
                rest = {k: v for k, v in item.items() if k not in ("y_pred", "y_true")}
                shared, extra, rest = _sharing(item.get("y_pred"), item.get("y_true"), rest)
                if shared:
                    self._items[i] = (shared, extra)
                    item = {**{k: item[k] for k in ("y_pred", "y_true") if k in item}, **rest}
            yield item

    def apply(self, outcomes: list[EvaluateResult | LossdError]) -> list[EvaluateResult | LossdError]:
        """``outcomes`` in request order, each shared array's gradients summed."""
        for i, (shared, extra) in self._items.items():
            outcome = outcomes[i] if i < len(outcomes) else None
            if isinstance(outcome, EvaluateResult):
                _sum_shared(outcome, shared, extra)
        return outcomes


def _sum_shared(result: EvaluateResult, shared: list[list[str]], extra: Sequence[str] = ()) -> EvaluateResult:
    """Each name of a shared array gets the sum of the group's gradients, as autograd accumulates them;
    the names in ``extra`` (asked for only to be summed) are then dropped."""
    for names in shared:
        found = [result.grads[n] for n in names if n in result.grads]
        if len(found) > 1:
            total = found[0]
            for g in found[1:]:
                total = total + g
            for n in names:
                if n in result.grads:
                    result.grads[n] = total
    for n in extra:
        result.grads.pop(n, None)
    return result


def _is_array(v: Any) -> bool:
    """Arrays (numpy and its scalars, torch, anything ``np.asarray`` reads: ``__array__``, buffers), lists
    and tuples are inputs; Python scalars and strings (``np.str_`` too) are parameters."""
    # numpy first: hasattr(array, "__array_interface__") builds the interface's dict (a microsecond).
    return type(v) is np.ndarray or is_torch_tensor(v) or (
        not isinstance(v, (str, bytes)) and (hasattr(v, "__array_interface__") or hasattr(v, "__array__"))
    ) or isinstance(v, (list, tuple, memoryview, array.array))


def stream_outcome(
    reply: lossd_pb2.EvaluateLossStreamResponse, as_torch: bool, raise_on_error: bool
) -> EvaluateResult | LossdError:
    """A stream reply as its result, or its error (raised when ``raise_on_error``)."""
    if not reply.HasField("error"):
        return EvaluateResult.from_response(reply.response, as_torch)
    item = int(reply.id) if reply.id.isdigit() else None
    error = from_status_name(reply.error.code, reply.error.message, reply.error.field, item)
    if raise_on_error:
        raise error
    return error


def streams_instead(error: LossdError, answered: Sequence[Any]) -> bool:
    """Whether ``evaluate_many`` sends the rest of its items over ``EvaluateLossStream`` after ``error``: the
    server has no ``EvaluateLossBatch`` (then nothing was ``answered``), or its ``--max-batch-items`` /
    ``--max-batch-bytes`` refused a whole batch (a limit below ``MANY_BATCH_ITEMS``, ``MANY_BATCH_BYTES``:
    field ``items``, no item of its own), or a batch or its reply passed a message limit (the server's
    ``--max-message-bytes`` below the batch: over a stream each item travels in a message of its own, and one
    still too large fails alone); the items ``answered`` before it keep their outcomes."""
    if error.item is not None:  # one item's own error (raise_on_error)
        return False
    if isinstance(error, Unimplemented):
        return not answered
    return isinstance(error, ResourceExhausted) and (error.field == "items" or over_message_limit(error.message))


def time_left(ends: float | None) -> float | None:
    """Seconds left until ``ends`` (a ``time.monotonic()`` deadline; ``None``: none) for the rest of a call made of
    several (``evaluate_many``'s stream after its batches); none left is :class:`DeadlineExceeded`, as gRPC says.

    >>> time_left(None), time_left(time.monotonic() + 60) > 59
    (None, True)
    """
    if ends is None:
        return None
    left = ends - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("Deadline Exceeded (the call's timeout passed before its items could be streamed)")
    return left


def many_batch_bytes(max_message_bytes: int) -> int:
    """The bytes ``evaluate_many`` packs into one batch: :data:`MANY_BATCH_BYTES`, or half the client's
    message limit when that is lower (the reply, gradients included, is about as large as the request
    or larger, and comes back under the same limit).

    >>> many_batch_bytes(256 << 20) == MANY_BATCH_BYTES, many_batch_bytes(4 << 20)
    (True, 2097152)
    """
    return min(MANY_BATCH_BYTES, max(1, max_message_bytes // 2))


def outcome_by_id(
    flags: Sequence[bool], raise_on_error: bool
) -> Callable[[lossd_pb2.EvaluateLossStreamResponse], EvaluateResult | LossdError]:
    """:func:`stream_outcome` of ``evaluate_many``'s replies, each decoding to torch as ``flags[id]`` says."""
    return lambda reply: stream_outcome(reply, flags[int(reply.id)], raise_on_error)


#: What ``evaluate_many`` takes: prepared requests, or dicts of ``evaluate`` arguments.
ManyRequests = Iterable[lossd_pb2.EvaluateLossRequest | Mapping[str, Any]]


def prepare_many(
    requests: ManyRequests, as_torch: bool = False
) -> tuple[list[lossd_pb2.EvaluateLossRequest], list[bool]]:
    """The requests of an ``evaluate_many`` call, and whether each decodes to torch.

    A dict holds :meth:`~lossd.client.Client.evaluate` arguments, ``loss``
    included; it decodes to torch when its inputs are torch tensors (or
    ``as_torch``). A prepared ``EvaluateLossRequest`` decodes as ``as_torch`` says.

    >>> reqs, torch_flags = prepare_many([{"loss": "mse", "y_pred": [1.0], "y_true": [0.0]}])
    >>> reqs[0].loss, torch_flags
    ('mse', [False])
    """
    flags: list[bool] = []
    return list(iter_prepared(requests, as_torch, flags)), flags


def iter_prepared(
    requests: ManyRequests, as_torch: bool, flags: list[bool], start: int = 0
) -> Iterator[lossd_pb2.EvaluateLossRequest]:
    """:func:`prepare_many` one request at a time (``evaluate_many`` packs a batch while the server
    computes the previous one), appending each one's torch flag to ``flags``; the first is
    ``requests[start]`` in errors."""
    for i, item in enumerate(requests, start):
        if isinstance(item, lossd_pb2.EvaluateLossRequest):
            flags.append(as_torch)
            yield item
            continue
        if not isinstance(item, Mapping):
            raise TypeError(f"requests[{i}]: an item is an EvaluateLossRequest or a dict of evaluate() arguments, "
                            f"got {type(item).__name__}")
        kwargs = dict(item)
        if "loss" not in kwargs:
            raise TypeError(f"requests[{i}]: a dict of evaluate() arguments needs 'loss'")
        try:
            request, is_torch = build_request(kwargs.pop("loss"), **kwargs)
        except (TypeError, ValueError) as e:
            raise _at_item(e, i) from None
        flags.append(as_torch or is_torch)
        yield request


def _at_item(e: TypeError | ValueError, index: int) -> Exception:
    """``e`` naming ``requests[index]`` first: a plain ``TypeError`` or ``ValueError`` (one message); any other
    kind (a subclass with its own fields) as it is.

    >>> str(_at_item(TypeError("inputs.y_pred: cannot send dtype float128"), 2))
    'requests[2]: inputs.y_pred: cannot send dtype float128'
    """
    return type(e)(f"requests[{index}]: {e}") if type(e) in (TypeError, ValueError) else e


#: ``evaluate_many`` packs at most this many items into one EvaluateLossBatch (the server's
#: default limit, ``--max-batch-items``, is 10,000) ...
MANY_BATCH_ITEMS = 2048
#: ... and at most this many serialized bytes (an item larger than that travels alone).
MANY_BATCH_BYTES = 8 * 1024 * 1024
#: Batches of one ``evaluate_many`` in flight at once: the next is packed while one is computed.
MANY_IN_FLIGHT = 2

_ITEMS = field_number(lossd_pb2.EvaluateLossBatchRequest, "items")


@dataclass(frozen=True)
class Packed:
    """One EvaluateLossBatch of ``evaluate_many``: its first item's index, item count and
    serialized ``EvaluateLossBatchRequest``."""

    start: int
    count: int
    body: bytes


def pack_many(
    requests: Iterable[lossd_pb2.EvaluateLossRequest | Framed],
    max_items: int | None = None,
    max_bytes: int | None = None,
) -> Iterator[Packed]:
    """Consecutive batches of ``requests`` (messages, or items :class:`ItemFramer` serialized), each
    at most ``max_items`` items and ``max_bytes`` bytes (a larger item alone; defaults
    :data:`MANY_BATCH_ITEMS`, :data:`MANY_BATCH_BYTES`), framed around each item's bytes (an
    :class:`ItemFramer` item holds a copy of its arrays' bytes, taken when it was framed: a generator
    may refill one array for every item) and joined once per batch.

    >>> reqs = [build_request("mse", [float(x)], [0.0])[0] for x in range(5)]
    >>> [(p.start, p.count) for p in pack_many(reqs, max_items=2)]
    [(0, 2), (2, 2), (4, 1)]
    """
    max_items = MANY_BATCH_ITEMS if max_items is None else max_items
    max_bytes = MANY_BATCH_BYTES if max_bytes is None else max_bytes
    pieces: list[Buffer] = []
    start = size = count = 0
    for i, request in enumerate(requests):
        count = i + 1
        if isinstance(request, lossd_pb2.EvaluateLossRequest):
            data = request.SerializeToString()
            parts, length = [data], len(data)
        else:
            parts, length = request
        head = _ITEM_HEADS.get(length)
        if head is None:
            head = _ITEM_TAG + varint(length)
            if length < 4096:
                _ITEM_HEADS[length] = head
        n = len(head) + length
        if pieces and (i - start >= max_items or size + n > max_bytes):
            yield Packed(start, i - start, join(pieces))
            pieces, start, size = [], i, 0
        pieces.append(head)
        pieces += parts
        size += n
    if pieces:
        yield Packed(start, count - start, join(pieces))


#: One serialized ``EvaluateLossRequest`` as pieces to join (bytes, or arrays' memory), and its length.
Framed = tuple[list[Any], int]
_ITEM_TAG = varint(_ITEMS << 3 | 2)
_ITEM_HEADS: dict[int, bytes] = {}  # an item's tag and length, by length (the small ones, as they come)
#: ``build_request``'s own parameters: a dict item's other keys are inputs (arrays) or loss parameters.
_NAMED = frozenset(inspect.signature(build_request).parameters) - {"params_and_inputs"}
#: Options :class:`ItemFramer` keys its cache on (any other named argument: through ``build_request``).
_FRAMED_OPTIONS = frozenset({"grad_inputs", "allow_non_finite", "strict", "encoding"})
_SCALARS = (bool, int, float, str)


class ItemFramer:
    """``evaluate_many``'s items serialized: the bytes upb writes for :func:`build_request`'s message
    (deterministic), as :class:`Framed` pieces around the arrays' own memory.

    A dict whose ``loss`` is a name, whose inputs are C-contiguous numpy arrays in a wire dtype
    and whose other values are scalars (loss parameters, ``allow_non_finite``, ``strict``) or
    ``grad_inputs`` names is framed from two caches of this framer: the bytes of everything but
    the inputs by loss and options (built once by :func:`build_request`), and each input's map
    entry up to its payload by name, dtype and shape. Everything else (prepared messages, lists,
    torch tensors, objectives, ``values``) goes through :func:`build_request`. ``flags`` gets each
    item's torch flag (as :func:`iter_prepared`).

    >>> framer, flags = ItemFramer(False), []
    >>> parts, n = framer.frame(0, {"loss": "mse", "y_pred": np.ones(2, np.float32), "y_true": np.zeros(2, np.float32)})
    >>> join(parts) == build_request("mse", np.ones(2, np.float32), np.zeros(2, np.float32))[0].SerializeToString(
    ...     deterministic=True)
    True
    """

    def __init__(self, as_torch: bool, flags: list[bool] | None = None, max_cached: int | None = None,
                 copy_arrays: bool = True) -> None:
        self._as_torch = as_torch
        #: Copy each array's bytes when the item is framed (``evaluate_many``: the caller may refill the array
        #: before the batch is joined); ``False`` where the pieces are joined at once (``Client.evaluate``:
        #: the join is the one copy).
        self._copy_arrays = copy_arrays
        self.flags = [] if flags is None else flags
        self._heads: dict[Hashable, tuple[bytes, bytes]] = {}
        self._entries: dict[tuple[str, str, tuple[int, ...]], bytes] = {}  # by name, dtype.str, shape
        #: Each cache is emptied before it would hold more than this (a client's framer lives long).
        self._max_cached = max_cached

    def frame(self, index: int, item: lossd_pb2.EvaluateLossRequest | Mapping[str, Any]) -> Framed:
        """Item ``index``'s :class:`Framed` bytes; its torch flag is appended to ``flags``."""
        try:
            framed = self.framed(item) if type(item) is dict else None
        except (TypeError, ValueError) as e:
            raise _at_item(e, index) from None
        if framed is not None:
            self.flags.append(self._as_torch)
            return framed
        request = next(iter_prepared([item], self._as_torch, self.flags, index))
        data = request.SerializeToString(deterministic=True)
        return [data], len(data)

    def framed(self, item: dict[str, Any]) -> Framed | None:
        """``item``'s :class:`Framed` bytes from the caches, or ``None`` when it must go through
        :func:`build_request` (see the class docstring); ``flags`` is left as it is."""
        loss = item.get("loss")
        if type(loss) is not str:
            return None
        arrays: dict[str, np.ndarray[Any, Any]] = {}
        options: list[tuple[str, type, Any, str | None]] = []  # (name, type, value, a float's bits)
        for k, v in item.items():
            if k == "loss":
                continue
            kind = type(v)
            if kind is np.ndarray and (k == "y_pred" or k == "y_true" or k not in _NAMED):
                arrays[k] = v
            elif kind in _SCALARS and (k not in _NAMED or k in _FRAMED_OPTIONS):
                options.append((k, kind, v, v.hex() if kind is float else None))  # -0.0 == 0.0, not alike
            elif k == "grad_inputs" and kind in (list, tuple) and all(type(n) is str for n in v):
                options.append((k, tuple, tuple(v), None))
            else:
                return None
        if item.get("encoding", "raw") != "raw":
            return None
        options.sort()
        key = (loss, tuple(options))
        head = self._heads.get(key)
        if head is None:
            request, _ = build_request(loss, **{k: v for k, _, v, _ in options})
            data = memoryview(request.SerializeToString(deterministic=True))
            split = next((start for number, _, start, _, _ in wire_fields(data, 0, len(data)) if number > _INPUTS),
                         len(data))
            head = self._cache(self._heads)[key] = (bytes(data[:split]), bytes(data[split:]))
        pieces: list[Any] = [head[0]]
        size = len(head[0]) + len(head[1])
        for k in sorted(arrays):
            v = arrays[k]
            prefix = self._entries.get((k, v.dtype.str, v.shape)) if v.flags.c_contiguous else None
            if prefix is None:
                wire = _NUMPY_TO_WIRE.get(v.dtype)
                if wire is None or not v.flags.c_contiguous:  # converted (copied) as evaluate converts it
                    entry = map_entry(_INPUTS, k, raw_parts(v, f"inputs.{k}"))
                    pieces += entry
                    size += sum(map(len, entry))
                    continue
                entry = map_entry(_INPUTS, k, tensor_body(wire, v.shape, v, "raw"))
                prefix = self._cache(self._entries)[(k, v.dtype.str, v.shape)] = join(entry[:-1] if v.nbytes else entry)
            pieces.append(prefix)
            size += len(prefix)
            if v.nbytes:  # a copy now (unless joined at once): the caller may fill the same array for its next item
                pieces.append(v.tobytes() if self._copy_arrays else v)
                size += v.nbytes
        pieces.append(head[1])
        return pieces, size

    def _cache(self, cache: dict[_K, _V]) -> dict[_K, _V]:
        """``cache``, emptied first when it is full (``max_cached``)."""
        if self._max_cached is not None and len(cache) >= self._max_cached:
            cache.clear()
        return cache


def batch_outcomes(
    reply: lossd_pb2.EvaluateLossBatchResponse, start: int, flags: Sequence[bool], raise_on_error: bool
) -> list[EvaluateResult | LossdError]:
    """The outcomes of one batch whose first item is ``start``: results, and errors whose
    ``item`` is the index in the whole ``evaluate_many`` call (raised when ``raise_on_error``)."""
    out: list[EvaluateResult | LossdError] = []
    layouts: Layouts = {}  # the items of a batch mostly share their shapes: each checked once
    for k, result in enumerate(reply.results):
        if result.HasField("response"):
            out.append(EvaluateResult.from_response(result.response, flags[start + k], layouts=layouts))
            continue
        error = from_status_name(result.error.code, result.error.message, result.error.field, start + k)
        if raise_on_error:
            raise error
        out.append(error)
    return out


def kept(requests: Iterator[T], kept: list[T]) -> Iterator[T]:
    """``requests``, each also appended to ``kept`` as it goes by."""
    for request in requests:
        kept.append(request)
        yield request


class Evaluating(ClientBase, Generic[ResultT]):
    """``evaluate``, written once for both clients: it builds the request and hands it to
    the client's ``evaluate_request``, which returns a result (``Client``) or an
    awaitable of one (``AsyncClient``)."""

    #: Requests of numpy arrays and scalar options are framed from this client's caches of their
    #: fixed parts (the bytes are :func:`frame_request`'s), replies decoded with ``_layouts``.
    _CACHED = 64

    @functools.cached_property
    def _framer(self) -> ItemFramer:
        return ItemFramer(False, max_cached=self._CACHED, copy_arrays=False)  # evaluate joins the pieces at once

    @functools.cached_property
    def _layouts(self) -> Layouts:
        """Reply tensor headers checked before (:func:`~lossd.client._codec.decode`), emptied when full."""
        return {}

    def _decode_reply(self, data: bytes, as_torch: bool) -> EvaluateResult:
        if len(self._layouts) >= self._CACHED:
            self._layouts.clear()
        return EvaluateResult.from_bytes(data, as_torch, self._layouts)

    def evaluate(
        self,
        loss: LossSpecifier,
        y_pred: ArrayLike | None = None,
        y_true: ArrayLike | None = None,
        *,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> ResultT:
        """Evaluate ``loss(y_pred, y_true, ...)`` remotely; arguments as in :func:`build_request`
        (``await`` it on an ``AsyncClient``). The request is built, and checked, at once.

        >>> client.evaluate("mse", [1.0, 2.0], [0.0, 0.0], reduction="sum").value  # doctest: +SKIP
        5.0

        The same array object passed as several inputs (``evaluate("kl_div", x, x)``) gets, under
        each of its names, the sum of their gradients: what local autograd puts in ``x.grad``
        (``grad_inputs`` naming one of them asks for all of them, and returns the one named).
        """
        shared: list[list[str]] = []
        extra: list[str] = []
        if kwargs or (y_pred is y_true and y_pred is not None):
            shared, extra, kwargs = _sharing(y_pred, y_true, kwargs)
        framed = self._framer.framed({"loss": loss, **({} if y_pred is None else {"y_pred": y_pred}),
                                      **({} if y_true is None else {"y_true": y_true}), **kwargs}
                                     ) if type(loss) is str else None
        if framed is not None:  # numpy arrays and scalar options: framed from this client's caches
            request, as_torch = join(framed[0]), False
        else:
            request, as_torch = frame_request(loss, y_pred, y_true, **kwargs)
        outcome = self.evaluate_request(request, as_torch=as_torch, timeout=timeout)
        if not shared:
            return outcome
        if inspect.isawaitable(outcome):
            async def summed() -> Any:
                return _sum_shared(await outcome, shared, extra)
            return summed()  # type: ignore[return-value]
        return _sum_shared(outcome, shared, extra)  # type: ignore[arg-type,return-value]

    def evaluate_request(
        self, request: lossd_pb2.EvaluateLossRequest | bytes, *, as_torch: bool = False, timeout: float | None = None
    ) -> ResultT:
        """Send a prepared ``EvaluateLossRequest`` (or its serialized bytes)."""
        raise NotImplementedError


class Client(Evaluating[EvaluateResult], Jobs):
    """A connection to a lossd server; calls block until the reply arrives.

    ``target`` is ``host:port``, several IP addresses (a list, balanced
    ``round_robin``) or any gRPC target; it defaults to ``LOSSD_TARGET`` or
    ``127.0.0.1:50051``. ``timeout`` (seconds) is the default deadline of a
    call (60; ``math.inf``: none). TLS, token, compression, keepalive,
    message size and retry settings are described in
    :class:`~lossd.client.ClientConfig`; each has a ``LOSSD_*`` variable.

    >>> with Client("127.0.0.1:50051", timeout=5) as c:   # connects on first call
    ...     c.timeout
    5.0
    """

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def channel(self) -> grpc.Channel:
        """The underlying ``grpc.Channel`` (opened on first use), for other stubs."""
        channel: grpc.Channel = self._open(grpc)
        return channel

    def close(self) -> None:
        """Close the channel; calls in flight end with :class:`~lossd.client.Cancelled`, and so does
        any later call: a closed client stays closed."""
        channel = self._take_channel()
        if channel is not None:
            channel.close()

    def _unary(self, method: Method[R], request: Any, timeout: float | None) -> R:
        try:  # raising_lossd_errors, without a context manager's cost on every call
            reply: R = self._callable(self.channel, method)(request, **self._call_options(method, timeout))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from e
        except ValueError:  # gRPC's "Cannot invoke RPC on closed channel!": closed by another thread meanwhile
            if self._closed:
                raise self._closed_error() from None
            raise
        return reply

    def _stream(
        self, method: Method[R], request: Any, timeout: float | None, decode: Callable[[R], T]
    ) -> Iterator[T]:
        """Decoded replies of a server- or bidi-streaming call, which is cancelled when
        the caller stops iterating or ``decode`` raises. A request iterator that raises ends
        the requests; its exception is raised after the replies (:class:`RequestSource`)."""
        source = RequestSource() if method.kind.startswith("stream_") else None
        try:
            call = self._callable(self.channel, method)(request if source is None else source.guard(request),
                                                        **self._call_options(method, timeout))
        except ValueError:  # closed by another thread since self.channel
            if self._closed:
                raise self._closed_error() from None
            raise
        try:
            with raising_lossd_errors():
                for reply in call:
                    yield decode(reply)
            if source is not None:
                source.check()
        finally:
            call.cancel()

    def list_losses(self, filter: str = "", *, timeout: float | None = None) -> list[lossd_pb2.LossInfo]:
        """Every loss the server offers (``LossInfo`` messages), sorted by name.

        ``filter`` keeps the losses whose name or an alias contains it (any case).

        >>> [info.name for info in client.list_losses("mse")]  # doctest: +SKIP
        ['mse_loss']
        """
        return list(self._unary(LIST_LOSSES, lossd_pb2.ListLossesRequest(filter=filter), timeout).losses)

    def evaluate_request(
        self, request: lossd_pb2.EvaluateLossRequest | bytes, *, as_torch: bool = False, timeout: float | None = None
    ) -> EvaluateResult:
        """Send a prepared ``EvaluateLossRequest`` (see :func:`build_request`), or its serialized bytes.

        >>> request, as_torch = build_request("mse", [3.0], [0.0])
        >>> client.evaluate_request(request, as_torch=as_torch).value   # doctest: +SKIP
        9.0
        """
        return self._decode_reply(self._unary(EVALUATE_LOSS, request, timeout), as_torch)

    @overload
    def evaluate_stream(
        self, requests: Iterable[lossd_pb2.EvaluateLossRequest], *, as_torch: bool = ...,
        timeout: float | None = ..., raise_on_error: Literal[True] = ...,
    ) -> Iterator[EvaluateResult]: ...

    @overload
    def evaluate_stream(
        self, requests: Iterable[lossd_pb2.EvaluateLossRequest], *, as_torch: bool = ...,
        timeout: float | None = ..., raise_on_error: bool,
    ) -> Iterator[EvaluateResult | LossdError]: ...

    def evaluate_stream(
        self,
        requests: Iterable[lossd_pb2.EvaluateLossRequest],
        *,
        as_torch: bool = False,
        timeout: float | None = None,
        raise_on_error: bool = True,
    ) -> Iterator[EvaluateResult | LossdError]:
        """Pipeline many requests over one stream; yields one result per request, in order.

        A failed item raises its :class:`LossdError` (``err.item`` is its index)
        as soon as it arrives, and the stream is cancelled; with
        ``raise_on_error=False`` the error is yielded in its place and the
        stream goes on. ``timeout`` bounds the whole stream (default: the
        client's). A stream is not retried: reopen it on ``Unavailable``.

        >>> reqs = [build_request("mse", [x], [0.0])[0] for x in (1.0, 2.0)]
        >>> [r.value for r in client.evaluate_stream(reqs)]  # doctest: +SKIP
        [1.0, 4.0]
        """
        outcome = functools.partial(stream_outcome, as_torch=as_torch, raise_on_error=raise_on_error)
        return self._stream(EVALUATE_LOSS_STREAM, stream_requests(requests), timeout, outcome)

    def evaluate_many(
        self,
        requests: ManyRequests,
        *,
        as_torch: bool = False,
        timeout: float | None = None,
        raise_on_error: bool = False,
    ) -> list[EvaluateResult | LossdError]:
        """Evaluate many requests with few round trips; a list of outcomes in request order.

        Items are prepared requests (:func:`build_request`) or dicts of
        :meth:`evaluate` arguments. They travel packed in ``EvaluateLossBatch`` calls
        (:func:`pack_many`: at most :data:`MANY_BATCH_ITEMS` items and
        :data:`MANY_BATCH_BYTES` bytes each, two in flight), which the server
        evaluates in vectorized groups where that is bit-identical; a server without
        ``EvaluateLossBatch`` gets them over one ``EvaluateLossStream``. A failed item
        does not stop the others: its :class:`LossdError` (``err.item`` is its index)
        takes its place in the list; ``raise_on_error=True`` raises the first one
        instead. A failure of the call itself (``Unavailable``, ``DeadlineExceeded``:
        ``timeout`` bounds the whole of it) raises. For batches too large to hold at
        once, iterate :meth:`evaluate_stream` over a generator.

        >>> out = client.evaluate_many([{"loss": "mse", "y_pred": [2.0], "y_true": [0.0]},
        ...                             {"loss": "mse", "y_pred": [1.0], "y_true": [0]}])  # doctest: +SKIP
        >>> out[0].value, type(out[1]).__name__, out[1].item  # doctest: +SKIP
        (4.0, 'InvalidArgument', 1)
        """
        framer, sums = ItemFramer(as_torch), SharedSums()
        flags, it = framer.flags, iter(sums.items(requests))
        seen: list[Any] = []  # the items read so far, for a server without EvaluateLossBatch
        source = (framer.frame(i, item) for i, item in enumerate(kept(it, seen)))
        deadline = self.config.deadline(timeout, EVALUATE_LOSS_BATCH.default_deadline)
        ends = None if deadline is None else time.monotonic() + deadline
        call = self._callable(self.channel, EVALUATE_LOSS_BATCH)
        out: list[EvaluateResult | LossdError] = []
        in_flight: collections.deque[tuple[Packed, Any]] = collections.deque()

        def collect() -> None:
            packed, future = in_flight.popleft()
            out.extend(batch_outcomes(future.result(), packed.start, flags, raise_on_error))

        try:
            with raising_lossd_errors():
                for packed in pack_many(source, max_bytes=many_batch_bytes(self.config.max_message_bytes)):
                    left = None if ends is None else max(0.0, ends - time.monotonic())
                    in_flight.append((packed, call.future(packed.body, timeout=left,
                                                          metadata=self.config.metadata() or None)))
                    if len(in_flight) >= MANY_IN_FLIGHT:
                        collect()
                while in_flight:
                    collect()
        except ValueError:  # gRPC's "Cannot invoke RPC on closed channel!": closed by another thread meanwhile
            if self._closed:
                raise self._closed_error(in_flight=True) from None
            raise
        except LossdError as e:
            if not streams_instead(e, out):
                raise
            for _, future in in_flight:  # the batches sent after the refused one: streamed below
                future.cancel()
            left = time_left(ends)
            done, flags = len(out), [False] * len(out)  # the items answered so far keep their outcomes
            rest = iter_prepared(itertools.chain(seen[done:], it), as_torch, flags, done)
            outcome = outcome_by_id(flags, raise_on_error)
            return sums.apply(out + list(self._stream(EVALUATE_LOSS_STREAM, stream_requests(rest, done), left,
                                                      outcome)))
        finally:
            for _, future in in_flight:
                future.cancel()
        return sums.apply(out)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The server's ``grpc.health.v1`` status: ``SERVING``, ``NOT_SERVING``, ...

        ``service`` is ``""`` (the whole server) or ``"lossd.v1.LossService"``;
        a service the server does not know raises ``NotFound``.

        >>> client.health()  # doctest: +SKIP
        'SERVING'
        """
        return health_status(self._unary(HEALTH_CHECK, health_request(service), timeout))
