// A thin lossd client for Node: gRPC over HTTP/2 (Connect for Node), messages
// from the committed protoc-gen-es code in ./gen, and four things the
// generated code does not do:
//
// 1. Every request is checked before it is sent: a key that is not a field
//    (`grad_inputs` for `gradInputs`, `label_smoothing` outside `params`) or a
//    value of the wrong kind is a TypeError naming its path, never a field
//    silently left out. `params` is a plain JSON object (google.protobuf.Struct).
// 2. `tensor()` / `toArray()` convert between typed arrays and the Tensor
//    message (raw bytes are little-endian, C-contiguous).
// 3. `describeError()` turns a failed call into {code, message, fieldViolations},
//    decoding google.rpc.BadRequest from the `grpc-status-details-bin` trailer.
// 4. `client.listAllJobs()` reads every page of ListJobs, as the Python SDK's `jobs()`.
//
//   import { createLossdClient } from "@lossd/client";
//   const client = createLossdClient({ target: "127.0.0.1:50051" });
//   const reply = await client.evaluateLoss({ loss: "mse", inputs: {...}, params: { reduction: "sum" } });

import { endianness } from "node:os";
import { ScalarType } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BadRequestSchema } from "./gen/google/rpc/error_details_pb.js";
import { LossService } from "./gen/lossd/v1/lossd_pb.js";
import { TrainingService } from "./gen/lossd/v1/training_pb.js";

export * from "./gen/lossd/v1/lossd_pb.js";
export * from "./gen/lossd/v1/training_pb.js";
export { BadRequestSchema } from "./gen/google/rpc/error_details_pb.js";

/** Where a client connects when neither `target` nor `$LOSSD_TARGET` says (as the Python SDK). */
export const DEFAULT_TARGET = "127.0.0.1:50051";

/** Message size limit, equal to the server's and the Python SDK's default (256 MiB). */
export const DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

const SERVICES = [LossService, TrainingService];

/**
 * A client for every lossd RPC (LossService and TrainingService) on one HTTP/2 connection.
 *
 * Methods are the RPCs in lowerCamelCase: `listLosses`, `evaluateLoss`, `evaluateLossBatch`,
 * `evaluateLossStream`, `trainJob`, `watchJob`, `getJob`, `listJobs`, `cancelJob`, `deleteJob`;
 * `listAllJobs` reads every page of `listJobs` (or the `limit` newest jobs).
 * Unary methods return a promise of the reply, streaming ones an async iterable; each
 * takes a plain object (checked by `checkRequest`; `evaluateLossStream` an iterable of
 * them) and Connect's call options ({timeoutMs, headers, signal}). `timeoutMs` is the
 * default deadline of every call but the server streams (`trainJob`, `watchJob` follow a
 * job for as long as it runs), as in the Python SDK; a call's own `timeoutMs` wins, and
 * `Infinity` means no deadline.
 *
 * @param {object} [options]
 * @param {string} [options.target] "host:port"; default `$LOSSD_TARGET`, else 127.0.0.1:50051
 * @param {string} [options.token] bearer token, sent as `authorization: Bearer <token>`
 * @param {boolean | {ca?: string | Buffer, cert?: string | Buffer, key?: string | Buffer, serverName?: string}} [options.tls]
 *   TLS (with an optional CA, client certificate and key for mutual TLS); default plaintext
 * @param {number} [options.timeoutMs] default deadline of every call but the server streams, in ms
 *   (at most 2^31 - 1; `Infinity` or none: no deadline)
 * @param {number} [options.maxMessageBytes] largest message sent or received (1 to 2^32 - 1 bytes)
 * @example
 *   const client = createLossdClient({ target: "127.0.0.1:50051" });
 *   const { value } = await client.evaluateLoss({ loss: "l1", inputs: { input: tensor("float32", [2], [1, 2]), target: tensor("float32", [2], [0, 0]) } });
 */
