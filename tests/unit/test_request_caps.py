"""Caps on strings and repeated fields (server/rpc/_caps.py), in this process: check_request on a
parsed message, and check_wire on the bytes before protobuf parses them. Both name the same field
for the same over-long string. Against a real server: tests/robustness/test_oversized_requests.py."""

from __future__ import annotations

import time

import pytest
from google.protobuf.message import Message

from lossd._wire import FieldError
from lossd.server.rpc._caps import (
    LOOP_CHECK_STEPS, MAX_ITEMS, MAX_PARAM_VALUES, MAX_SCANNED_FIELDS, MAX_STRING_BYTES, SIZED_PARTS_MAX_BYTES, WalkTooLong,
    _small_within_caps, check_request, check_wire,
)
from lossd.v1 import lossd_pb2, training_pb2

LONG = "n" * (MAX_STRING_BYTES + 1)


def _evaluate(**fields: object) -> lossd_pb2.EvaluateLossRequest:
    return lossd_pb2.EvaluateLossRequest(**fields)  # type: ignore[arg-type]


def _with_param(key: str, text: str) -> lossd_pb2.EvaluateLossRequest:
    r = _evaluate(loss="mse_loss")
    r.params[key] = text
    return r


def _with_parameter(name: str) -> lossd_pb2.EvaluateLossRequest:
    r = _evaluate()
    r.parameters[name].CopyFrom(lossd_pb2.Tensor(dtype="float32", shape=[1], values=[1.0]))
    return r


def _with_term(**term: object) -> lossd_pb2.EvaluateLossRequest:
    r = _evaluate()
    r.terms.add(loss="mse_loss")
    r.terms.add(**term)  # type: ignore[arg-type]
    return r


#: (what, message, field named, words of the message)
OVER_LONG: list[tuple[str, Message, str, str]] = [
    ("loss name", _evaluate(loss=LONG), "loss", "1025"),
    ("multi-byte UTF-8 name", _evaluate(loss="é" * 600), "loss", "1200 bytes"),
    ("grad_inputs entry", _evaluate(loss="mse_loss", grad_inputs=["input", LONG]), "grad_inputs[1]", "1025"),
    ("params key", _with_param(LONG, "x"), "params.fields", "the key 'nnnn"),
    ("params string value", _with_param("reduction", LONG), "params.fields.reduction.string_value", "1025"),
    ("parameters key", _with_parameter(LONG), "parameters", "the key 'nnnn"),
    ("term's loss", _with_term(loss=LONG), "terms[1].loss", "1025"),
    ("tensor dtype", _evaluate(inputs={"input": lossd_pb2.Tensor(dtype=LONG)}), "inputs.input.dtype", "1025"),
    ("regularization pattern", _evaluate(regularization=lossd_pb2.Regularization(include=["*", LONG])),
     "regularization.include[1]", "1025"),
    ("job name", training_pb2.TrainJobRequest(name=LONG), "name", "1025"),
    ("job id", training_pb2.GetJobRequest(job_id=LONG), "job_id", "1025"),
]


@pytest.mark.parametrize(("what", "message", "field", "words"), OVER_LONG, ids=[o[0] for o in OVER_LONG])
def test_an_over_long_string_is_refused_naming_its_field(what: str, message: Message, field: str,
                                                         words: str) -> None:
    with pytest.raises(FieldError) as parsed:
        check_request(message)
    with pytest.raises(FieldError) as wire:
        check_wire(message.SerializeToString(), message.DESCRIPTOR)
    for error in (parsed.value, wire.value):
        assert error.code == "INVALID_ARGUMENT"
        assert error.field.startswith(field.split(".")[0])
        assert f"at most {MAX_STRING_BYTES} bytes" in error.message
    assert wire.value.field == field, wire.value
    assert words in str(wire.value)


def _params_of(n_lists: int, per_list: int = MAX_ITEMS) -> dict[str, object]:
    return {f"k{i}": [0.5] * per_list for i in range(n_lists)}


def _train_with(where: str, params: dict[str, object]) -> training_pb2.TrainJobRequest:
    r = training_pb2.TrainJobRequest()
    (r.loss.params if where == "loss" else r.data.builtin.params).update(params)
    return r


def _batch_item_with(params: dict[str, object]) -> lossd_pb2.EvaluateLossBatchRequest:
    r = lossd_pb2.EvaluateLossBatchRequest()
    r.items.add(loss="mse_loss").params.update(params)
    return r


