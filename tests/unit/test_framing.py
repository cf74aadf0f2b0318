"""lossd._framing: hand-framed Tensor fields equal upb's messages; split_payloads equals FromString."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from lossd._framing import (
    field_number,
    join,
    length_delimited,
    map_entry,
    split_payloads,
    tensor_body,
    tensor_message,
    varint,
)
from lossd._wire import DTYPES
from lossd.v1 import lossd_pb2

Request = lossd_pb2.EvaluateLossRequest
Response = lossd_pb2.EvaluateLossResponse


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16383, 16384, 2**31, 2**63 - 1])
def test_varint_matches_protobuf(n):
    packed = lossd_pb2.Tensor(shape=[n]).SerializeToString()  # tag, length, then the one varint
    assert packed.endswith(varint(n)) and len(packed) == 2 + len(varint(n))


@pytest.mark.parametrize("dtype", [d for d, info in DTYPES.items() if info.numpy])
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 0, 4), (2, 3)])
def test_raw_body_equals_upb(dtype, shape):
    arr = (np.arange(int(np.prod(shape))) % 2).astype(DTYPES[dtype].numpy).reshape(shape)
    framed = tensor_message(tensor_body(dtype, shape, arr, "raw"))
    assert framed == lossd_pb2.Tensor(dtype=dtype, shape=list(shape), raw=arr.tobytes())


@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3)])
def test_values_fast_path_equals_tolist_path(shape):
    values = np.array([0.5, -2.0, np.inf, -0.0, 1e300, np.nan][: int(np.prod(shape))] or [0.0])
    values = values[: int(np.prod(shape))].reshape(shape)
    framed = tensor_message(tensor_body("float32", shape, values.astype("<f8"), "values"))
    listed = lossd_pb2.Tensor(dtype="float32", shape=list(shape), values=values.ravel().tolist())
    assert framed.SerializeToString() == listed.SerializeToString()  # bitwise, NaN included


def test_framed_reply_parses_like_a_built_one():
    grad = np.array([0.5, -1.0], "<f4")
    parts = [Response(loss_name="mse_loss", value=0.25).SerializeToString()]
    parts += length_delimited(field_number(Response, "loss"), tensor_body("float32", (), np.float32(0.25), "raw"))
    parts += map_entry(field_number(Response, "grads"), "y_pred", tensor_body("float32", (2,), grad, "raw"))
    built = Response(
        loss_name="mse_loss", value=0.25,
        loss=lossd_pb2.Tensor(dtype="float32", raw=np.float32(0.25).tobytes()),
        grads={"y_pred": lossd_pb2.Tensor(dtype="float32", shape=[2], raw=grad.tobytes())},
    )
    assert Response.FromString(join(parts)) == built


def test_non_contiguous_payload_is_refused():
    with pytest.raises(ValueError, match="contiguous"):
        tensor_body("float32", (2,), np.zeros((2, 2), np.float32)[:, 0], "raw")


def _tensor(n: int, fill: int = 1) -> lossd_pb2.Tensor:
    return lossd_pb2.Tensor(dtype="float32", shape=[n], raw=np.full(n, fill, np.float32).tobytes())


def _stripped(message: Request, paths: list[str]) -> Request:
    out = Request()
    out.CopyFrom(message)
    for path in paths:
        field, _, key = path.partition(".")
        target = getattr(out, field)[key] if key else getattr(out, field)
        target.raw = b""
    return out


def _check_split(data: bytes) -> dict[str, memoryview]:
    """split_payloads == FromString, with each split payload equal to the parsed raw."""
    light, payloads = split_payloads(data, Request, min_bytes=0)
    full = Request.FromString(data)
    for path, view in payloads.items():
        field, _, key = path.partition(".")
        tensor = getattr(full, field)[key] if key else getattr(full, field)
        assert bytes(view) == tensor.raw, path
    assert light == _stripped(full, list(payloads))
    return payloads


def test_split_request_with_inputs_parameters_and_grad_output():
    request = Request(loss="mse", inputs={"y_pred": _tensor(5), "y_true": _tensor(5, 2)},
                      parameters={"fc.weight": _tensor(3), "v": lossd_pb2.Tensor(dtype="float32", shape=[1], values=[2])},
                      grad_output=_tensor(5, 3), grad_inputs=["y_pred"])
    request.params.update({"reduction": "none"})
    payloads = _check_split(request.SerializeToString())
    assert sorted(payloads) == ["grad_output", "inputs.y_pred", "inputs.y_true", "parameters.fc.weight", "parameters.v"]
    assert len(payloads["parameters.v"]) == 0  # values-encoded: nothing to split


def test_split_follows_protobuf_rules_for_repeats():
    first = Request(inputs={"x": _tensor(2, 1), "y": _tensor(2, 5)}, grad_output=_tensor(2, 7)).SerializeToString()
    # a later entry for "x" replaces it (no raw now); grad_output merges: shape changes, raw stays
    second = Request(inputs={"x": lossd_pb2.Tensor(dtype="float32", shape=[1], values=[1])},
                     grad_output=lossd_pb2.Tensor(shape=[2])).SerializeToString()
    payloads = _check_split(first + second)
    assert len(payloads["inputs.x"]) == 0
    assert np.frombuffer(payloads["grad_output"], "<f4").tolist() == [7.0, 7.0]
    # a raw field repeated inside one tensor: the last wins
    tensor = _tensor(1, 1).SerializeToString() + lossd_pb2.Tensor(raw=np.float32(9).tobytes()).SerializeToString()
    data = join(length_delimited(field_number(Request, "grad_output"), [tensor]))
    assert np.frombuffer(_check_split(data)["grad_output"], "<f4").tolist() == [9.0]


def test_split_keeps_unknown_fields_and_falls_back_on_odd_input():
    unknown = join(length_delimited(99, [b"abc"]))
    data = Request(loss="mse", inputs={"x": _tensor(3)}).SerializeToString() + unknown
    light, payloads = split_payloads(data, Request, min_bytes=0)
    assert "inputs.x" in payloads and light.SerializeToString().endswith(unknown)
    # a map entry with a stray field: upb parses the whole message, nothing is split
    entry = join([*length_delimited(1, [b"x"]), *length_delimited(2, [_tensor(1).SerializeToString()]), b"\x18\x01"])
    odd = join(length_delimited(field_number(Request, "inputs"), [entry]))
    message, payloads = split_payloads(odd, Request, min_bytes=0)
    assert payloads == {} and message == Request.FromString(odd)


@pytest.mark.parametrize("data", [b"\x12\x05abc", b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x0b"])
def test_split_of_malformed_bytes_raises_like_upb(data):
    with pytest.raises(DecodeError):
        Request.FromString(data)
    with pytest.raises(DecodeError):
        split_payloads(data, Request, min_bytes=0)


def test_split_of_invalid_utf8_key_raises_like_upb():
    entry = join([*length_delimited(1, [b"\xff"]), *length_delimited(2, [_tensor(1).SerializeToString()])])
    data = join(length_delimited(field_number(Request, "inputs"), [entry]))
    with pytest.raises(DecodeError):
        split_payloads(data, Request, min_bytes=0)


def _entry(key: bytes, tag: bytes = b"\x0a") -> bytes:
    return join([tag, *_len_and(key), *length_delimited(2, [_tensor(1).SerializeToString()])])


def _len_and(data: bytes) -> list[bytes]:
    return [varint(len(data)), data]


INPUTS = field_number(Request, "inputs")
GOOD_ENTRY = _entry(b"x")


@pytest.mark.parametrize("data", [
    # the tag of `inputs` as a 6-byte varint: upb allows a tag 5 bytes at most
    bytes([0x80 | (INPUTS << 3 | 2), 0x80, 0x80, 0x80, 0x80, 0x00]) + join(_len_and(GOOD_ENTRY)),
    # the entry's length as a 6-byte varint
    join([varint(INPUTS << 3 | 2), bytes([0x80 | len(GOOD_ENTRY), 0x80, 0x80, 0x80, 0x80, 0x00]), GOOD_ENTRY]),
    # a raw payload's length as an 8-byte varint, inside the tensor
    join(length_delimited(INPUTS, [join([*length_delimited(1, [b"x"]), *length_delimited(2, [
        b"\x1a" + bytes([0x84, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]) + b"\0\0\0\0"])])])),
    # a map entry whose first key is not UTF-8 and whose last key is: upb refuses the first
    join(length_delimited(INPUTS, [join([*length_delimited(1, [b"\xff"]), GOOD_ENTRY])])),
])
def test_split_refuses_what_upb_refuses(data):
    """Bytes that upb refuses are refused, never rewritten into a message upb would accept (the split wrote
    over-long varints back in their short form and kept only a map entry's last key, so a large request that
    upb calls corrupt was evaluated)."""
    with pytest.raises(DecodeError):
        Request.FromString(data)
    with pytest.raises(DecodeError):
        split_payloads(data, Request, min_bytes=0)


def test_split_takes_the_varints_upb_takes():
    """A non-minimal tag or length of 5 bytes at most is valid protobuf: split as upb parses it."""
    padded_tag = bytes([0x80 | (INPUTS << 3 | 2), 0x80, 0x80, 0x80, 0x00])
    padded_len = bytes([0x80 | len(GOOD_ENTRY), 0x80, 0x80, 0x80, 0x00])
    payloads = _check_split(padded_tag + padded_len + GOOD_ENTRY)
    assert list(payloads) == ["inputs.x"] and len(payloads["inputs.x"]) == 4


def test_small_messages_are_not_split():
    data = Request(inputs={"x": _tensor(4)}).SerializeToString()
    message, payloads = split_payloads(data, Request)
    assert payloads == {} and message.inputs["x"].raw == np.ones(4, np.float32).tobytes()


def test_split_reply_too():
    data = Response(loss=_tensor(1), grads={"y_pred": _tensor(3)}, parameter_grads={"w": _tensor(2)}).SerializeToString()
    light, payloads = split_payloads(data, Response, min_bytes=0)
    assert sorted(payloads) == ["grads.y_pred", "loss", "parameter_grads.w"]
    assert light.grads["y_pred"].raw == b"" and list(light.grads["y_pred"].shape) == [3]
