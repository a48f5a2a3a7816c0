/**
 * The load generator of the http group (./http.ts): a process of its own (this module, forked
 * with {@link HTTP_LOADGEN_FLAG} by {@link LoadGenerator}), so that no client shares the
 * server's event loop. It speaks the four protocols of `tvm-node serve` to one server:
 *
 * - `json`: KServe v2 HTTP/REST, tensors as JSON numbers (node:http, a keep-alive agent with
 *   one socket per worker);
 * - `binary`: the same with Triton's binary-tensor extension (`Inference-Header-Content-Length`,
 *   raw input bytes after the JSON, output asked for with `binary_data: true`);
 * - `grpc`: KServe v2 gRPC `ModelInfer` with `raw_input_contents` (@grpc/grpc-js on
 *   proto/grpc_predict_v2.proto, one channel: the workers' calls are streams of one HTTP/2
 *   connection, as a gRPC client normally runs them);
 * - `rpc`: TVM RPC, tvm-node's `session.infer` (one session per worker, at most
 *   {@link RPC_MAX_SESSIONS}; beyond that, workers share sessions, whose requests pipeline).
 *
 * A run is closed-loop: `c` workers, each sending its next request when its last is answered,
 * until `n` requests are done. Request bodies are built once per target (what a load generator
 * such as Triton's perf_analyzer does); every answer is parsed and its values checked.
 */
import http from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { connect, type RPCSession, readNpy } from '../../lib';
import { PROTO_FILE } from '../../lib/serve/grpc';
import { compare } from '../bench-models';
import { JobProcess, serveJobs } from '../job-process';
import { RPC_HOST } from '../peers';
import type { HttpProtocol } from '../types';
import { closeSession, hrNow, nsSince } from './rpc-client';

/** argv flag that makes this file the http group's load generator. */
export const HTTP_LOADGEN_FLAG = '--http-loadgen';

export type Protocol = HttpProtocol;
/** Every protocol, in the order a case's first round runs them. */
export const PROTOCOLS: readonly Protocol[] = ['json', 'binary', 'grpc', 'rpc'];

/**
 * Sessions the server's TVM RPC front end takes at once: `InferenceServer` makes its
 * RPCServer with RPCServer's default `maxSessions` (16), and offers no option for it.
 */
export const RPC_MAX_SESSIONS = 16;

/** Where the server listens. */
export interface Ports {
  http: number;
  grpc: number;
  rpc: number;
}

/** The input of a target: a fixture's .npy, or float32[n] of {@link randomInput} for addone. */
export type InputSpec = { file: string } | { addone: number };
/** The reference of a target: a fixture's .npy (with its tolerance), or x + 1 (exact) for addone. */
export type ExpectSpec = { file: string; tolerance: { rtol: number; atol: number } } | { addone: true };

/** One model and input the generator sends, one float32 input and output. */
export interface Target {
  key: string;
  model: string;
  inputName: string;
  outputName: string;
  shape: number[];
  input: InputSpec;
  expect: ExpectSpec;
}

/** Sizes of one request and its answer per protocol, bytes (the HTTP bodies; for gRPC and RPC, the tensors). */
export interface TargetInfo {
  key: string;
  requestBytes: Record<'json' | 'binary', number>;
  responseBytes: Record<'json' | 'binary', number>;
  tensorBytes: { input: number; output: number };
}

/** One protocol's answer to one target, checked in full against its reference. */
export interface Verified {
  key: string;
  protocol: Protocol;
  elements: number;
  maxAbsDiff: number;
}

/** A closed-loop run's figures (ns), measured in the generator. */
export interface RunResult {
  n: number;
  wallNs: number;
  p50Ns: number;
  p99Ns: number;
  maxNs: number;
  /** The generator's own CPU time (user + system) during the run, ns. */
  cpuNs: number;
  /** The generator's event-loop delay p99 during the run (monitorEventLoopDelay), ns. */
  eldP99Ns: number;
}

export type LoadJob =
  | { op: 'setup'; ports: Ports; targets: Target[] }
  | { op: 'verify'; key: string; protocol: Protocol }
  | { op: 'run'; key: string; protocol: Protocol; c: number; n: number }
  | { op: 'reset' };

/** Elements of a large answer checked during timed runs (spread over it, first and last included); small ones are checked whole. */
const TIMED_CHECK = 64;
const WHOLE_CHECK = 4096;

