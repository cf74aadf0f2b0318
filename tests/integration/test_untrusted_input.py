"""Nothing a client sends is executed, unpickled, imported or used as a filesystem path (issue 7, item 6).

Against a real server in this process, each attempt uses a payload that *would* leave a marker file
if it ever ran (checked first, so these tests can fail), and then checks that the marker is absent:
loss names that look like code or module paths, a module on ``sys.path`` whose import makes the
marker, pickles as tensor bytes, job ids with path traversal, a malicious checkpoint planted in the
data directory. Then: no request field can name a plugin, module or file; the server's sources load
code only from entry points the operator installed and checkpoints only with ``weights_only=True``;
and error messages name no internal paths.
"""

from __future__ import annotations

import base64
import os
import pickle
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
import torch.nn.functional as F
from google.protobuf import descriptor

from lossd.client import Client, LossdError, build_request
from lossd.v1 import lossd_pb2, training_pb2
from lossd.v1 import training_pb2 as pb
from support.refusals import assert_still_serves
from support.servers import REPO, start_in_process
from support.training import small_spec

#: A job that runs for minutes unless stopped.
LONG = small_spec(data={"builtin": {"name": "rings"}}, epochs=500, batch_size=100, metrics=[],
                  step_events_per_second=1000)


class Evil:
    """Unpickling it runs ``touch MARKER`` (pickle calls ``os.system`` from ``__reduce__``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A marker path, a module whose import creates it (importable here, where the server runs), and
    pickles whose loading creates it."""
    root = tmp_path_factory.mktemp("trap")
    marker = root / "MARKER"
    (root / "lossd_trap_module.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\ndef system(*a, **k):\n    pass\n")
    sys.path.insert(0, str(root))
    try:
        yield {"root": root, "marker": marker, "pickle": pickle.dumps(Evil(marker))}
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("lossd_trap_module", None)


def test_the_traps_work(trap: dict[str, Any]) -> None:
    """The payloads do create the marker when loaded the unsafe way, so their absence below means something."""
    marker: Path = trap["marker"]
    code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", code], input=trap["pickle"], check=True, timeout=60)
    assert marker.exists()
    marker.unlink()
    subprocess.run([sys.executable, "-c", "import lossd_trap_module"], cwd=trap["root"], check=True, timeout=60)
    assert marker.exists()
    marker.unlink()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def client(data_dir: Path, trap: dict[str, Any]) -> Iterator[Client]:
    with start_in_process(data_dir=str(data_dir), max_jobs=1) as address, Client(address) as c:
        yield c


def no_marker(trap: dict[str, Any]) -> None:
    assert not trap["marker"].exists(), "a client payload ran on the server"
    assert "lossd_trap_module" not in sys.modules, "a client payload was imported by the server"


CODE_NAMES = [
    "os.system", "posix.system", "__import__('os').system('touch {marker}')", "torch.load", "pickle.loads",
    "eval", "builtins.exec", "subprocess.run", "../../etc/passwd", "/etc/passwd", "lossd_trap_module",
    "lossd_trap_module.system", "lossd_trap_module:system", "lossd.server.losses._plugins:load_plugins",
    "torch.nn.functional.mse_loss; import lossd_trap_module", "mse_loss\x00lossd_trap_module",
]


@pytest.mark.parametrize("name", CODE_NAMES)
def test_loss_names_that_look_like_code_are_only_names(client: Client, trap: dict[str, Any], name: str) -> None:
    name = name.format(marker=trap["marker"])
    x, y = torch.zeros(2), torch.zeros(2)
    attempts = [
        lambda: client.evaluate(name, x, y),
        lambda: client.evaluate([{"loss": "mse"}, {"loss": name}], x, y),
        lambda: client.submit(small_spec(loss={"name": name})),
        lambda: client.evaluate("triplet_margin_with_distance_loss", x.reshape(1, 2), y.reshape(1, 2),
                                negative=y.reshape(1, 2), distance_function=name),
        lambda: client.evaluate("mse", x, y, reduction=name),
    ]
    for attempt in attempts:
        with pytest.raises(LossdError) as info:
            attempt()
        assert info.value.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), info.value
    no_marker(trap)
    assert_still_serves(client)


