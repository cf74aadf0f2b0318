"""A 300 MB EvaluateLoss request against the default 256 MiB message limit: RESOURCE_EXHAUSTED,
the next call succeeds, and the server's resident memory grows by less than 10 MB."""

from __future__ import annotations

import grpc
import pytest

from lossd.v1 import lossd_pb2
from support.procstat import rss_mb
from support.servers import ServedProcess

pytestmark = pytest.mark.slow

SIZE = 300 * 1000 * 1000  # bytes of tensor payload: over the server's 256 MiB limit
RSS_GROWTH_MB = 10


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def big_request() -> bytes:
    """``EvaluateLossRequest{loss: "mse", inputs: {y_pred, y_true: float32 [75e6] raw}}`` = 300 MB
    of payload, framed by hand (building it as a message would hold it three times over)."""
    n = SIZE // 8

    def tensor(fill: bytes) -> bytes:
        header = _field(1, b"float32") + _field(2, _varint(n))  # dtype, packed shape [n]
        return header + _varint(3 << 3 | 2) + _varint(4 * n) + fill * (4 * n)

    def entry(name: bytes, fill: bytes) -> bytes:
        return _field(2, _field(1, name) + _field(2, tensor(fill)))  # map<string, Tensor> inputs

    return _field(1, b"mse") + entry(b"y_pred", b"\x00") + entry(b"y_true", b"\x00")


def _small(channel: grpc.Channel) -> lossd_pb2.EvaluateLossResponse:
    request = lossd_pb2.EvaluateLossRequest(loss="mse")
    request.inputs["y_pred"].CopyFrom(lossd_pb2.Tensor(dtype="float32", shape=[2], values=[0.5, 2.0]))
    request.inputs["y_true"].CopyFrom(lossd_pb2.Tensor(dtype="float32", shape=[2], values=[1.0, 1.0]))
    call = channel.unary_unary("/lossd.v1.LossService/EvaluateLoss",
                               response_deserializer=lossd_pb2.EvaluateLossResponse.FromString)
    return call(request.SerializeToString(), timeout=30)  # type: ignore[no-any-return]


def test_300_mb_message_is_refused_without_growing_the_server(robust_server: ServedProcess,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = big_request()
    assert len(data) > 300_000_000
    pid = robust_server.proc.pid
    # The client raises its own send limit: the server's is the one under test.
    options = [("grpc.max_send_message_length", len(data) + 1024)]
    with grpc.insecure_channel(robust_server.address, options=options) as channel:
        for _ in range(3):
            assert _small(channel).value == 0.625  # warm: the path a small call takes is paged in
        before = rss_mb(pid)
        try:
            channel.unary_unary("/lossd.v1.LossService/EvaluateLoss")(data, timeout=120)
        except grpc.RpcError as e:
            error = e
        else:
            raise AssertionError("a 300 MB request was accepted")
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert "larger than max" in (error.details() or ""), error.details()
        assert _small(channel).value == 0.625  # the next call succeeds
        after = rss_mb(pid)
    with capsys.disabled():
        print(f"\n{len(data) / 1e6:.0f} MB request: {error.code().name}; server RSS {before:.1f} -> {after:.1f} MiB")
    assert robust_server.proc.poll() is None
    assert after - before < RSS_GROWTH_MB, f"server RSS {before:.1f} -> {after:.1f} MiB"
