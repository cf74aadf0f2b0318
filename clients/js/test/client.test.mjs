// The client's own rules, without a lossd server: requests are checked before they
// are sent (nothing is silently left out), tensors convert exactly, and listAllJobs
// pages through a stand-in TrainingService (an in-process Connect server).
// Run: npm test (tests/integration/test_js_client.py runs it in `make test`).
import assert from "node:assert/strict";
import { createServer } from "node:http2";
import { test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  checkRequest, createLossdClient, describeError, EvaluateLossRequestSchema, JobState, TensorEncoding, tensor, toArray,
  TrainingService, TrainJobRequestSchema,
} from "@lossd/client";

const seed = () => ({
  loss: "cross_entropy",
  inputs: {
    input: { dtype: "float32", shape: [2n, 3n], values: [10, 0, -10, 8, 8, 8] },
    target: { dtype: "int64", shape: [2n], values: [0, 2] },
  },
  params: { reduction: "sum", label_smoothing: 0.1 },
});

test("a well-formed request passes and params travel as a Struct", () => {
  checkRequest(EvaluateLossRequestSchema, { ...seed(), gradInputs: ["input"], outputEncoding: TensorEncoding.RAW });
  const bytes = toBinary(EvaluateLossRequestSchema, create(EvaluateLossRequestSchema, seed()));
  assert.ok(Buffer.from(bytes).includes(Buffer.from("label_smoothing")));
});

test("a proto (snake_case) field name is refused with the JavaScript name", () => {
  assert.throws(() => checkRequest(EvaluateLossRequestSchema, { ...seed(), grad_inputs: ["input"] }),
    { name: "TypeError", message: /EvaluateLossRequest\.grad_inputs is not a field of lossd\.v1\.EvaluateLossRequest; did you mean "gradInputs"\?/ });
  assert.throws(() => checkRequest(EvaluateLossRequestSchema, { ...seed(), allow_non_finite: true }), /did you mean "allowNonFinite"/);
});

test("a parameter outside params is refused, listing the fields", () => {
  assert.throws(() => checkRequest(EvaluateLossRequestSchema, { ...seed(), label_smoothing: 0.1 }),
    /EvaluateLossRequest\.label_smoothing is not a field .*fields: loss, inputs, params, gradInputs/);
});

test("nested messages, maps and lists are checked", () => {
  const request = seed();
  request.inputs.input.shape = "23"; // a string is iterable: create() would send shape [2, 3]
  assert.throws(() => checkRequest(EvaluateLossRequestSchema, request), /EvaluateLossRequest\.inputs\.input\.shape must be an array/);
  const typo = seed();
  typo.inputs.target = { dtype: "int64", shape: [2n], value: [0, 2] };
  assert.throws(() => checkRequest(EvaluateLossRequestSchema, typo), /inputs\.target\.value is not a field of lossd\.v1\.Tensor; fields: dtype, shape, raw, values/);
  assert.throws(() => checkRequest(EvaluateLossRequestSchema, { ...seed(), outputEncoding: "raw" }), /outputEncoding must be a lossd\.v1\.TensorEncoding number/);
  assert.throws(() => checkRequest(EvaluateLossRequestSchema, { ...seed(), terms: [{ loss: "mse", wieght: 2 }] }), /terms\[0\]\.wieght is not a field/);
});

test("params must be JSON: undefined, bigint and Maps are refused", () => {
  for (const params of [{ label_smoothing: undefined }, { ignore_index: 3n }, new Map([["reduction", "sum"]])]) {
    assert.throws(() => checkRequest(EvaluateLossRequestSchema, { ...seed(), params }), /EvaluateLossRequest\.params/);
  }
  checkRequest(EvaluateLossRequestSchema, { ...seed(), params: { weight: null, nested: { list: [1, "a", true] } } });
});

test("oneof fields take {case, value}", () => {
  checkRequest(TrainJobRequestSchema, { model: { kind: { case: "mlp", value: { hidden: [4, 8] } } } });
  assert.throws(() => checkRequest(TrainJobRequestSchema, { model: { mlp: { hidden: [4] } } }), /model\.mlp is not a field .*did you mean "kind"/);
  assert.throws(() => checkRequest(TrainJobRequestSchema, { model: { kind: { case: "cnn", value: {} } } }), /model\.kind\.case must be one of linear, mlp/);
});

