"""Generated (hypothesis) EvaluateLoss, EvaluateLossStream and TrainJob requests against a real
``python -m lossd.server`` process: every reply is OK or a clean refusal, the server never dies
and its memory stays bounded.

A clean refusal is a status in :data:`CLEAN` (``UNIMPLEMENTED`` only for a dtype that torch
cannot compute on this server: a documented answer, docs/security.md) with a message that
shows no internals (no traceback, no source path, no Python exception class). ``INTERNAL``,
``UNKNOWN`` or a dead server fail the test with the request that did it (hypothesis shrinks it).

Requests are drawn from the server's own ListLosses (loss names, aliases, input and parameter
names, choices) and from garbage: random names, dtypes, shapes (negative, huge, many dims),
raw payloads of the wrong length, NaN/Inf values, random params, mutated and random bytes.

Size: ``LOSSD_FUZZ_EXAMPLES`` examples per test (default 40: about 200 requests in all, a few
seconds); ``make fuzz`` runs 2,500 per test, over 10,000 requests. Runs are deterministic
(``derandomize``): the same requests every time, no example database, no deadline.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossd._wire import DTYPES
from lossd.v1 import lossd_pb2, lossd_pb2_grpc, training_pb2, training_pb2_grpc
from support.procstat import rss_mb
from support.servers import ServedProcess
from support.training import request as train_request
from support.training import small_spec

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("LOSSD_FUZZ_EXAMPLES", "40"))

settings.register_profile(
    "lossd-fuzz", max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
FUZZ = settings.get_profile("lossd-fuzz")

#: Statuses a generated request may end with (UNIMPLEMENTED: see UNSUPPORTED_DTYPE).
CLEAN = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED,
         grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED}
#: The only UNIMPLEMENTED answers: a float dtype the loss lacks, or torch's "not implemented for".
UNSUPPORTED_DTYPE = re.compile(r"does not support \w+ on this server|torch on this server cannot do this")
#: What a clean message must not show.
INTERNALS = re.compile(r"Traceback|File \"|\.py\b|site-packages|/work/|/tmp/|<class '|0x[0-9a-f]{6,}")
#: Most the server's resident memory may grow over a run, after its warm-up (MiB).
RSS_GROWTH_MB = 32

MESSAGE_LIMIT = 8 * 1024 * 1024  # the client's, both ways: requests stay far below the server's


class Catalog(list):  # type: ignore[type-arg]
    """ListLosses' answer; short in hypothesis' reprs of the strategies that take it."""

    def __repr__(self) -> str:
        return f"<{len(self)} losses>"


class Server:
    """The served process, channels to it, what ListLosses says, and the oracle's record."""

    def __init__(self, served: ServedProcess) -> None:
        self.served = served
        options = [("grpc.max_send_message_length", MESSAGE_LIMIT), ("grpc.max_receive_message_length", MESSAGE_LIMIT)]
        self.channel = grpc.insecure_channel(served.address, options=options)
        self.raw_evaluate = self.channel.unary_unary("/lossd.v1.LossService/EvaluateLoss")
        self.raw_train = self.channel.unary_stream("/lossd.v1.TrainingService/TrainJob")
        self.stream = lossd_pb2_grpc.LossServiceStub(self.channel).EvaluateLossStream
        self.training = training_pb2_grpc.TrainingServiceStub(self.channel)
        self.losses = Catalog(lossd_pb2_grpc.LossServiceStub(self.channel).ListLosses(
            lossd_pb2.ListLossesRequest(), timeout=30).losses)
        self.outcomes: dict[str, int] = {}
        self.rss_start: float | None = None

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def alive(self) -> None:
        assert self.served.proc.poll() is None, "the server died:\n" + "".join(self.served.log[-40:])


@pytest.fixture(scope="module")
def server(robust_server: ServedProcess) -> Iterator[Server]:
    """The shared server (tests/robustness/conftest.py: small training limits, one job at a time)."""
    s = Server(robust_server)
    yield s
    s.alive()
    s.channel.close()


def _clean_refusal(error: grpc.RpcError, what: str) -> str:
    code, details = error.code(), error.details() or ""
    assert code in CLEAN, f"{what}: {code} {details!r}"
    assert details.strip(), f"{what}: {code} without a message"
    assert not INTERNALS.search(details), f"{what}: the message shows internals: {details!r}"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        assert UNSUPPORTED_DTYPE.search(details), f"{what}: UNIMPLEMENTED for something else: {details!r}"
    return str(code.name)


