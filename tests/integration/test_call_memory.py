"""What a call leaves behind once it has ended: nothing that only the garbage collector can free.

A reference cycle through a call's frames keeps its request, its decoded tensors and its reply alive
until a full collection, which a busy server runs rarely (one whose startup heap is frozen: after
about a quarter as many objects again have survived into the oldest generation). Two such cycles
were found: grpc.aio keeps an aborted call's ``AbortError``, whose traceback held every frame it
went through (80 refused requests of 80 MB each grew a server to 2 GB), and the observability stage
kept the exception that ended a call on the call's record, which that exception's frames hold.

Each test runs real calls against an in-process server with the collector's ``DEBUG_SAVEALL`` on, then
collects: whatever the collection finds unreachable must hold none of the server's frames, tensors,
parsed requests or large buffers.
"""

from __future__ import annotations

import gc
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from lossd.v1 import lossd_pb2, lossd_pb2_grpc
from support.servers import start_in_process
from support.slow_eval import BIG_REPLIES, calibrated_ctc, ctc_request

EVALUATE = "/lossd.v1.LossService/EvaluateLoss"
TOKEN = "call-memory-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
LARGE = 64 * 1024  # a buffer this big in the garbage is a request's or a reply's


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """A server with a token and JSON access logs (so the observability stage wraps every call)."""
    with start_in_process(token=TOKEN, log_format="json") as served:
        yield served


def _request(n: int, nan_at_end: bool = False, loss: str = "mse_loss", dtype: str = "float32") -> bytes:
    x = np.linspace(0.0, 1.0, n, dtype=np.float32)
    y = x.copy()
    if nan_at_end:
        y[-1] = np.nan
    request = lossd_pb2.EvaluateLossRequest(loss=loss)
    request.inputs["input"].CopyFrom(lossd_pb2.Tensor(dtype=dtype, shape=[n], raw=x.tobytes()))
    request.inputs["target"].CopyFrom(lossd_pb2.Tensor(dtype="float32", shape=[n], raw=y.tobytes()))
    return request.SerializeToString()


def _garbage_after(calls: Callable[[], None]) -> list[Any]:
    """What a full collection finds unreachable after ``calls()``, the calls' ends settled first."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        calls()
        time.sleep(0.3)  # the server finishes a call (done callbacks, logging) just after its status is sent
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def _held(garbage: list[Any]) -> list[str]:
    """The call state among ``garbage``: server frames, tensors, parsed requests, large buffers."""
    found = []
    for o in garbage:
        if isinstance(o, types.FrameType) and str(o.f_globals.get("__name__", "")).startswith("lossd.server"):
            found.append(f"frame {o.f_code.co_name} ({o.f_globals['__name__']})")
        elif isinstance(o, torch.Tensor):
            found.append(f"tensor {tuple(o.shape)}")
        elif isinstance(o, lossd_pb2.EvaluateLossRequest):
            found.append("an EvaluateLossRequest")
        elif isinstance(o, (bytes, bytearray, memoryview)) and len(o) >= LARGE:
            found.append(f"{type(o).__name__} of {len(o)} bytes")
    return found


def _refused(call: Any, request: bytes, metadata: tuple[tuple[str, str], ...] = AUTH) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call(request, metadata=metadata, timeout=60)
    return e.value.code()  # type: ignore[no-any-return]


def test_refused_calls_leave_no_cycle_holding_their_requests(address: str) -> None:
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(address, options=options) as channel:
        call = channel.unary_unary(EVALUATE)
        codes: list[grpc.StatusCode] = []

        def calls() -> None:
            for _ in range(3):
                codes.append(_refused(call, _request(400_000, nan_at_end=True)))  # large: refused after decoding
                codes.append(_refused(call, _request(100, nan_at_end=True)))  # small: on the event loop
                codes.append(_refused(call, _request(100, loss="no_such_loss")))
                codes.append(_refused(call, _request(100, dtype="float")))
                codes.append(_refused(call, _request(400_000), metadata=()))  # no token: refused at admission

        garbage = _garbage_after(calls)
    assert set(codes) == {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                          grpc.StatusCode.UNAUTHENTICATED}
    assert not _held(garbage), _held(garbage)[:20]


def test_refusals_evaluated_in_groups_leave_no_cycle_holding_their_requests(address: str) -> None:
    """Items of an EvaluateLossBatch, and concurrent small calls that the batch window evaluates together:
    a refusal kept as an item's outcome, or set on a waiting call's future, held its frames, which lead
    back to the outcomes and the futures, and so to itself."""
    with grpc.insecure_channel(address) as channel:
        stub = lossd_pb2_grpc.LossServiceStub(channel)
        call = channel.unary_unary(EVALUATE)
        codes: list[str] = []

        def client(k: int) -> None:
            for i in range(20):
                try:
                    call(_request(100, nan_at_end=(i + k) % 2 == 0), metadata=AUTH, timeout=60)
                    codes.append("OK")
                except grpc.RpcError as e:
                    codes.append(e.code().name)

        def calls() -> None:
            items = [lossd_pb2.EvaluateLossRequest.FromString(_request(100, nan_at_end=k % 2 == 0)) for k in range(20)]
            reply = stub.EvaluateLossBatch(lossd_pb2.EvaluateLossBatchRequest(items=items), metadata=AUTH, timeout=60)
            assert [r.HasField("error") for r in reply.results] == [k % 2 == 0 for k in range(20)]
            threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        garbage = _garbage_after(calls)
    assert sorted(set(codes)) == ["INVALID_ARGUMENT", "OK"]
    assert not _held(garbage), _held(garbage)[:20]


def test_cancelled_calls_leave_no_cycle_holding_their_requests(address: str) -> None:
    """Streams cancelled after their first reply, and a unary call cancelled mid-evaluation."""
    def item(k: int, n: int) -> lossd_pb2.EvaluateLossStreamRequest:
        return lossd_pb2.EvaluateLossStreamRequest(
            id=str(k), request=lossd_pb2.EvaluateLossRequest.FromString(_request(n)))

    items = [item(0, 3), *(item(k, 64 * 1024) for k in range(1, 6))]
    with grpc.insecure_channel(address, options=BIG_REPLIES) as channel:
        stub = lossd_pb2_grpc.LossServiceStub(channel)
        batch, _ = calibrated_ctc(_Authorized(stub), 0.5, max_batch=64)
        slow = ctc_request(batch)
        outcome: list[str] = []

        def calls() -> None:
            for _ in range(5):
                replies = stub.EvaluateLossStream(iter(items), metadata=AUTH, timeout=60)
                outcome.append(next(replies).id)
                replies.cancel()
            future = stub.EvaluateLoss.future(slow, metadata=AUTH, timeout=60)
            threading.Timer(0.1, future.cancel).start()
            with pytest.raises(grpc.FutureCancelledError):
                future.result()
            time.sleep(1.0)  # the server's evaluation runs on to its end on the thread pool

        garbage = _garbage_after(calls)
    assert outcome == ["0"] * 5
    assert not _held(garbage), _held(garbage)[:20]


class _Authorized:
    """``stub`` with the token on every EvaluateLoss (what :func:`calibrated_ctc` calls)."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub

    def EvaluateLoss(self, request: Any, timeout: float) -> Any:  # noqa: N802 - the stub's method name
        return self._stub.EvaluateLoss(request, metadata=AUTH, timeout=timeout)