test("client methods check before sending (no server needed)", async () => {
  const client = createLossdClient({ target: "127.0.0.1:9" });
  const refused = await client.evaluateLoss({ ...seed(), grad_inputs: ["input"] }).catch((err) => err);
  assert.ok(refused instanceof TypeError && /^EvaluateLossRequest\.grad_inputs .*"gradInputs"/.test(refused.message), String(refused));
  assert.throws(() => describeError(refused), TypeError); // not a failed call: thrown again
  assert.throws(() => createLossdClient({ target: "http://127.0.0.1:9" }), /target must be "host:port"/);
  assert.throws(() => createLossdClient({ adress: "x" }), /unknown option "adress"/);
});

test("typed arrays travel as raw little-endian bytes and come back exactly", () => {
  const f32 = new Float32Array([0.1, -2.5, 3e-38, 1 / 3]);
  const t = tensor("float32", [2, 2], f32);
  assert.deepEqual(t.shape, [2n, 2n]);
  assert.deepEqual([...t.raw.subarray(0, 4)], [0xcd, 0xcc, 0xcc, 0x3d]); // 0.1f little-endian
  assert.deepEqual(toArray(t), f32);
  const i64 = new BigInt64Array([-1n, 2n ** 40n]);
  assert.deepEqual(toArray(tensor("int64", [2], i64)), i64);
  assert.deepEqual(toArray({ dtype: "int64", shape: [2n], values: [0, 2] }), new BigInt64Array([0n, 2n]));
  assert.deepEqual(tensor("float32", [], [1.5]), { dtype: "float32", shape: [], values: [1.5] });
  assert.throws(() => tensor("float32", [3], new Float32Array(2)), /shape \[3\] has 3 elements, data has 2/);
  assert.throws(() => tensor("float32", [2], new Float64Array(2)), /float32 data must be Float32Array/);
  assert.throws(() => tensor("float32", [2.5], [1, 2]), /dimensions must be integers from 0 to 2\^63 - 1, got 2.5/);
  assert.throws(() => tensor("float32", [-1n], []), /got -1/);
});

test("complex64 and complex128 travel as (real, imaginary) pairs and come back exactly", () => {
  const c64 = new Float32Array([3, 4, 0, -1]); // 3+4i, -1i
  const t = tensor("complex64", [2], c64);
  assert.equal(t.raw.length, 16);
  assert.deepEqual([...t.raw.subarray(0, 8)], [0x00, 0x00, 0x40, 0x40, 0x00, 0x00, 0x80, 0x40]); // 3.0f, 4.0f
  assert.deepEqual(toArray(t), c64);
  const c128 = new Float64Array([0.1, -0.2]);
  assert.deepEqual(toArray(tensor("complex128", [], c128)), c128);
  assert.deepEqual(tensor("complex64", [1], [3, 4]), { dtype: "complex64", shape: [1n], values: [3, 4] });
  assert.deepEqual(toArray({ dtype: "complex128", shape: [1n], values: [3, 4] }), new Float64Array([3, 4]));
  assert.throws(() => tensor("complex64", [2], new Float32Array(2)),
    /shape \[2\] has 2 elements, 4 numbers \(real, imaginary\), data has 2/);
  assert.throws(() => tensor("complex128", [1], new Float32Array(2)), /complex128 data must be Float64Array/);
});

test("float16 and bfloat16 raw bytes decode to float32 exactly", () => {
  // float16: 1.0 = 0x3c00, -2.0 = 0xc000, 65504 = 0x7bff, smallest subnormal 2^-24 = 0x0001
  const f16 = new Uint8Array([0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00]);
  assert.deepEqual([...toArray({ dtype: "float16", shape: [4n], raw: f16 })], [1, -2, 65504, 2 ** -24]);
  // bfloat16: 1.0 = 0x3f80, -0.5 = 0xbf00
  const bf16 = new Uint8Array([0x80, 0x3f, 0x00, 0xbf]);
  assert.deepEqual([...toArray({ dtype: "bfloat16", shape: [2n], raw: bf16 })], [1, -0.5]);
});