export function createLossdClient(options = {}) {
  const { target = process.env.LOSSD_TARGET || DEFAULT_TARGET, token, tls = false, timeoutMs,
    maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES, ...rest } = options;
  const unknown = Object.keys(rest);
  if (unknown.length) {
    throw new TypeError(`createLossdClient: unknown option ${unknown.map((k) => JSON.stringify(k)).join(", ")}; `
      + "known: target, token, tls, timeoutMs, maxMessageBytes");
  }
  if (!validTarget(target)) {
    throw new TypeError(`createLossdClient: target must be "host:port" (an IPv6 address in brackets: "[::1]:50051"), got ${describe(target)}`);
  }
  checkTimeout(timeoutMs, "createLossdClient: timeoutMs");
  if (typeof tls !== "boolean" && !isPlainObject(tls)) {
    throw new TypeError(`createLossdClient: tls must be a boolean or {ca, cert, key, serverName}, got ${describe(tls)}`);
  }
  if (!Number.isInteger(maxMessageBytes) || maxMessageBytes < 1 || maxMessageBytes > 2 ** 32 - 1) {
    throw new TypeError(`createLossdClient: maxMessageBytes must be an integer from 1 to 2^32 - 1, got ${describe(maxMessageBytes)}`);
  }
  // Node's HTTP/2 session refuses new streams (ENHANCE_YOUR_CALM) once the data it holds passes
  // maxSessionMemory (MB, default 10): the unsent rest of a large request whose call timed out or was
  // aborted stays charged to the session, so every later call on this client failed. Room for two
  // messages of the largest size.
  const nodeOptions = { maxSessionMemory: Math.max(10, Math.ceil((2 * maxMessageBytes) / 2 ** 20)) };
  if (tls && typeof tls === "object") {
    for (const [k, v] of Object.entries(tls)) {
      if (v === undefined) continue;
      if (k === "serverName") {
        if (typeof v !== "string" || v === "") throw new TypeError(`createLossdClient: tls.serverName must be a non-empty string, got ${describe(v)}`);
        nodeOptions.servername = v;
      } else if (k === "ca" || k === "cert" || k === "key") {
        if (typeof v !== "string" && !(v instanceof Uint8Array)) {
          throw new TypeError(`createLossdClient: tls.${k} must be PEM text (a string) or its bytes (a Buffer or Uint8Array), got ${describe(v)}`);
        }
        nodeOptions[k] = v;
      } else throw new TypeError(`createLossdClient: unknown tls option ${JSON.stringify(k)}; known: ca, cert, key, serverName`);
    }
    if ((nodeOptions.cert === undefined) !== (nodeOptions.key === undefined)) {
      throw new TypeError(`createLossdClient: tls.cert and tls.key go together (mutual TLS): tls.${nodeOptions.cert === undefined ? "cert" : "key"} is missing`);
    }
  }
  const interceptors = [];
  if (token !== undefined) {
    if (typeof token !== "string" || token === "") throw new TypeError("createLossdClient: token must be a non-empty string");
    interceptors.push((next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    });
  }
  const transport = createGrpcTransport({
    baseUrl: `${tls ? "https" : "http"}://${target}`,
    interceptors,
    nodeOptions,
    readMaxBytes: maxMessageBytes,
    writeMaxBytes: maxMessageBytes,
  });
  const client = {};
  for (const service of SERVICES) {
    const raw = createClient(service, transport);
    for (const method of service.methods) {
      // the server streams follow a job for as long as it runs: no default deadline (as the Python SDK)
      const deadline = method.methodKind === "server_streaming" ? undefined : timeoutMs;
      client[method.localName] = checkedMethod(method, raw[method.localName], deadline);
    }
  }
  client.listAllJobs = (request, callOptions) => listAllJobs(client.listJobs, request, callOptions);
  return client;
}

/** The most jobs a server lists in one page (ListJobs' `pageSize` is clamped to it). */
const MAX_PAGE_SIZE = 1000;

/**
 * Jobs, newest first (without their specs), optionally only in `states`: every one, or the `limit`
 * newest (0: every one), read a page (a `listJobs` call) at a time, as the Python SDK's `Client.jobs()`.
 * Each call asks for a page of what `limit` leaves (at most 1000) as `pageSize` and as `limit`, its older
 * name, which a server from before paging reads instead. A page without jobs, or one whose
 * `nextPageToken` is the token that asked for it, ends the listing too: lossd's server sends neither, and
 * a server that did would keep the loop calling for ever. `callOptions` (`timeoutMs`, ...) go to each call.
 *
 * @param {Function} listJobs the client's checked `listJobs`
 * @param {{states?: number[], limit?: number}} [request] states as JobState numbers (`JobState.RUNNING`)
 * @example
 *   const running = await client.listAllJobs({ states: [JobState.RUNNING] });
 *   const newest = await client.listAllJobs({ limit: 10 });
 */