@pytest.mark.parametrize(("message", "field"), [
    (lambda p: _evaluate(loss="mse_loss", params=p), "params"),
    (lambda p: _evaluate(terms=[lossd_pb2.LossTerm(loss="mse_loss", params=p)]), "terms[0].params"),
    (lambda p: _train_with("loss", p), "loss.params"),
    (lambda p: _train_with("data", p), "data.builtin.params"),
    (_batch_item_with, "items[0].params"),
], ids=["params", "term", "job loss", "job data", "batch item"])
def test_params_hold_a_bounded_number_of_values_in_all(message: object, field: str) -> None:
    """Every list within its 1024 entries, but 1024 of them (11 MB): the Struct was converted whole (4 s,
    120 MB) before an unknown key was refused. At most MAX_PARAM_VALUES values, nested ones counted."""
    make = message  # type: ignore[assignment]
    within = MAX_PARAM_VALUES // (MAX_ITEMS + 1)  # each list is itself a value
    check_request(make(_params_of(within)))  # type: ignore[operator]
    nested = make({"outer": {"inner": [[0.5] * 64] * 300}})  # type: ignore[operator]  # 300 x 65 + 3 values
    overs = (make(_params_of(within + 1)), nested, make(_params_of(1000)))  # type: ignore[operator]
    start = time.monotonic()  # the refusals only: building the 11 MB message took 0.8-2.9 s of it on a busy host
    for over in overs:
        with pytest.raises(FieldError) as info:
            check_request(over, at_least=over.ByteSize())
        assert info.value.field == field and info.value.message.startswith(
            f"brings the request's params to more than {MAX_PARAM_VALUES} values"), info.value
    assert time.monotonic() - start < 2


def test_the_params_of_every_term_of_a_request_share_one_budget() -> None:
    """64 terms of 16,000 values each (11 MB) were each within a per-Struct cap, and were converted whole
    (5 s) before a key was refused: the request's params and its terms' count together. A batch's items
    are requests of their own."""
    many = _evaluate(params={"a": [0.5] * 10}, terms=[
        lossd_pb2.LossTerm(loss="mse_loss", params=_params_of(15)) for _ in range(64)])
    with pytest.raises(FieldError) as info:
        check_request(many, at_least=many.ByteSize())
    assert info.value.field == "terms[1].params", info.value  # 11 + 15,375 values, then term 1 passes the cap
    few = _evaluate(params={"a": [0.5] * 10}, terms=[
        lossd_pb2.LossTerm(loss="mse_loss", params={"b": [0.5] * 200}) for _ in range(64)])
    check_request(few, at_least=few.ByteSize())  # 11 + 64 x 201 values
    batch = lossd_pb2.EvaluateLossBatchRequest(items=[_evaluate(loss="mse_loss", params=_params_of(15))] * 3)
    check_request(batch, at_least=batch.ByteSize())


def test_strings_at_the_cap_pass_both_checks() -> None:
    edge = "n" * MAX_STRING_BYTES
    for message in (_evaluate(loss=edge), _with_param(edge, edge), _with_parameter(edge), _with_term(loss=edge)):
        check_request(message)
        check_wire(message.SerializeToString(), message.DESCRIPTOR)


def test_the_wire_check_finds_a_100_mb_string_from_its_length_alone() -> None:
    data = _evaluate(loss="x" * 100_000_000).SerializeToString()
    start = time.perf_counter()
    with pytest.raises(FieldError, match="^loss: is 100000000 bytes long"):
        check_wire(data, lossd_pb2.EvaluateLossRequest.DESCRIPTOR)
    assert time.perf_counter() - start < 0.05  # no copy, no UTF-8 pass: a few field headers read


def test_the_wire_check_leaves_malformed_bytes_and_big_tensors_to_the_parser() -> None:
    check_wire(b"\x0a\xff\xff\xff\xff\x0f", lossd_pb2.EvaluateLossRequest.DESCRIPTOR)  # truncated: upb says so
    check_wire(b"\x0b\x0c", lossd_pb2.EvaluateLossRequest.DESCRIPTOR)  # a group
    big = _evaluate(loss="mse_loss", inputs={"input": lossd_pb2.Tensor(dtype="float32", shape=[10**6],
                                                                       raw=bytes(4 * 10**6))})
    check_wire(big.SerializeToString(), big.DESCRIPTOR)  # raw bytes are not strings


