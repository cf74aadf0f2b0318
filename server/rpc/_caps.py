"""Caps on every string and repeated field of a request, checked before any work is done with it.

A name, a pattern, a map key or a string in ``params`` is at most :data:`MAX_STRING_BYTES`
(1 KiB) of UTF-8; a repeated field or map holds at most :data:`MAX_ITEMS` entries (fewer where
:data:`ITEM_CAPS` says so), and a repeated enum at most one entry per value of the enum. Tensor
contents (``shape``, ``values``, ``raw``) are left to the wire rules (:mod:`lossd._wire`), other
numeric lists to the rule that reads them (``hidden``: ``--max-layers``). One walk over the
message's set fields, without copying anything: a 100 MB loss name or 2,000,000 ``states`` are
refused from their lengths, before a lookup, a suggestion, a query or a job plan sees them.

The walk costs about a microsecond a step (a message walked or sized, an entry of a repeated field or
map), and a crafted request of 64 KiB can need 30,000 steps. Where time is dear (the event loop),
``max_steps`` bounds it: past them :class:`WalkTooLong` says nothing is known yet, and the caller
checks the message again without a bound, off the loop.

>>> from lossd.v1 import lossd_pb2, training_pb2
>>> check_request(lossd_pb2.EvaluateLossRequest(loss="mse", grad_inputs=["input"]))
>>> check_request(lossd_pb2.EvaluateLossRequest(loss="m" * 5000))
Traceback (most recent call last):
...
lossd._wire.FieldError: loss: is 5000 characters long; names, patterns and other strings are at most 1024 bytes
>>> check_request(training_pb2.ListJobsRequest(states=[1] * 10))
Traceback (most recent call last):
...
lossd._wire.FieldError: states: has 10 entries; at most 7 (one per JobState value)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from ..._framing import wire_fields
from ..._wire import FieldError
from ...v1 import lossd_pb2
from .._limits import MAX_ITEMS  # most entries in a repeated field or map without a cap of its own
from ..evaluation import MAX_PATTERNS

__all__ = [
    "ITEM_CAPS", "LOOP_CHECK_STEPS", "MAX_ITEMS", "MAX_PARAM_VALUES", "MAX_SCANNED_FIELDS", "MAX_STRING_BYTES",
    "SIZED_PARTS_MAX_BYTES", "WalkTooLong", "check_request", "check_string", "check_wire", "item_cap",
    "tensor_data_bytes",
]

#: Longest string (UTF-8 bytes) in a request: names, patterns, map keys, strings in ``params``.
MAX_STRING_BYTES = 1024
#: Repeated fields with a smaller cap (full field name: cap): each costs work per entry and per
#: model parameter (``param_groups``' patterns are matched against every parameter name).
ITEM_CAPS = {
    "lossd.v1.OptimizerSpec.param_groups": 64,
    # the rule of regularization's include/exclude (server/evaluation/_objective.py), which are not capped here
    # below MAX_ITEMS: a cap under MAX_STRING_BYTES // 2 would have every small EvaluateLoss request walked
    "lossd.v1.ParamGroup.patterns": MAX_PATTERNS,
    # a batch's items are bounded by --max-batch-items (RESOURCE_EXHAUSTED naming it: rpc/_batch.py),
    # each item by the caps above; the walk is linear in the bytes received
    "lossd.v1.EvaluateLossBatchRequest.items": 2**31 - 1,
}

#: Most values in the ``params`` of one request (an evaluation: its params and every term's together; a
#: training job: ``loss.params`` and ``data.builtin.params``), counted at every depth (each number,
#: string, list and nested struct): a Struct is converted whole before its keys are bound, about 4
#: microseconds a value, so 1024 lists of 1024 numbers (11 MB, within every list's cap) took 4 s and
#: 120 MB to refuse an unknown key. Parameters are options; data goes in tensors. (Each item of a batch or
#: a stream is a request of its own.)
MAX_PARAM_VALUES = 16_384
#: A message known to reach more bytes than this has its parts walked, not sized: ``ByteSize`` of one
#: part would serialize up to all of it holding the GIL (about 1.2 ms a MB). ``evaluate_many``'s
#: batches are at most this (``MANY_BATCH_BYTES``), so their small items are each passed from one size.
SIZED_PARTS_MAX_BYTES = 8 * 1024 * 1024
#: Most wire fields :func:`check_wire` reads (about half a second of Python, which lets other threads
#: run) before it leaves the rest of a message to protobuf's parser and :func:`check_request`.
MAX_SCANNED_FIELDS = 500_000
#: Most steps of the walk (a message walked or sized, an entry of a repeated field or map) taken on the
#: event loop: about 0.3 ms. A valid EvaluateLoss request takes one to ten; a request that needs more
#: (a crafted 35 KB ``params``: 14,000 steps, 14 ms) is checked on a thread (LargeRequests).
LOOP_CHECK_STEPS = 256
_LEN = 2  # wire type of strings, bytes and messages
_MAX_DEPTH = 100  # protobuf's own recursion limit

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_ENUM = FieldDescriptor.TYPE_ENUM


def check_string(value: str, field: str, what: str = "") -> None:
    """Raise :class:`FieldError` naming ``field`` when ``value`` is over :data:`MAX_STRING_BYTES` of UTF-8,
    found from its length alone when it can be (a 100 MB string is not encoded).

    >>> check_string("mse_loss", "loss")
    """
    if len(value) > MAX_STRING_BYTES:  # from the length alone, whatever the size of the string
        shown = f"{len(value)} characters"
    elif len(value) * 4 > MAX_STRING_BYTES and len(value.encode("utf-8", "surrogatepass")) > MAX_STRING_BYTES:
        shown = f"{len(value.encode('utf-8', 'surrogatepass'))} bytes of UTF-8"  # a character is 1 to 4 bytes
    else:
        return
    raise FieldError(field, f"{what}is {shown} long; names, patterns and other strings are at most "
                    f"{MAX_STRING_BYTES} bytes")


def _key(key: Any) -> str:
    return str(key) if len(str(key)) <= 64 else f"{str(key)[:64]}..."


class WalkTooLong(Exception):
    """:func:`check_request` needed more than its ``max_steps``: the message's caps are not known yet."""