async function listAllJobs(listJobs, request = {}, callOptions = undefined) {
  if (!isPlainObject(request)) throw new TypeError(`listAllJobs: the request must be a plain object ({states, limit}), got ${describe(request)}`);
  const { states = [], limit = 0, ...rest } = request;
  const unknown = Object.keys(rest);
  if (unknown.length) {
    throw new TypeError(`listAllJobs: unknown option ${unknown.map((k) => JSON.stringify(k)).join(", ")}; known: states, limit`);
  }
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new TypeError(`listAllJobs: limit must be an integer >= 0 (0: every job), got ${describe(limit)}`);
  }
  const jobs = [];
  let token = "";
  for (;;) {
    const pageSize = limit ? Math.min(limit - jobs.length, MAX_PAGE_SIZE) : MAX_PAGE_SIZE;
    const page = await listJobs({ states, limit: pageSize, pageSize, pageToken: token }, callOptions);
    jobs.push(...page.jobs);
    if (limit) jobs.length = Math.min(jobs.length, limit); // a server may send more than it was asked for
    const next = page.nextPageToken;
    if (!next || !page.jobs.length || next === token || (limit && jobs.length >= limit)) return jobs;
    token = next;
  }
}

/** `host:port`, a port from 1 to 65535, nothing a URL reads otherwise (`#`, `?`, `@`, `\\` moved the
 * port or the host: `127.0.0.1#:50051` went to port 80). */