def test_pickled_tensor_bytes_are_numbers_never_unpickled(client: Client, trap: dict[str, Any]) -> None:
    payload: bytes = trap["pickle"]
    payload += b"\0" * (-len(payload) % 8)
    n = len(payload) // 4
    x = lossd_pb2.Tensor(dtype="float32", shape=[n], raw=payload)
    request = lossd_pb2.EvaluateLossRequest(loss="mse", allow_non_finite=True, inputs={
        "input": x, "target": lossd_pb2.Tensor(dtype="float32", shape=[n], raw=bytes(4 * n))})
    result = client.evaluate_request(request, as_torch=True)
    as_numbers = torch.frombuffer(bytearray(payload), dtype=torch.float32)
    expected = F.mse_loss(as_numbers, torch.zeros(n))
    torch.testing.assert_close(result.loss, expected, rtol=0, atol=0, equal_nan=True)
    for dtype in ("uint8", "int64", "float64", "bool"):  # as other dtypes: numbers, or a rule's refusal
        itemsize = {"uint8": 1, "int64": 8, "float64": 8, "bool": 1}[dtype]
        t = lossd_pb2.Tensor(dtype=dtype, shape=[len(payload) // itemsize], raw=payload)
        try:
            client.evaluate_request(lossd_pb2.EvaluateLossRequest(loss="mse", inputs={"input": t, "target": t}))
        except LossdError as e:
            assert e.code == grpc.StatusCode.INVALID_ARGUMENT, e
    spec = small_spec(data={"inline": {
        "x": {"dtype": "uint8", "shape": [len(payload) // 2, 2], "raw": base64.b64encode(payload).decode()},
        "y": {"dtype": "int64", "shape": [len(payload) // 2], "values": [i % 2 for i in range(len(payload) // 2)]}}},
        model={"linear": {}}, loss={"name": "cross_entropy"}, epochs=1,
        optimizer={"name": "sgd", "param_groups": [{"patterns": ["no_such_parameter"]}]})
    # uint8 bytes are valid features: the server reads them as numbers, and the spec is refused only
    # later, by its optimizer rule (so that no job runs).
    with pytest.raises(LossdError) as info:
        client.submit(spec)
    assert info.value.field == "optimizer.param_groups[0].patterns", info.value
    no_marker(trap)


TRAVERSAL = ["../victim", "../../outside", "..", ".", "", "0123456789ab/../../victim", "0123456789ab/../victim",
             "0123456789AB", "0123456789ab\n", "0123456789ab.pt", "%2e%2e%2fvictim", "checkpoints/0123456789ab"]


def test_job_ids_are_never_paths(client: Client, data_dir: Path, tmp_path: Path) -> None:
    victims = [data_dir / "victim.pt", data_dir / "victim", tmp_path / "outside.pt", tmp_path / "outside"]
    for v in victims:
        v.write_bytes(b"precious")
    stamps = {v: v.stat().st_mtime_ns for v in victims}
    before = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if "-wal" not in p.name
                    and "-shm" not in p.name)
    ids = [*TRAVERSAL, str(tmp_path / "outside"), str(data_dir / "victim"), "/etc/passwd"]
    stub = training_pb2_grpc_stub(client)
    for job_id in ids:
        for call in (lambda i: stub.GetJob(pb.GetJobRequest(job_id=i), timeout=10),
                     lambda i: list(stub.WatchJob(pb.WatchJobRequest(job_id=i), timeout=10)),
                     lambda i: stub.CancelJob(pb.CancelJobRequest(job_id=i), timeout=10),
                     lambda i: stub.DeleteJob(pb.DeleteJobRequest(job_id=i), timeout=10)):
            with pytest.raises(grpc.RpcError) as info:
                call(job_id)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (job_id, info.value.details())
            assert info.value.details().startswith("job_id: "), info.value.details()
    for v in victims:
        assert v.read_bytes() == b"precious" and v.stat().st_mtime_ns == stamps[v]
    after = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if "-wal" not in p.name
                   and "-shm" not in p.name)
    made = set(after) - set(before)  # only what a running job itself writes: checkpoints/<server-made id>.pt
    assert all(re.fullmatch(r"checkpoints/\.?[0-9a-f]{12}\.pt(\.\d+\.tmp)?", m) for m in made), made


def training_pb2_grpc_stub(client: Client) -> Any:
    from lossd.v1 import training_pb2_grpc
    return training_pb2_grpc.TrainingServiceStub(client.channel)


# Request fields that, by their name, would choose code or a file.
_SUSPECT = {"plugin", "plugins", "module", "modules", "import", "path", "paths", "file", "files", "filename",
            "dir", "directory", "class", "callable", "script", "pickle", "eval", "exec", "command", "url",
            "entry", "checkpoint"}


def _message_fields(message: descriptor.Descriptor, seen: set[str]) -> Iterator[tuple[str, descriptor.FieldDescriptor]]:
    if message.full_name in seen:
        return
    seen.add(message.full_name)
    for f in message.fields:
        yield f"{message.full_name}.{f.name}", f
        if f.message_type is not None:
            yield from _message_fields(f.message_type, seen)


def test_no_request_field_names_a_plugin_module_or_file() -> None:
    """Plugins load from entry points the operator installed (``--plugins``), never from a request."""
    seen: set[str] = set()
    fields = []
    for file in (lossd_pb2.DESCRIPTOR, training_pb2.DESCRIPTOR):
        for service in file.services_by_name.values():
            for method in service.methods:
                fields += list(_message_fields(method.input_type, seen))
    assert len(fields) > 50  # the walk reached the nested messages
    suspect = [name for name, _ in fields if set(name.rsplit(".", 1)[1].split("_")) & _SUSPECT]
    assert suspect == []


#: Where server code may load code or deserialize: the operator's plugin entry points, and checkpoints.
_LOADERS = re.compile(r"(?<![.\w])(import_module|__import__|eval|exec|compile|entry_points|torch\.load|yaml\.load|"
                      r"runpy\.\w+|load_source)\s*\(|^\s*(?:import|from)\s+(pickle|marshal|shelve|dill|cloudpickle|runpy)\b"
                      r"|shell\s*=\s*True")


def test_the_server_loads_code_only_from_entry_points_and_checkpoints_with_weights_only() -> None:
    found = []
    for root in (REPO / "server", REPO / "proto" / "lossd"):
        for path in sorted(root.rglob("*.py")):
            if path.name.endswith("_pb2.py") or path.name.endswith("_pb2_grpc.py"):
                continue
            for line in path.read_text().splitlines():
                code = line.split("#")[0]
                if '"""' in code or code.lstrip().startswith(("``", ">>>")):
                    continue
                for m in _LOADERS.finditer(code):
                    found.append((path.name, m.group(1) or m.group(2) or m.group(0), code.strip()))
    others = sorted({(f, what) for f, what, _ in found if what != "torch.load"})
    assert others == [("_plugins.py", "entry_points")], found  # plugins: the operator's entry points only
    loads = [(f, c) for f, w, c in found if w == "torch.load"]
    assert ("_checkpoint.py" in {f for f, _ in loads}) and all("weights_only=True" in c for _, c in loads), loads


def test_a_malicious_checkpoint_in_the_data_dir_is_never_unpickled(tmp_path: Path, trap: dict[str, Any]) -> None:
    from lossd.server.training._checkpoint import load_checkpoint

    planted = tmp_path / "job.pt"
    torch.save({"format": 1, "model": Evil(trap["marker"])}, planted)  # a real checkpoint file, poisoned
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(planted)
    no_marker(trap)
    code = f"import torch; torch.load({str(planted)!r}, weights_only=False)"  # the unsafe way does run it
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert trap["marker"].exists()
    trap["marker"].unlink()


def test_a_resumed_job_with_a_planted_checkpoint_starts_over(tmp_path: Path, trap: dict[str, Any]) -> None:
    data = tmp_path / "data"
    with start_in_process(data_dir=str(data), max_jobs=1) as address, Client(address) as c:
        job_id = c.submit(LONG)
        for event in c.watch(job_id):
            if event.kind in (pb.JOB_EVENT_KIND_STEP, pb.JOB_EVENT_KIND_EPOCH):
                break
    # The server stopped: the job checkpointed and is INTERRUPTED, to resume at the next start.
    checkpoint = data / "checkpoints" / f"{job_id}.pt"
    assert checkpoint.is_file()
    torch.save({"format": 1, "model": Evil(trap["marker"])}, checkpoint)
    with start_in_process(data_dir=str(data), max_jobs=1) as address, Client(address) as c:
        messages = []
        deadline = time.monotonic() + 60
        for event in c.watch(job_id):
            messages.append(event.message)
            if event.message.startswith("started over") or time.monotonic() > deadline:
                break
        c.cancel(job_id)
        assert any(m.startswith("started over: the checkpoint could not be read (UnpicklingError)")
                   for m in messages), messages
        assert list(c.watch(job_id))[-1].state == pb.JOB_STATE_CANCELLED
    no_marker(trap)


# -- error messages name no internal paths --------------------------------------------------------

def _bad_requests(client: Client) -> Iterator[Any]:
    x = torch.zeros(2, 3)
    yield lambda: client.evaluate("no_such_loss", x, x)
    yield lambda: client.evaluate("mse", x, torch.zeros(3, 2))  # torch's own broadcasting error
    yield lambda: client.evaluate("cross_entropy", x, torch.tensor([[0, 1]]))  # torch's own shape error
    yield lambda: client.evaluate("cross_entropy", x, torch.tensor([0, 7]))
    yield lambda: client.evaluate("ctc_loss", x, torch.tensor([[1, 2]]), input_lengths=torch.tensor([9]),
                                  target_lengths=torch.tensor([2]))
    yield lambda: client.evaluate("nll_loss", x, torch.tensor([0.5, 1.0]))
    yield lambda: client.evaluate("mse", x, x, reduction="bogus", size_average="yes")
    yield lambda: client.evaluate("mse", x, x, bogus_param=1)
    yield lambda: client.evaluate("kl_div", x, x, log_target="yes")
    yield lambda: client.evaluate([{"loss": "mse", "weight": float("nan")}], x, x)
    yield lambda: client.evaluate("mse", torch.tensor([float("nan")]), torch.zeros(1))
    yield lambda: client.evaluate_request(lossd_pb2.EvaluateLossRequest(
        loss="mse", inputs={"input": lossd_pb2.Tensor(dtype="complex64", shape=[1])}))
    yield lambda: client.evaluate_request(lossd_pb2.EvaluateLossRequest(
        loss="mse", inputs={"input": lossd_pb2.Tensor(dtype="float32", shape=[2**40, 2**40])}))
    yield lambda: client.evaluate_request(build_request("mse", x, x, grad_inputs=["nope"])[0])
    yield lambda: client.submit(small_spec(loss={"name": "os.system"}))
    yield lambda: client.submit(small_spec(data={"builtin": {"name": "../../etc/passwd"}}))
    yield lambda: client.submit(small_spec(model={"mlp": {"hidden": [-1]}}))
    yield lambda: client.submit(small_spec(optimizer={"name": "sgd", "param_groups": [{"patterns": ["zz*"]}]}))
    yield lambda: client.submit(small_spec(data={"inline": {"x": {"dtype": "float32", "shape": [2, 1],
                                                                 "values": [1.0, 2.0]},
                                                           "y": {"dtype": "float32", "shape": [3], "values": [1, 2, 3]}}}))
    yield lambda: client.get_job("../../etc/passwd")
    yield lambda: client.get_job("0123456789ab")
    yield lambda: client.cancel("/etc/shadow")


def test_error_messages_name_no_internal_paths(client: Client, data_dir: Path) -> None:
    forbidden = [str(REPO), "site-packages", ".py", "/tmp/", str(data_dir), "Traceback", 'File "']
    seen = 0
    for attempt in _bad_requests(client):
        with pytest.raises(LossdError) as info:
            attempt()
        e = info.value
        texts = [e.message, e.field, *(v.description for v in e.violations)]
        for text in texts:
            for bad in forbidden:
                assert bad not in text, f"{bad!r} in {text!r}"
        seen += 1
    assert seen >= 20
    assert_still_serves(client)


def test_an_overlong_echo_is_clipped_so_the_error_still_arrives(client: Client) -> None:
    with pytest.raises(LossdError) as info:
        client.evaluate("x" * 1000, torch.zeros(1), torch.zeros(1))  # within the 1 KiB cap on names
    e = info.value
    assert e.code == grpc.StatusCode.NOT_FOUND and e.field == "loss", e  # not "metadata size exceeds limit"
    assert e.message.endswith("more characters)") and len(e.message) < 2000
    with pytest.raises(LossdError) as info:  # over the cap: refused from its length, not echoed
        client.evaluate("x" * 100_000, torch.zeros(1), torch.zeros(1))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.field == "loss", info.value
    assert "is 100000 bytes long" in info.value.message and len(info.value.message) < 200
    request = lossd_pb2.EvaluateLossRequest(loss="mse", inputs={"é" * 50_000: lossd_pb2.Tensor(dtype="float32")})
    with pytest.raises(LossdError) as info:
        client.evaluate_request(request)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.field == "inputs"
    assert len(info.value.message) < 300, info.value.message
