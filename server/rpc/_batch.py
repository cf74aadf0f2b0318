"""EvaluateLossBatch: many ``EvaluateLossRequest`` s in one message, one outcome per item, in order.

:func:`evaluate_batch` groups the items that share loss, params, dtypes, shapes and
wanted gradients (:func:`group_key`) and evaluates each group of two or more in one
vectorized torch call (:func:`lossd.server.evaluation.evaluate_stacked`) where the
loss is registered ``vectorized`` and the call is bit-identical to one at a time;
every other item goes through :func:`~lossd.server.rpc.handle_evaluate_bytes`, as
EvaluateLoss would. An item's refusal is its own outcome; the batch goes on.
:func:`batch_reply` frames the outcomes as an ``EvaluateLossBatchResponse``
around each item's reply bytes (no re-encoding)::

    >>> from lossd.server.losses import REGISTRY
    >>> from lossd.v1 import lossd_pb2
    >>> t = lambda *v: lossd_pb2.Tensor(dtype="float32", shape=[len(v)], values=v)
    >>> items = [lossd_pb2.EvaluateLossRequest(loss="mse", inputs={"y_pred": t(x), "y_true": t(0.0)})
    ...          for x in (1.0, 2.0)] + [lossd_pb2.EvaluateLossRequest(loss="nope")]
    >>> reply = lossd_pb2.EvaluateLossBatchResponse.FromString(batch_reply(evaluate_batch(REGISTRY, items)))
    >>> [r.response.value if r.HasField("response") else r.error.code for r in reply.results]
    [1.0, 4.0, 'NOT_FOUND']

The server refuses a batch over its limits (:class:`BatchLimits`) as a whole, with
``RESOURCE_EXHAUSTED`` naming the flag (:func:`check_batch`), before decoding any item.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..._framing import Buffer, field_number, join, length_delimited, map_entry, tensor_body, varint, varint_size
from ..._settings import env_name, flag_name
from ..._wire import DTYPES, MAX_DIMS, FieldError, TensorLayout, TensorLimits, check_tensors, reply_too_large
from ...v1 import lossd_pb2
from .._limits import BatchLimits
from ..evaluation import StackedEvaluation, StackedPlan, plan_stacked
from ..losses import TORCH_DTYPES, LossSpec, Registry
from ._caps import item_cap
from ._plan import Plan, Plans
from ._request import handle_evaluate_bytes, reply_encoding, struct_to_dict
from ._status import MAX_FIELD_BYTES, MAX_MESSAGE_BYTES, clip
from ._tensors import all_finite, payload_array

__all__ = [
    "BatchControl", "GroupPlan", "Outcome",
    "batch_reply", "check_batch", "evaluate_batch", "evaluate_group", "group_key", "payload_bytes",
]

log = logging.getLogger("lossd.server")

#: One item's outcome: its serialized ``EvaluateLossResponse``, or its refusal.
Outcome = bytes | FieldError


def _limit_text(setting: str) -> str:
    return f"{flag_name(setting)}, env {env_name(setting)}"


def check_batch(items: Sequence[lossd_pb2.EvaluateLossRequest], limits: BatchLimits,
                sizes: Iterable[int] | None = None) -> None:
    """Refuse a batch over ``limits`` (``RESOURCE_EXHAUSTED`` naming the flag), from counts, shapes and
    data lengths alone: nothing is decoded first. ``sizes``: each item's :func:`payload_bytes`, when the
    caller has them (:func:`evaluate_batch` computes them once per group).

    >>> check_batch([lossd_pb2.EvaluateLossRequest()] * 3, BatchLimits(max_items=2))
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: items: 3 items in one batch; the server takes at most 2 \
(--max-batch-items, env LOSSD_MAX_BATCH_ITEMS): send fewer per batch (the SDK's evaluate_many then streams them)
    """
    if len(items) > limits.max_items:
        raise FieldError("items", f"{len(items)} items in one batch; the server takes at most {limits.max_items} "
                                  f"({_limit_text('max_batch_items')}): send fewer per batch "
                                  "(the SDK's evaluate_many then streams them)", "RESOURCE_EXHAUSTED")
    total = 0
    for size in map(payload_bytes, items) if sizes is None else sizes:
        total += size
        if total > limits.max_bytes:
            break
    else:
        return
    # Over by its shapes: counted again by what the tensors' data can fill (a shape that its data cannot is
    # that item's own refusal, and is never decoded), before the whole batch is refused.
    if sum(payload_bytes(item, held=True) for item in items) > limits.max_bytes:
        raise FieldError("items", f"the batch carries over {limits.max_bytes} bytes of tensors; the server "
                                  f"takes at most {limits.max_bytes} ({_limit_text('max_batch_bytes')}): "
                                  "send fewer per batch (the SDK's evaluate_many then streams them)",
                         "RESOURCE_EXHAUSTED")


_TENSOR_FIELDS = tuple((name, lossd_pb2.EvaluateLossRequest.DESCRIPTOR.fields_by_name[name])
                       for name in ("inputs", "parameters"))


def payload_bytes(request: lossd_pb2.EvaluateLossRequest, held: bool = False) -> int:
    """Tensor bytes a request's shapes and dtypes declare (payloads untouched); with ``held``, each
    tensor counts at most what its data can fill (a shape of 10^9 float32 over two numbers counts 8: such a
    tensor is its own item's refusal, and never decoded).

    It may run before the request's caps and wire rules are checked, so it reads no more than they
    allow: a map with more entries than its cap, or a tensor with more than ``MAX_DIMS`` dims, counts
    0 (the request is refused before anything is allocated). Else 5,000,000 dims in a 5 MB message
    took 0.8 s here.

    >>> t = lossd_pb2.Tensor(dtype="float32", shape=[2, 3], raw=bytes(24))
    >>> liar = lossd_pb2.Tensor(dtype="float32", shape=[10**9], values=[1.0, 2.0])
    >>> payload_bytes(lossd_pb2.EvaluateLossRequest(inputs={"x": t})), payload_bytes(
    ...     lossd_pb2.EvaluateLossRequest(inputs={"x": liar}), held=True), payload_bytes(
    ...     lossd_pb2.EvaluateLossRequest(inputs={"x": lossd_pb2.Tensor(shape=[1] * (MAX_DIMS + 1))}))
    (24, 8, 0)
    """
    tensors = []
    for name, fd in _TENSOR_FIELDS:
        entries = getattr(request, name)
        if len(entries) <= item_cap(fd):
            tensors.extend(entries.values())
    if request.HasField("grad_output"):
        tensors.append(request.grad_output)
    total = 0
    for t in tensors:
        if len(t.shape) > MAX_DIMS:
            continue
        info = DTYPES.get(t.dtype)
        itemsize = info.itemsize if info else 8
        declared = math.prod(max(0, int(d)) for d in t.shape) * itemsize
        # values: a number an element (two if complex), whatever the dtype
        total += min(declared, len(t.raw) if t.raw else len(t.values) * itemsize) if held else declared
    return total


@dataclass
class BatchControl:
    """Shared with the thread evaluating a batch: set ``cancelled`` and it stops before the next
    group or item (the call was cancelled or ran past its deadline); ``evaluated`` counts the
    items done. With ``reply_limit`` (the message limit), :meth:`done` keeps the batch's reply
    within it as the items are evaluated."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    evaluated: int = 0
    reply_limit: int | None = None
    #: Bytes of the batch's reply so far.
    reply_bytes: int = 0

    def done(self, outcome: Outcome) -> Outcome:
        """Count an item done: its outcome, or ``RESOURCE_EXHAUSTED`` when its reply alone would not fit in
        the message limit (as it would answer in a stream). A batch whose replies so far no longer fit
        together is refused now, rather than once every item's reply is held: a request of small items
        whose replies are large (``reduction="none"`` over broadcast shapes: 4 KB in, 1 MB out) made the
        server hold them all (300 items: 639 MB, at the default limit) before refusing them."""
        self.evaluated += 1
        limit = self.reply_limit
        if limit is None:
            return outcome
        if isinstance(outcome, bytes) and _framed(len(outcome)) > limit:
            outcome = FieldError("", reply_too_large(len(outcome), limit), "RESOURCE_EXHAUSTED")
        self.reply_bytes += _framed(len(outcome) if isinstance(outcome, bytes) else _error(outcome).ByteSize())
        if self.reply_bytes > limit:
            raise FieldError("", reply_too_large(self.reply_bytes, limit, items=self.evaluated), "RESOURCE_EXHAUSTED")
        return outcome


class BatchCancelled(Exception):
    """The batch's call ended (cancelled, past its deadline) before every item was evaluated."""


def group_key(registry: Registry, item: lossd_pb2.EvaluateLossRequest,
              specs: dict[str, LossSpec | None] | None = None) -> Hashable | None:
    """What items must share to be evaluated together: loss, params, wanted gradients, input names,
    dtypes and shapes, ``allow_non_finite`` and ``strict``. ``None`` for an item that is evaluated
    alone (an objective, a ``grad_output``, an unknown loss or one not registered ``vectorized``).
    ``specs``: the registry's answers by loss name so far (a batch looks each name up once)."""
    if item.terms or item.parameters or item.HasField("regularization") or item.HasField("grad_output"):
        return None
    name = item.loss
    if specs is not None and name in specs:
        spec = specs[name]
    else:
        spec = registry.find(name)  # an unknown name: no "did you mean" worked out to group it
        if specs is not None:
            specs[name] = spec
    if spec is None or not spec.vectorized:
        return None
    inputs = item.inputs
    tensors = tuple(sorted((k, t.dtype, tuple(t.shape)) for k in inputs for t in (inputs[k],)))
    return (spec.name, item.params.SerializeToString(deterministic=True), tuple(item.grad_inputs), tensors,
            item.allow_non_finite, item.strict)


def evaluate_batch(
    registry: Registry,
    items: Sequence[lossd_pb2.EvaluateLossRequest],
    device: torch.device | None = None,
    limits: TensorLimits | int = TensorLimits(),  # noqa: B008 - frozen
    control: BatchControl | None = None,
    max_reply_bytes: int | None = None,
    batch_limits: BatchLimits | None = None,
    group_plans: Plans[GroupPlan] | None = None,
) -> list[Outcome]:
    """Every item's outcome, in item order; raises :class:`BatchCancelled` when ``control`` is
    cancelled midway. An item whose reply alone would not fit in ``max_reply_bytes`` (the
    message limit) answers ``RESOURCE_EXHAUSTED`` instead, as it would in a stream, and a batch
    whose replies together pass it is refused (``FieldError``) as soon as they do
    (:meth:`BatchControl.done`). With ``batch_limits``, a batch over them is refused
    (:func:`check_batch`, ``FieldError``) before any item is decoded; the tensor bytes are counted
    once per group. ``group_plans``: the service's :class:`GroupPlan` s, used and kept."""
    control = control or BatchControl()
    control.reply_limit = max_reply_bytes
    if batch_limits is not None:
        check_batch(items, batch_limits, sizes=())  # the count, before the walk
    groups: dict[Hashable, list[int]] = {}
    alone: list[int] = []
    specs: dict[str, LossSpec | None] = {}
    sizes: list[int] = []
    group_sizes: dict[Hashable, int] = {}
    for i, item in enumerate(items):
        key = group_key(registry, item, specs)
        if key is None:
            alone.append(i)
            if batch_limits is not None:
                sizes.append(payload_bytes(item))
            continue
        members = groups.get(key)
        if members is None:
            members = groups[key] = []
            if batch_limits is not None:  # a group shares its dtypes and shapes: its items' sizes
                group_sizes[key] = payload_bytes(item)
        members.append(i)
        if batch_limits is not None:
            sizes.append(group_sizes[key])
    if batch_limits is not None:
        check_batch(items, batch_limits, sizes)
    outcomes: list[Outcome | None] = [None] * len(items)
    for key, members in groups.items():
        if len(members) == 1:
            alone.append(members[0])
            continue
        _check(control)
        _evaluate_group(registry, items, members, device, limits, outcomes, control, group_plans, key)
    for i in sorted(alone):
        _check(control)
        outcomes[i] = control.done(_one(functools.partial(handle_evaluate_bytes, registry, items[i], device, limits),
                                        i))
    return [o for o in outcomes if o is not None]


def evaluate_group(
    registry: Registry,
    items: Sequence[lossd_pb2.EvaluateLossRequest],
    device: torch.device | None = None,
    limits: TensorLimits | int = TensorLimits(),  # noqa: B008 - frozen
    plans: Plans[Plan] | None = None,
    group_plans: Plans[GroupPlan] | None = None,
    key: Hashable | None = None,
) -> list[Outcome]:
    """The outcomes of ``items`` that share one :func:`group_key` (the dynamic batcher's groups, keyed as
    they arrived), in order: :func:`evaluate_batch` without grouping them again. One item is evaluated
    alone, with ``plans`` (the service's validated signatures), as EvaluateLoss evaluates it; a group
    uses and keeps its :class:`GroupPlan` in ``group_plans`` under ``key`` (its :func:`group_key`).

    >>> from lossd.server.losses import REGISTRY
    >>> t = lambda x: lossd_pb2.Tensor(dtype="float32", shape=[1], values=[x])
    >>> items = [lossd_pb2.EvaluateLossRequest(loss="mse", inputs={"y_pred": t(x), "y_true": t(0.0)}) for x in (1, 3)]
    >>> [lossd_pb2.EvaluateLossResponse.FromString(r).value for r in evaluate_group(REGISTRY, items)]
    [1.0, 9.0]
    """
    if len(items) == 1:
        return [_one(functools.partial(handle_evaluate_bytes, registry, items[0], device, limits, None, plans), 0)]
    outcomes: list[Outcome | None] = [None] * len(items)
    _evaluate_group(registry, items, list(range(len(items))), device, limits, outcomes, BatchControl(), group_plans,
                    key)
    return [o for o in outcomes if o is not None]


def _framed(size: int) -> int:
    """The bytes an item's reply (or its ``Error``) of ``size`` bytes takes in the batch reply: framed as a
    result (:func:`batch_reply`: two tags and two lengths around it)."""
    inner = len(_RESPONSE_TAG) + varint_size(size) + size  # _ERROR's tag is as long
    return len(_RESULTS_TAG) + varint_size(inner) + inner


def _check(control: BatchControl) -> None:
    if control.cancelled.is_set():
        raise BatchCancelled


def _one(work: Callable[[], bytes], index: int) -> Outcome:
    """``work()``'s reply, or its refusal; an unexpected failure is logged and answers ``INTERNAL``.

    A refusal is kept without its traceback: its frames lead back (``f_back``) to the frame holding
    the outcomes, and so to the refusal itself, a cycle that would keep the whole batch's requests
    and tensors until a full garbage collection (tests/integration/test_call_memory.py)."""
    try:
        return work()
    except FieldError as e:
        return e.with_traceback(None)
    except Exception:
        log.exception("EvaluateLossBatch item %d failed", index)
        return FieldError("", "internal error; see server log", "INTERNAL")


@dataclass(frozen=True)
class GroupPlan:
    """What a group's signature (:func:`group_key`) decided, kept in a service's plans for its next group
    (as :mod:`._plan` keeps one request's): the inputs' sent names in order, their layouts (the wire rules
    passed) and payload sizes, the members per torch call, and the :class:`~lossd.server.evaluation.StackedPlan`
    (``None``: such a group cannot be vectorized exactly, and each member is evaluated alone)."""

    names: list[str]
    layouts: Sequence[TensorLayout]
    sizes: list[int]
    chunk: int
    stacked: StackedPlan | None


def _group_plan(registry: Registry, items: Sequence[lossd_pb2.EvaluateLossRequest], members: list[int],
                limits: TensorLimits | int) -> GroupPlan | None:
    """The group's :class:`GroupPlan`, from the first member whose data passes the wire rules (the dtypes and
    shapes are the group's), or ``None`` when none does (each member then gets its own refusal)."""
    first = items[members[0]]
    names = sorted(first.inputs)
    for i in members:
        try:
            layouts = check_tensors([(f"inputs.{n}", items[i].inputs[n], None) for n in names], limits)
            break
        except FieldError:
            continue
    else:
        return None
    layouts = [dataclasses.replace(layout, raw=b"") for layout in layouts]  # a kept plan holds no client's data
    dtypes = [TORCH_DTYPES[layout.dtype] for layout in layouts]
    meta = {n: torch.empty((1, *layout.shape), dtype=dtype, device="meta")  # binding reads dtypes and shapes
            for n, layout, dtype in zip(names, layouts, dtypes)}
    try:
        stacked = plan_stacked(registry, first.loss, meta, struct_to_dict(first.params), list(first.grad_inputs),
                               first.strict)
    except FieldError:  # e.g. a NaN number in params: every member has it, and is refused alone
        stacked = None
    return GroupPlan(names, layouts, [layout.numel * dtype.itemsize for layout, dtype in zip(layouts, dtypes)],
                     max(1, (GRAIN_ELEMENTS - 1) // max([1, *(layout.numel for layout in layouts)])), stacked)


def _evaluate_group(
    registry: Registry,
    items: Sequence[lossd_pb2.EvaluateLossRequest],
    members: list[int],
    device: torch.device | None,
    limits: TensorLimits | int,
    outcomes: list[Outcome | None],
    control: BatchControl,
    group_plans: Plans[GroupPlan] | None = None,
    key: Hashable | None = None,
) -> None:
    """Stack the members' raw payloads (the wire rules checked once for the shared dtypes and
    shapes, and each member's payload length), evaluate them in one call per chunk of under
    :data:`GRAIN_ELEMENTS` elements and frame each reply from the stacked results. A member that
    sent ``values`` or a payload of the wrong length, and the whole chunk when it cannot be
    vectorized exactly (or holds a non-finite value), is evaluated alone: that also gives each
    member its own refusal. ``group_plans``: the service's :class:`GroupPlan` s by group ``key``."""
    start = time.perf_counter()
    plan = group_plans.get(key) if group_plans is not None and key is not None else None
    if plan is None:
        plan = _group_plan(registry, items, members, limits)
        if plan is not None and group_plans is not None and key is not None:
            group_plans.put(key, plan)
    alone: list[int] = []
    payloads: dict[int, list[bytes]] = {}
    if plan is None or plan.stacked is None:
        alone = members  # no member passes the wire rules, or the signature cannot be vectorized: each alone
    else:
        for i in members:
            inputs = items[i].inputs
            tensors = [inputs[n] for n in plan.names]
            raws = [t.raw for t in tensors]
            if [len(raw) for raw in raws] == plan.sizes and not any(t.values for t in tensors):
                payloads[i] = raws
            else:
                alone.append(i)
    for i in alone:
        _check(control)
        outcomes[i] = control.done(_one(functools.partial(handle_evaluate_bytes, registry, items[i], device, limits),
                                        i))
    if plan is None or not payloads:
        return
    members = list(payloads)
    for at in range(0, len(members), plan.chunk):
        _check(control)
        _evaluate_chunk(registry, items, {i: payloads[i] for i in members[at:at + plan.chunk]}, plan, device, limits,
                        outcomes, control, start)
        start = time.perf_counter()


#: torch runs an op on fewer elements than this (its grain size, ``at::internal::GRAIN_SIZE``) on the
#: calling thread. A group is evaluated in chunks below it: a larger stack is split across torch's
#: threads, whose hand-offs cost more CPU than they save for small items on a busy machine (and on 2
#: cores the other one is the client's).
GRAIN_ELEMENTS = 32768


def _evaluate_chunk(
    registry: Registry,
    items: Sequence[lossd_pb2.EvaluateLossRequest],
    payloads: dict[int, list[bytes]],
    plan: GroupPlan,
    device: torch.device | None,
    limits: TensorLimits | int,
    outcomes: list[Outcome | None],
    control: BatchControl,
    start: float,
) -> None:
    """One chunk of a group, stacked and evaluated in one call (each member alone when that fails).

    Only finite stacks are: NaN's bits (sign, payload) come out of a stacked reduction unlike out of
    the loss's own (float16 and bfloat16 ``mean``), and the item's other values are refused anyway
    unless it allows them. A member whose ``output_encoding`` is refused gets that refusal alone;
    the others' replies do not depend on it (the group key leaves the encoding out)."""
    encodings: dict[int, str] = {}
    for i in payloads:
        try:
            encodings[i] = reply_encoding(items[i], {"raw"})
        except FieldError as e:
            outcomes[i] = control.done(e.with_traceback(None))
    payloads = {i: p for i, p in payloads.items() if i in encodings}
    if not payloads:
        return
    result = None
    if len(payloads) > 1:
        n = len(payloads)
        # One buffer for every input (a vectorized signature has one dtype), input after input, each input's
        # members in order; checked for NaN and infinity in one pass.
        flat = torch.frombuffer(bytearray(b"".join(p[k] for k in range(len(plan.names)) for p in payloads.values())),
                                dtype=TORCH_DTYPES[plan.layouts[0].dtype])
        if all_finite(flat):
            stacked, at = {}, 0
            for name, layout in zip(plan.names, plan.layouts):
                stacked[name] = flat[at:at + n * layout.numel].view(n, *layout.shape)
                at += n * layout.numel
            decode_s = (time.perf_counter() - start) / n
            assert plan.stacked is not None  # _evaluate_group stacks only signatures that can be vectorized
            result = _stacked(plan.stacked, stacked, device)
    if result is None:  # each alone, each with its own refusal if any
        for i in payloads:
            _check(control)
            outcomes[i] = control.done(_one(functools.partial(handle_evaluate_bytes, registry, items[i], device,
                                                              limits), i))
        return
    for i, reply in zip(payloads, _stacked_replies(result, list(encodings.values()), decode_s)):
        outcomes[i] = control.done(reply)


def _stacked(plan: StackedPlan, stacked: dict[str, torch.Tensor], device: torch.device | None
             ) -> StackedEvaluation | None:
    """:meth:`StackedPlan.run`; ``None`` (each member alone, with its own refusal or reply) when it fails."""
    try:
        return plan.run(stacked, device)
    except Exception:  # a defect: evaluated alone, every member still gets its own answer
        log.exception("a vectorized evaluation of %d items failed; evaluating them one by one",
                      len(next(iter(stacked.values()))))
        return None


_REPLY_FIELDS = {name: field_number(lossd_pb2.EvaluateLossResponse, name) for name in ("loss", "grads", "timing")}
_VALUE_TAG = varint(field_number(lossd_pb2.EvaluateLossResponse, "value") << 3 | 1)  # fixed64


class _Rows:
    """The framed field of one stacked tensor, row by row: a constant prefix, then row ``i``'s bytes.
    ``grad``: the input whose gradient it is (an entry of ``grads``), ``None`` for the loss."""

    def __init__(self, tensor: torch.Tensor, encoding: str, grad: str | None = None) -> None:
        name, arr = payload_array(tensor, encoding)
        n = arr.shape[0]
        self._rows = arr.reshape(-1).data.cast("B") if arr.size else memoryview(b"")
        self._size = len(self._rows) // n if n else 0
        key = (grad, name, tuple(tensor.shape[1:]), encoding)  # these determine the row's size too
        prefix = _PREFIXES.get(key)
        if prefix is None:  # the same for every group of this signature
            body = tensor_body(name, key[2], arr[:1], "values" if encoding == "values" else "raw")
            pieces = (length_delimited(_REPLY_FIELDS["loss"], body) if grad is None
                      else map_entry(_REPLY_FIELDS["grads"], grad, body))
            prefix = join(pieces[:-1]) if self._size else join(pieces)
            if len(_PREFIXES) >= _MAX_PREFIXES:
                _PREFIXES.clear()
            _PREFIXES[key] = prefix
        self._prefix = prefix

    def row(self, i: int) -> list[Buffer]:
        if not self._size:
            return [self._prefix]
        return [self._prefix, self._rows[i * self._size:(i + 1) * self._size]]


#: :class:`_Rows` prefixes by field (a gradient's input, None: the loss), dtype, row shape and encoding: they
#: depend on nothing else.
_PREFIXES: dict[tuple[str | None, str, tuple[int, ...], str], bytes] = {}
_MAX_PREFIXES = 1024


def _stacked_replies(result: StackedEvaluation, encodings: list[str], decode_s: float) -> list[bytes]:
    """Item ``i``'s serialized ``EvaluateLossResponse`` from row ``i`` of the stacked results: the
    message :func:`~lossd.server.rpc.encode_reply` makes for it alone (the same fields, framed
    around the rows' memory; the group's times are shared equally)."""
    start = time.perf_counter()
    n = len(result)
    head = lossd_pb2.EvaluateLossResponse(loss_name=result.spec.name).SerializeToString()
    values = (np.ascontiguousarray(result.loss.to(torch.float64).numpy(), dtype="<f8")
              if result.loss.dim() == 1 else None)
    rows: dict[str, list[_Rows]] = {}
    for encoding in set(encodings):
        rows[encoding] = [_Rows(result.loss, encoding), *(_Rows(g, encoding, key) for key, g in result.grads.items())]
    bodies = []
    for i, encoding in enumerate(encodings):
        pieces: list[Buffer] = [head]
        if values is not None:
            pieces += [_VALUE_TAG, values[i:i + 1].tobytes()]
        for field_rows in rows[encoding]:
            pieces += field_rows.row(i)
        bodies.append(pieces)
    encode_s = (time.perf_counter() - start) / n
    timing = lossd_pb2.Timing(decode_ms=decode_s * 1e3, forward_ms=result.forward_s / n * 1e3,
                              backward_ms=result.backward_s / n * 1e3, encode_ms=encode_s * 1e3)
    tail = join(length_delimited(_REPLY_FIELDS["timing"], [timing.SerializeToString()]))
    return [join([*pieces, tail]) for pieces in bodies]


_RESULTS = field_number(lossd_pb2.EvaluateLossBatchResponse, "results")
_RESPONSE = field_number(lossd_pb2.EvaluateLossBatchResult, "response")
_ERROR = field_number(lossd_pb2.EvaluateLossBatchResult, "error")
_RESULTS_TAG, _RESPONSE_TAG = varint(_RESULTS << 3 | 2), varint(_RESPONSE << 3 | 2)  # length-delimited
assert len(varint(_ERROR << 3 | 2)) == len(_RESPONSE_TAG)  # _framed counts either


def _error(refusal: FieldError) -> lossd_pb2.Error:
    """An item's refusal as its ``Error`` (code, message, field; clipped as EvaluateLoss clips them)."""
    field = clip(refusal.field, MAX_FIELD_BYTES)
    message = clip(refusal.message, MAX_MESSAGE_BYTES)
    return lossd_pb2.Error(code=refusal.code, message=f"{field}: {message}" if field else message, field=field)


def batch_reply(outcomes: Sequence[Outcome]) -> bytes:
    """The serialized ``EvaluateLossBatchResponse``: each reply's bytes framed as they are, each
    refusal as an ``Error`` (code, message, field; clipped as EvaluateLoss clips them)."""
    pieces: list[Buffer] = []
    heads: dict[int, bytes] = {}  # a reply's two tags and lengths depend on its length alone
    for outcome in outcomes:
        if isinstance(outcome, FieldError):
            pieces += length_delimited(_RESULTS, length_delimited(_ERROR, [_error(outcome).SerializeToString()]))
            continue
        head = heads.get(len(outcome))
        if head is None:
            inner = _RESPONSE_TAG + varint(len(outcome))
            head = heads[len(outcome)] = _RESULTS_TAG + varint(len(inner) + len(outcome)) + inner
        pieces.append(head)
        pieces.append(outcome)
    return join(pieces)