# -- strategies ------------------------------------------------------------------------------------

NAMES = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
DTYPE_NAMES = st.one_of(st.sampled_from(sorted(DTYPES)), st.sampled_from(["", "float", "int", "complex64", "F32"]),
                        NAMES)
DIM = st.one_of(st.integers(0, 5), st.integers(-3, -1), st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1]))
SHAPES = st.one_of(st.lists(st.integers(0, 6), max_size=4), st.lists(DIM, max_size=5),
                   st.lists(st.integers(1, 2), min_size=60, max_size=70))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.integers(-(2**70), 2**70).map(float),
                   st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, 1e-30, 1e300]))


@st.composite
def tensors(draw: st.DrawFn, shape: list[int] | None = None, dtype: str | None = None) -> lossd_pb2.Tensor:
    """A Tensor message: often well-formed (random contents, NaN and Inf included), often not."""
    dtype = dtype if dtype is not None and draw(st.booleans()) else draw(DTYPE_NAMES)
    shape = shape if shape is not None and draw(st.integers(0, 3)) else draw(SHAPES)
    t = lossd_pb2.Tensor(dtype=dtype, shape=shape)
    n = math.prod(shape) if shape and all(0 <= d <= 64 for d in shape) else None
    info = DTYPES.get(dtype)
    style = draw(st.sampled_from(["raw", "values", "raw-garbage", "values-garbage", "empty"]))
    if n is not None and n > 200_000:
        n = None  # claimed, never sent: the server must refuse it before allocating
    if style == "raw" and n is not None and info is not None and info.numpy is not None:
        with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float16's range: Inf, on purpose
            t.raw = _contents(draw, n, info.kind).astype(info.numpy).tobytes()
    elif style == "values" and n is not None:
        t.values.extend(_contents(draw, n, "float").tolist())
    elif style == "raw-garbage":
        t.raw = draw(st.binary(max_size=64))
    elif style == "values-garbage":
        t.values.extend(draw(st.lists(FLOATS, max_size=16)))
    return t


