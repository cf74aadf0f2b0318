"""The synchronous SDK client.

>>> with Client("127.0.0.1:50051") as c:          # doctest: +SKIP
...     r = c.evaluate("cross_entropy", [[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]], [0, 2])
...     round(r.value, 4)
0.5493
"""

from __future__ import annotations

import collections
import functools
import inspect
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, overload

import grpc
from google.protobuf import struct_pb2

from .._framing import field_number, join, length_delimited
from ..v1 import lossd_pb2
from ._calls import (
    EVALUATE_LOSS,
    EVALUATE_LOSS_BATCH,
    EVALUATE_LOSS_STREAM,
    HEALTH_CHECK,
    LIST_LOSSES,
    ClientBase,
    Method,
    stream_requests,
)
from ._codec import ArrayLike, decode, encode, is_torch_tensor
from ._config import DEFAULT_TARGET
from ._errors import LossdError, Unimplemented, from_status_name, raising_lossd_errors
from ._health import health_request, health_status
from ._jobs import Jobs
from ._modules import accepted, is_module, module_request, param_value
from ._warnings import emit_server_warnings

__all__ = [
    "Client",
    "EvaluateResult",
    "Evaluating",
    "LossSpecifier",
    "ManyRequests",
    "Packed",
    "batch_outcomes",
    "build_request",
    "iter_prepared",
    "kept",
    "outcome_by_id",
    "pack_many",
    "prepare_many",
    "stream_outcome",
    "DEFAULT_TARGET",
    "MANY_BATCH_ITEMS",
    "MANY_BATCH_BYTES",
    "MANY_IN_FLIGHT",
]

R = TypeVar("R")
T = TypeVar("T")
ResultT = TypeVar("ResultT")


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
    def from_response(cls, reply: lossd_pb2.EvaluateLossResponse, as_torch: bool = False) -> EvaluateResult:
        """Decode a reply message. Its maps come sorted by name (protobuf map order is random).

        Each of the reply's ``warnings`` is re-emitted with ``warnings.warn(msg, ServerWarning)``.
        """
        emit_server_warnings(reply.warnings)
        return cls(
            value=reply.value if reply.HasField("value") else None,
            loss=decode(reply.loss, as_torch),
            grads={k: decode(reply.grads[k], as_torch) for k in sorted(reply.grads)},
            loss_name=reply.loss_name,
            timing={f.name: value for f, value in reply.timing.ListFields()},  # the fields set, as MessageToDict
            parts=dict(sorted(reply.parts.items())),
            parameter_grads={k: decode(reply.parameter_grads[k], as_torch) for k in sorted(reply.parameter_grads)},
            regularized=list(reply.regularized),
            warnings=list(reply.warnings),
        )


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
    if is_module(loss):
        loss, module_params, module_tensors = module_request(loss)
        params = {**module_params, **(params or {})}
        inputs = {**module_tensors, **(inputs or {})}
    elif not isinstance(loss, str) and not (
            isinstance(loss, Sequence) and all(isinstance(t, Mapping) for t in loss)):
        raise TypeError(f"cannot send a {type(loss).__module__}.{type(loss).__qualname__} as a loss; "
                        f"the loss must be {accepted()}")
    tensors: dict[str, ArrayLike] = dict(inputs or {})
    if y_pred is not None:
        tensors["y_pred"] = y_pred
    if y_true is not None:
        tensors["y_true"] = y_true
    all_params: dict[str, Any] = dict(params or {})
    for k, v in params_and_inputs.items():
        if _is_array(v):
            tensors[k] = v
        else:
            all_params[k] = v
    all_params = {k: param_value(k, v) for k, v in all_params.items()}
    struct = struct_pb2.Struct()
    if all_params:
        struct.update(all_params)
    terms: Sequence[Mapping[str, Any]] = () if isinstance(loss, str) else loss
    request = lossd_pb2.EvaluateLossRequest(
        loss=loss if isinstance(loss, str) else "",
        inputs={k: encode(v, encoding) for k, v in tensors.items()},
        grad_inputs=list(grad_inputs),
        allow_non_finite=allow_non_finite,
        strict=strict,
    )
    if all_params:
        request.params.CopyFrom(struct)
    if grad_output is not None:
        request.grad_output.CopyFrom(encode(grad_output, encoding))
    for term in terms:
        unknown = set(term) - {"loss", "weight", "params", "name", "inputs", "transforms"}
        if unknown:
            raise TypeError(f"unknown term keys {sorted(unknown)}; use loss, weight, params, name, inputs, transforms")
        t = request.terms.add(loss=term["loss"], name=term.get("name", ""), inputs=dict(term.get("inputs", {})),
                              transforms=dict(term.get("transforms", {})))
        if "weight" in term:
            t.weight = float(term["weight"])
        if term.get("params"):
            t.params.update(dict(term["params"]))
    for name, value in (parameters or {}).items():
        request.parameters[name].CopyFrom(encode(value, encoding))
    if regularization is not None:
        request.regularization.CopyFrom(lossd_pb2.Regularization(**regularization))
    as_torch = any(is_torch_tensor(v) for v in [*tensors.values(), *(parameters or {}).values()])
    return request, as_torch


