"""Bytes that are not the request's protobuf message get INVALID_ARGUMENT naming the message type,
on unary and streaming methods alike (gRPC's own answer would be UNKNOWN with a Python exception
class in it); the server keeps serving."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from lossd.v1 import lossd_pb2

GARBAGE = b"\xff\xff\xff\x07"


@pytest.mark.parametrize(("method", "kind", "expected"), [
    ("/lossd.v1.LossService/EvaluateLoss", "unary_unary", "lossd.v1.EvaluateLossRequest message"),
    ("/lossd.v1.LossService/ListLosses", "unary_unary", "lossd.v1.ListLossesRequest message"),
    ("/lossd.v1.LossService/EvaluateLossBatch", "unary_unary", "lossd.v1.EvaluateLossBatchRequest message"),
    ("/lossd.v1.TrainingService/GetJob", "unary_unary", "lossd.v1.GetJobRequest message"),
    ("/lossd.v1.TrainingService/TrainJob", "unary_stream", "lossd.v1.TrainJobRequest message"),
])
def test_garbage_request_is_invalid_argument(server_address: str, method: str, kind: str, expected: str) -> None:
    with grpc.insecure_channel(server_address) as channel:
        call = getattr(channel, kind)(method)
        with pytest.raises(grpc.RpcError) as info:
            if kind == "unary_unary":
                call(GARBAGE, timeout=10)
            else:
                list(call(GARBAGE, timeout=10))
        error = info.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        details = error.details() or ""
        assert f"the request is not a valid {expected}" in details, details
        assert "<class" not in details and "DecodeError" not in details, details
        listed = channel.unary_unary("/lossd.v1.LossService/ListLosses",
                                     response_deserializer=lossd_pb2.ListLossesResponse.FromString)
        assert listed(lossd_pb2.ListLossesRequest(filter="mse").SerializeToString(), timeout=10).losses


@pytest.mark.parametrize("bad", [GARBAGE, b"\x0a\x02\xff\xfe", b"\x12\x05\x0a\x03ms"],
                         ids=["garbage", "id-not-utf8", "truncated"])
def test_a_malformed_stream_item_gets_its_own_error_and_the_stream_goes_on(server_address: str, bad: bytes) -> None:
    """The contract (lossd.proto): on EvaluateLossStream a bad request yields a reply carrying an error and the
    stream stays open. An item whose bytes did not parse ended the whole stream INVALID_ARGUMENT, and the items
    after it were never evaluated (an audit, 2026-12-06). It gets an error reply with no id (none could be
    read); the others are answered as ever."""
    x = lossd_pb2.Tensor(dtype="float32", shape=[1], values=[3.0])
    y = lossd_pb2.Tensor(dtype="float32", shape=[1], values=[1.0])
    good = [lossd_pb2.EvaluateLossStreamRequest(id=i, request=lossd_pb2.EvaluateLossRequest(
        loss="mse", inputs={"input": x, "target": y})).SerializeToString() for i in ("a", "b")]
    with grpc.insecure_channel(server_address) as channel:
        call = channel.stream_stream("/lossd.v1.LossService/EvaluateLossStream",
                                     response_deserializer=lossd_pb2.EvaluateLossStreamResponse.FromString)
        replies = list(call(iter([good[0], bad, good[1]]), timeout=30))
    assert [r.id for r in replies] == ["a", "", "b"], replies
    assert replies[0].response.value == replies[2].response.value == 4.0
    error = replies[1].error
    assert error.code == "INVALID_ARGUMENT", error
    assert error.message.startswith("the request is not a valid lossd.v1.EvaluateLossStreamRequest message"), error
    assert "<class" not in error.message and "DecodeError" not in error.message, error


def test_malformed_stream_items_leave_the_streams_byte_window_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each error reply of a malformed item was released by the sender without having been charged: the window
    grew by its size (20,000 one-byte items: 0.9 of a 4 MiB window of credit, for unread replies to fill; the
    review of 2026-12-06). Every byte charged is released: the budget ends where it began."""
    from lossd.server.rpc import _service
    from support.servers import on_this_loop

    budgets: list[Any] = []
    init = _service._ByteBudget.__init__

    def recording(self: Any, limit: int) -> None:
        budgets.append(self)
        init(self, limit)

    monkeypatch.setattr(_service._ByteBudget, "__init__", recording)
    x = lossd_pb2.Tensor(dtype="float32", shape=[1], values=[3.0])
    good = lossd_pb2.EvaluateLossStreamRequest(id="a", request=lossd_pb2.EvaluateLossRequest(
        loss="mse", inputs={"input": x, "target": x})).SerializeToString()

    async def calls(client: Any) -> list[Any]:
        call = client.channel.stream_stream("/lossd.v1.LossService/EvaluateLossStream",
                                            response_deserializer=lossd_pb2.EvaluateLossStreamResponse.FromString)
        return [r async for r in call(iter([GARBAGE] * 50 + [good]), timeout=30)]

    replies = on_this_loop(calls)
    assert len(replies) == 51 and replies[-1].id == "a"
    assert len(budgets) == 1 and budgets[0]._used == 0, budgets[0]._used