def test_the_wire_check_skips_small_items_but_finds_a_long_string_in_a_batch_item() -> None:
    # A message of at most MAX_STRING_BYTES bytes cannot hold a longer string: not walked. The item
    # after 1000 small ones that does hold one is still named with its index.
    small = _evaluate(loss="mse_loss", inputs={"input": lossd_pb2.Tensor(dtype="float32", shape=[100],
                                                                         raw=bytes(400))})
    assert len(small.SerializeToString()) <= MAX_STRING_BYTES
    batch = lossd_pb2.EvaluateLossBatchRequest(items=[small] * 1000)
    check_wire(batch.SerializeToString(), batch.DESCRIPTOR)
    batch.items.add(loss="mse_loss", inputs={"input": lossd_pb2.Tensor(dtype=LONG)})
    with pytest.raises(FieldError) as wire:
        check_wire(batch.SerializeToString(), batch.DESCRIPTOR)
    assert wire.value.field == "items[1000].inputs.input.dtype"


def test_small_batch_items_are_sized_not_walked_where_no_small_message_can_be_over_a_cap() -> None:
    # At most MAX_STRING_BYTES bytes: no longer string, and at most half as many entries in a repeated
    # field; a type with a lower cap (or a repeated enum) at any depth is always walked.
    assert _small_within_caps(lossd_pb2.EvaluateLossRequest.DESCRIPTOR)
    assert not _small_within_caps(training_pb2.ListJobsRequest.DESCRIPTOR)  # states: one per JobState value
    assert not _small_within_caps(training_pb2.TrainJobRequest.DESCRIPTOR)  # param_groups: 64
    small = _evaluate(loss="mse_loss", grad_inputs=["y_pred"] * 100)
    assert small.ByteSize() <= MAX_STRING_BYTES
    batch = lossd_pb2.EvaluateLossBatchRequest(items=[small] * 1000)
    check_request(batch)
    batch.items.add(loss="mse_loss", grad_inputs=["g"] * (MAX_ITEMS + 1))
    with pytest.raises(FieldError, match=r"^items\[1000\]\.grad_inputs: has 1025 entries"):
        check_request(batch)


def test_a_small_request_is_sized_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    # A small EvaluateLoss call (100 float32 elements) costs one ByteSize; a larger one is walked.
    from lossd.server.rpc import _caps

    walked: list[str] = []
    real = _caps.check_string
    monkeypatch.setattr(_caps, "check_string", lambda value, field, *a: (walked.append(field), real(value, field, *a)))
    raw = bytes(400)
    tensor = lossd_pb2.Tensor(dtype="float32", shape=[100], raw=raw)
    small = _evaluate(loss="mse_loss", inputs={"y_pred": tensor, "y_true": tensor})
    assert small.ByteSize() <= MAX_STRING_BYTES
    check_request(small)
    assert walked == []
    tensor.raw = raw * 2
    check_request(_evaluate(loss="mse_loss", inputs={"y_pred": tensor, "y_true": tensor}))
    assert sorted(walked) == ["inputs", "inputs", "inputs.y_pred.dtype", "inputs.y_true.dtype", "loss"]  # any map order


def test_the_wire_check_stops_after_its_field_budget() -> None:
    # More fields than the budget before the over-long string: left to check_request after the parse.
    # (Concatenated messages merge: the loss name comes after the grad_inputs on the wire.)
    data = _evaluate(grad_inputs=["g"] * (MAX_SCANNED_FIELDS + 1)).SerializeToString() + \
        _evaluate(loss=LONG).SerializeToString()
    check_wire(data, lossd_pb2.EvaluateLossRequest.DESCRIPTOR)
    with pytest.raises(FieldError, match="^loss: is 1025 characters long"):
        check_request(lossd_pb2.EvaluateLossRequest.FromString(data))


def test_repeated_fields_are_capped_and_states_once_per_value() -> None:
    every_state = [s for s in training_pb2.JobState.values()]
    check_request(training_pb2.ListJobsRequest(states=every_state))
    with pytest.raises(FieldError, match=r"^states: has 8 entries; at most 7 \(one per JobState value\)"):
        check_request(training_pb2.ListJobsRequest(states=[*every_state, 2]))
    with pytest.raises(FieldError, match="^grad_inputs: has 1025 entries; at most 1024"):
        check_request(_evaluate(grad_inputs=["g"] * 1025))
    groups = training_pb2.TrainJobRequest()
    for _ in range(65):
        groups.optimizer.param_groups.add(patterns=["*"])
    with pytest.raises(FieldError, match=r"^optimizer.param_groups: has 65 entries; at most 64"):
        check_request(groups)
    patterns = training_pb2.TrainJobRequest()
    patterns.optimizer.param_groups.add(patterns=["*"] * 257)
    with pytest.raises(FieldError, match=r"^optimizer.param_groups\[0\].patterns: has 257 entries; at most 256"):
        check_request(patterns)