def _shared_inputs(named: Mapping[str, Any]) -> list[list[str]]:
    """Groups of input names bound to one and the same array object (``loss(x, x)``)."""
    groups: dict[int, list[str]] = {}
    for name, value in named.items():
        if value is not None and _is_array(value) and not isinstance(value, (list, tuple)):
            groups.setdefault(id(value), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


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
    """Arrays, tensors and lists are inputs; scalars and strings are parameters."""
    return is_torch_tensor(v) or hasattr(v, "__array_interface__") or isinstance(v, (list, tuple))


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
    requests: ManyRequests, as_torch: bool, flags: list[bool]
) -> Iterator[lossd_pb2.EvaluateLossRequest]:
    """:func:`prepare_many` one request at a time (``evaluate_many`` packs a batch while the server
    computes the previous one), appending each one's torch flag to ``flags``."""
    for i, item in enumerate(requests):
        if isinstance(item, lossd_pb2.EvaluateLossRequest):
            flags.append(as_torch)
            yield item
            continue
        kwargs = dict(item)
        if "loss" not in kwargs:
            raise TypeError(f"requests[{i}]: a dict of evaluate() arguments needs 'loss'")
        request, is_torch = build_request(kwargs.pop("loss"), **kwargs)
        flags.append(as_torch or is_torch)
        yield request


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
    requests: Iterable[lossd_pb2.EvaluateLossRequest],
    max_items: int | None = None,
    max_bytes: int | None = None,
) -> Iterator[Packed]:
    """Consecutive batches of ``requests``, each at most ``max_items`` items and ``max_bytes``
    bytes (a larger item alone; defaults :data:`MANY_BATCH_ITEMS`, :data:`MANY_BATCH_BYTES`),
    serialized by framing each item's bytes once.

    >>> reqs = [build_request("mse", [float(x)], [0.0])[0] for x in range(5)]
    >>> [(p.start, p.count) for p in pack_many(reqs, max_items=2)]
    [(0, 2), (2, 2), (4, 1)]
    """
    max_items = MANY_BATCH_ITEMS if max_items is None else max_items
    max_bytes = MANY_BATCH_BYTES if max_bytes is None else max_bytes
    pieces: list[bytes | memoryview] = []
    start = size = count = 0
    for i, request in enumerate(requests):
        count = i + 1
        item = length_delimited(_ITEMS, [request.SerializeToString()])
        n = sum(map(len, item))
        if pieces and (i - start >= max_items or size + n > max_bytes):
            yield Packed(start, i - start, join(pieces))
            pieces, start, size = [], i, 0
        pieces += item
        size += n
    if pieces:
        yield Packed(start, count - start, join(pieces))


def batch_outcomes(
    reply: lossd_pb2.EvaluateLossBatchResponse, start: int, flags: Sequence[bool], raise_on_error: bool
) -> list[EvaluateResult | LossdError]:
    """The outcomes of one batch whose first item is ``start``: results, and errors whose
    ``item`` is the index in the whole ``evaluate_many`` call (raised when ``raise_on_error``)."""
    out: list[EvaluateResult | LossdError] = []
    for k, result in enumerate(reply.results):
        if result.HasField("response"):
            out.append(EvaluateResult.from_response(result.response, flags[start + k]))
            continue
        error = from_status_name(result.error.code, result.error.message, result.error.field, start + k)
        if raise_on_error:
            raise error
        out.append(error)
    return out


