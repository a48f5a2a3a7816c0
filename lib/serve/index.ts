/**
 * `tvm-node/serve`: the KServe v2 inference server (HTTP/REST, gRPC, optionally TVM RPC) as a
 * library. A subpath of its own so that `import 'tvm-node'` does not load fastify and gRPC.
 */
export { BadRequestError, ModelNotFoundError, ModelNotReadyError, PayloadTooLargeError, RequestTimeoutError, ServeError, ServerBusyError } from './errors';
export type { Protocol, RequestRecord } from './metrics';
export { ServeMetrics } from './metrics';
export { InferenceServer, type InferenceServerOptions, type ServePorts } from './server';
export type { IndexEntry, InferRequest, InferResponse, ModelMetadata, TensorMetadata } from './service';