def check_request(message: Message, field: str = "", at_least: int = 0, max_steps: int | None = None) -> None:
    """Raise :class:`FieldError` (``INVALID_ARGUMENT``, naming the field) at the first string or
    repeated field of ``message`` over its cap; see the module docstring. A message of at most
    :data:`MAX_STRING_BYTES` bytes of a type whose small messages are within the caps (most: see
    :func:`_small_within_caps`) is passed from its size, without a walk. ``at_least``: a size the
    caller knows the message reaches (its received bytes, :func:`tensor_data_bytes`); above
    :data:`MAX_STRING_BYTES` the message is walked without being sized, for ``ByteSize`` serializes
    it, holding the GIL (0.12 s for 100 MB: the event loop waits).

    A message is sized at most once on any path from the request to a field: one found larger is
    walked to its leaves, its parts never sized. Sizing each nested part again would serialize the
    same bytes once per level (a 22 MB request nesting a list 40 deep took 2.5 s). The parts of a
    message known to reach :data:`SIZED_PARTS_MAX_BYTES` are walked too, never sized: one of them
    may hold nearly all of it (a batch of one 100 MB item).

    ``max_steps``: raise :class:`WalkTooLong` rather than take more steps (module docstring); a cap
    found broken within them is still a :class:`FieldError`.
    """
    _check(message, field, at_least, None if max_steps is None else [max_steps])


def _check(message: Message, field: str, at_least: int, budget: list[int] | None) -> None:
    if at_least <= MAX_STRING_BYTES and _small_within_caps(message.DESCRIPTOR):
        _spend(budget, 1)
        if message.ByteSize() <= MAX_STRING_BYTES:
            return
        _walk(message, field, False, budget)
    else:
        _walk(message, field, at_least <= SIZED_PARTS_MAX_BYTES, budget)


