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

import logging
import math
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch

from ..._framing import Buffer, field_number, join, length_delimited
from ..._settings import env_name, flag_name
from ..._wire import DTYPES, FieldError, TensorLimits
from ...v1 import lossd_pb2
from ..evaluation import Evaluation, evaluate_stacked
from ..losses import Registry
from ._request import Decoded, decode_request, encode_reply, handle_evaluate_bytes, reply_encoding, struct_to_dict

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES", "DEFAULT_MAX_BATCH_ITEMS", "BatchControl", "BatchLimits", "Outcome", "batch_reply",
    "check_batch", "evaluate_batch", "group_key", "payload_bytes",
]

log = logging.getLogger("lossd.server")

#: Most items in one EvaluateLossBatch unless configured (``--max-batch-items``).
DEFAULT_MAX_BATCH_ITEMS = 10_000
#: Most tensor bytes (from shapes and dtypes) in one EvaluateLossBatch unless configured (``--max-batch-bytes``).
DEFAULT_MAX_BATCH_BYTES = 128 * 1024 * 1024

#: One item's outcome: its serialized ``EvaluateLossResponse``, or its refusal.
Outcome = bytes | FieldError


@dataclass(frozen=True)
class BatchLimits:
    """The server's limits on one EvaluateLossBatch (``--max-batch-items``, ``--max-batch-bytes``)."""

    max_items: int = DEFAULT_MAX_BATCH_ITEMS
    max_bytes: int = DEFAULT_MAX_BATCH_BYTES


def _limit_text(setting: str) -> str:
    return f"{flag_name(setting)}, env {env_name(setting)}"


def check_batch(items: Sequence[lossd_pb2.EvaluateLossRequest], limits: BatchLimits) -> None:
    """Refuse a batch over ``limits`` (``RESOURCE_EXHAUSTED`` naming the flag), from counts and
    shapes alone: nothing is decoded first.

    >>> check_batch([lossd_pb2.EvaluateLossRequest()] * 3, BatchLimits(max_items=2))
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: items: 3 items in one batch; the server takes at most 2 \
(--max-batch-items, env LOSSD_MAX_BATCH_ITEMS): send fewer per batch (the SDK's evaluate_many packs them)
    """
    if len(items) > limits.max_items:
        raise FieldError("items", f"{len(items)} items in one batch; the server takes at most {limits.max_items} "
                                  f"({_limit_text('max_batch_items')}): send fewer per batch "
                                  "(the SDK's evaluate_many packs them)", "RESOURCE_EXHAUSTED")
    total = 0
    for item in items:
        total += payload_bytes(item)
        if total > limits.max_bytes:
            raise FieldError("items", f"the batch carries over {limits.max_bytes} bytes of tensors; the server "
                                      f"takes at most {limits.max_bytes} ({_limit_text('max_batch_bytes')}): "
                                      "send fewer per batch (the SDK's evaluate_many packs them)",
                             "RESOURCE_EXHAUSTED")


_TENSOR_FIELDS = ("inputs", "parameters")


def payload_bytes(request: lossd_pb2.EvaluateLossRequest) -> int:
    """Tensor bytes a request carries, from shapes and dtypes (payloads untouched)."""
    tensors = [t for name in _TENSOR_FIELDS for t in getattr(request, name).values()]
    if request.HasField("grad_output"):
        tensors.append(request.grad_output)
    total = 0
    for t in tensors:
        info = DTYPES.get(t.dtype)
        total += math.prod(max(0, int(d)) for d in t.shape) * (info.itemsize if info else 8)
    return total


@dataclass
class BatchControl:
    """Shared with the thread evaluating a batch: set ``cancelled`` and it stops before the next
    group or item (the call was cancelled or ran past its deadline); ``evaluated`` counts the
    items done."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    evaluated: int = 0


class BatchCancelled(Exception):
    """The batch's call ended (cancelled, past its deadline) before every item was evaluated."""


def group_key(registry: Registry, item: lossd_pb2.EvaluateLossRequest) -> Hashable | None:
    """What items must share to be evaluated together: loss, params, wanted gradients, input names,
    dtypes and shapes. ``None`` for an item that is evaluated alone (an objective, a
    ``grad_output``, an unknown loss or one not registered ``vectorized``)."""
    if item.terms or item.parameters or item.HasField("regularization") or item.HasField("grad_output"):
        return None
    try:
        spec = registry.get(item.loss)
    except FieldError:
        return None
    if not spec.vectorized:
        return None
    tensors = tuple(sorted((name, t.dtype, tuple(t.shape)) for name, t in item.inputs.items()))
    return (spec.name, item.params.SerializeToString(deterministic=True), tuple(item.grad_inputs), tensors)