def test_an_evaluate_loss_call_has_its_caps_checked_once_and_in_process_callers_still_get_the_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The LargeRequests interceptor checks every EvaluateLoss request and marks it, so the
    evaluation does not walk its fields again; a caller that hands a message straight to the
    evaluation (stream items, batches, other code) still has it checked there."""
    import asyncio
    from types import SimpleNamespace

    import grpc

    from lossd.server.interceptors import _large_requests
    from lossd.server.losses import REGISTRY
    from lossd.server.rpc import _request, _service
    from lossd.server.rpc._plan import Plans

    calls: list[str] = []

    def counting(message: Message, at_least: int = 0, max_steps: int | None = None) -> None:
        calls.append(type(message).__name__)
        check_request(message, at_least=at_least, max_steps=max_steps)

    monkeypatch.setattr(_large_requests, "check_request", counting)
    monkeypatch.setattr(_request, "check_request", counting)
    request = _evaluate(loss="mse_loss", inputs={
        "input": lossd_pb2.Tensor(dtype="float32", shape=[1], raw=b"\0\0\x80?"),
        "target": lossd_pb2.Tensor(dtype="float32", shape=[1], raw=b"\0\0\0\0")})
    data = request.SerializeToString()

    seen: list[object] = []

    async def behavior(req: object, context: object) -> bytes:
        seen.append(req)
        assert isinstance(req, _service.ReceivedRequest)
        return _request.handle_evaluate_bytes(REGISTRY, req.message, None, 10**6, req.payloads, Plans(),
                                              req.caps_checked)

    handler = grpc.unary_unary_rpc_method_handler(behavior, request_deserializer=_service._parse_evaluate_request)
    wrapped = _large_requests.LargeRequests().wrap(handler, "/lossd.v1.LossService/EvaluateLoss")
    context = SimpleNamespace(abort=None)
    for _ in range(2):  # the second call takes the planned path
        reply = asyncio.run(wrapped.unary_unary(wrapped.request_deserializer(data), context))
        assert lossd_pb2.EvaluateLossResponse.FromString(reply).value == 1.0
    assert calls == ["EvaluateLossRequest"] * 2, calls  # once per call, by the interceptor
    calls.clear()
    plans = Plans()
    for _ in range(2):
        _request.handle_evaluate_bytes(REGISTRY, request, None, 10**6, None, plans)
    assert calls == ["EvaluateLossRequest"] * 2, calls  # checked by the evaluation when nobody did before
    with pytest.raises(FieldError, match="loss"):
        _request.handle_evaluate_bytes(REGISTRY, _evaluate(loss=LONG), None, 10**6, None, plans)


class _Sizing:
    """A message that records whether it was asked its ``ByteSize`` (which serializes it, holding the GIL)."""

    def __init__(self, message: Message) -> None:
        self._message, self.sized = message, False

    def ByteSize(self) -> int:  # noqa: N802 - protobuf's name
        self.sized = True
        return self._message.ByteSize()

    def __getattr__(self, name: str) -> object:
        return getattr(self._message, name)


def test_a_request_known_to_be_large_is_walked_without_being_serialized_to_size_it() -> None:
    # ByteSize of a 100 MB message holds the GIL for about 0.12 s; a caller that knows the message is
    # large (its received bytes, its tensors' data) says so, and the caps are checked by the walk alone.
    from lossd.server.rpc._caps import tensor_data_bytes

    tensor = lossd_pb2.Tensor(dtype="float32", shape=[1_000_000], raw=bytes(4_000_000))
    large = _Sizing(_evaluate(loss="mse_loss", inputs={"y_pred": tensor, "y_true": tensor}))
    assert tensor_data_bytes(large) == 8_000_000  # type: ignore[arg-type]
    check_request(large, at_least=tensor_data_bytes(large))  # type: ignore[arg-type]
    assert not large.sized
    small = _Sizing(_evaluate(loss="mse_loss"))
    check_request(small, at_least=tensor_data_bytes(small))  # type: ignore[arg-type]
    assert small.sized  # a small one is still passed from its size
    with pytest.raises(FieldError, match="^loss"):
        check_request(_evaluate(loss=LONG, inputs={"y_pred": tensor}), at_least=4_000_000)


def test_each_part_of_a_request_is_sized_at_most_once_on_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # ByteSize serializes the message it sizes. A part found larger than the shortcut is walked to its
    # leaves, its own parts never sized: else every level of a nested list serializes the same bytes again
    # (a 22 MB request nesting a list 40 deep took 2.5 s of check_request, holding the GIL).
    from lossd.server.rpc import _caps

    sized: list[str] = []
    real = _caps._check  # each message check_request sizes or walks, the request and its parts

    def recording(message: Message, field: str = "", at_least: int = 0, budget: list[int] | None = None) -> None:
        if at_least <= MAX_STRING_BYTES:
            sized.append(field)
        real(message, field, at_least, budget)

    monkeypatch.setattr(_caps, "_check", recording)
    nested: list[object] = [0.5] * 1000
    for _ in range(30):
        nested = [nested]
    deep = _evaluate(loss="mse_loss")
    deep.params.update({"x": nested})
    small = _evaluate(loss="mse_loss", grad_inputs=["y_pred"])
    batch = lossd_pb2.EvaluateLossBatchRequest(items=[small, deep, small])
    for message, at_least in ((deep, 0), (deep, deep.ByteSize()), (batch, batch.ByteSize())):
        sized.clear()
        recording(message, at_least=at_least)
        assert sized, "nothing was sized"
        on_one_path = [(a, b) for a in sized for b in sized if a != b and b.startswith(a)]
        assert on_one_path == [], f"sized again below a sized part: {on_one_path[:3]}"
    assert sized == ["items[0]", "items[1]", "items[2]"]  # a batch's items: one size each, not a walk
    sized.clear()  # a message known to be larger: one part may hold nearly all of it, so none is sized
    recording(batch, at_least=SIZED_PARTS_MAX_BYTES + 1)
    assert sized == []
    batch.items.add(loss="mse_loss", grad_inputs=["g"] * (MAX_ITEMS + 1))
    with pytest.raises(FieldError, match=r"^items\[3\]\.grad_inputs: has 1025 entries"):
        recording(batch, at_least=SIZED_PARTS_MAX_BYTES + 1)
    deep.params.update({"x": [nested, [0.5] * (MAX_ITEMS + 1)]})  # the caps still hold below the sized part
    with pytest.raises(FieldError, match=r"^params\.fields\.x\.list_value\.values\[1\]\.list_value\.values: has 1025"):
        check_request(deep)


def test_the_tensor_data_bound_does_not_loop_over_more_inputs_than_the_caps_allow() -> None:
    # tensor_data_bytes runs before the caps are checked: past the cap it bounds the size from the
    # entry count (2 bytes an entry at least), and the walk refuses the request.
    from lossd.server.rpc._caps import tensor_data_bytes

    many = _evaluate(loss="mse_loss")
    for i in range(MAX_ITEMS + 1):
        many.inputs[f"x{i}"].raw = bytes(4)
    assert tensor_data_bytes(many) == 2 * (MAX_ITEMS + 1)
    del many.inputs["x0"]
    assert tensor_data_bytes(many) == 4 * MAX_ITEMS
    with pytest.raises(FieldError, match="^inputs: has 1025 entries"):
        many.inputs["x0"].raw = bytes(4)
        check_request(many, at_least=tensor_data_bytes(many))


def _nested_params(keys: int, depth: int) -> lossd_pb2.EvaluateLossRequest:
    """``params`` of ``keys`` keys, each a list nested ``depth`` deep around one number: a few bytes a
    message, each walked (about 14,000 steps for 1,000 keys 4 deep, in 35 KB)."""
    from google.protobuf import struct_pb2

    value = struct_pb2.Value(number_value=1.0)
    for _ in range(depth):
        value = struct_pb2.Value(list_value=struct_pb2.ListValue(values=[value]))
    request = _evaluate(loss="mse_loss")
    for i in range(keys):
        request.params.fields[f"k{i}"].CopyFrom(value)
    return request


def test_max_steps_bounds_the_walk_and_a_cap_broken_within_them_is_still_refused() -> None:
    """With ``max_steps`` the walk stops with WalkTooLong instead of taking more (nothing is known of the
    caps then: the caller checks again without a bound, off the event loop); a small valid request takes
    a step or a few, and a cap found broken within the steps is a FieldError as without them."""
    tensor = lossd_pb2.Tensor(dtype="float32", shape=[100], raw=bytes(400))
    small = _evaluate(loss="mse_loss", inputs={"input": tensor, "target": tensor}, grad_inputs=["input"])
    small.params["reduction"] = "sum"
    for at_least in (0, small.ByteSize()):
        check_request(small, at_least=at_least, max_steps=1)  # one size: within the caps
    medium = _evaluate(loss="mse_loss", inputs={"input": lossd_pb2.Tensor(dtype="float32", raw=bytes(40_000))})
    check_request(medium, at_least=medium.ByteSize(), max_steps=8)

    crafted = _nested_params(1000, 4)
    assert MAX_STRING_BYTES < crafted.ByteSize() <= 64 * 1024
    with pytest.raises(WalkTooLong):
        check_request(crafted, at_least=crafted.ByteSize(), max_steps=LOOP_CHECK_STEPS)
    check_request(crafted, at_least=crafted.ByteSize())  # within the caps: only long to walk

    broken = _nested_params(1000, 4)
    broken.loss = LONG  # the request's own field: read before its params
    with pytest.raises(FieldError, match="^loss: "):
        check_request(broken, max_steps=LOOP_CHECK_STEPS)
    beyond = _nested_params(1000, 4)
    beyond.params["k0"] = list(range(MAX_ITEMS + 1))  # where in the map's order: unknown
    with pytest.raises((FieldError, WalkTooLong)):
        check_request(beyond, max_steps=LOOP_CHECK_STEPS)
    with pytest.raises(FieldError, match=r"^params\.fields\.k0\.list_value\.values: has 1025 entries"):
        check_request(beyond)
    # A repeated field's entries are steps too, refused from its length before they are counted.
    with pytest.raises(WalkTooLong):
        check_request(_evaluate(grad_inputs=["gg"] * 400), max_steps=LOOP_CHECK_STEPS)  # 1.6 KB
    with pytest.raises(FieldError, match="grad_inputs: has 1025 entries"):
        check_request(_evaluate(grad_inputs=["g"] * (MAX_ITEMS + 1)), max_steps=LOOP_CHECK_STEPS)


def test_code_that_reads_a_request_before_its_caps_loops_over_no_more_than_they_allow() -> None:
    """payload_bytes runs on the event loop for a stream item before its caps and wire rules are
    checked: a tensor of more dims than MAX_DIMS, or a map of more entries than its cap, counts 0 (the
    request is refused before anything is allocated) without being read. Before, 5,000,000 dims in a
    5 MB message took 0.8 s there, and counted 4 bytes."""
    from lossd._wire import MAX_DIMS
    from lossd.server.rpc._batch import payload_bytes
    from lossd.server.rpc._caps import item_cap

    inputs_fd = lossd_pb2.EvaluateLossRequest.DESCRIPTOR.fields_by_name["inputs"]
    assert item_cap(inputs_fd) == MAX_ITEMS
    assert item_cap(training_pb2.ListJobsRequest.DESCRIPTOR.fields_by_name["states"]) == 7
    tensor = lossd_pb2.Tensor(dtype="float32", shape=[2, 3])
    assert payload_bytes(_evaluate(inputs={"x": tensor, "y": tensor}, grad_output=tensor)) == 72
    assert payload_bytes(_evaluate(inputs={"x": lossd_pb2.Tensor(dtype="float32", shape=[1] * MAX_DIMS)})) == 4
    many_dims = _evaluate(inputs={"x": lossd_pb2.Tensor(dtype="float32", shape=[1] * 5_000_000), "y": tensor})
    start = time.perf_counter()
    assert payload_bytes(many_dims) == 24
    assert time.perf_counter() - start < 0.2
    many_inputs = _evaluate(parameters={"w": tensor})
    for i in range(MAX_ITEMS + 1):
        many_inputs.inputs[str(i)].CopyFrom(tensor)
    assert payload_bytes(many_inputs) == 24  # the parameters counted, the inputs over their cap not read
    del many_inputs.inputs["0"]
    assert payload_bytes(many_inputs) == 24 * (MAX_ITEMS + 1)