def _spend(budget: list[int] | None, steps: int) -> None:
    if budget is not None:
        budget[0] -= steps
        if budget[0] < 0:
            raise WalkTooLong


def _walk(message: Message, field: str, size_parts: bool, budget: list[int] | None) -> None:
    """Check every set field of ``message``; its sub-messages are passed from their size (each
    sized once, a batch's small items: one size each instead of a walk) when ``size_parts``,
    else walked. ``budget``: the steps left (``None``: no bound)."""
    _spend(budget, 1)
    scope = _PARAM_STRUCTS.get(message.DESCRIPTOR.full_name)
    for fd, value in message.ListFields():
        path = f"{field}.{fd.name}" if field else fd.name
        if scope is not None and fd.name in scope[0]:  # before the first field that holds params
            _check_param_values(scope[1](message), field, budget)
            scope = None
        if fd.is_repeated:
            is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
            if fd.type not in (_STRING, _MESSAGE, _ENUM):
                continue  # numbers: the wire rules (tensors) or the field's own rule
            cap = item_cap(fd)
            enum = fd.enum_type if fd.type == _ENUM else None
            if len(value) > cap:
                per = f" (one per {enum.name} value)" if enum is not None else ""
                raise FieldError(path, f"has {len(value)} entries; at most {cap}{per}")
            if fd.type == _ENUM:
                continue
            _spend(budget, len(value))
            if is_map:
                assert fd.message_type is not None
                key_fd, value_fd = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
                for key in value:
                    if key_fd.type == _STRING:
                        check_string(key, path, f"the key {_key(key)!r} ")
                    if value_fd.type == _MESSAGE:
                        _check_message(value[key], f"{path}.{_key(key)}", size_parts, budget)
                    elif value_fd.type == _STRING:
                        check_string(value[key], f"{path}.{_key(key)}")
            elif fd.type == _STRING:
                for i, item in enumerate(value):
                    check_string(item, f"{path}[{i}]")
            else:
                for i, item in enumerate(value):
                    _check_message(item, f"{path}[{i}]", size_parts, budget)
        elif fd.type == _STRING:
            check_string(value, path)
        elif fd.type == _MESSAGE:
            _check_message(value, path, size_parts, budget)


def _terms_params(request: Any) -> list[tuple[str, Message]]:
    terms = request.terms if len(request.terms) <= item_cap(request.DESCRIPTOR.fields_by_name["terms"]) else []
    return [("params", request.params), *((f"terms[{i}].params", t.params) for i, t in enumerate(terms))]


#: The fields of each kind of request that hold ``params``, and its ``params`` Structs named as fields: one
#: budget of :data:`MAX_PARAM_VALUES` for all of them (terms over their cap are left to the walk, which
#: refuses them).
_PARAM_STRUCTS: dict[str, tuple[frozenset[str], Callable[[Any], list[tuple[str, Message]]]]] = {
    "lossd.v1.EvaluateLossRequest": (frozenset({"params", "terms"}), _terms_params),
    "lossd.v1.TrainJobRequest": (frozenset({"loss", "data"}), lambda r: [
        ("loss.params", r.loss.params), ("data.builtin.params", r.data.builtin.params)]),
}


def _check_param_values(structs: list[tuple[str, Message]], field: str, budget: list[int] | None) -> None:
    """Refuse a request whose ``params`` Structs hold more than :data:`MAX_PARAM_VALUES` values in all, at
    every depth, naming the Struct where the count passed it; counting stops one past the cap. A list or
    struct over its own entry cap is left to the walk, which refuses it naming it."""
    left = MAX_PARAM_VALUES
    for name, params in structs:
        fields = params.fields  # type: ignore[attr-defined]
        if len(fields) > MAX_ITEMS:
            return
        pending = list(fields.values())
        while pending:
            value = pending.pop()
            left -= 1
            _spend(budget, 1)
            if left < 0:
                where = f"{field}.{name}" if field else name
                raise FieldError(where, f"brings the request's params to more than {MAX_PARAM_VALUES} values (each "
                                 "number, string, list and nested struct counted, every term's too); parameters "
                                 "are options: send data as tensors")
            kind = value.WhichOneof("kind")
            if kind == "list_value":
                inner = value.list_value.values
            elif kind == "struct_value":
                inner = value.struct_value.fields.values()
            else:
                continue
            if len(inner) > MAX_ITEMS:
                return
            pending.extend(inner)


