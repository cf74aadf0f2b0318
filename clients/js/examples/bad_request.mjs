#!/usr/bin/env node
// A parameter out of range is refused with the field at fault: the server's
// INVALID_ARGUMENT carries a google.rpc.BadRequest in the grpc-status-details-bin
// trailer, and describeError() decodes it.
//
//   node examples/bad_request.mjs --target 127.0.0.1:50051
//
// prints (exit status 0 for this refusal, 1 for anything else)
//   {"code": "INVALID_ARGUMENT", "message": "params.label_smoothing: ...",
//    "fieldViolations": [{"field": "params.label_smoothing", "description": "..."}]}
import { parseArgs } from "node:util";
import { createLossdClient, describeError } from "@lossd/client";

const { values: args } = parseArgs({ options: { target: { type: "string" } } });
const client = createLossdClient({ target: args.target, timeoutMs: 30_000 });

try {
  await client.evaluateLoss({
    loss: "cross_entropy",
    inputs: {
      input: { dtype: "float32", shape: [2n, 3n], values: [10, 0, -10, 8, 8, 8] },
      target: { dtype: "int64", shape: [2n], values: [0, 2] },
    },
    params: { reduction: "sum", label_smoothing: 1.5 }, // must be <= 1
  });
  console.error("the server accepted label_smoothing 1.5");
  process.exitCode = 1;
} catch (err) {
  const error = describeError(err);
  console.log(JSON.stringify(error, null, 2));
  if (error.code !== "INVALID_ARGUMENT") process.exitCode = 1;
}