function validTarget(target) {
  if (typeof target !== "string" || !/^[^/\\\s#?@]+:\d+$/.test(target)) return false;
  const port = Number(target.slice(target.lastIndexOf(":") + 1));
  if (!(port >= 1 && port <= 65535)) return false;
  try {
    return new URL(`http://${target}`).port === (port === 80 ? "" : String(port)); // 80: http's default
  } catch {
    return false; // ::1:50051 (an IPv6 address without brackets)
  }
}

/** A timeout in ms: undefined or Infinity (none), or a positive number Node's timers can hold. */
function checkTimeout(ms, what) {
  if (ms === undefined || ms === Infinity) return;
  if (typeof ms !== "number" || !(ms > 0) || ms > 2 ** 31 - 1) {
    throw new TypeError(`${what} must be a number of milliseconds from 1 to 2^31 - 1, or Infinity for none, got ${describe(ms)}`);
  }
}

/** Connect's call options with the deadline this call gets: its own `timeoutMs`, else `fallback`. */
function withDeadline(callOptions, fallback) {
  if (callOptions !== undefined && !isPlainObject(callOptions)) {
    throw new TypeError(`call options must be a plain object ({timeoutMs, headers, signal}), got ${describe(callOptions)}`);
  }
  const { timeoutMs = fallback, ...rest } = callOptions ?? {};
  checkTimeout(timeoutMs, "timeoutMs");
  return timeoutMs === undefined || timeoutMs === Infinity ? rest : { ...rest, timeoutMs };
}

function checkedMethod(method, call, timeoutMs) {
  const where = method.input.name; // error paths read EvaluateLossRequest.grad_inputs
  if (method.methodKind === "unary") {
    return async (request, callOptions) => {
      checkRequest(method.input, request, where);
      return call(request, withDeadline(callOptions, timeoutMs));
    };
  }
  if (method.methodKind === "server_streaming") {
    return (request, callOptions) => {
      checkRequest(method.input, request, where); // throws at the call, before any iteration
      const options = withDeadline(callOptions, timeoutMs);
      return replyStream((signal) => call(request, { ...options, signal }), options.signal);
    };
  }
  // client and bidi streaming: each request is checked as it is sent. Connect ends the call as
  // INTERNAL when the request iterable throws; the caller gets the iterable's own error instead
  // (the TypeError of a refused request, or whatever the caller's iterable threw).
  return (requests, callOptions) => {
    const options = withDeadline(callOptions, timeoutMs);
    let thrown;
    const checked = (async function* checked() {
      try {
        for await (const request of requests) {
          checkRequest(method.input, request, where);
          yield request;
        }
      } catch (err) {
        thrown = { err };
        throw err;
      }
    })();
    const own = (err) => { throw thrown ? thrown.err : err; };
    if (method.methodKind === "client_streaming") return call(checked, options).catch(own);
    return replyStream((signal) => call(checked, { ...options, signal }), options.signal, own);
  };
}

/**
 * The replies of a streaming call as an async iterable that starts the call at its first `next()`
 * (Connect starts it at once: an error before the caller iterated was an unhandled rejection, which
 * ends a Node process however the iteration is guarded) and cancels it when the caller stops early
 * (`break`, `return`, a throw in the loop: Connect's iterable drops `return()`, so the HTTP/2
 * stream stayed open, the server kept following it and the process never exited).
 */
function replyStream(start, callerSignal, onError = (err) => { throw err; }) {
  return (async function* replies() {
    const stop = new AbortController();
    // the caller's signal stops the call too (linked by hand: AbortSignal.any needs Node 20.3)
    const follow = () => stop.abort(callerSignal.reason);
    if (callerSignal?.aborted) follow();
    else callerSignal?.addEventListener("abort", follow, { once: true });
    try {
      yield* start(stop.signal);
    } catch (err) {
      onError(err);
    } finally {
      callerSignal?.removeEventListener("abort", follow);
      stop.abort(); // after the last reply a no-op; before it, the call's cancellation
    }
  })();
}

const JSON_TYPES = new Set(["google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"]);
// [least, greatest] of each integer scalar type
const INT_RANGES = new Map([
  ...[ScalarType.INT64, ScalarType.SINT64, ScalarType.SFIXED64].map((t) => [t, [-(2n ** 63n), 2n ** 63n - 1n]]),
  ...[ScalarType.UINT64, ScalarType.FIXED64].map((t) => [t, [0n, 2n ** 64n - 1n]]),
  ...[ScalarType.INT32, ScalarType.SINT32, ScalarType.SFIXED32].map((t) => [t, [-(2n ** 31n), 2n ** 31n - 1n]]),
  ...[ScalarType.UINT32, ScalarType.FIXED32].map((t) => [t, [0n, 2n ** 32n - 1n]]),
]);
const INT64 = new Set([ScalarType.INT64, ScalarType.UINT64, ScalarType.SINT64, ScalarType.FIXED64, ScalarType.SFIXED64]);
const FLOAT = new Set([ScalarType.DOUBLE, ScalarType.FLOAT]);

/**
 * Check a plain-object request against its message schema; throws a TypeError naming the path.
 *
 * protoc-gen-es's `create()` ignores keys that are not fields, so `{grad_inputs: [...]}`
 * (the proto name; the JS field is `gradInputs`) would be sent as if it were absent.
 * Here it is an error that names the right key. Struct fields (`params`) take any JSON
 * object; their keys are the server's to check (an unknown parameter is INVALID_ARGUMENT).
 *
 * @param {import("@bufbuild/protobuf").DescMessage} schema e.g. EvaluateLossRequestSchema
 * @param {unknown} init the request as a plain object (a message made by `create()` passes as is)
 * @param {string} [path] prefix of the paths in error messages
 * @example
 *   checkRequest(EvaluateLossRequestSchema, { loss: "ce", grad_inputs: ["input"] });
 *   // TypeError: EvaluateLossRequest.grad_inputs is not a field of lossd.v1.EvaluateLossRequest; did you mean "gradInputs"?
 */
export function checkRequest(schema, init, path = schema.name) {
  checkMessage(schema, init, path);
}

function fail(path, what) {
  throw new TypeError(`${path} ${what}`);
}

function isPlainObject(v) {
  if (v === null || typeof v !== "object") return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function checkMessage(desc, init, path) {
  if (init === undefined || init === null) return;
  if (JSON_TYPES.has(desc.typeName)) {
    if (desc.typeName === "google.protobuf.Struct" && !isPlainObject(init)) fail(path, "must be a plain object (JSON)");
    if (desc.typeName === "google.protobuf.ListValue" && !Array.isArray(init)) fail(path, "must be an array (JSON)");
    checkJson(init, path);
    return;
  }
  if (typeof init === "object" && "$typeName" in init) {
    if (init.$typeName !== desc.typeName) fail(path, `is a ${init.$typeName}, expected ${desc.typeName}`);
    return; // made by create(): already a message
  }
  if (!isPlainObject(init)) fail(path, `must be a plain object (${desc.typeName})`);
  const byKey = new Map();
  for (const field of desc.fields) if (!field.oneof) byKey.set(field.localName, field);
  for (const oneof of desc.oneofs) byKey.set(oneof.localName, oneof);
  for (const [key, value] of Object.entries(init)) {
    const member = byKey.get(key);
    if (member === undefined) {
      const alike = desc.fields.find((f) => f.name === key || f.jsonName === key || f.localName.toLowerCase() === key.toLowerCase());
      const hint = alike ? `did you mean ${JSON.stringify(alike.oneof ? alike.oneof.localName : alike.localName)}?`
        : `fields: ${[...byKey.keys()].join(", ")}`;
      fail(`${path}.${key}`, `is not a field of ${desc.typeName}; ${hint}`);
    }
    if (value === undefined || value === null) continue;
    if (member.kind === "oneof") checkOneof(member, value, `${path}.${key}`);
    else checkField(member, value, `${path}.${key}`);
  }
}

function checkOneof(oneof, value, path) {
  const cases = oneof.fields.map((f) => f.localName);
  if (!isPlainObject(value) || !("case" in value)) fail(path, `must be {case, value} with case one of ${cases.join(", ")}`);
  if (value.case === undefined) return;
  const field = oneof.fields.find((f) => f.localName === value.case);
  if (field === undefined) fail(`${path}.case`, `must be one of ${cases.join(", ")}, got ${JSON.stringify(value.case)}`);
  for (const key of Object.keys(value)) if (key !== "case" && key !== "value") fail(`${path}.${key}`, "is not allowed; a oneof is {case, value}");
  checkField(field, value.value, `${path}.value`);
}

function checkField(field, value, path) {
  switch (field.fieldKind) {
    case "message":
      return checkMessage(field.message, value, path);
    case "enum":
      return checkEnum(field.enum, value, path);
    case "scalar":
      return checkScalar(field.scalar, value, path);
    case "list": {
      if (!Array.isArray(value) && !(ArrayBuffer.isView(value) && !(value instanceof DataView))) fail(path, "must be an array");
      let i = 0;
      for (const item of value) {
        const p = `${path}[${i++}]`;
        if (field.listKind === "message") checkMessage(field.message, item, p);
        else if (field.listKind === "enum") checkEnum(field.enum, item, p);
        else checkScalar(field.scalar, item, p);
      }
      return;
    }
    case "map": {
      if (!isPlainObject(value)) fail(path, "must be a plain object (a map)");
      for (const [k, item] of Object.entries(value)) {
        const p = `${path}.${k}`;
        if (field.mapKind === "message") checkMessage(field.message, item, p);
        else if (field.mapKind === "enum") checkEnum(field.enum, item, p);
        else checkScalar(field.scalar, item, p);
      }
      return;
    }
    default:
      fail(path, `has an unsupported field kind ${field.fieldKind}`);
  }
}

function checkEnum(desc, value, path) {
  if (!desc.values.some((v) => v.number === value)) {
    fail(path, `must be a ${desc.typeName} number (${desc.values.map((v) => `${v.number}: ${v.name}`).join(", ")}), got ${String(value)}`);
  }
}

function checkScalar(type, value, path) {
  if (INT_RANGES.has(type)) {
    const whole = INT64.has(type) ? typeof value === "bigint" || (typeof value === "number" && Number.isSafeInteger(value))
      : typeof value === "number" && Number.isInteger(value);
    if (!whole) fail(path, `must be ${INT64.has(type) ? "a bigint or a safe integer" : "an integer"}, got ${describe(value)}`);
    const [least, greatest] = INT_RANGES.get(type);
    if (BigInt(value) < least || BigInt(value) > greatest) {
      fail(path, `must be from ${least} to ${greatest} (${ScalarType[type].toLowerCase()}), got ${String(value)}`);
    }
    return;
  }
  if (FLOAT.has(type)) {
    if (typeof value !== "number") fail(path, `must be a number, got ${describe(value)}`);
    return;
  }
  if (type === ScalarType.BOOL) {
    if (typeof value !== "boolean") fail(path, `must be a boolean, got ${describe(value)}`);
    return;
  }
  if (type === ScalarType.STRING) {
    if (typeof value !== "string") fail(path, `must be a string, got ${describe(value)}`);
    return;
  }
  if (type === ScalarType.BYTES) {
    if (!(value instanceof Uint8Array)) fail(path, `must be a Uint8Array, got ${describe(value)}`);
    return;
  }
  fail(path, `has an unsupported scalar type ${ScalarType[type]}`);
}

function checkJson(value, path) {
  if (value === null || typeof value === "string" || typeof value === "boolean") return;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) fail(path, `must be a finite number (JSON), got ${value}`);
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((item, i) => checkJson(item, `${path}[${i}]`));
    return;
  }
  if (isPlainObject(value)) {
    for (const [k, item] of Object.entries(value)) checkJson(item, `${path}.${k}`);
    return;
  }
  fail(path, `must be JSON (null, boolean, number, string, array or plain object), got ${describe(value)}`);
}

function describe(value) {
  if (value === null) return "null";
  if (typeof value === "bigint") return `${value}n`;
  if (value === undefined) return "undefined";
  if (typeof value === "object") return value.constructor?.name ?? "object";
  return `${typeof value} ${JSON.stringify(value) ?? String(value)}`;
}

// ---- tensors ---------------------------------------------------------------

// dtype -> [typed array that holds its numbers, bytes per element, numbers per element]; a complex
// element is two numbers, its real then its imaginary part (torch's and numpy's layout)
const DTYPES = {
  float64: [Float64Array, 8, 1], float32: [Float32Array, 4, 1], float16: [null, 2, 1], bfloat16: [null, 2, 1],
  complex64: [Float32Array, 8, 2], complex128: [Float64Array, 16, 2],
  int64: [BigInt64Array, 8, 1], int32: [Int32Array, 4, 1], int16: [Int16Array, 2, 1], int8: [Int8Array, 1, 1],
  uint8: [Uint8Array, 1, 1], bool: [Uint8Array, 1, 1],
};
const INTEGER_DTYPES = new Set(["int64", "int32", "int16", "int8", "uint8"]);
const LITTLE_ENDIAN = endianness() === "LE";

function checkedShape(shape, what = "tensor") {
  if (!Array.isArray(shape)) throw new TypeError(`${what}: shape must be an array of non-negative integers`);
  return shape.map((d) => {
    const whole = typeof d === "bigint" || (typeof d === "number" && Number.isSafeInteger(d));
    if (!whole || d < 0 || BigInt(d) > 2n ** 63n - 1n) {
      throw new TypeError(`${what}: dimensions must be integers from 0 to 2^63 - 1, got ${String(d)}`);
    }
    return BigInt(d);
  });
}

/** A plain array's element as the double `values` carries: a number (bool: also true/false; integer
 * dtypes: also a bigint a double holds exactly), never a string, null or object coerced. */
function valueOf(dtype, v, i) {
  if (typeof v === "number") {
    if (INTEGER_DTYPES.has(dtype) && Number.isInteger(v) && !Number.isSafeInteger(v)) {
      throw new TypeError(`tensor: data[${i}] is ${v}, beyond ±(2^53 - 1), where a JavaScript number holds integers exactly; use a bigint or a BigInt64Array`);
    }
    return v;
  }
  if (typeof v === "boolean" && dtype === "bool") return Number(v);
  if (typeof v === "bigint" && INTEGER_DTYPES.has(dtype) && v >= -(2n ** 53n) && v <= 2n ** 53n) return Number(v);
  const also = dtype === "bool" ? " or a boolean" : INTEGER_DTYPES.has(dtype) ? " or a bigint within ±2^53 (larger: a BigInt64Array)" : "";
  throw new TypeError(`tensor: data[${i}] must be a number${also}, got ${describe(v)}`);
}

/**
 * A Tensor message (as a plain object) from a dtype, a shape and the elements in C order.
 *
 * A typed array of the dtype's own kind (Float32Array for float32, BigInt64Array for
 * int64, ...) travels as `raw` little-endian bytes; a plain array of numbers as `values`
 * (any dtype, including float16 and bfloat16, which have no typed array). A complex
 * element is two numbers, its real then its imaginary part: complex64 data is a
 * Float32Array (complex128: Float64Array) or a plain array of 2 × numel(shape) numbers.
 *
 * @param {string} dtype torch spelling: float32, float64, float16, bfloat16, complex64, complex128,
 *   int64, int32, int16, int8, uint8, bool
 * @param {Array<number | bigint>} shape e.g. [2, 3]; [] for a scalar
 * @param {ArrayLike<number> | BigInt64Array} data numel(shape) elements in C order
 * @example
 *   tensor("float32", [2], new Float32Array([0.5, 2]))  // {dtype: "float32", shape: [2n], raw: Uint8Array(8)}
 *   tensor("int64", [2], [0, 2])                         // {dtype: "int64", shape: [2n], values: [0, 2]}
 *   tensor("complex64", [1], new Float32Array([3, 4]))  // 3+4i: {dtype: "complex64", shape: [1n], raw: Uint8Array(8)}
 */
export function tensor(dtype, shape, data) {
  const spec = DTYPES[dtype];
  if (spec === undefined) throw new TypeError(`tensor: unknown dtype ${JSON.stringify(dtype)}; known: ${Object.keys(DTYPES).join(", ")}`);
  const dims = checkedShape(shape);
  const numel = dims.reduce((a, b) => a * b, 1n);
  const [ArrayType, itemsize, parts] = spec;
  if (!Array.isArray(data) && !ArrayBuffer.isView(data)) {
    throw new TypeError(`tensor: data must be an array or a typed array, got ${describe(data)}`);
  }
  if (BigInt(data.length) !== numel * BigInt(parts)) {
    const what = parts === 1 ? `${numel} elements` : `${numel} elements, ${numel * BigInt(parts)} numbers (real, imaginary)`;
    throw new TypeError(`tensor: shape [${dims.join(", ")}] has ${what}, data has ${data.length}`);
  }
  if (Array.isArray(data)) return { dtype, shape: dims, values: Array.from(data, (v, i) => valueOf(dtype, v, i)) };
  if (ArrayType === null || !(data instanceof ArrayType)) {
    throw new TypeError(`tensor: ${dtype} data must be ${ArrayType ? ArrayType.name : "an array of numbers"}, got ${data?.constructor?.name}`);
  }
  const raw = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
  if (!LITTLE_ENDIAN) swapBytes(raw, itemsize / parts);
  return { dtype, shape: dims, raw };
}

/**
 * The elements of a Tensor message (a reply's `loss` or `grads[name]`) as a typed array in C order.
 *
 * float32/float16/bfloat16 → Float32Array (exact, a NaN's sign and payload too), float64 → Float64Array, int64 → BigInt64Array,
 * bool → Uint8Array, other integers → their typed array; complex64 → Float32Array and complex128 →
 * Float64Array of two numbers per element (real, imaginary). A tensor whose data does not fill
 * its shape exactly, or that has both `raw` and `values`, is a TypeError.
 *
 * @param {{dtype: string, shape: bigint[], raw?: Uint8Array, values?: number[]}} t
 * @example
 *   toArray(reply.grads.input)  // Float32Array(6) [...]
 */
export function toArray(t) {
  const spec = DTYPES[t.dtype];
  if (spec === undefined) throw new TypeError(`toArray: unknown dtype ${JSON.stringify(t.dtype)}`);
  const [ArrayType, itemsize, parts] = spec;
  const values = t.values ?? [];
  const raw = (t.raw ?? new Uint8Array(0)).slice(); // a copy: aligned, and ours to swap
  if (values.length > 0 && raw.length > 0) throw new TypeError("toArray: the tensor has both raw and values; a Tensor has one");
  if (t.shape !== undefined) { // a Tensor message's shape ([] for a scalar) says how many numbers there are
    const numel = checkedShape(t.shape, "toArray").reduce((a, b) => a * b, 1n);
    const have = values.length > 0 ? BigInt(values.length) : BigInt(raw.length) / BigInt(itemsize / parts);
    if (have !== numel * BigInt(parts) || raw.length % itemsize !== 0) {
      throw new TypeError(`toArray: shape [${t.shape.join(", ")}] has ${numel} ${t.dtype} elements; the tensor has `
        + (values.length > 0 ? `${values.length} values` : `${raw.length} raw bytes`));
    }
  }
  if (values.length > 0) {
    if (ArrayType === BigInt64Array) return BigInt64Array.from(values, (v) => BigInt(v));
    return (ArrayType ?? Float32Array).from(values);
  }
  if (raw.length % itemsize !== 0) throw new TypeError(`toArray: ${raw.length} raw bytes is not a whole number of ${t.dtype}`);
  if (!LITTLE_ENDIAN) swapBytes(raw, itemsize / parts);
  if (ArrayType !== null) return new ArrayType(raw.buffer, 0, (raw.length / itemsize) * parts);
  const halves = new Uint16Array(raw.buffer, 0, raw.length / 2);
  const out = new Float32Array(halves.length);
  const bits = new Uint32Array(out.buffer); // bits, not numbers: a NaN keeps its sign and payload
  const widen = t.dtype === "bfloat16" ? (h) => h << 16 : float16Bits;
  for (let i = 0; i < halves.length; i++) bits[i] = widen(halves[i]);
  return out;
}

function swapBytes(bytes, itemsize) {
  for (let i = 0; i < bytes.length; i += itemsize) bytes.subarray(i, i + itemsize).reverse();
}

/** The float32 bits of a float16's bits: the same number (every float16 is a float32), or the same NaN. */
function float16Bits(h) {
  const sign = (h & 0x8000) << 16;
  const exp = (h >> 10) & 0x1f;
  let frac = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (frac << 13)) >>> 0; // infinity, or NaN and its payload
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (frac << 13)) >>> 0;
  if (frac === 0) return sign >>> 0; // ±0
  let shift = 0; // a subnormal: frac · 2^-24, normalized
  while ((frac & 0x400) === 0) {
    frac <<= 1;
    shift++;
  }
  return (sign | ((113 - shift) << 23) | ((frac & 0x3ff) << 13)) >>> 0;
}