test("the types declare every method the client has", async () => {
  const { readFileSync } = await import("node:fs");
  const dts = readFileSync(new URL("../src/index.d.ts", import.meta.url), "utf8");
  const body = dts.slice(dts.indexOf("export interface LossdClient {"));
  const declared = [...body.slice(0, body.indexOf("\n}")).matchAll(/^ {2}(\w+)\(/gm)].map((m) => m[1]).sort();
  assert.deepEqual(declared, Object.keys(createLossdClient({ target: "127.0.0.1:9" })).sort());
});

test("integers are checked against their field's range before sending", () => {
  assert.throws(() => checkRequest(TrainJobRequestSchema, { epochs: 2 ** 31 }),
    /TrainJobRequest\.epochs must be from -2147483648 to 2147483647 \(int32\), got 2147483648/);
  assert.throws(() => checkRequest(TrainJobRequestSchema, { seed: 2n ** 63n }), /TrainJobRequest\.seed must be from .* \(int64\)/);
  checkRequest(TrainJobRequestSchema, { epochs: 2 ** 31 - 1, seed: -(2n ** 63n) });
  assert.throws(() => checkRequest(TrainJobRequestSchema, { epochs: 1.5 }), /epochs must be an integer, got number 1.5/);
  assert.throws(() => tensor("float32", [2n ** 63n], []), /dimensions must be integers from 0 to 2\^63 - 1, got 9223372036854775808/);
});

test("plain-array elements must be numbers: nothing is coerced", () => {
  for (const [dtype, data, what] of [["float32", ["1.5", 2], /data\[0\] must be a number, got string "1.5"/],
    ["float32", [null, 1], /data\[0\] must be a number, got null/], ["float64", [1, [2]], /data\[1\] must be a number, got Array/],
    ["float32", [true, 1], /data\[0\] must be a number, got boolean true/],
    ["int64", [2n ** 60n + 1n, 1], /data\[0\] must be a number or a bigint within ±2\^53 \(larger: a BigInt64Array\)/]]) {
    assert.throws(() => tensor(dtype, [2], data), { name: "TypeError", message: what });
  }
  assert.deepEqual(tensor("bool", [2], [true, 0]).values, [1, 0]);
  assert.deepEqual(tensor("int64", [2], [2n ** 53n, -3]).values, [2 ** 53, -3]);
  assert.deepEqual(tensor("float32", [2], [NaN, -Infinity]).values, [NaN, -Infinity]); // the server's to refuse
});

test("client options are checked: timeoutMs, tls, maxMessageBytes", () => {
  for (const [options, what] of [[{ timeoutMs: -1 }, /timeoutMs must be a number of milliseconds from 1 to 2\^31 - 1, or Infinity for none, got number -1/],
    [{ timeoutMs: NaN }, /timeoutMs must be/], [{ timeoutMs: "60000" }, /timeoutMs must be .*got string "60000"/],
    [{ timeoutMs: 2 ** 31 }, /timeoutMs must be/], [{ tls: "no" }, /tls must be a boolean or \{ca, cert, key, serverName\}, got string "no"/],
    [{ maxMessageBytes: 0 }, /maxMessageBytes must be an integer from 1 to 2\^32 - 1, got number 0/]]) {
    assert.throws(() => createLossdClient({ target: "127.0.0.1:9", ...options }), { name: "TypeError", message: what });
  }
  createLossdClient({ target: "127.0.0.1:9", timeoutMs: Infinity, tls: false, maxMessageBytes: 2 ** 32 - 1 });
});

test("a call's own timeoutMs is checked too", async () => {
  const client = createLossdClient({ target: "127.0.0.1:9" });
  const refused = await client.listLosses({}, { timeoutMs: -5 }).catch((err) => err);
  assert.ok(refused instanceof TypeError && /^timeoutMs must be/.test(refused.message), String(refused));
  assert.throws(() => client.watchJob({ jobId: "x" }, "fast"), /call options must be a plain object/);
});

test("toArray refuses data that does not fill the shape, or raw and values both", () => {
  assert.throws(() => toArray({ dtype: "float32", shape: [3n], raw: new Uint8Array(8) }),
    /shape \[3\] has 3 float32 elements; the tensor has 8 raw bytes/);
  assert.throws(() => toArray({ dtype: "float32", shape: [2n], values: [1, 2, 3] }), /the tensor has 3 values/);
  assert.throws(() => toArray({ dtype: "float32", shape: [1n], values: [1], raw: new Uint8Array(4) }), /both raw and values/);
  assert.deepEqual(toArray({ dtype: "complex64", shape: [1n], raw: new Uint8Array(8) }), new Float32Array(2));
  assert.deepEqual(toArray({ dtype: "float32", shape: [0n, 3n], raw: new Uint8Array(0) }), new Float32Array(0));
  assert.deepEqual(toArray({ dtype: "float64", shape: [], values: [2] }), new Float64Array([2]));
});

test("float16 and bfloat16 NaNs keep their sign and payload", () => {
  const raw = new Uint8Array(new Uint16Array([0x7c01, 0xfe00, 0x7fff, 0x7c00]).buffer);
  assert.deepEqual([...new Uint32Array(toArray({ dtype: "float16", shape: [4n], raw }).buffer)],
    [0x7f802000, 0xffc00000, 0x7fffe000, 0x7f800000]); // a signalling NaN, -NaN, a payload, +Inf
  assert.deepEqual([...new Uint32Array(toArray({ dtype: "bfloat16", shape: [4n], raw }).buffer)],
    [0x7c010000, 0xfe000000, 0x7fff0000, 0x7c000000]);
});

test("tls options are checked when the client is made: types, and cert with key", () => {
  for (const [tls, what] of [[{ ca: 5 }, /tls\.ca must be PEM text \(a string\) or its bytes .*got number 5/],
    [{ ca: "x", cert: "c" }, /tls\.cert and tls\.key go together \(mutual TLS\): tls\.key is missing/],
    [{ key: new Uint8Array(1) }, /tls\.cert is missing/], [{ serverName: "" }, /tls\.serverName must be a non-empty string/]]) {
    assert.throws(() => createLossdClient({ target: "127.0.0.1:9", tls }), { name: "TypeError", message: what });
  }
  createLossdClient({ target: "127.0.0.1:9", tls: { ca: "x", cert: new Uint8Array(1), key: "k", serverName: "a.example" } });
});

test("a target is host:port that a URL keeps: nothing moves the port or the host", () => {
  for (const target of ["127.0.0.1#:35023", "user@127.0.0.1:50051", "::1:50051", "host:99999", "host:0",
    "127.0.0.1:50051,127.0.0.1:50052", "a?b:1", "", 50051]) {
    assert.throws(() => createLossdClient({ target }), { name: "TypeError", message: /target must be "host:port"/ }, String(target));
  }
  for (const target of ["127.0.0.1:50051", "[::1]:50051", "Localhost:8080", "lossd.example:80"]) createLossdClient({ target });
});

test("tensor data: whole numbers beyond 2^53, holes and non-arrays are refused naming the data", () => {
  assert.throws(() => tensor("int64", [1], [9007199254740993]), /data\[0\] is 9007199254740992, beyond ±\(2\^53 - 1\).*use a bigint or a BigInt64Array/);
  assert.deepEqual(tensor("int64", [2], [2 ** 53 - 1, -(2 ** 53 - 1)]).values, [2 ** 53 - 1, -(2 ** 53 - 1)]);
  assert.deepEqual(tensor("float32", [1], [2 ** 60]).values, [2 ** 60]); // a float dtype takes any number
  // eslint-disable-next-line no-sparse-arrays
  assert.throws(() => tensor("float32", [3], [1, , 3]), /data\[1\] must be a number, got undefined$/);
  assert.throws(() => tensor("float32", [2], null), /data must be an array or a typed array, got null/);
  assert.throws(() => tensor("float32", [0], undefined), /data must be an array or a typed array, got undefined/);
});

// ---- listAllJobs against stand-in servers ------------------------------------

/** The stand-in servers' jobs, newest first. */
const JOBS = Array.from({ length: 250 }, (_, i) => ({ jobId: i.toString(16).padStart(12, "0") }));

/** A client of a stand-in TrainingService whose ListJobs is `answer(request)`; the requests it got in `calls`.
 * A 51st call is refused (RESOURCE_EXHAUSTED): a listing that never ends fails rather than hangs the tests. */
async function standIn(answer, run) {
  const calls = [];
  const server = createServer(connectNodeAdapter({
    routes: (router) => router.service(TrainingService, {
      listJobs(request) {
        calls.push({ states: request.states, limit: request.limit, pageSize: request.pageSize, pageToken: request.pageToken });
        if (calls.length > 50) throw new ConnectError("called too often", Code.ResourceExhausted);
        return answer(request);
      },
    }),
  }));
  const sessions = new Set();
  server.on("session", (session) => sessions.add(session));
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    return await run(createLossdClient({ target: `127.0.0.1:${server.address().port}`, timeoutMs: 10_000 }), calls);
  } finally {
    const closed = new Promise((resolve) => server.close(resolve));
    for (const session of sessions) session.destroy(); // the client keeps its connection open: close waits for it
    await closed;
  }
}

