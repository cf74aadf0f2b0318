"""The method table (lossd._methods): every RPC of the contract once, and what reads it agrees.

The table is checked against the descriptors, against the paths the generated
servicer registers (``*_pb2_grpc.py``: what the server really serves), and
against what its readers do: the SDK's calls, the retry policy in the service
config, and the default deadline.
"""

from __future__ import annotations

import re
from pathlib import Path

from google.protobuf import descriptor_pb2

from lossd import _methods
from lossd._methods import BY_PATH, HEALTH_CHECK, METHODS
from lossd.client import _calls, _training
from lossd.client._config import RETRIED_METHODS, ClientConfig
from lossd.v1 import lossd_pb2, training_pb2

STUBS = Path(_methods.__file__).parent / "v1"


def test_table_covers_every_method_of_the_descriptors() -> None:
    described = {
        (service.full_name, method.name, method.client_streaming, method.server_streaming)
        for module in (lossd_pb2, training_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    table = {(m.service, m.name, m.kind.startswith("stream_"), m.kind.endswith("_stream")) for m in METHODS}
    assert table == described and len(METHODS) == len(described) == 10
    assert set(BY_PATH) == {m.path for m in METHODS} | {HEALTH_CHECK.path}


def test_table_paths_are_the_ones_the_generated_servicers_register() -> None:
    registered = set()
    for stub in ("lossd_pb2_grpc.py", "training_pb2_grpc.py"):
        registered |= set(re.findall(r"'(/lossd\.v1\.\w+/\w+)'", (STUBS / stub).read_text()))
    assert registered == {m.path for m in METHODS}


def test_idempotency_is_the_contracts_option() -> None:
    for m in METHODS:
        service = lossd_pb2.DESCRIPTOR.pool.FindServiceByName(m.service)
        level = service.methods_by_name[m.name].GetOptions().idempotency_level
        assert m.idempotent == (level != descriptor_pb2.MethodOptions.IDEMPOTENCY_UNKNOWN), m.path
    # What the SDK retried before the table existed: the table must keep it (behaviour unchanged).
    assert {m.name for m in METHODS if m.idempotent} == {"ListLosses", "EvaluateLoss", "EvaluateLossStream",
                                                         "EvaluateLossBatch", "GetJob", "ListJobs"}


def test_retry_policy_is_the_idempotent_methods_with_one_request() -> None:
    (method_config,) = ClientConfig.from_env(environ={}).service_config()["methodConfig"]
    names = {(n["service"], n["method"]) for n in method_config["name"]}
    idempotent = {(m.service, m.name) for m in BY_PATH.values() if m.idempotent}
    streams_in = {(m.service, m.name) for m in BY_PATH.values() if m.kind.startswith("stream_")}
    assert names == set(RETRIED_METHODS) == idempotent - streams_in
    assert names == {
        ("lossd.v1.LossService", "ListLosses"), ("lossd.v1.LossService", "EvaluateLoss"),
        ("lossd.v1.LossService", "EvaluateLossBatch"), ("lossd.v1.TrainingService", "GetJob"), ("lossd.v1.TrainingService", "ListJobs"),
        ("grpc.health.v1.Health", "Check"),
    }


def test_sdk_calls_read_the_table() -> None:
    calls = [_calls.LIST_LOSSES, _calls.EVALUATE_LOSS, _calls.EVALUATE_LOSS_STREAM, _calls.EVALUATE_LOSS_BATCH,
             _training.TRAIN_JOB, _training.WATCH_JOB, _training.GET_JOB, _training.LIST_JOBS, _training.CANCEL_JOB,
             _training.DELETE_JOB]
    assert [c.rpc for c in calls] == list(METHODS)
    for call in calls:
        service = lossd_pb2.DESCRIPTOR.pool.FindServiceByName(call.rpc.service)
        reply_type = service.methods_by_name[call.rpc.name].output_type
        reply = call.deserialize(b"")
        if call.deserialize is bytes:  # EvaluateLoss: the SDK reads the reply's bytes (EvaluateResult.from_bytes)
            assert call is _calls.EVALUATE_LOSS
            reply = lossd_pb2.EvaluateLossResponse.FromString(reply)
        assert reply.DESCRIPTOR is reply_type, call.path
    assert _calls.HEALTH_CHECK.rpc is HEALTH_CHECK and _calls.HEALTH_CHECK.deserialize(b"") == b""
    # Only the long training streams go without the client's default deadline.
    assert {c.rpc.name for c in calls if not c.default_deadline} == {"TrainJob", "WatchJob"}
