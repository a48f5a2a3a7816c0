/**
 * The KServe v2 Open Inference Protocol, independent of transport: what the HTTP (lib/serve/http.ts)
 * and gRPC (lib/serve/grpc.ts) front ends answer, over one model repository and cache (the
 * one the TVM RPC server shares in `tvm-node serve`). Requests are bound and run by the
 * repository server's inference path (lib/rpc/infer.ts: {@link inferAsync}, which binds inputs
 * with lib/bind.ts as the model API does), off the event loop.
 *
 * Model readiness: a model is ready when its current files loaded (at start-up or on a
 * request) and it was not unloaded; a version that failed to load is not ready, and is not
 * tried again until its files change or a client asks to load it. Its failure touches no
 * other model.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import { type HostInput, InputError } from '../bind';
import type { DType, TypedArray } from '../dtype';
import { inferAsync, type NamedInputs } from '../rpc/infer';
import type { ModelRepository } from '../rpc/repository';
import type { Tensor } from '../tensor';
import { versions } from '../versions';
import { datatypeOf, dtypeOfDatatype, elementCount, jsonTensor, rawTensor } from './datatype';
import { BadRequestError, ModelNotFoundError, ModelNotReadyError, RequestTimeoutError, type ServeError, ServerBusyError, toServeError } from './errors';
import type { Protocol, ServeMetrics } from './metrics';

/** The only model version tvm-node serves: a repository holds one artifact per model. */
export const MODEL_VERSION = '1';

/** Protocol extensions announced in the server metadata. */
export const EXTENSIONS = ['binary_tensor_data', 'model_repository'] as const;

/** One input of a request, as a front end parsed it: JSON data, or raw bytes. */
export interface RequestInput {
  name: string;
  datatype: unknown;
  shape: unknown;
  /** Elements as JSON (flat or nested): the JSON form, or gRPC's typed `contents`. */
  json?: unknown;
  /** Raw little-endian bytes: the binary extension, or gRPC's `raw_input_contents`. */
  raw?: Buffer;
}

/** An inference request as a front end parsed it. */
export interface InferRequest {
  model: string;
  version?: string;
  id?: string;
  inputs: RequestInput[];
  /** The outputs wanted (default: all), in the order to answer them. */
  outputs?: string[];
}

/** One output: its host data (a copy, the answer's to keep). */
export interface ResponseOutput {
  name: string;
  datatype: string;
  dtype: DType;
  shape: number[];
  data: TypedArray;
}

export interface InferResponse {
  model: string;
  version: string;
  id?: string;
  outputs: ResponseOutput[];
}

/** Tensor metadata as the protocol gives it: -1 for a size that varies. */
export interface TensorMetadata {
  name: string;
  datatype: string;
  shape: number[];
}

export interface ModelMetadata {
  name: string;
  versions: string[];
  platform: string;
  inputs: TensorMetadata[];
  outputs: TensorMetadata[];
}

/** A model in the repository index. */
export interface IndexEntry {
  name: string;
  version: string;
  /** READY, or UNAVAILABLE (with `reason`). */
  state: 'READY' | 'UNAVAILABLE';
  reason: string;
}

/** Limits of {@link InferenceService}. */
export interface ServiceLimits {
  /** Inference requests served at once; more are refused (HTTP 503, gRPC UNAVAILABLE). */
  maxInFlight: number;
  /** A request not answered in this many ms is answered with a timeout (its run finishes and is dropped). */
  requestTimeoutMs: number;
}

export class InferenceService {
  private readonly unloaded = new Set<string>();
  /** Versions that failed to load, with why, by model. */
  private readonly failed = new Map<string, { version: string; reason: string }>();
  /** The last version of each model that loaded. */
  private readonly good = new Map<string, string>();
  /** Errors the repository reported as load failures: a request that gets one is answered "not ready", not "bad request". */
  private readonly loadErrors = new WeakSet<Error>();
  private inFlight = 0;
  private draining = false;
  private drained?: () => void;

  constructor(
    readonly repo: ModelRepository,
    readonly limits: ServiceLimits,
    readonly metrics: ServeMetrics,
    readonly log: Logger,
  ) {
    repo
      .on('load', (name, seconds, version) => {
        this.good.set(name, version);
        this.failed.delete(name);
        log.info({ model: name, seconds: round(seconds) }, 'model loaded');
      })
      .on('loadError', (name, err, version) => {
        this.loadErrors.add(err);
        this.failed.set(name, { version, reason: this.clientText(err.message) });
        log.warn({ model: name, err: err.message }, 'model failed to load');
      })
      .on('evict', (name, reason) => log.info({ model: name, reason }, 'model left the cache'));
    metrics.watch(repo);
  }