def _contents(draw: st.DrawFn, n: int, kind: str) -> np.ndarray:
    """``n`` numbers: drawn one by one (NaN, Inf, huge) when few, else random from a drawn seed."""
    if kind != "float":
        if n <= 32:
            return np.array(draw(st.lists(st.integers(-3, 300), min_size=n, max_size=n)), dtype=np.int64)
        return np.random.default_rng(draw(st.integers(0, 2**32))).integers(-3, 300, n)
    if n <= 32:
        return np.array(draw(st.lists(FLOATS, min_size=n, max_size=n)), dtype=np.float64)
    values = np.random.default_rng(draw(st.integers(0, 2**32))).standard_normal(n)
    if n and draw(st.booleans()):
        values[draw(st.integers(0, n - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return values


PARAM_VALUES = st.one_of(
    st.none(), st.booleans(), FLOATS, st.integers(-5, 10), NAMES,
    st.lists(st.one_of(st.integers(-2, 8), FLOATS), max_size=4),
    st.dictionaries(NAMES, st.integers(), max_size=2),
)


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    for k, v in values.items():
        if isinstance(v, float) and not math.isfinite(v):
            s.fields[k].number_value = v  # Struct.update() would refuse; the wire carries it
        else:
            s.update({k: v})
    return s


@st.composite
def params_for(draw: st.DrawFn, info: lossd_pb2.LossInfo | None) -> struct_pb2.Struct:
    chosen: dict[str, Any] = {}
    if info is not None:
        for k in draw(st.lists(st.integers(0, len(info.params) - 1), max_size=3) if info.params else st.just([])):
            p = info.params[k]
            sensible = st.sampled_from(list(p.choices)) if p.choices else PARAM_VALUES
            chosen[p.name] = draw(st.one_of(sensible, PARAM_VALUES))
    chosen.update(draw(st.dictionaries(st.sampled_from(["reduction", "weight", "size_average", "margin", "p"]) | NAMES,
                                       PARAM_VALUES, max_size=2)))
    return _struct(chosen)


FLOAT_DTYPES = ["float32", "float64", "float16", "bfloat16"]
MUTATIONS = ["dtype", "raw", "non-finite", "param", "drop", "shape", "grad_inputs", "alias", "values",
             "grad_output", "extra"]


@st.composite
def evaluate_requests(draw: st.DrawFn, losses: list[lossd_pb2.LossInfo]) -> lossd_pb2.EvaluateLossRequest:
    """Mostly a loss's own example request (valid), changed in a few ways; else a random one."""
    if draw(st.integers(0, 9)) < 7:
        return draw(mutated_examples(losses))
    return draw(random_requests(losses))


@st.composite
def mutated_examples(draw: st.DrawFn, losses: list[lossd_pb2.LossInfo]) -> lossd_pb2.EvaluateLossRequest:
    """A registry example (what docs/losses.md shows) with zero to three mutations."""
    info = losses[draw(st.integers(0, len(losses) - 1))]
    request = _examples()[info.name]
    request.allow_non_finite = draw(st.integers(0, 4)) == 0
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)):
        names = sorted(request.inputs)
        name = draw(st.sampled_from(names)) if names else ""
        tensor = request.inputs[name] if name else lossd_pb2.Tensor()
        floating = DTYPES.get(tensor.dtype) is not None and DTYPES[tensor.dtype].kind == "float"
        if mutation == "dtype":
            dtype = draw(st.sampled_from(FLOAT_DTYPES))
            for t in request.inputs.values():
                if DTYPES.get(t.dtype) is not None and DTYPES[t.dtype].kind == "float":
                    t.dtype = dtype
        elif mutation == "raw" and name and tensor.values and floating and DTYPES[tensor.dtype].numpy:
            with np.errstate(over="ignore", invalid="ignore"):  # values beyond float16's range become Inf
                data = np.array(list(tensor.values)).astype(DTYPES[tensor.dtype].numpy)
            tensor.ClearField("values")
            tensor.raw = data.tobytes()
        elif mutation == "non-finite" and name and tensor.values and floating:
            tensor.values[draw(st.integers(0, len(tensor.values) - 1))] = draw(
                st.sampled_from([math.nan, math.inf, -math.inf]))
        elif mutation == "param":
            request.params.MergeFrom(draw(params_for(info)))
        elif mutation == "drop" and name:
            del request.inputs[name]
        elif mutation == "shape" and name:
            tensor.ClearField("shape")
            tensor.shape.extend(draw(SHAPES))
        elif mutation == "grad_inputs":
            request.grad_inputs.extend(draw(st.lists(st.sampled_from(names or ["x"]) | NAMES, max_size=2)))
        elif mutation == "alias" and info.aliases:
            request.loss = draw(st.sampled_from(list(info.aliases)))
        elif mutation == "values" and name and tensor.values:
            tensor.values[draw(st.integers(0, len(tensor.values) - 1))] = draw(FLOATS)
        elif mutation == "grad_output":
            request.grad_output.CopyFrom(draw(tensors([], "float32")))
        elif mutation == "extra":
            request.inputs[draw(NAMES)].CopyFrom(draw(tensors()))
    return request


def _examples() -> dict[str, lossd_pb2.EvaluateLossRequest]:
    """Each built-in loss's example request, as ``lossd.server.losses._docs`` renders it (a fresh copy)."""
    from google.protobuf import json_format

    from lossd.server.losses._docs import example_request
    from lossd.server.losses import REGISTRY

    global _EXAMPLES
    if _EXAMPLES is None:
        _EXAMPLES = {spec.name: json_format.ParseDict(example_request(spec), lossd_pb2.EvaluateLossRequest())
                     for spec in REGISTRY}
    return {name: _copy(r) for name, r in _EXAMPLES.items()}


_EXAMPLES: dict[str, lossd_pb2.EvaluateLossRequest] | None = None


def _copy(request: lossd_pb2.EvaluateLossRequest) -> lossd_pb2.EvaluateLossRequest:
    copy = lossd_pb2.EvaluateLossRequest()
    copy.CopyFrom(request)
    return copy


@st.composite
def random_requests(draw: st.DrawFn, losses: list[lossd_pb2.LossInfo]) -> lossd_pb2.EvaluateLossRequest:
    """An EvaluateLossRequest around a real loss or a made-up one, with random tensors."""
    index = draw(st.one_of(st.integers(0, len(losses) - 1), st.none()))
    info = losses[index] if index is not None else None
    request = lossd_pb2.EvaluateLossRequest()
    if info is not None:
        request.loss = draw(st.sampled_from([info.name, *info.aliases]))
    else:
        request.loss = draw(st.one_of(NAMES, st.sampled_from(["", "mse_los", "CrossEntropy", "../etc/passwd"])))
    shape = draw(st.lists(st.integers(1, 5), max_size=3))
    dtype = draw(st.sampled_from(["float32", "float64", "float16", "bfloat16"]))
    names = [i.name for i in info.inputs] if info is not None else []
    for name in draw(st.lists(st.sampled_from(names + ["y_pred", "y_true"]) | NAMES, max_size=4, unique=True)):
        request.inputs[name].CopyFrom(draw(tensors(shape, dtype)))
    request.params.CopyFrom(draw(params_for(info)))
    if draw(st.integers(0, 4)) == 0:
        request.grad_inputs.extend(draw(st.lists(st.sampled_from(names or ["x"]) | NAMES, max_size=2)))
    if draw(st.integers(0, 5)) == 0:
        request.grad_output.CopyFrom(draw(tensors([], dtype)))
    request.output_encoding = draw(st.sampled_from([0, 1, 2, 3, -1]))
    request.allow_non_finite = draw(st.booleans())
    if draw(st.integers(0, 5)) == 0:  # a composite objective
        for _ in range(draw(st.integers(0, 3))):
            term = request.terms.add(loss=draw(st.sampled_from([i.name for i in losses]) | NAMES),
                                     name=draw(NAMES))
            if draw(st.booleans()):
                term.weight = draw(FLOATS)
    if draw(st.integers(0, 5)) == 0:  # parameters and L1/L2
        for name in draw(st.lists(NAMES, max_size=2, unique=True)):
            request.parameters[name].CopyFrom(draw(tensors([2], dtype)))
        request.regularization.l1 = draw(FLOATS)
        request.regularization.l2 = draw(FLOATS)
        request.regularization.include.extend(draw(st.lists(NAMES, max_size=2)))
    return request


@st.composite
def garbage(draw: st.DrawFn, valid: bytes) -> bytes:
    """Bytes that are not quite (or not at all) an EvaluateLossRequest."""
    kind = draw(st.sampled_from(["random", "truncated", "flipped", "spliced", "deep"]))
    if kind == "random":
        return draw(st.binary(max_size=256))
    if kind == "truncated":
        return valid[:draw(st.integers(0, max(0, len(valid) - 1)))]
    if kind == "flipped":
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 8))):
            if data:
                i = draw(st.integers(0, len(data) - 1))
                data[i] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "spliced":
        return valid + draw(st.binary(max_size=32))
    # a params Struct nested deeper than protobuf allows: field 3 (params) = Struct{fields: {"a": ...}}
    depth = draw(st.integers(90, 200))
    inner = b""
    for _ in range(depth):
        value = b"\x2a" + _varint(len(inner)) + inner  # Value{struct_value (5): inner}
        entry = b"\x0a\x01a\x12" + _varint(len(value)) + value  # map entry {key: "a", value}
        inner = b"\x0a" + _varint(len(entry)) + entry  # Struct{fields (1): entry}
    return b"\x0a\x03mse\x1a" + _varint(len(inner)) + inner


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


