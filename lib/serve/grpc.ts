/**
 * KServe v2 over gRPC (`inference.GRPCInferenceService`, proto/grpc_predict_v2.proto) with
 * @grpc/grpc-js, the gRPC implementation for Node maintained by the gRPC project, and
 * @grpc/proto-loader, which reads the .proto at start-up (no generated code to keep in step).
 * Tensors travel as `raw_input_contents` / `raw_output_contents` (what tritonclient sends)
 * or as typed `contents`; answers always carry raw bytes.
 */
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { Logger } from 'pino';
import { packageRoot } from '../binding';
import { BadRequestError, toServeError } from './errors';
import type { InferenceService, RequestInput } from './service';

/** Where the service definition is (shipped in the package). */
export const PROTO_FILE = path.join(packageRoot, 'proto', 'grpc_predict_v2.proto');

/** Options of {@link grpcServer}. */
export interface GrpcOptions {
  /** Largest request message, bytes. */
  maxMessageBytes: number;
  /** Idle connections are closed after this many ms. */
  idleTimeoutMs: number;
}

type Call<Req> = grpc.ServerUnaryCall<Req, unknown>;
type Done = grpc.sendUnaryData<unknown>;

/** The typed `contents` fields, any of which may hold a tensor's elements. */
const CONTENTS = ['bool_contents', 'int_contents', 'int64_contents', 'uint_contents', 'uint64_contents', 'fp32_contents', 'fp64_contents'] as const;

/** A gRPC server offering `service` (not bound yet). */
export function grpcServer(service: InferenceService, o: GrpcOptions, log: Logger): grpc.Server {
  const def = protoLoader.loadSync(PROTO_FILE, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { inference: { GRPCInferenceService: grpc.ServiceClientConstructor } };
  const server = new grpc.Server({
    'grpc.max_receive_message_length': o.maxMessageBytes,
    'grpc.max_send_message_length': -1,
    'grpc.max_connection_idle_ms': o.idleTimeoutMs,
    // Pings find half-open connections (a peer gone without a FIN) whose calls would otherwise wait forever.
    'grpc.keepalive_time_ms': 60_000,
    'grpc.keepalive_timeout_ms': 20_000,
  });
  // Every handler answers through `unary`: a value, or the error's gRPC status and message.
  const unary =
    <Req>(handler: (req: Req) => unknown) =>
    (call: Call<Req>, done: Done) => {
      Promise.resolve()
        .then(() => handler(call.request))
        .then(
          (value) => done(null, value),
          (err) => {
            const e = toServeError(err);
            if (e.grpcCode === grpc.status.INTERNAL) log.error({ err: e.message }, 'gRPC request failed');
            done({ code: e.grpcCode, details: e.message });
          },
        );
    };
  type Named = { name: string; version: string };
  server.addService(pkg.inference.GRPCInferenceService.service, {
    ServerLive: unary(() => ({ live: service.live() })),
    ServerReady: unary(() => ({ ready: service.ready() })),
    ServerMetadata: unary(() => service.serverMetadata()),
    ModelReady: unary((r: Named) => ({ ready: service.modelReady(r.name, r.version) })),
    ModelMetadata: unary((r: Named) => service.modelMetadata(r.name, r.version)),
    ModelInfer: unary((r: GrpcInferRequest) => infer(service, r)),
    RepositoryIndex: unary((r: { ready: boolean }) => ({ models: service.index(r.ready) })),
    RepositoryModelLoad: unary(async (r: { model_name: string }) => {
      await service.load(r.model_name);
      return {};
    }),
    RepositoryModelUnload: unary((r: { model_name: string }) => {
      service.unload(r.model_name);
      return {};
    }),
  });
  return server;
}

/** Binds `server` and starts serving; resolves with the port. */
export function bindGrpc(server: grpc.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve(bound)));
  });
}

interface GrpcInferRequest {
  model_name: string;
  model_version: string;
  id: string;
  inputs: Array<{ name: string; datatype: string; shape: number[]; contents: Record<string, unknown[]> | null }>;
  outputs: Array<{ name: string }>;
  raw_input_contents: Buffer[];
}

async function infer(service: InferenceService, r: GrpcInferRequest) {
  const raw = r.raw_input_contents;
  if (raw.length > 0 && raw.length !== r.inputs.length) {
    throw new BadRequestError(`raw_input_contents has ${raw.length} entries for ${r.inputs.length} inputs (give all inputs raw, or none)`);
  }
  service.metrics.transferred(
    'grpc',
    'in',
    raw.reduce((n, b) => n + b.length, 0),
  );
  const inputs: RequestInput[] = r.inputs.map((t, k) => {
    const base = { name: t.name, datatype: t.datatype, shape: t.shape };
    if (raw.length > 0) return { ...base, raw: raw[k] };
    const filled = CONTENTS.filter((f) => (t.contents?.[f]?.length ?? 0) > 0);
    if (filled.length > 1) throw new BadRequestError(`input '${t.name}': contents has data in ${filled.join(' and ')}`);
    return { ...base, json: filled.length === 1 ? t.contents![filled[0]] : [] };
  });
  const res = await service.infer('grpc', {
    model: r.model_name,
    version: r.model_version,
    id: r.id || undefined,
    inputs,
    outputs: r.outputs.length > 0 ? r.outputs.map((o) => o.name) : undefined,
  });
  const rawOut = res.outputs.map((o) => Buffer.from(o.data.buffer, o.data.byteOffset, o.data.byteLength));
  service.metrics.transferred(
    'grpc',
    'out',
    rawOut.reduce((n, b) => n + b.length, 0),
  );
  return {
    model_name: res.model,
    model_version: res.version,
    id: res.id ?? '',
    outputs: res.outputs.map((o) => ({ name: o.name, datatype: o.datatype, shape: o.shape })),
    raw_output_contents: rawOut,
  };
}