def _check_message(message: Message, field: str, size_parts: bool, budget: list[int] | None) -> None:
    if isinstance(message, lossd_pb2.Tensor):  # its numbers: the wire rules (check_tensor); its dtype here
        check_string(message.dtype, f"{field}.dtype")
    elif size_parts:
        _check(message, field, 0, budget)
    else:
        _walk(message, field, False, budget)


def item_cap(fd: Any) -> int:
    """The most entries the caps allow in the repeated field or map ``fd`` (a repeated enum: one per value).
    Code that reads a request before its caps are checked loops over no more than this.

    >>> item_cap(lossd_pb2.EvaluateLossRequest.DESCRIPTOR.fields_by_name["inputs"])
    1024
    """
    if fd.type == _ENUM and fd.enum_type is not None:
        return len(fd.enum_type.values)
    return ITEM_CAPS.get(fd.full_name, MAX_ITEMS)


_INPUTS_CAP = item_cap(lossd_pb2.EvaluateLossRequest.DESCRIPTOR.fields_by_name["inputs"])


def tensor_data_bytes(request: lossd_pb2.EvaluateLossRequest) -> int:
    """The bytes of data an EvaluateLoss request's inputs carry (their ``raw`` bytes, 8 a number in
    ``values``): a size the message reaches, found without serializing it.

    Called before the caps are checked, so it does not loop over more inputs than the caps allow: a
    request with more is at least 2 bytes an entry (its tag and length), and is refused by the walk.

    >>> tensor_data_bytes(lossd_pb2.EvaluateLossRequest(inputs={"x": lossd_pb2.Tensor(raw=bytes(12), values=[1.0])}))
    20
    """
    inputs = request.inputs
    if len(inputs) > _INPUTS_CAP:
        return 2 * len(inputs)
    return sum(len(t.raw) + 8 * len(t.values) for t in inputs.values())


def _small_within_caps(message: Any) -> bool:
    """Whether every message of this type of at most :data:`MAX_STRING_BYTES` bytes is within the
    caps: its strings are that short, and a repeated string, message or map entry takes two bytes
    at least, so no such field has more than ``MAX_STRING_BYTES // 2`` entries. Not so where a cap
    is lower (:data:`ITEM_CAPS`) or for a repeated enum (packed: one byte an entry), at any depth."""
    known = _SMALL_WITHIN_CAPS.get(message.full_name)
    if known is None:
        known = _SMALL_WITHIN_CAPS[message.full_name] = _within(message, set())
    return known


_SMALL_WITHIN_CAPS: dict[str, bool] = {}