def evaluate_batch(
    registry: Registry,
    items: Sequence[lossd_pb2.EvaluateLossRequest],
    device: torch.device | None = None,
    limits: TensorLimits | int = TensorLimits(),  # noqa: B008 - frozen
    control: BatchControl | None = None,
) -> list[Outcome]:
    """Every item's outcome, in item order; raises :class:`BatchCancelled` when ``control`` is
    cancelled midway."""
    control = control or BatchControl()
    groups: dict[Hashable, list[int]] = {}
    alone: list[int] = []
    for i, item in enumerate(items):
        key = group_key(registry, item)
        if key is None:
            alone.append(i)
        else:
            groups.setdefault(key, []).append(i)
    outcomes: list[Outcome | None] = [None] * len(items)
    for members in groups.values():
        if len(members) == 1:
            alone.append(members[0])
            continue
        _check(control)
        _evaluate_group(registry, items, members, device, limits, outcomes, control)
    for i in sorted(alone):
        _check(control)
        outcomes[i] = _one(lambda: handle_evaluate_bytes(registry, items[i], device, limits), i)
        control.evaluated += 1
    return [o for o in outcomes if o is not None]


def _check(control: BatchControl) -> None:
    if control.cancelled.is_set():
        raise BatchCancelled


def _one(work: Callable[[], bytes], index: int) -> Outcome:
    """``work()``'s reply, or its refusal; an unexpected failure is logged and answers ``INTERNAL``."""
    try:
        return work()
    except FieldError as e:
        return e
    except Exception:
        log.exception("EvaluateLossBatch item %d failed", index)
        return FieldError("", "internal error; see server log", "INTERNAL")


def _evaluate_group(
    registry: Registry,
    items: Sequence[lossd_pb2.EvaluateLossRequest],
    members: list[int],
    device: torch.device | None,
    limits: TensorLimits | int,
    outcomes: list[Outcome | None],
    control: BatchControl,
) -> None:
    """Decode each member (a refusal is that member's outcome), evaluate the rest in one call, and
    encode each reply; when the group cannot be vectorized exactly, each member alone."""
    decoded: dict[int, Decoded] = {}
    for i in members:
        try:
            decoded[i] = decode_request(registry, items[i], limits)
        except FieldError as e:
            outcomes[i] = e
            control.evaluated += 1
    results: list[Evaluation] | None = None
    if len(decoded) > 1:
        first = items[next(iter(decoded))]
        stacked = {name: torch.stack([d.inputs[name] for d in decoded.values()]) for name in first.inputs}
        try:
            results = evaluate_stacked(registry, first.loss, stacked, struct_to_dict(first.params),
                                       list(first.grad_inputs), device)
        except FieldError:
            results = None
    if results is None:
        for i in decoded:
            _check(control)
            outcomes[i] = _one(lambda i=i: handle_evaluate_bytes(registry, items[i], device, limits), i)  # type: ignore[misc]
            control.evaluated += 1
        return
    for (i, d), result in zip(decoded.items(), results):
        outcomes[i] = _one(lambda d=d, i=i, result=result: encode_reply(  # type: ignore[misc]
            result, reply_encoding(items[i], d.encodings), d.decode_s), i)
        control.evaluated += 1


_RESULTS = field_number(lossd_pb2.EvaluateLossBatchResponse, "results")
_RESPONSE = field_number(lossd_pb2.EvaluateLossBatchResult, "response")
_ERROR = field_number(lossd_pb2.EvaluateLossBatchResult, "error")


def batch_reply(outcomes: Sequence[Outcome]) -> bytes:
    """The serialized ``EvaluateLossBatchResponse``: each reply's bytes framed as they are, each
    refusal as an ``Error`` (code, message, field)."""
    pieces: list[Buffer] = []
    for outcome in outcomes:
        if isinstance(outcome, FieldError):
            error = lossd_pb2.Error(code=outcome.code, message=str(outcome), field=outcome.field)
            body = length_delimited(_ERROR, [error.SerializeToString()])
        else:
            body = length_delimited(_RESPONSE, [outcome])
        pieces += length_delimited(_RESULTS, body)
    return join(pieces)