/** A paging server that sends at most 7 jobs a page (fewer than asked for, as a page may), after the token's index. */
function sevenAPage(request) {
  const start = request.pageToken ? Number(request.pageToken.slice("after-".length)) : 0;
  const end = Math.min(start + Math.min(request.pageSize || 100, 7), JOBS.length);
  return { jobs: JOBS.slice(start, end), nextPageToken: end < JOBS.length ? `after-${end}` : "" };
}

/** A server from before paging: the `limit` (0: 100) newest jobs and no token, whatever `pageSize` says. */
const beforePaging = (request) => ({ jobs: JOBS.slice(0, request.limit || 100) });

const ids = (jobs) => jobs.map((j) => j.jobId);

test("listAllJobs reads every page, each job once and in order, sending limit beside pageSize", async () => {
  await standIn(sevenAPage, async (client, calls) => {
    assert.deepEqual(ids(await client.listAllJobs({ states: [JobState.SUCCEEDED, JobState.FAILED] })), ids(JOBS));
    assert.equal(calls.length, Math.ceil(JOBS.length / 7));
    assert.deepEqual(calls.slice(0, 2), [
      { states: [JobState.SUCCEEDED, JobState.FAILED], limit: 1000, pageSize: 1000, pageToken: "" },
      { states: [JobState.SUCCEEDED, JobState.FAILED], limit: 1000, pageSize: 1000, pageToken: "after-7" }]);
    calls.length = 0;
    // the limit newest, each page asking for what is left of it
    assert.deepEqual(ids(await client.listAllJobs({ limit: 20 })), ids(JOBS.slice(0, 20)));
    assert.deepEqual(calls.map((c) => [c.pageSize, c.limit, c.pageToken]), [[20, 20, ""], [13, 13, "after-7"], [6, 6, "after-14"]]);
  });
});