/**
 * float32[n] in [-1, 1), pseudo-random but the same every run: values such as a real tensor
 * holds, so that their JSON takes what it takes for real data (~19 characters an element as
 * JS prints a float32 value; small round numbers would flatter JSON). x + 1 is exact in double,
 * so Math.fround(x + 1) is exactly what a float32 add gives.
 */
export function randomInput(n: number): Float32Array {
  const x = new Float32Array(n);
  let h = 0x9e3779b9;
  for (let i = 0; i < n; i++) {
    h ^= h << 13;
    h ^= h >>> 17;
    h ^= h << 5;
    x[i] = (h >>> 0) / 2 ** 31 - 1;
  }
  return x;
}

// ---------------------------------------------------------------------------------------
// The generator process

interface Prepared {
  t: Target;
  x: Float32Array;
  expected: Float32Array;
  tolerance: { rtol: number; atol: number };
  json: Buffer;
  binary: Buffer;
  binaryHeaderBytes: number;
  grpcRequest: object;
}

let ports: Ports | undefined;
const targets = new Map<string, Prepared>();
/** Clients, kept between runs of one case (keep-alive sockets, the gRPC channel, RPC sessions); `reset` closes them. */
const clients: { agent?: http.Agent; grpc?: GrpcClient; sessions: RPCSession[] } = { sessions: [] };

type GrpcClient = grpc.Client & {
  ModelInfer(req: object, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: GrpcInferResponse) => void): void;
};
interface GrpcInferResponse {
  outputs: Array<{ name: string; datatype: string; shape: number[] }>;
  raw_output_contents: Buffer[];
}
let grpcCtor: (new (address: string, creds: grpc.ChannelCredentials, opts: object) => GrpcClient) | undefined;

function prepare(t: Target): Prepared {
  const x = 'file' in t.input ? (readNpy(t.input.file).data as Float32Array) : randomInput(t.input.addone);
  const expected = 'file' in t.expect ? (readNpy(t.expect.file).data as Float32Array) : x.map((v) => Math.fround(v + 1));
  const tolerance = 'file' in t.expect ? t.expect.tolerance : { rtol: 0, atol: 0 };
  const input = { name: t.inputName, shape: t.shape, datatype: 'FP32' };
  const json = Buffer.from(JSON.stringify({ inputs: [{ ...input, data: Array.from(x) }] }));
  const header = Buffer.from(
    JSON.stringify({
      inputs: [{ ...input, parameters: { binary_data_size: x.byteLength } }],
      outputs: [{ name: t.outputName, parameters: { binary_data: true } }],
    }),
  );
  const binary = Buffer.concat([header, Buffer.from(x.buffer, x.byteOffset, x.byteLength)]);
  const grpcRequest = { model_name: t.model, inputs: [input], raw_input_contents: [Buffer.from(x.buffer, x.byteOffset, x.byteLength)] };
  return { t, x, expected, tolerance, json, binary, binaryHeaderBytes: header.length, grpcRequest };
}

/** Throws unless `y` matches the reference: every element when `whole` (or when small), else {@link TIMED_CHECK} spread over it. */
function check(p: Prepared, y: ArrayLike<number>, protocol: Protocol, whole: boolean): number {
  const e = p.expected;
  const who = `${protocol} ${p.t.key}`;
  if (y.length !== e.length) throw new Error(`${who}: ${y.length} output elements, expected ${e.length}`);
  if (whole || e.length <= WHOLE_CHECK) {
    const c = compare(y, e, p.tolerance);
    if (!c.ok) throw new Error(`${who}: output differs from the reference (max |diff| ${c.maxAbsDiff})`);
    return c.maxAbsDiff;
  }
  let max = 0;
  for (let k = 0; k < TIMED_CHECK; k++) {
    const i = Math.round((k * (e.length - 1)) / (TIMED_CHECK - 1));
    const d = Math.abs(y[i] - e[i]);
    if (!(d <= p.tolerance.atol + p.tolerance.rtol * Math.abs(e[i]))) throw new Error(`${who}: y[${i}] = ${y[i]}, expected ${e[i]}`);
    max = Math.max(max, d);
  }
  return max;
}

/** float32 little-endian bytes as a Float32Array (copied when not 4-byte aligned). */
function float32Of(bytes: Buffer): Float32Array {
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new Float32Array(copy.buffer);
}

