#!/usr/bin/env node
// Evaluate the README's cross-entropy example on a lossd server, with parameters,
// and print the reply as JSON.
//
//   node examples/evaluate.mjs --target 127.0.0.1:50051
//
// `params` is a plain object (google.protobuf.Struct is a JSON object in the
// generated code), so reduction "sum" and label_smoothing 0.1 reach the server:
// "value" is 2.0986578464508057, as local torch gives for
// F.cross_entropy(input, target, reduction="sum", label_smoothing=0.1).
// A failed call prints {code, message, fieldViolations} (google.rpc.BadRequest,
// decoded from the grpc-status-details-bin trailer) on stderr and exits 1.
import { parseArgs } from "node:util";
import { toJson } from "@bufbuild/protobuf";
import { createLossdClient, describeError, EvaluateLossResponseSchema } from "@lossd/client";

const { values: args } = parseArgs({ options: { target: { type: "string" } } });
const client = createLossdClient({ target: args.target, timeoutMs: 30_000 });

try {
  const reply = await client.evaluateLoss({
    loss: "cross_entropy",
    inputs: {
      input: { dtype: "float32", shape: [2n, 3n], values: [10, 0, -10, 8, 8, 8] },
      target: { dtype: "int64", shape: [2n], values: [0, 2] },
    },
    params: { reduction: "sum", label_smoothing: 0.1 },
  });
  console.log(JSON.stringify(toJson(EvaluateLossResponseSchema, reply, { useProtoFieldName: true }), null, 2));
} catch (err) {
  console.error(JSON.stringify(describeError(err), null, 2));
  process.exitCode = 1;
}