# -- the tests --------------------------------------------------------------------------------------

def _non_finite(t: lossd_pb2.Tensor) -> bool:
    """Whether a well-formed floating-point tensor holds NaN or Inf."""
    info = DTYPES.get(t.dtype)
    if info is None or info.kind != "float":
        return False
    if t.values:
        return not all(math.isfinite(v) for v in t.values)
    if info.numpy is None:  # bfloat16: the top half of a float32
        if len(t.raw) % 2:
            return False
        halves = np.frombuffer(t.raw, np.uint16).astype(np.uint32) << 16
        return not np.isfinite(halves.view(np.float32)).all()
    if len(t.raw) % info.itemsize:
        return False
    return not np.isfinite(np.frombuffer(t.raw, info.numpy)).all()


def _check_evaluate_reply(request: lossd_pb2.EvaluateLossRequest | None, data: bytes) -> None:
    reply = lossd_pb2.EvaluateLossResponse.FromString(data)
    assert reply.loss_name, reply
    if request is None:
        return
    if not request.allow_non_finite:  # the non-finite policy: refused unless the request allows it
        sent = [*request.inputs.values(), *request.parameters.values()]
        if request.HasField("grad_output"):
            sent.append(request.grad_output)
        assert not any(_non_finite(t) for t in sent), "accepted NaN/Inf without allow_non_finite"
    for name, grad in reply.grads.items():  # a gradient has its input's shape
        sent = [t for n, t in request.inputs.items() if n == name]
        if sent:
            assert list(grad.shape) == list(sent[0].shape), (name, grad.shape, sent[0].shape)