function agent(): http.Agent {
  // One socket per worker, kept open between requests and rounds.
  clients.agent ??= new http.Agent({ keepAlive: true, maxSockets: 64, maxFreeSockets: 64 });
  return clients.agent;
}

function post(model: string, body: Buffer, headers: Record<string, string>): Promise<{ headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: RPC_HOST,
        port: ports!.http,
        path: `/v2/models/${model}/infer`,
        method: 'POST',
        agent: agent(),
        headers: { ...headers, 'content-length': String(body.length) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
          if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}: ${all.toString('utf8', 0, 300)}`));
          else resolve({ headers: res.headers, body: all });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** The answer's output as numbers. */
async function inferJson(p: Prepared): Promise<ArrayLike<number>> {
  const res = await post(p.t.model, p.json, { 'content-type': 'application/json' });
  const out = (JSON.parse(res.body.toString('utf8')) as { outputs: Array<{ name: string; data: number[] }> }).outputs.find((o) => o.name === p.t.outputName);
  if (!out) throw new Error(`json ${p.t.key}: no output ${p.t.outputName}`);
  return out.data;
}

async function inferBinary(p: Prepared): Promise<ArrayLike<number>> {
  const res = await post(p.t.model, p.binary, {
    'content-type': 'application/octet-stream',
    'inference-header-content-length': String(p.binaryHeaderBytes),
  });
  const n = Number(res.headers['inference-header-content-length']);
  if (!Number.isInteger(n)) throw new Error(`binary ${p.t.key}: the answer has no inference-header-content-length`);
  const header = JSON.parse(res.body.toString('utf8', 0, n)) as { outputs: Array<{ name: string; parameters?: { binary_data_size?: number } }> };
  let offset = n;
  for (const o of header.outputs) {
    const size = o.parameters?.binary_data_size ?? 0;
    if (o.name === p.t.outputName) return float32Of(res.body.subarray(offset, offset + size));
    offset += size;
  }
  throw new Error(`binary ${p.t.key}: no binary output ${p.t.outputName}`);
}

function grpcClient(): GrpcClient {
  if (!grpcCtor) {
    const def = protoLoader.loadSync(PROTO_FILE, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { inference: { GRPCInferenceService: typeof grpcCtor } };
    grpcCtor = pkg.inference.GRPCInferenceService;
  }
  clients.grpc ??= new grpcCtor!(`${RPC_HOST}:${ports!.grpc}`, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': -1,
    'grpc.max_send_message_length': -1,
  });
  return clients.grpc;
}

function inferGrpc(p: Prepared): Promise<ArrayLike<number>> {
  return new Promise((resolve, reject) => {
    grpcClient().ModelInfer(p.grpcRequest, {}, (err, res) => {
      if (err) return reject(new Error(`gRPC ${p.t.key}: ${err.code} ${err.details}`));
      const k = res.outputs.findIndex((o) => o.name === p.t.outputName);
      if (k < 0 || !res.raw_output_contents[k]) return reject(new Error(`gRPC ${p.t.key}: no raw output ${p.t.outputName}`));
      resolve(float32Of(res.raw_output_contents[k]));
    });
  });
}

/** Opens sessions until there are min(c, RPC_MAX_SESSIONS). */
async function rpcSessions(c: number): Promise<RPCSession[]> {
  const want = Math.min(c, RPC_MAX_SESSIONS);
  while (clients.sessions.length < want) clients.sessions.push(await connect(RPC_HOST, ports!.rpc));
  return clients.sessions;
}

async function inferRpc(p: Prepared, session: RPCSession, whole: boolean): Promise<number> {
  const [y] = await session.infer(p.t.model, [{ data: p.x, shape: p.t.shape }]);
  try {
    return check(p, y.hostView() as Float32Array, 'rpc', whole);
  } finally {
    y.disposeSync();
  }
}

/** One request of `protocol` by worker `w`, its answer checked; resolves with the max |diff| seen. */
async function once(p: Prepared, protocol: Protocol, w: number, whole: boolean): Promise<number> {
  switch (protocol) {
    case 'json':
      return check(p, await inferJson(p), protocol, whole);
    case 'binary':
      return check(p, await inferBinary(p), protocol, whole);
    case 'grpc':
      return check(p, await inferGrpc(p), protocol, whole);
    case 'rpc':
      return inferRpc(p, clients.sessions[w % clients.sessions.length], whole);
  }
}

function quantileOf(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

async function run(p: Prepared, protocol: Protocol, c: number, n: number): Promise<RunResult> {
  if (protocol === 'rpc') await rpcSessions(c);
  const lat = new Float64Array(n);
  let next = 0;
  const eld = monitorEventLoopDelay({ resolution: 1 });
  const cpu0 = process.cpuUsage();
  eld.enable();
  const t0 = hrNow();
  await Promise.all(
    Array.from({ length: Math.min(c, n) }, async (_, w) => {
      for (let i = next++; i < n; i = next++) {
        const s = hrNow();
        await once(p, protocol, w, false);
        lat[i] = nsSince(s);
      }
    }),
  );
  const wallNs = nsSince(t0);
  eld.disable();
  const cpu = process.cpuUsage(cpu0);
  lat.sort();
  return {
    n,
    wallNs,
    p50Ns: quantileOf(lat, 0.5),
    p99Ns: quantileOf(lat, 0.99),
    maxNs: lat[n - 1],
    cpuNs: (cpu.user + cpu.system) * 1e3,
    eldP99Ns: eld.percentile(99),
  };
}

async function reset(): Promise<void> {
  clients.agent?.destroy();
  clients.grpc?.close();
  const sessions = clients.sessions;
  clients.agent = undefined;
  clients.grpc = undefined;
  clients.sessions = [];
  await Promise.all(sessions.map((s) => closeSession(s)));
}

async function handle(job: LoadJob): Promise<unknown> {
  switch (job.op) {
    case 'setup': {
      ports = job.ports;
      const infos: TargetInfo[] = [];
      for (const t of job.targets) {
        const p = prepare(t);
        targets.set(t.key, p);
        // The answers' sizes: one of each, untimed.
        const j = await post(t.model, p.json, { 'content-type': 'application/json' });
        const b = await post(t.model, p.binary, { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(p.binaryHeaderBytes) });
        infos.push({
          key: t.key,
          requestBytes: { json: p.json.length, binary: p.binary.length },
          responseBytes: { json: j.body.length, binary: b.body.length },
          tensorBytes: { input: p.x.byteLength, output: p.expected.byteLength },
        });
      }
      await reset();
      return infos;
    }
    case 'verify': {
      const p = targets.get(job.key);
      if (!p) throw new Error(`no target ${job.key}`);
      if (job.protocol === 'rpc') await rpcSessions(1);
      const maxAbsDiff = await once(p, job.protocol, 0, true);
      return { key: job.key, protocol: job.protocol, elements: p.expected.length, maxAbsDiff } satisfies Verified;
    }
    case 'run': {
      const p = targets.get(job.key);
      if (!p) throw new Error(`no target ${job.key}`);
      return run(p, job.protocol, job.c, job.n);
    }
    case 'reset':
      await reset();
      return null;
  }
}

/** The load generator in a process of its own (this file, forked), one job at a time. */
export class LoadGenerator {
  private readonly proc = new JobProcess<LoadJob, unknown>(__filename, HTTP_LOADGEN_FLAG, 'http load generator');

  ready(timeoutMs: number): Promise<void> {
    return this.proc.ready(timeoutMs);
  }

  setup(ports: Ports, targets: Target[], timeoutMs: number): Promise<TargetInfo[]> {
    return this.proc.request({ op: 'setup', ports, targets }, timeoutMs, 'setup') as Promise<TargetInfo[]>;
  }

  verify(key: string, protocol: Protocol, timeoutMs: number): Promise<Verified> {
    return this.proc.request({ op: 'verify', key, protocol }, timeoutMs, `verify ${protocol} ${key}`) as Promise<Verified>;
  }

  run(key: string, protocol: Protocol, c: number, n: number, timeoutMs: number): Promise<RunResult> {
    return this.proc.request({ op: 'run', key, protocol, c, n }, timeoutMs, `${n} ${protocol} requests of ${key}, ${c} in flight`) as Promise<RunResult>;
  }

  /** Closes every client connection and session. */
  reset(timeoutMs: number): Promise<void> {
    return this.proc.request({ op: 'reset' }, timeoutMs, 'reset') as Promise<void>;
  }

  close(): Promise<void> {
    return this.proc.close();
  }
}

if (require.main === module && process.argv.includes(HTTP_LOADGEN_FLAG)) {
  serveJobs(handle);
}
