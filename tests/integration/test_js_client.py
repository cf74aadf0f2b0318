"""The JavaScript client (``clients/js``) with the machine's node against a real server.

``npm ci`` runs once per session, and only when ``package-lock.json`` changed since the
last one (a stamp in ``node_modules``). The checks: the committed generated code is what
``buf generate`` makes now; the client's own node tests pass; the README's JavaScript
example prints torch's number for non-default ``params`` written as a plain object (the
``@grpc/proto-loader`` way silently dropped them and printed the defaults' 0.5493);
an invalid parameter comes back as a field-level ``google.rpc.BadRequest``; raw tensor
bytes travel both ways bit for bit; ``listAllJobs`` lists what ``listJobs`` does. Skipped, saying why, only where node or npm is absent.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from support.markdown import fenced_blocks, markdown_examples, output_matches

REPO = Path(__file__).resolve().parents[2]
JS = REPO / "clients" / "js"
GENERATED = Path("src") / "gen"

#: The seed's cross-entropy (README, `lossd eval cross_entropy ...`), as examples/evaluate.mjs sends it.
SEED_INPUT = [[10.0, 0.0, -10.0], [8.0, 8.0, 8.0]]
SEED_TARGET = [0, 2]


def _run(argv: list[str], *, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=JS, input=stdin, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def node() -> str:
    """The machine's node, with clients/js's node_modules installed from package-lock.json."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not on PATH: the JavaScript client (clients/js) needs both "
                    "(e.g. apt-get install nodejs npm)")
    digest = hashlib.sha256((JS / "package-lock.json").read_bytes()).hexdigest()
    stamp = JS / "node_modules" / ".lossd-package-lock.sha256"
    if not (stamp.is_file() and stamp.read_text() == digest):
        result = _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], timeout=600)
        assert result.returncode == 0, f"npm ci in clients/js failed:\n{result.stdout}{result.stderr}"
        stamp.write_text(digest)
    return node