def _within(message: Descriptor, seen: set[str]) -> bool:
    seen.add(message.full_name)
    for fd in message.fields:
        if fd.is_repeated and (fd.type == _ENUM or item_cap(fd) < MAX_STRING_BYTES // 2):
            return False
        sub = fd.message_type
        if sub is not None and sub.full_name not in seen and not _within(sub, seen):
            return False
    return True


def check_wire(data: bytes, message: Descriptor) -> None:
    """Refuse a serialized ``message`` whose strings (map keys included, at any depth) are over
    :data:`MAX_STRING_BYTES`, from their length prefixes: before protobuf parses it, which validates
    every string as UTF-8 holding the GIL (a 100 MB loss name: 0.3 s in which no other thread runs).

    Only strings are checked here, and only within the first :data:`MAX_SCANNED_FIELDS` fields;
    bytes it cannot read (malformed, groups) are left to the parser, and everything else to
    :func:`check_request` on the parsed message.

    >>> from lossd.v1 import lossd_pb2
    >>> request = lossd_pb2.EvaluateLossRequest
    >>> check_wire(request(loss="mse_loss").SerializeToString(), request.DESCRIPTOR)
    >>> check_wire(request(loss="x" * 2000).SerializeToString(), request.DESCRIPTOR)
    Traceback (most recent call last):
    ...
    lossd._wire.FieldError: loss: is 2000 bytes long; names, patterns and other strings are at most 1024 bytes
    """
    view = memoryview(data)
    budget = [MAX_SCANNED_FIELDS]
    try:
        _scan(view, 0, len(view), message, "", budget, 0)
    except FieldError:
        raise
    except (ValueError, IndexError):  # FieldError is a ValueError too
        return  # not well-formed: protobuf's parser says so


def _scan(view: memoryview, start: int, end: int, message: Descriptor, path: str, budget: list[int],
          depth: int) -> bool:
    """Walk one message's fields; ``False`` once the budget is spent (stop everywhere). A message of at
    most :data:`MAX_STRING_BYTES` bytes holds no longer string: it is not walked (a batch of small items
    costs one step per item)."""
    if end - start <= MAX_STRING_BYTES:
        return True
    if depth > _MAX_DEPTH:
        return False
    seen: dict[int, int] = {}  # entries per repeated field so far: the index in the path
    by_number = message.fields_by_number
    for number, wire_type, _, value_start, after in wire_fields(view, start, end):
        budget[0] -= 1
        if budget[0] < 0:
            return False
        fd = by_number.get(number)
        if fd is None or wire_type != _LEN or fd.type not in (_STRING, _MESSAGE):
            continue  # numbers, bytes (tensor payloads), packed lists, unknown fields
        name = f"{path}.{fd.name}" if path else fd.name
        if fd.is_repeated:
            index = seen.get(number, 0)
            seen[number] = index + 1
        if fd.type == _STRING:
            if after - value_start > MAX_STRING_BYTES:
                where = f"{name}[{index}]" if fd.is_repeated else name
                raise FieldError(where, f"is {after - value_start} bytes long; names, patterns and other strings "
                                 f"are at most {MAX_STRING_BYTES} bytes")
            continue
        entry = fd.message_type
        assert entry is not None
        if entry.GetOptions().map_entry:
            if not _scan_map_entry(view, value_start, after, entry, name, budget, depth):
                return False
            continue
        where = f"{name}[{index}]" if fd.is_repeated else name
        if not _scan(view, value_start, after, entry, where, budget, depth + 1):
            return False
    return True


def _scan_map_entry(view: memoryview, start: int, end: int, entry: Descriptor, path: str, budget: list[int],
                    depth: int) -> bool:
    if end - start <= MAX_STRING_BYTES:  # neither its key nor its value can be over the cap
        return True
    key_fd, value_fd = entry.fields_by_name["key"], entry.fields_by_name["value"]
    key = ""
    for number, wire_type, _, value_start, after in wire_fields(view, start, end):
        budget[0] -= 1
        if budget[0] < 0:
            return False
        if wire_type != _LEN:
            continue
        if number == 1 and key_fd.type == _STRING:
            key = bytes(view[value_start:min(after, value_start + 64)]).decode("utf-8", "replace")
            if after - value_start > MAX_STRING_BYTES:
                shown = key + "..." if after - value_start > 64 else key
                raise FieldError(path, f"the key {shown!r} is {after - value_start} bytes long; names, patterns "
                                 f"and other strings are at most {MAX_STRING_BYTES} bytes")
        elif number == 2 and value_fd.type == _STRING and after - value_start > MAX_STRING_BYTES:
            raise FieldError(f"{path}.{key}", f"is {after - value_start} bytes long; names, patterns and other "
                             f"strings are at most {MAX_STRING_BYTES} bytes")
        elif number == 2 and value_fd.type == _MESSAGE:
            assert value_fd.message_type is not None
            if not _scan(view, value_start, after, value_fd.message_type, f"{path}.{key}", budget, depth + 1):
                return False
    return True
