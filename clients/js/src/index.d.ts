// Types of the thin client in index.js (the generated messages have their own .d.ts in ./gen).
import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import type { CallOptions } from "@connectrpc/connect";
import type {
  EvaluateLossBatchRequestSchema, EvaluateLossBatchResponse, EvaluateLossRequestSchema, EvaluateLossResponse,
  EvaluateLossStreamRequestSchema, EvaluateLossStreamResponse, ListLossesRequestSchema, ListLossesResponse, Tensor,
} from "./gen/lossd/v1/lossd_pb.js";
import type {
  CancelJobRequestSchema, CancelJobResponse, DeleteJobRequestSchema, DeleteJobResponse, GetJobRequestSchema, GetJobResponse,
  Job, JobState, ListJobsRequestSchema,
  ListJobsResponse, TrainJobRequestSchema, TrainJobResponse, WatchJobRequestSchema, WatchJobResponse,
} from "./gen/lossd/v1/training_pb.js";

export * from "./gen/lossd/v1/lossd_pb.js";
export * from "./gen/lossd/v1/training_pb.js";
export { BadRequestSchema } from "./gen/google/rpc/error_details_pb.js";

export declare const DEFAULT_TARGET: string;
export declare const DEFAULT_MAX_MESSAGE_BYTES: number;

export interface LossdClientOptions {
  /** "host:port"; default `$LOSSD_TARGET`, else 127.0.0.1:50051. */
  target?: string;
  /** Bearer token, sent as `authorization: Bearer <token>`. */
  token?: string;
  /** TLS, with an optional CA, client certificate and key (mutual TLS); default plaintext. */
  tls?: boolean | { ca?: string | Uint8Array; cert?: string | Uint8Array; key?: string | Uint8Array; serverName?: string };
  /** Default deadline (ms) of every call but the server streams (trainJob, watchJob); a call's own
   * `timeoutMs` wins; `Infinity` (there or per call): none. */
  timeoutMs?: number;
  /** Largest message sent or received (1 to 2^32 - 1 bytes); default 256 MiB, as the server. */
  maxMessageBytes?: number;
}

type Init<S extends DescMessage> = MessageInitShape<S>;

export interface LossdClient {
  listLosses(request: Init<typeof ListLossesRequestSchema>, options?: CallOptions): Promise<ListLossesResponse>;
  evaluateLoss(request: Init<typeof EvaluateLossRequestSchema>, options?: CallOptions): Promise<EvaluateLossResponse>;
  evaluateLossBatch(
    request: Init<typeof EvaluateLossBatchRequestSchema>, options?: CallOptions,
  ): Promise<EvaluateLossBatchResponse>;
  evaluateLossStream(
    requests: AsyncIterable<Init<typeof EvaluateLossStreamRequestSchema>> | Iterable<Init<typeof EvaluateLossStreamRequestSchema>>,
    options?: CallOptions,
  ): AsyncIterable<EvaluateLossStreamResponse>;
  trainJob(request: Init<typeof TrainJobRequestSchema>, options?: CallOptions): AsyncIterable<TrainJobResponse>;
  watchJob(request: Init<typeof WatchJobRequestSchema>, options?: CallOptions): AsyncIterable<WatchJobResponse>;
  getJob(request: Init<typeof GetJobRequestSchema>, options?: CallOptions): Promise<GetJobResponse>;
  listJobs(request: Init<typeof ListJobsRequestSchema>, options?: CallOptions): Promise<ListJobsResponse>;
  /** Jobs, newest first: every one, or the `limit` newest (0: every one), read a `listJobs` page at a time
   * (as the Python SDK's `jobs()`); a page without jobs, or one that sends back the token that asked for it,
   * ends the listing. `options` go to each call. */
  listAllJobs(request?: { states?: JobState[]; limit?: number }, options?: CallOptions): Promise<Job[]>;
  cancelJob(request: Init<typeof CancelJobRequestSchema>, options?: CallOptions): Promise<CancelJobResponse>;
  deleteJob(request: Init<typeof DeleteJobRequestSchema>, options?: CallOptions): Promise<DeleteJobResponse>;
}

/** A client for every lossd RPC on one HTTP/2 connection; requests are checked before sending. A stream
 * call starts at its first `next()` and is cancelled when the caller stops iterating early (`break`). */
export declare function createLossdClient(options?: LossdClientOptions): LossdClient;

/** Throws a TypeError naming the path of a key that is not a field or a value of the wrong kind. */
export declare function checkRequest(schema: DescMessage, init: unknown, path?: string): void;

export type Dtype = "float64" | "float32" | "float16" | "bfloat16" | "complex64" | "complex128" | "int64" | "int32"
  | "int16" | "int8" | "uint8" | "bool";

/** A Tensor init: typed arrays as raw little-endian bytes, plain arrays as `values` (a complex element:
 * two numbers, real then imaginary). */
export declare function tensor(
  dtype: Dtype, shape: Array<number | bigint>,
  data: ArrayLike<number | bigint | boolean> | Float64Array | Float32Array | BigInt64Array | Int32Array | Int16Array
    | Int8Array | Uint8Array,
): { dtype: Dtype; shape: bigint[]; raw?: Uint8Array; values?: number[] };

/** A Tensor's elements in C order (float16 and bfloat16 as Float32Array; complex64 and complex128 as
 * Float32Array and Float64Array of two numbers per element, real then imaginary). */
export declare function toArray(
  t: Pick<Tensor, "dtype" | "raw" | "values"> & { shape?: Array<number | bigint> },
): Float64Array | Float32Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

export interface ErrorDescription {
  /** gRPC code name, e.g. "INVALID_ARGUMENT". */
  code: string;
  /** The server's message, e.g. "params.label_smoothing: is 1.5; must be <= 1". */
  message: string;
  /** google.rpc.BadRequest field violations from the grpc-status-details-bin trailer. */
  fieldViolations: { field: string; description: string }[];
}

/** A failed call (a ConnectError) as plain data; anything else is thrown again. */
export declare function describeError(err: unknown): ErrorDescription;