def _evaluate(server: Server, request: lossd_pb2.EvaluateLossRequest | None, data: bytes) -> None:
    what = f"EvaluateLoss({request!r:.2000})" if request is not None else f"EvaluateLoss(bytes {data[:200]!r})"
    try:
        reply = server.raw_evaluate(data, timeout=60)
    except grpc.RpcError as e:
        server.count(_clean_refusal(e, what))
    else:
        _check_evaluate_reply(request, reply)
        server.count("OK")


def _memory(server: Server) -> None:
    rss = rss_mb(server.served.proc.pid)
    if server.rss_start is None:
        server.rss_start = rss
    assert rss - server.rss_start < RSS_GROWTH_MB, f"server RSS grew from {server.rss_start:.0f} to {rss:.0f} MiB"


def test_fuzz_evaluate_loss(server: Server) -> None:
    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        request = data.draw(evaluate_requests(server.losses))
        _evaluate(server, request, request.SerializeToString())
        server.alive()

    _warm_up(server)
    run()
    _memory(server)
    _still_serves(server)


def test_fuzz_raw_bytes(server: Server) -> None:
    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        valid = data.draw(evaluate_requests(server.losses)).SerializeToString()
        _evaluate(server, None, data.draw(garbage(valid)))
        server.alive()

    _warm_up(server)
    run()
    _memory(server)
    _still_serves(server)


def test_fuzz_evaluate_loss_stream(server: Server) -> None:
    """Streams of generated items: each item is answered (a response or its Error) in order."""
    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        items = [lossd_pb2.EvaluateLossStreamRequest(id=str(k), request=data.draw(evaluate_requests(server.losses)))
                 for k in range(data.draw(st.integers(1, 4)))]
        try:
            replies = list(server.stream(iter(items), timeout=60))
        except grpc.RpcError as e:
            server.count(_clean_refusal(e, f"EvaluateLossStream({items!r:.2000})"))
            return
        assert [r.id for r in replies] == [i.id for i in items]
        for r in replies:
            if r.HasField("error"):
                assert r.error.code in {c.name for c in CLEAN}, r.error
                assert not INTERNALS.search(r.error.message), r.error.message
                server.count(f"stream {r.error.code}")
            else:
                server.count("stream OK")
        server.alive()

    _warm_up(server)
    run()
    _memory(server)


# -- TrainJob -------------------------------------------------------------------------------------

def _training_names() -> dict[str, list[str]]:
    from lossd.server.training._data import BUILTINS
    from lossd._model import ACTIVATIONS, OUTPUT_ACTIVATIONS
    from lossd.server.training._optim import OPTIMIZERS
    from lossd.server.training._spec import METRICS

    return {"builtins": sorted(BUILTINS), "activations": [a for a in ACTIVATIONS if a],
            "outputs": [a for a in OUTPUT_ACTIVATIONS if a], "optimizers": sorted(OPTIMIZERS),
            "metrics": list(METRICS),
            "builtin_params": sorted({p.name for b in BUILTINS.values() for p in b.params})}


INT32 = st.one_of(st.integers(-3, 40), st.sampled_from([2**31 - 1, -(2**31), 1000, 10**6]))


@st.composite
def train_requests(draw: st.DrawFn, losses: list[lossd_pb2.LossInfo],
                   names: dict[str, list[str]]) -> training_pb2.TrainJobRequest:
    """Half the time a small valid job with one or two fields changed, else a random one (always detached)."""
    if draw(st.booleans()):
        return draw(mutated_jobs(losses, names))
    return draw(random_jobs(losses, names))


#: Parts of a TrainJobRequest that :func:`mutated_jobs` replaces with random ones.
JOB_PARTS = ["model", "data", "loss", "optimizer", "schedule", "regularization", "epochs", "batch_size", "seed",
             "metrics", "step_events_per_second", "output_encoding"]