def _seed_torch(**params: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's loss and the gradient of its input, computed by local torch."""
    x = torch.tensor(SEED_INPUT, dtype=torch.float32, requires_grad=True)
    loss = F.cross_entropy(x, torch.tensor(SEED_TARGET), **params)  # type: ignore[arg-type]
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def test_generated_code_is_current(node: str, tmp_path: Path) -> None:
    result = _run([str(JS / "node_modules/.bin/buf"), "generate", "--output", str(tmp_path)])
    assert result.returncode == 0, f"buf generate failed:\n{result.stdout}{result.stderr}"
    fresh, committed = tmp_path / GENERATED, JS / GENERATED
    made = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    have = sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    differ = [str(p) for p in made if p in have and not filecmp.cmp(fresh / p, committed / p, shallow=False)]
    assert (made, differ) == (have, []), (
        "clients/js/src/gen is out of date: run `npm ci && npm run generate` in clients/js and commit the result.\n"
        f"missing: {sorted(map(str, set(made) - set(have)))}\nno .proto behind them: "
        f"{sorted(map(str, set(have) - set(made)))}\ndiffer: {differ}"
    )


def test_client_node_tests_pass(node: str) -> None:
    result = _run([node, "--test", "test/client.test.mjs"])
    assert result.returncode == 0, f"node --test failed in clients/js:\n{result.stdout}{result.stderr}"


def test_evaluate_example_prints_torch_value(node: str, server_address: str) -> None:
    result = _run([node, "examples/evaluate.mjs", "--target", server_address])
    assert result.returncode == 0, result.stdout + result.stderr
    reply = json.loads(result.stdout)
    loss, grad = _seed_torch(reduction="sum", label_smoothing=0.1)
    expected = loss.item()
    assert f'"value": {expected!r},' in result.stdout  # 2.0986578464508057, printed to full precision
    assert reply["value"] == expected
    assert reply["loss_name"] == "cross_entropy"
    assert reply["grads"]["input"]["shape"] == ["2", "3"]  # int64 is a string in proto3 JSON
    assert torch.equal(torch.tensor(reply["grads"]["input"]["values"], dtype=torch.float32), grad.flatten())
    # The trap of issue 19: params dropped on the way give the defaults' number, not an error.
    assert expected != _seed_torch()[0].item()


def test_invalid_param_gives_field_level_bad_request(node: str, server_address: str) -> None:
    result = _run([node, "examples/bad_request.mjs", "--target", server_address])
    assert result.returncode == 0, result.stdout + result.stderr
    error = json.loads(result.stdout)
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["message"].startswith("params.label_smoothing: ")
    assert [v["field"] for v in error["fieldViolations"]] == ["params.label_smoothing"]
    assert "must be <= 1" in error["fieldViolations"][0]["description"]


RAW_SCRIPT = """
import { createLossdClient, tensor, toArray, TensorEncoding } from "@lossd/client";
const { target, input, target_values, params } = JSON.parse(await new Promise((resolve) => {
  let text = ""; process.stdin.on("data", (c) => (text += c)).on("end", () => resolve(text));
}));
const client = createLossdClient({ target });
const reply = await client.evaluateLoss({
  loss: "huber_loss",
  inputs: { input: tensor("float32", [3, 4], new Float32Array(input)),
            target: tensor("float32", [3, 4], new Float32Array(target_values)) },
  params,
  gradInputs: ["input"],
  outputEncoding: TensorEncoding.RAW,
});
console.log(JSON.stringify({ value: reply.value, raw: reply.grads.input.raw.length, grad: [...toArray(reply.grads.input)] }));
"""


def test_raw_tensors_travel_bit_for_bit(node: str, server_address: str) -> None:
    gen = torch.Generator().manual_seed(19)
    x, y = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    params = {"reduction": "sum", "delta": 0.5}
    request = {"target": server_address, "input": x.flatten().tolist(), "target_values": y.flatten().tolist(),
               "params": params}
    result = _run([node, "--input-type=module", "-e", RAW_SCRIPT], stdin=json.dumps(request))
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    leaf = x.clone().requires_grad_(True)
    loss = F.huber_loss(leaf, y, reduction="sum", delta=0.5)
    (grad,) = torch.autograd.grad(loss, leaf)
    assert out["value"] == loss.item()
    assert out["raw"] == 12 * 4  # the reply's gradient came as raw float32 bytes
    assert torch.equal(torch.tensor(out["grad"], dtype=torch.float32), grad.flatten())


COMPLEX_SCRIPT = """
import { createLossdClient, tensor, toArray, TensorEncoding } from "@lossd/client";
const { target, input } = JSON.parse(await new Promise((resolve) => {
  let text = ""; process.stdin.on("data", (c) => (text += c)).on("end", () => resolve(text));
}));
const client = createLossdClient({ target });
const reply = await client.evaluateLoss({
  loss: "l1_loss",
  inputs: { input: tensor("complex64", [3], new Float32Array(input)),
            target: tensor("complex64", [3], new Float32Array(6)) },
  gradInputs: ["input"],
  outputEncoding: TensorEncoding.RAW,
});
const grad = reply.grads.input;
console.log(JSON.stringify({ value: reply.value, dtype: grad.dtype, raw: grad.raw.length, grad: [...toArray(grad)] }));
"""


def test_complex_tensors_travel_bit_for_bit(node: str, server_address: str) -> None:
    """complex64 in and out as raw (real, imaginary) float32 pairs, against torch's own l1_loss."""
    x = torch.tensor([3 + 4j, -1j, 0.25 - 0.5j], dtype=torch.complex64)
    request = {"target": server_address, "input": torch.view_as_real(x).flatten().tolist()}
    result = _run([node, "--input-type=module", "-e", COMPLEX_SCRIPT], stdin=json.dumps(request))
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    leaf = x.clone().requires_grad_(True)
    loss = F.l1_loss(leaf, torch.zeros(3, dtype=torch.complex64))
    (grad,) = torch.autograd.grad(loss, leaf)
    assert out["value"] == loss.item()
    assert (out["dtype"], out["raw"]) == ("complex64", 3 * 8)
    assert torch.equal(torch.tensor(out["grad"], dtype=torch.float32), torch.view_as_real(grad).flatten())


def test_docs_show_the_example_as_it_runs(node: str, server_address: str) -> None:
    """docs/clients.md shows examples/evaluate.mjs verbatim, and its console session runs as written."""
    doc = (REPO / "docs" / "clients.md").read_text(encoding="utf-8")
    for link in re.findall(r"\]\(((?!https?://)[^)#]+)", doc):
        assert (REPO / "docs" / link).exists(), f"docs/clients.md links to {link}, which does not exist"
    blocks = fenced_blocks(doc, "docs/clients.md")
    shown = [b.text for b in blocks if b.lang == "javascript"]
    assert shown == [(JS / "examples" / "evaluate.mjs").read_text(encoding="utf-8")], (
        "docs/clients.md must show clients/js/examples/evaluate.mjs as it is")
    sessions = [ex for ex in markdown_examples(doc, "docs/clients.md") if ex.kind == "console"]
    assert [ex.code for ex in sessions] == [
        "node examples/evaluate.mjs --target 127.0.0.1:50051", "node examples/bad_request.mjs --target 127.0.0.1:50051"]
    for ex in sessions:
        result = _run([node, *ex.code.split()[1:-1], server_address])
        assert result.returncode == 0, result.stdout + result.stderr
        assert output_matches(ex.expected, result.stdout + result.stderr), (
            f"docs/clients.md: `{ex.code}` printed\n{result.stdout}{result.stderr}\nexpected\n{ex.expected}")


SECURE_SCRIPT = """
import { readFileSync } from "node:fs";
import { createLossdClient, describeError, tensor } from "@lossd/client";
const { target, token, ca, cert, key } = JSON.parse(readFileSync(0, "utf8"));
const tls = { ca: readFileSync(ca), cert: readFileSync(cert), key: readFileSync(key) };
const request = { loss: "mse", inputs: { input: tensor("float32", [1], [3]), target: tensor("float32", [1], [1]) } };
const outcome = async (options) => {
  try { return { value: (await createLossdClient({ target, tls, ...options }).evaluateLoss(request)).value }; }
  catch (err) { return describeError(err); }
};
console.log(JSON.stringify([await outcome({ token }), await outcome({ token: "wrong-token-0123456789" }),
  await outcome({ token, tls: { ...tls, serverName: "wrong.example" } }), await outcome({ token, tls: { ca: tls.ca } }),
  await outcome({ token, tls: false })]));
"""


def test_token_and_mutual_tls(node: str, tmp_path: Path) -> None:
    """The client's `token` and `tls` options against a server that wants both."""
    from support.certs import make_pki
    from support.servers import start_in_process

    pki, token = make_pki(tmp_path), "js-client-test-token-5e1b"
    with start_in_process(token=token, tls_cert=str(pki.server_cert), tls_key=str(pki.server_key),
                          tls_client_ca=str(pki.ca)) as address:
        request = {"target": address, "token": token, "ca": str(pki.ca), "cert": str(pki.client_cert),
                   "key": str(pki.client_key)}
        result = _run([node, "--input-type=module", "-e", SECURE_SCRIPT], stdin=json.dumps(request))
    assert result.returncode == 0, result.stdout + result.stderr
    good, wrong, unverified, no_client_cert, plaintext = json.loads(result.stdout)
    assert good == {"value": 4.0}
    assert wrong["code"] == "UNAUTHENTICATED" and wrong["fieldViolations"] == []
    # a certificate that does not name the server: the connection fails below gRPC, UNAVAILABLE as in
    # the Python SDK (Connect itself says INTERNAL, which the README keeps for server bugs)
    assert unverified["code"] == "UNAVAILABLE" and "wrong.example" in unverified["message"], unverified
    # the server refuses the handshake (no client certificate) or a plaintext client at its TLS port: the
    # stream is reset before any response, which Connect calls CANCELLED, as if the caller had cancelled
    assert no_client_cert["code"] == "UNAVAILABLE", no_client_cert
    assert plaintext["code"] == "UNAVAILABLE", plaintext


STREAMS_SCRIPT = """
import { createLossdClient, describeError, JobState, tensor } from "@lossd/client";
const { target } = JSON.parse(await new Promise((resolve) => {
  let text = ""; process.stdin.on("data", (c) => (text += c)).on("end", () => resolve(text));
}));
// a default deadline of 1 ms, which every unary call would run out of: the server streams are exempt
const client = createLossdClient({ target, timeoutMs: 1 });
const spec = { model: { kind: { case: "linear", value: {} } },
  data: { source: { case: "builtin", value: { name: "linear_regression" } } },
  loss: { name: "mse_loss" }, optimizer: { name: "sgd", lr: 0.01 }, epochs: 2, batchSize: 64, seed: 1n };
const out = {};
try {
  let last;
  for await (const m of client.trainJob(spec)) last = m.event;
  out.train = JobState[last.state];
} catch (err) { out.train = describeError(err); }
out.unary = await client.listLosses({}, { timeoutMs: Infinity }).then((r) => r.losses.length > 0, (e) => describeError(e));
const bad = { loss: "mse_loss", grad_inputs: ["input"],
  inputs: { input: tensor("float32", [1], [1]), target: tensor("float32", [1], [0]) } };
try {
  for await (const m of client.evaluateLossStream([{ id: "a", request: bad }], { timeoutMs: 60000 })) out.stream = m.id;
} catch (err) { out.stream = { type: err.constructor.name, message: err.message }; }
console.log(JSON.stringify(out));
"""


def test_deadlines_and_stream_refusals(node: str, server_address: str) -> None:
    """The client's ``timeoutMs`` is every call's deadline but the server streams' (a training job outlives
    it), a call's own ``timeoutMs: Infinity`` is none, and a refused request inside ``evaluateLossStream`` is
    the ``TypeError`` it is, not the ``INTERNAL`` Connect makes of it."""
    result = _run([node, "--input-type=module", "-e", STREAMS_SCRIPT], stdin=json.dumps({"target": server_address}))
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["train"] == "SUCCEEDED", out
    assert out["unary"] is True, out
    assert out["stream"]["type"] == "TypeError", out
    assert out["stream"]["message"].startswith("EvaluateLossStreamRequest.request.grad_inputs is not a field"), out


STREAM_LIFECYCLE_SCRIPT = """
import { createInterface } from "node:readline";
import { createLossdClient, describeError, tensor } from "@lossd/client";
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const { target } = JSON.parse((await lines.next()).value);
const client = createLossdClient({ target });
const out = {};
// made now, iterated later: Connect started the call at once, and its refusal was an unhandled rejection
// that ended the process, try/catch or not
const late = client.watchJob({ jobId: "not-a-job" });
await new Promise((resolve) => setTimeout(resolve, 300));
try { for await (const reply of late) out.late = reply; } catch (err) { out.late = describeError(err).code; }
// a break cancels the call: it stayed open, the server following it (and the process never exited)
const item = { loss: "mse", inputs: { input: tensor("float32", [1], [3]), target: tensor("float32", [1], [0]) } };
out.items = [];
for await (const reply of client.evaluateLossStream([{ id: "a", request: item }, { id: "b", request: item }])) {
  out.items.push(reply.id);
  break;
}
const spec = { model: { kind: { case: "linear", value: {} } },
  data: { source: { case: "builtin", value: { name: "linear_regression" } } },
  loss: { name: "mse_loss" }, optimizer: { name: "sgd", lr: 0.01 }, epochs: 200, batchSize: 8, seed: 1n };
for await (const reply of client.trainJob(spec)) {
  out.job = reply.event.jobId;
  break;
}
// the caller's own signal still stops a stream (linked to the one a break aborts)
const caller = new AbortController();
try {
  for await (const reply of client.watchJob({ jobId: out.job }, { signal: caller.signal })) caller.abort();
  out.aborted = "not stopped";
} catch (err) { out.aborted = describeError(err).code; }
console.log(JSON.stringify(out));
await lines.next();  // the test has looked at the server's calls in flight, this connection still open
process.exit(0);
"""


def test_a_stream_starts_when_iterated_and_a_break_cancels_it(node: str, tmp_path: Path) -> None:
    """A stream iterated after its call failed crashed the process (an unhandled rejection, a try/catch around
    the loop notwithstanding), and a ``break`` out of a stream left its HTTP/2 stream open, the server following
    it (an audit, 2026-12-06). While the script's connection is still open, the server has no call of it in
    flight: every stream it left was cancelled."""
    from support.servers import serve_in_thread

    from lossd.server import ServerConfig, create_server

    made: dict[str, Any] = {}

    async def build() -> Any:
        made["server"] = await create_server(ServerConfig(host="127.0.0.1", port=0, device="cpu", plugins="none",
                                                          data_dir=str(tmp_path / "data")))
        return made["server"]

    with serve_in_thread(build) as port:
        proc = subprocess.Popen([node, "--input-type=module", "-e", STREAM_LIFECYCLE_SCRIPT], cwd=JS, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps({"target": f"127.0.0.1:{port}"}) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            assert line, proc.communicate(timeout=30)
            out = json.loads(line)
            gate = made["server"].gate
            deadline = time.monotonic() + 20
            while gate.in_flight and time.monotonic() < deadline:
                time.sleep(0.05)
            left = gate.in_flight
            proc.stdin.write("done\n")
            proc.stdin.flush()
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert left == 0, f"{left} calls of the script still in flight"
    assert out["late"] == "INVALID_ARGUMENT", out
    assert out["items"] == ["a"] and out["job"] and out["aborted"] == "CANCELLED", out


LIST_ALL_JOBS_SCRIPT = """
import { createLossdClient, JobState } from "@lossd/client";
const { target } = JSON.parse(await new Promise((resolve) => {
  let text = ""; process.stdin.on("data", (c) => (text += c)).on("end", () => resolve(text));
}));
const client = createLossdClient({ target, timeoutMs: 30000 });
const spec = { model: { kind: { case: "linear", value: {} } },
  data: { source: { case: "builtin", value: { name: "linear_regression" } } },
  loss: { name: "mse_loss" }, optimizer: { name: "sgd", lr: 0.01 }, epochs: 200, batchSize: 8, seed: 1n, detach: true };
const submitted = [];
for (let i = 0; i < 3; i++) for await (const reply of client.trainJob(spec)) submitted.push(reply.event.jobId);
for (const jobId of submitted) await client.cancelJob({ jobId });
const ids = (jobs) => jobs.map((j) => j.jobId);
const cancelled = await client.listAllJobs({ states: [JobState.CANCELLED] });
console.log(JSON.stringify({ submitted,
  all: ids(await client.listAllJobs()), page: ids((await client.listJobs({ pageSize: 1000 })).jobs),
  two: ids(await client.listAllJobs({ limit: 2 })),
  cancelled: ids(cancelled), otherStates: cancelled.filter((j) => j.state !== JobState.CANCELLED).length }));
"""


def test_list_all_jobs_against_the_server(node: str, server_address: str) -> None:
    """``listAllJobs`` reads lossd's ListJobs as the raw call does: every job newest first, or the ``limit``
    newest (its paging rules are checked against stand-in servers in the client's own node tests)."""
    result = _run([node, "--input-type=module", "-e", LIST_ALL_JOBS_SCRIPT], stdin=json.dumps({"target": server_address}))
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert len(out["page"]) < 1000, out  # the whole listing fits in one raw page, to compare with
    assert out["all"] == out["page"] and set(out["submitted"]) <= set(out["all"]), out
    assert out["two"] == out["page"][:2], out
    assert set(out["submitted"]) <= set(out["cancelled"]) and out["otherStates"] == 0, out


ABANDONED_UPLOAD_SCRIPT = """
import { createLossdClient, describeError, tensor } from "@lossd/client";
const { target } = JSON.parse(await new Promise((resolve) => {
  let text = ""; process.stdin.on("data", (c) => (text += c)).on("end", () => resolve(text));
}));
const client = createLossdClient({ target });
const n = 4_000_000;  // two float32 inputs: a 32 MB request, more than Node's default session memory (10 MB)
const big = { loss: "mse", inputs: { input: tensor("float32", [n], new Float32Array(n)),
  target: tensor("float32", [n], new Float32Array(n)) } };
const small = { loss: "mse", inputs: { input: tensor("float32", [1], [3]), target: tensor("float32", [1], [0]) } };
const outcome = (p) => Promise.race([p.then((r) => r.value, (e) => describeError(e).code),
  new Promise((resolve) => setTimeout(() => resolve("no answer in 10 s"), 10000))]);
const out = { warm: await outcome(client.evaluateLoss(small)) };
out.deadline = await outcome(client.evaluateLoss(big, { timeoutMs: 20 }));
const ac = new AbortController();
setTimeout(() => ac.abort(), 20);
out.aborted = await outcome(client.evaluateLoss(big, { signal: ac.signal }));
out.after = [];
for (let i = 0; i < 3; i++) out.after.push(await outcome(client.evaluateLoss(small)));
console.log(JSON.stringify(out));
process.exit(0);
"""


def test_a_call_abandoned_while_its_large_request_is_sent_leaves_the_client_usable(node: str,
                                                                                  server_address: str) -> None:
    """A deadline or an abort that fired while a request over 10 MB was still being sent left the unsent rest
    charged to Node's HTTP/2 session (maxSessionMemory, 10 MB by default): every later call on that client
    failed UNAVAILABLE "NGHTTP2_ENHANCE_YOUR_CALM", or hung. The client gives the session room for two
    messages of its largest size."""
    result = _run([node, "--input-type=module", "-e", ABANDONED_UPLOAD_SCRIPT],
                  stdin=json.dumps({"target": server_address}))
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["warm"] == 9 and out["deadline"] == "DEADLINE_EXCEEDED" and out["aborted"] == "CANCELLED", out
    assert out["after"] == [9, 9, 9], out