test("listAllJobs against a server from before paging (or one sending more than asked) gives at most limit jobs", async () => {
  for (const limit of [5, 150, 0]) {
    await standIn(beforePaging, async (client, calls) => {
      // 0: every job, asked as a page of 1,000, which such a server reads as its limit (not its default 100)
      assert.deepEqual(ids(await client.listAllJobs({ limit })), ids(JOBS.slice(0, limit || undefined)));
      assert.equal(calls.length, 1);
    });
  }
  // one that sends more than it was asked for: still the limit newest
  await standIn(() => ({ jobs: JOBS.slice(0, 100) }), async (client) => {
    assert.deepEqual(ids(await client.listAllJobs({ limit: 5 })), ids(JOBS.slice(0, 5)));
  });
});

test("listAllJobs ends on a page that sends back its own token, or a page without jobs", async () => {
  await standIn(() => ({ jobs: JOBS.slice(0, 1), nextPageToken: "again" }), async (client, calls) => {
    assert.deepEqual(ids(await client.listAllJobs()), ids([JOBS[0], JOBS[0]]));
    assert.deepEqual(calls.map((c) => c.pageToken), ["", "again"]);
  });
  await standIn((request) => ({ jobs: [], nextPageToken: `${request.pageToken}x` }), async (client, calls) => {
    assert.deepEqual(await client.listAllJobs(), []);
    assert.equal(calls.length, 1);
  });
});

test("listAllJobs checks its request before any call", async () => {
  const client = createLossdClient({ target: "127.0.0.1:9" });
  for (const [request, what] of [[{ limit: -1 }, /limit must be an integer >= 0 \(0: every job\), got number -1/],
    [{ limit: 2.5 }, /limit must be/], [{ limit: 5n }, /limit must be .*got 5n/], [{ limt: 5 }, /unknown option "limt"; known: states, limit/],
    [{ states: "RUNNING" }, /ListJobsRequest\.states must be an array/], [{ states: [9] }, /ListJobsRequest\.states\[0\] must be a lossd\.v1\.JobState number/],
    [[], /the request must be a plain object/]]) {
    const refused = await client.listAllJobs(request).catch((err) => err);
    assert.ok(refused instanceof TypeError && what.test(refused.message), `${JSON.stringify(request, (k, v) => (typeof v === "bigint" ? `${v}n` : v))}: ${refused}`);
  }
});