@st.composite
def mutated_jobs(draw: st.DrawFn, losses: list[lossd_pb2.LossInfo],
                 names: dict[str, list[str]]) -> training_pb2.TrainJobRequest:
    """tests/support/training.py's small job (16 steps) with up to two parts taken from a random job."""
    r = train_request(small_spec(epochs=draw(st.integers(1, 3)), batch_size=draw(st.sampled_from([25, 50, 100]))))
    r.detach = True
    other = draw(random_jobs(losses, names))
    for part in draw(st.lists(st.sampled_from(JOB_PARTS), max_size=2, unique=True)):
        if other.HasField(part) if part in ("model", "data", "loss", "optimizer", "schedule", "regularization",
                                            "step_events_per_second") else True:
            if part in ("metrics",):
                del r.metrics[:]
                r.metrics.extend(other.metrics)
            elif part in ("model", "data", "loss", "optimizer", "schedule", "regularization"):
                getattr(r, part).CopyFrom(getattr(other, part))
            else:
                setattr(r, part, getattr(other, part))
    return r


@st.composite
def random_jobs(draw: st.DrawFn, losses: list[lossd_pb2.LossInfo],
                names: dict[str, list[str]]) -> training_pb2.TrainJobRequest:
    """A TrainJobRequest: random model, data, loss, optimizer, schedule and limits (always detached)."""
    r = training_pb2.TrainJobRequest(detach=True)
    model = draw(st.sampled_from(["linear", "mlp", "none"]))
    if model == "linear":
        r.model.linear.output_activation = draw(st.sampled_from(names["outputs"]) | NAMES)
    elif model == "mlp":
        r.model.mlp.hidden.extend(draw(st.lists(st.one_of(st.integers(-2, 16), st.just(10**6)), max_size=3)))
        r.model.mlp.activation = draw(st.sampled_from(names["activations"]) | NAMES)
        r.model.mlp.output_activation = draw(st.sampled_from(names["outputs"]) | NAMES)
        r.model.mlp.dropout = draw(FLOATS)
    source = draw(st.sampled_from(["builtin", "inline", "none"]))
    if source == "builtin":
        r.data.builtin.name = draw(st.sampled_from(names["builtins"]) | NAMES)
        counts = st.dictionaries(st.sampled_from(names["builtin_params"]),
                                 st.one_of(st.integers(-5, 400), FLOATS, st.just(10**9)), max_size=3)
        r.data.builtin.params.CopyFrom(_struct(draw(counts)))
    elif source == "inline":
        n = draw(st.integers(0, 40))
        r.data.inline.x.CopyFrom(draw(tensors([n, 2], "float32")))
        r.data.inline.y.CopyFrom(draw(tensors([n], "int64")))
        r.data.inline.num_classes = draw(INT32)
    r.data.validation_fraction = draw(st.one_of(st.floats(0, 0.9), FLOATS))
    info = losses[draw(st.integers(0, len(losses) - 1))]
    r.loss.name = draw(st.sampled_from([info.name, *info.aliases]) | NAMES)
    r.loss.params.CopyFrom(draw(params_for(info)))
    if draw(st.integers(0, 5)) == 0:
        r.loss.inputs[draw(NAMES | st.sampled_from([i.name for i in info.inputs]))].CopyFrom(draw(tensors()))
    r.optimizer.name = draw(st.sampled_from(names["optimizers"]) | NAMES)
    for fld in draw(st.lists(st.sampled_from(["lr", "weight_decay", "momentum", "eps", "alpha"]), max_size=2)):
        setattr(r.optimizer, fld, draw(FLOATS))
    r.optimizer.betas.extend(draw(st.lists(FLOATS, max_size=3)))
    schedule = draw(st.sampled_from(["step", "cosine", "exponential", "none"]))
    if schedule == "step":
        r.schedule.step.step_size = draw(INT32)
    elif schedule == "cosine":
        r.schedule.cosine.t_max = draw(INT32)
    elif schedule == "exponential":
        r.schedule.exponential.gamma = draw(FLOATS)
    if draw(st.booleans()):
        r.regularization.l1 = draw(FLOATS)
        r.regularization.l2 = draw(FLOATS)
    r.epochs = draw(INT32)
    r.batch_size = draw(INT32)
    r.seed = draw(st.integers(-(2**63), 2**63 - 1))
    r.metrics.extend(draw(st.lists(st.sampled_from(names["metrics"]) | NAMES, max_size=2)))
    if draw(st.booleans()):
        r.step_events_per_second = draw(FLOATS)
    r.name = draw(NAMES)
    r.output_encoding = draw(st.sampled_from([0, 1, 2, 7]))
    r.world_size = draw(st.sampled_from([0, 1, 2, -1]))
    return r