  /** Loads every model of the repository once (start-up), recording which are ready; failures are logged, not thrown. */
  async preload(): Promise<void> {
    for (const m of this.repo.list()) {
      if (m.error !== undefined) continue;
      await this.repo.get(m.name).catch(() => undefined);
    }
  }

  live(): boolean {
    return true;
  }

  /** Ready while not shutting down. */
  ready(): boolean {
    return !this.draining;
  }

  serverMetadata(): { name: string; version: string; extensions: string[] } {
    return { name: 'tvm-node', version: versions().tvmNode, extensions: [...EXTENSIONS] };
  }

  /** Whether a model is ready ({@link InferenceService} documents when); an unknown model is a {@link ModelNotFoundError}. */
  modelReady(name: string, version?: string): boolean {
    return this.state(name, version).state === 'READY';
  }

  /** Inputs and outputs of a ready model (loading it if it was evicted). */
  async modelMetadata(name: string, version?: string): Promise<ModelMetadata> {
    this.requireServable(name, version);
    const m = await this.repo.get(name).catch((err) => {
      throw this.asServeError(err, name);
    });
    const meta = (t: { name: string; dtype: string | null; shape: readonly (number | string | null)[] | null }): TensorMetadata => ({
      name: t.name,
      datatype: datatypeOf(t.dtype),
      shape: (t.shape ?? [-1]).map((d) => (typeof d === 'number' ? d : -1)),
    });
    return { name, versions: [MODEL_VERSION], platform: 'tvm', inputs: m.inputs.map(meta), outputs: m.outputs.map(meta) };
  }

  /** The repository's models and their states (only the ready ones with `readyOnly`). */
  index(readyOnly = false): IndexEntry[] {
    const all = this.repo.list().map((m) => (m.error !== undefined ? entry(m.name, m.error) : this.state(m.name)));
    return readyOnly ? all.filter((e) => e.state === 'READY') : all;
  }

  /** Loads a model now (again, if it was unloaded or failed); a failure is answered with why. */
  async load(name: string): Promise<void> {
    this.known(name);
    this.unloaded.delete(name);
    this.failed.delete(name);
    await this.repo.get(name).catch((err) => {
      throw new ModelNotReadyError(`failed to load model '${name}': ${this.clientText((err as Error).message)}`);
    });
  }

  /** Unloads a model: it is not ready, and requests for it are refused, until it is loaded again. */
  unload(name: string): void {
    this.known(name);
    this.unloaded.add(name);
    this.repo.unload(name);
  }

  /**
   * Runs an inference: checks the model and every input (names, datatypes, shapes, data
   * sizes, all before a run), runs it off the event loop, and answers the requested outputs
   * as host copies. Errors are {@link ServeError}s; metrics count every request.
   */
  async infer(protocol: Protocol, req: InferRequest): Promise<InferResponse> {
    const start = performance.now();
    let runS = 0;
    try {
      this.enter();
      try {
        this.requireServable(req.model, req.version);
        const inputs = decodeInputs(req.inputs);
        const result = await this.withDeadline(inferAsync(this.repo, req.model, inputs), req.model);
        runS = result.timing.runUs / 1e6;
        const outputs = await pickOutputs(result.outputs, result.names, req.outputs);
        this.metrics.request({ model: req.model, protocol, queueS: result.timing.totalUs / 1e6 - runS, computeS: runS, totalS: seconds(start) });
        return { model: req.model, version: MODEL_VERSION, id: req.id, outputs };
      } finally {
        this.leave();
      }
    } catch (err) {
      const e = this.asServeError(err, req.model);
      // Unknown names are not labels: a client must not be able to grow the metrics without bound.
      const model = e instanceof ModelNotFoundError ? '' : req.model;
      this.metrics.request({ model, protocol, queueS: 0, computeS: runS, totalS: seconds(start), failure: e.kind });
      this.log.debug({ model: req.model, protocol, err: e.message }, 'inference failed');
      throw e;
    }
  }