def kept(requests: Iterator[lossd_pb2.EvaluateLossRequest],
          kept: list[lossd_pb2.EvaluateLossRequest]) -> Iterator[lossd_pb2.EvaluateLossRequest]:
    """``requests``, each also appended to ``kept`` as it goes by."""
    for request in requests:
        kept.append(request)
        yield request


class Evaluating(ClientBase, Generic[ResultT]):
    """``evaluate``, written once for both clients: it builds the request and hands it to
    the client's ``evaluate_request``, which returns a result (``Client``) or an
    awaitable of one (``AsyncClient``)."""

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
        shared = _shared_inputs({"y_pred": y_pred, "y_true": y_true, **dict(kwargs.get("inputs") or {}),
                                 **{k: v for k, v in kwargs.items() if _is_array(v)}})
        asked = list(kwargs.get("grad_inputs") or ())
        extra = [n for group in shared if set(group) & set(asked) for n in group if n not in asked]
        if extra:
            kwargs = {**kwargs, "grad_inputs": [*asked, *extra]}
        request, as_torch = build_request(loss, y_pred, y_true, **kwargs)
        outcome = self.evaluate_request(request, as_torch=as_torch, timeout=timeout)
        if not shared:
            return outcome
        if inspect.isawaitable(outcome):
            async def summed() -> Any:
                return _sum_shared(await outcome, shared, extra)
            return summed()  # type: ignore[return-value]
        return _sum_shared(outcome, shared, extra)  # type: ignore[arg-type,return-value]

    def evaluate_request(
        self, request: lossd_pb2.EvaluateLossRequest, *, as_torch: bool = False, timeout: float | None = None
    ) -> ResultT:
        """Send a prepared ``EvaluateLossRequest``."""
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
        """Close the channel; in-flight calls are cancelled."""
        if self._channel is not None:
            self._channel.close()

    def _unary(self, method: Method[R], request: Any, timeout: float | None) -> R:
        with raising_lossd_errors():
            reply: R = self._callable(self.channel, method)(request, **self._call_options(method, timeout))
        return reply

    def _stream(
        self, method: Method[R], request: Any, timeout: float | None, decode: Callable[[R], T]
    ) -> Iterator[T]:
        """Decoded replies of a server- or bidi-streaming call, which is cancelled when
        the caller stops iterating or ``decode`` raises."""
        call = self._callable(self.channel, method)(request, **self._call_options(method, timeout))
        try:
            with raising_lossd_errors():
                for reply in call:
                    yield decode(reply)
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
        self, request: lossd_pb2.EvaluateLossRequest, *, as_torch: bool = False, timeout: float | None = None
    ) -> EvaluateResult:
        """Send a prepared ``EvaluateLossRequest`` (see :func:`build_request`).

        >>> request, as_torch = build_request("mse", [3.0], [0.0])
        >>> client.evaluate_request(request, as_torch=as_torch).value   # doctest: +SKIP
        9.0
        """
        return EvaluateResult.from_response(self._unary(EVALUATE_LOSS, request, timeout), as_torch)

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
        flags: list[bool] = []
        prepared: list[lossd_pb2.EvaluateLossRequest] = []  # kept for a server without EvaluateLossBatch
        source = iter_prepared(requests, as_torch, flags)
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
                for packed in pack_many(kept(source, prepared)):
                    left = None if ends is None else max(0.0, ends - time.monotonic())
                    in_flight.append((packed, call.future(packed.body, timeout=left,
                                                          metadata=self.config.metadata() or None)))
                    if len(in_flight) >= MANY_IN_FLIGHT:
                        collect()
                while in_flight:
                    collect()
        except Unimplemented:
            if out:
                raise
            left = None if ends is None else max(0.0, ends - time.monotonic())
            outcome = outcome_by_id(flags, raise_on_error)  # a server before EvaluateLossBatch
            rest = itertools.chain(prepared, source)
            return list(self._stream(EVALUATE_LOSS_STREAM, stream_requests(rest), left, outcome))
        finally:
            for _, future in in_flight:
                future.cancel()
        return out

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The server's ``grpc.health.v1`` status: ``SERVING``, ``NOT_SERVING``, ...

        ``service`` is ``""`` (the whole server) or ``"lossd.v1.LossService"``;
        a service the server does not know raises ``NotFound``.

        >>> client.health()  # doctest: +SKIP
        'SERVING'
        """
        return health_status(self._unary(HEALTH_CHECK, health_request(service), timeout))