def test_fuzz_train_job(server: Server) -> None:
    names = _training_names()
    accepted: list[str] = []

    @FUZZ
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        request = data.draw(train_requests(server.losses, names))
        try:
            replies = [training_pb2.TrainJobResponse.FromString(b) for b in
                       server.raw_train(request.SerializeToString(), timeout=60)]
        except grpc.RpcError as e:
            server.count("train " + _clean_refusal(e, f"TrainJob({request!r:.3000})"))
            return
        finally:
            server.alive()
        assert len(replies) == 1 and replies[0].event.state == training_pb2.JOB_STATE_QUEUED, replies
        server.count("train OK")
        job_id = replies[0].event.job_id
        accepted.append(job_id)
        job = server.training.GetJob(training_pb2.GetJobRequest(job_id=job_id), timeout=30).job
        if job.state == training_pb2.JOB_STATE_QUEUED:  # keep the queue short (a running job is left to end)
            try:
                server.training.CancelJob(training_pb2.CancelJobRequest(job_id=job_id), timeout=60)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e  # it had ended meanwhile

    _warm_up(server)
    run()
    _memory(server)
    _still_serves(server)
    # Every acknowledged job is in the store.
    listed = {j.job_id for j in server.training.ListJobs(training_pb2.ListJobsRequest(limit=1000), timeout=30).jobs}
    assert set(accepted) <= listed


def _warm_up(server: Server) -> None:
    """Once: a call of every kind (every built-in loss's example evaluated, alone and in a stream; a
    training job run to its end), so that what the server builds on first use is in the baseline of
    the memory bound, not in its growth. (The first use of the 78 losses alone took 19 MiB.)"""
    if server.rss_start is not None:
        return
    for _ in range(3):
        _still_serves(server)
    examples = _examples()
    for example in examples.values():
        lossd_pb2.EvaluateLossResponse.FromString(server.raw_evaluate(example.SerializeToString(), timeout=60))
    items = [lossd_pb2.EvaluateLossStreamRequest(id=name, request=r) for name, r in examples.items()]
    replies = list(server.stream(iter(items), timeout=60))
    assert [r.id for r in replies if not r.HasField("error")] == list(examples), replies
    spec = train_request(small_spec())
    final = [r.event for r in server.training.TrainJob(spec, timeout=300)][-1]
    assert final.state == training_pb2.JOB_STATE_SUCCEEDED, final.message
    _memory(server)


def _still_serves(server: Server) -> None:
    """A known request gets the known answer, and health says SERVING."""
    server.alive()
    good = lossd_pb2.EvaluateLossRequest(loss="mse")
    good.inputs["y_pred"].CopyFrom(lossd_pb2.Tensor(dtype="float32", shape=[2], values=[0.5, 2.0]))
    good.inputs["y_true"].CopyFrom(lossd_pb2.Tensor(dtype="float32", shape=[2], values=[1.0, 1.0]))
    reply = lossd_pb2.EvaluateLossResponse.FromString(server.raw_evaluate(good.SerializeToString(), timeout=30))
    assert reply.value == 0.625
    status = health_pb2_grpc.HealthStub(server.channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_outcomes_were_varied(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """The generators reach both sides: accepted requests and each kind of refusal (run last)."""
    seen = server.outcomes
    with capsys.disabled():
        print(f"\nfuzz outcomes ({sum(seen.values())} requests, {EXAMPLES} examples per test): "
              f"{dict(sorted(seen.items()))}; server RSS {rss_mb(server.served.proc.pid):.0f} MiB "
              f"(start {server.rss_start or 0:.0f})")
    if not seen:
        pytest.skip("run with the other fuzz tests")
    assert seen.get("OK", 0) > 0 and seen.get("INVALID_ARGUMENT", 0) > 0, seen
    assert seen.get("train OK", 0) > 0 and seen.get("train INVALID_ARGUMENT", 0) > 0, seen