  /**
   * Stops taking inference requests (readiness turns false, new requests get 503/UNAVAILABLE)
   * and resolves once those in flight are answered, or after `deadlineMs`.
   */
  async drain(deadlineMs: number): Promise<void> {
    this.draining = true;
    if (this.inFlight === 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, deadlineMs);
      this.drained = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** An error as the client gets it: a load failure is the model not being ready (503), with no server paths. */
  private asServeError(err: unknown, model: string): ServeError {
    if (err instanceof Error && this.loadErrors.has(err)) return new ModelNotReadyError(`model '${model}' failed to load: ${this.clientText(err.message)}`);
    return toServeError(err);
  }

  /** A message without the repository's folder in it (clients see model file names, not server paths). */
  private clientText(message: string): string {
    return message.split(`${this.repo.dir}${path.sep}`).join('');
  }

  private enter(): void {
    if (this.draining) throw new ServerBusyError('the server is shutting down');
    if (this.inFlight >= this.limits.maxInFlight)
      throw new ServerBusyError(`the server is busy: ${this.inFlight} requests in flight (at most ${this.limits.maxInFlight})`);
    this.inFlight++;
    this.metrics.inFlight.inc();
  }

  private leave(): void {
    this.inFlight--;
    this.metrics.inFlight.dec();
    if (this.inFlight === 0) this.drained?.();
  }

  /** The run's result, or a timeout error when it takes longer than the limit (its outputs are then released when it ends). */
  private withDeadline<T extends { outputs: Tensor[] }>(work: Promise<T>, model: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        void work.then((r) => disposeAll(r.outputs)).catch(() => undefined);
        reject(new RequestTimeoutError(`model '${model}' did not answer within ${this.limits.requestTimeoutMs} ms`));
      }, this.limits.requestTimeoutMs);
    });
    return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
  }

  /** A model name the repository has; anything else (including chains and pings of the RPC path) is not found. */
  private known(name: string): void {
    if (typeof name !== 'string' || !this.repo.has(name)) throw new ModelNotFoundError(`unknown model '${String(name)}'`);
  }

  /** Throws unless requests for the model may run: known, right version, not unloaded, its current version not failed. */
  private requireServable(name: string, version?: string): void {
    const s = this.state(name, version);
    if (s.state !== 'READY' && s.reason !== NOT_LOADED) throw new ModelNotReadyError(`model '${name}' is not ready: ${s.reason}`);
  }

  private state(name: string, version?: string): IndexEntry {
    this.known(name);
    if (version !== undefined && version !== '' && version !== MODEL_VERSION)
      throw new ModelNotFoundError(`model '${name}' has no version '${version}' (it has ${MODEL_VERSION})`);
    if (this.unloaded.has(name)) return entry(name, 'unloaded');
    let current: string;
    try {
      current = this.repo.version(name);
    } catch (err) {
      return entry(name, (err as Error).message); // a malformed manifest
    }
    const failed = this.failed.get(name);
    if (failed?.version === current) return entry(name, `failed to load: ${failed.reason}`);
    if (this.good.get(name) === current || this.repo.isLoaded(name, current)) return entry(name, '');
    return entry(name, NOT_LOADED);
  }
}

/** The reason of a model not loaded yet: it is loaded by its first request, so requests for it are not refused. */
const NOT_LOADED = 'not loaded yet';

const entry = (name: string, reason: string): IndexEntry => ({ name, version: MODEL_VERSION, state: reason === '' ? 'READY' : 'UNAVAILABLE', reason });
const seconds = (start: number) => (performance.now() - start) / 1000;
const round = (s: number) => Math.round(s * 1e4) / 1e4;

function disposeAll(tensors: readonly Tensor[]): void {
  for (const t of tensors) t.disposeSync();
}

/** The request's inputs as host data by name, each checked against its datatype and shape. */
function decodeInputs(inputs: RequestInput[]): NamedInputs {
  if (!Array.isArray(inputs) || inputs.length === 0) throw new BadRequestError('the request has no "inputs"');
  const out: Record<string, HostInput> = {};
  for (const i of inputs) {
    if (typeof i?.name !== 'string') throw new BadRequestError('every input needs a "name"');
    if (Object.hasOwn(out, i.name)) throw new BadRequestError(`input '${i.name}' is given twice`);
    const dtype = dtypeOfDatatype(i.datatype, i.name);
    const count = elementCount(i.shape, i.name);
    const data = i.raw !== undefined ? rawTensor(i.raw, dtype, count, i.name) : jsonTensor(i.json, dtype, count, i.name);
    out[i.name] = { data, shape: i.shape as number[], dtype };
  }
  return out;
}

/** The requested outputs (default: all) copied to the host; every output tensor is released. */
async function pickOutputs(tensors: Tensor[], names: string[], wanted: string[] | undefined): Promise<ResponseOutput[]> {
  try {
    const order = wanted ?? names;
    const picked = order.map((n) => {
      const k = names.indexOf(n);
      if (k < 0) throw new InputError(n, 'unknown', `the model has no output '${n}' (it has ${names.map((x) => `'${x}'`).join(', ')})`);
      return { name: n, tensor: tensors[k] };
    });
    return await Promise.all(
      picked.map(async ({ name, tensor }) => ({
        name,
        datatype: datatypeOf(tensor.dtype),
        dtype: tensor.dtype,
        shape: [...tensor.shape],
        data: await tensor.toArray(),
      })),
    );
  } finally {
    disposeAll(tensors);
  }
}
