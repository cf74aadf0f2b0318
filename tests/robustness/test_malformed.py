"""Bytes that are not the request's protobuf message get INVALID_ARGUMENT naming the message type,
on unary and streaming methods alike (gRPC's own answer would be UNKNOWN with a Python exception
class in it); the server keeps serving."""

from __future__ import annotations

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
    ("/lossd.v1.LossService/EvaluateLossStream", "stream_stream", "lossd.v1.EvaluateLossStreamRequest message"),
])
def test_garbage_request_is_invalid_argument(server_address: str, method: str, kind: str, expected: str) -> None:
    with grpc.insecure_channel(server_address) as channel:
        call = getattr(channel, kind)(method)
        with pytest.raises(grpc.RpcError) as info:
            if kind == "unary_unary":
                call(GARBAGE, timeout=10)
            elif kind == "unary_stream":
                list(call(GARBAGE, timeout=10))
            else:
                good = lossd_pb2.EvaluateLossStreamRequest(id="a", request=lossd_pb2.EvaluateLossRequest(loss="mse"))
                list(call(iter([good.SerializeToString(), GARBAGE]), timeout=10))
        error = info.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        details = error.details() or ""
        assert f"the request is not a valid {expected}" in details, details
        assert "<class" not in details and "DecodeError" not in details, details
        listed = channel.unary_unary("/lossd.v1.LossService/ListLosses",
                                     response_deserializer=lossd_pb2.ListLossesResponse.FromString)
        assert listed(lossd_pb2.ListLossesRequest(filter="mse").SerializeToString(), timeout=10).losses
