"""The wire rules (lossd._wire) and both codecs (client numpy, server torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossd._wire import DTYPES, FieldError, check_tensor
from lossd.client import decode, encode
from lossd.server.losses import TORCH_DTYPES
from lossd.server.rpc import decode_tensor, encode_tensor
from lossd.v1 import lossd_pb2


def T(**kw):  # noqa: N802 - reads like the message
    return lossd_pb2.Tensor(**kw)


@pytest.mark.parametrize(
    ("msg", "field", "rule"),
    [
        (T(dtype="float", shape=[1], values=[1]), "x.dtype", "must be one of"),
        (T(dtype="", shape=[1], values=[1]), "x.dtype", "empty"),
        (T(dtype="float32", shape=[-1], values=[]), "x.shape", ">= 0"),
        (T(dtype="float32", shape=[2], values=[1.0]), "x.values", "needs 2"),
        (T(dtype="float32", shape=[2], raw=b"\0" * 7), "x.raw", "needs 2 x 4 = 8"),
        (T(dtype="float32", shape=[1], raw=b"\0" * 4, values=[1]), "x", "not both"),
        (T(dtype="float32", shape=[10**6, 10**6, 10**6], raw=b""), "x.shape", "limit"),
        (T(dtype="float32", shape=[2**62, 2**62], raw=b""), "x.shape", "limit"),  # no int64 overflow
    ],
)
def test_check_tensor_names_field_and_rule(msg, field, rule):
    with pytest.raises(FieldError) as err:
        check_tensor(msg, "x")
    assert err.value.field == field
    assert rule in err.value.message


def test_empty_tensor_needs_no_payload():
    assert check_tensor(T(dtype="float32", shape=[0, 3]), "x").numel == 0


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("encoding", ["raw", "values"])
def test_server_roundtrip_every_dtype(dtype, encoding):
    torch_dtype = TORCH_DTYPES[dtype]
    src = torch.tensor([[0, 1, 1], [0, 1, 0]], dtype=torch.float64).to(torch_dtype)
    msg = encode_tensor(src, encoding)
    assert msg.dtype == dtype and list(msg.shape) == [2, 3]
    back, enc = decode_tensor(msg, "x")
    assert enc == encoding
    assert back.dtype == torch_dtype and torch.equal(back, src)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_client_and_server_agree_on_raw_bytes(dtype):
    src = torch.tensor([1.5, -2.0, 0.0, 3.25] if DTYPES[dtype].kind == "float" else [1, 0, 1, 1]).to(TORCH_DTYPES[dtype])
    msg = encode_tensor(src, "raw")
    arr = decode(msg)
    assert arr.tolist() == src.tolist()
    assert torch.equal(decode(msg, as_torch=True), src)
    again = encode(decode(msg, as_torch=True))
    assert again.raw == msg.raw and again.dtype == dtype


def test_client_encode_defaults():
    assert encode([1.0, 2.0]).dtype == "float32"  # torch's default dtype for Python floats
    assert encode([1, 2]).dtype == "int64"
    assert encode(np.zeros(2, np.float64)).dtype == "float64"
    assert encode(3.0).shape == []
    assert encode(np.array([True, False])).dtype == "bool"
    v = encode([[1.0, 2.0]], "values")
    assert list(v.values) == [1.0, 2.0] and not v.raw


def test_client_decodes_zero_dim_as_zero_dim():
    msg = encode_tensor(torch.tensor(0.5), "raw")
    assert decode(msg).shape == ()
    assert decode(msg, as_torch=True).shape == ()


def test_bfloat16_decodes_to_exact_float32_in_numpy():
    src = torch.tensor([1.0, -3.5, 1e30]).to(torch.bfloat16)
    arr = decode(encode_tensor(src, "raw"))
    assert arr.dtype == np.float32 and arr.tolist() == src.float().tolist()


@pytest.mark.parametrize(
    ("msg", "rule"),
    [
        (T(dtype="int64", shape=[2], values=[1.5, 2]), "whole numbers"),
        (T(dtype="int8", shape=[1], values=[300]), "[-128, 127]"),
        (T(dtype="bool", shape=[1], values=[2]), "[0, 1]"),
        (T(dtype="uint8", shape=[1], values=[-1]), "[0, 255]"),
        (T(dtype="int64", shape=[1], values=[float("nan")]), "whole numbers"),
    ],
)
def test_values_for_integer_dtypes_must_fit(msg, rule):
    with pytest.raises(FieldError, match=r"x\.values") as err:
        decode_tensor(msg, "x")
    assert rule in err.value.message


def test_raw_decode_is_zero_copy_and_silent(recwarn):
    msg = encode_tensor(torch.arange(6, dtype=torch.float32), "raw")
    t, _ = decode_tensor(msg, "x")
    assert t.data_ptr() != 0 and t.tolist() == list(range(6))
    assert not [w for w in recwarn if "not writable" in str(w.message)]