// ---- errors ----------------------------------------------------------------

const GRPC_CODE_NAMES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
  "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];

/**
 * A failed call as plain data: the gRPC code name, the server's message and the
 * google.rpc.BadRequest field violations from the `grpc-status-details-bin` trailer. A
 * connection that failed below gRPC (TLS, a refused socket) is UNAVAILABLE, as in gRPC.
 * Anything else (the TypeError of a request that failed its check) is thrown again.
 *
 * @param {unknown} err what a client method threw
 * @returns {{code: string, message: string, fieldViolations: {field: string, description: string}[]}}
 * @example
 *   try { await client.evaluateLoss(request) } catch (err) { describeError(err) }
 *   // {code: "INVALID_ARGUMENT", message: "params.label_smoothing: ...",
 *   //  fieldViolations: [{field: "params.label_smoothing", description: "..."}]}
 */
export function describeError(err) {
  if (!(err instanceof ConnectError)) throw err;
  const e = err;
  const fieldViolations = e.findDetails(BadRequestSchema)
    .flatMap((b) => b.fieldViolations.map(({ field, description }) => ({ field, description })));
  // A connection that failed below gRPC (TLS: a certificate or protocol mismatch; a refused or reset
  // socket) carries Node's error as its cause: Connect calls some of them INTERNAL, which the
  // README's table reserves for server bugs; gRPC and the Python SDK call them UNAVAILABLE.
  const cause = e.cause;
  const aborted = cause instanceof Error && cause.name === "AbortError";
  const unreachable = (cause instanceof Error && typeof cause.code === "string" && !aborted
    && (e.code === Code.Internal || e.code === Code.Unknown || e.code === Code.Unavailable))
    // the peer reset the stream before any response (a mutual-TLS server refusing the handshake, a
    // plaintext client at a TLS port): Connect says CANCELLED, which only the caller's own abort is
    || (e.code === Code.Canceled && !aborted && [...e.metadata.keys()].length === 0);
  const code = unreachable ? "UNAVAILABLE" : GRPC_CODE_NAMES[e.code] ?? Code[e.code] ?? String(e.code);
  return { code, message: e.rawMessage, fieldViolations };
}
