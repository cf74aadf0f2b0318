"""The codecs' fast paths: no lists, no needless copies, same messages and numbers as before."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from lossd._framing import tensor_message
from lossd._wire import DTYPES, check_tensor
from lossd.client import decode, encode
from lossd.server.losses import TORCH_DTYPES
from lossd.server.rpc import FRAME_FROM_BYTES, decode_tensor, encode_tensor, handle_evaluate_bytes, tensor_parts
from lossd.server.losses import REGISTRY
from lossd.v1 import lossd_pb2

SHAPES = [(), (0,), (3,), (2, 0), (2, 3)]


def _sample(dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    n = int(np.prod(shape))
    base = torch.tensor([1.5, -2.0, 0.0, 3.25, -0.5, 7.0][:n] if DTYPES[dtype].kind == "float" else [1, 0, 1, 1, 0, 1][:n],
                        dtype=torch.float64)
    return base.reshape(shape).to(TORCH_DTYPES[dtype])


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("encoding", ["raw", "values"])
def test_server_roundtrip_0d_empty_bfloat16(dtype, shape, encoding):
    src = _sample(dtype, shape)
    msg = encode_tensor(src, encoding)
    assert list(msg.shape) == list(shape)
    back, enc = decode_tensor(msg, "x")
    assert enc == (encoding if src.numel() else "raw")  # an empty tensor has no payload to tell
    assert back.dtype == src.dtype and back.shape == src.shape
    assert torch.equal(back, src)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("encoding", ["raw", "values"])
def test_client_roundtrip_and_torch_agree(dtype, shape, encoding):
    src = _sample(dtype, shape)
    msg = encode(src, encoding)  # torch in, as an SDK user sends it
    assert msg == encode_tensor(src, encoding)  # client and server encode alike
    as_np = decode(msg)
    as_torch = decode(msg, as_torch=True)
    assert as_np.shape == tuple(shape) and tuple(as_torch.shape) == tuple(shape)
    assert as_torch.dtype == src.dtype and torch.equal(as_torch, src)
    assert as_np.tolist() == src.to(torch.float32 if dtype == "bfloat16" else src.dtype).tolist()


@pytest.mark.parametrize("encoding", ["raw", "values"])
def test_values_fast_path_equals_tolist_path(encoding):
    t = torch.tensor([[0.1, -2.5, float("inf")], [float("nan"), -0.0, 1e-30]], dtype=torch.float32)
    listed = lossd_pb2.Tensor(dtype="float32", shape=[2, 3], values=t.to(torch.float64).reshape(-1).tolist())
    if encoding == "values":
        assert encode_tensor(t, "values").SerializeToString() == listed.SerializeToString()
        assert encode(t, "values").SerializeToString() == listed.SerializeToString()
        assert encode(t.numpy(), "values").SerializeToString() == listed.SerializeToString()
    # the framed pieces (what large replies are joined from) parse to the same message
    assert tensor_message(tensor_parts(t, encoding)) == encode_tensor(t, encoding)


def test_numpy_results_are_read_only_views_and_torch_results_writable():
    msg = encode(np.arange(4, dtype=np.float32))
    arr = decode(msg)
    assert not arr.flags.writeable
    with pytest.raises(ValueError):
        arr[0] = 1.0
    assert np.array(arr).flags.writeable  # a writable copy when wanted
    values = decode(encode(np.arange(4, dtype=np.float32), "values"))
    assert not values.flags.writeable  # every numpy result behaves alike
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable" warning from torch
        t = decode(msg, as_torch=True)
    t[0] = 5.0
    assert decode(msg)[0] == 0.0


def test_check_tensor_reads_raw_once_or_takes_it_from_the_caller():
    msg = lossd_pb2.Tensor(dtype="float32", shape=[2], raw=b"\0" * 8)
    layout = check_tensor(msg, "x")
    assert bytes(layout.raw) == b"\0" * 8
    outside = memoryview(b"\0" * 8)
    light = lossd_pb2.Tensor(dtype="float32", shape=[2])
    assert check_tensor(light, "x", raw=outside).raw is outside


@pytest.mark.parametrize("n", [16, 1 << 15])  # below and above the copy threshold
def test_server_decode_wraps_large_payloads_without_copy_or_warning(n):
    payload = np.arange(n, dtype=np.float32).tobytes()
    view = memoryview(payload)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t, enc = decode_tensor(lossd_pb2.Tensor(dtype="float32", shape=[n]), "x", raw=view)
    assert enc == "raw" and t.tolist() == list(range(n))
    shares = t.data_ptr() == np.frombuffer(payload, np.uint8).ctypes.data
    assert shares == (len(payload) >= 1 << 16)


@pytest.mark.parametrize("n", [10, FRAME_FROM_BYTES])  # upb-built and framed replies
@pytest.mark.parametrize("encoding", [lossd_pb2.TENSOR_ENCODING_RAW, lossd_pb2.TENSOR_ENCODING_VALUES])
def test_small_and_large_replies_carry_the_same_fields(n, encoding):
    x = torch.linspace(-1, 1, n)
    request = lossd_pb2.EvaluateLossRequest(
        loss="mse", inputs={"y_pred": encode_tensor(x, "raw"), "y_true": encode_tensor(x.flip(0), "raw")},
        output_encoding=encoding)
    reply = lossd_pb2.EvaluateLossResponse.FromString(handle_evaluate_bytes(REGISTRY, request))
    enc = "values" if encoding == lossd_pb2.TENSOR_ENCODING_VALUES else "raw"
    grad = 2 * (x - x.flip(0)) / n
    assert reply.loss_name == "mse_loss" and reply.HasField("value") and reply.HasField("timing")
    assert reply.loss == encode_tensor(torch.nn.functional.mse_loss(x, x.flip(0)), enc)
    assert torch.equal(decode_tensor(reply.grads["y_pred"], "g")[0], grad)
    assert sorted(reply.grads) == ["y_pred", "y_true"]



@pytest.mark.parametrize("encoding", ["raw", "values"])
def test_a_python_float_beyond_float32_becomes_inf_silently_as_in_torch(encoding: str) -> None:
    """numpy's "overflow encountered in cast" reached the caller's stderr; torch.tensor([1e39]) says nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sent = decode(encode([1.0, 1e39, -1e39], encoding))
        expected = torch.tensor([1.0, 1e39, -1e39])
    assert sent.dtype == np.float32 and np.array_equal(sent, expected.numpy())
