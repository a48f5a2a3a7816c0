/**
 * One round trip per inference: the client sends the model name and its inputs in one
 * request, the server runs the model and answers with the outputs. TVM's RPC protocol
 * passes only plain values, strings, bytes and handles (no arrays), so the tensors travel
 * as one bytes blob each way, in a format any client can build:
 *
 *   "TNI1" | uint32 LE header length | header JSON | data
 *   header: { "tensors": [{ "shape": [...], "dtype": "float32", "offset": n, "nbytes": n }] }
 *
 * offsets are relative to the start of the data area and 64-byte aligned. A Python client:
 * `r.get_function('tvm_node.infer')('mlp', pack([x]))` (see README for `pack`/`unpack`).
 */
import { type BoundInputs, bindInputs, type InputValue, type TensorInfo } from '../bind';
import { type DType, dtypeOfArray, HOST_ARRAY, type TypedArray } from '../dtype';
import { TvmValueError } from '../errors';
import { HandleOwner } from '../handle';
import { Tensor } from '../tensor';
import { outputsOf, type VirtualMachine } from '../vm';
import type { ServedFunction } from './inference-session';
import type { LoadedModel, ModelRepository } from './repository';
import { type BlobTensor, decodeBlob, encodeBlob, writeBlob } from './tni1';
import { WireError, type WireValue } from './wire';

/** Name of the server function: `(model: str, request: bytes) -> bytes`. */
export const INFER_FUNCTION = 'tvm_node.infer';
/** Name of the server function that lists the repository (JSON text). */
export const MODELS_FUNCTION = 'tvm_node.models';
/** Name of the server function tvm-node's client calls to end its session. */
export const END_SESSION_FUNCTION = 'tvm_node.end_session';

/** Decodes a blob into host arrays: views of the blob where the alignment allows, copies otherwise. */
export function decodeTensors(blob: Buffer): Array<{ data: TypedArray; shape: number[]; dtype: DType }> {
  return decodeBlob(blob).map((t) => ({ data: hostArray(t), shape: t.shape, dtype: t.dtype }));
}

function hostArray({ bytes, dtype }: BlobTensor): TypedArray {
  const Ctor = HOST_ARRAY[dtype];
  const aligned = bytes.byteOffset % Ctor.BYTES_PER_ELEMENT === 0 ? bytes : Buffer.from(bytes);
  return new Ctor(aligned.buffer, aligned.byteOffset, aligned.byteLength / Ctor.BYTES_PER_ELEMENT);
}

/**
 * The server side of {@link INFER_FUNCTION} on the JS thread (a session process, where TVM's
 * loop calls it and waits anyway). The input tensors it builds and the outputs of the run are
 * released before it returns.
 */
export function serveInference(repo: ModelRepository): (model: string, request: Buffer) => Buffer {
  return (model, request) => {
    if (model === PING) return encodeOutputs([]);
    const chain = planChain(chainNames(model).map((name) => repo.getSync(name)));
    const inputs = bindRequest(chain.request, request);
    try {
      return encodeOutputs(runChainSync(chain, inputs.tensors));
    } finally {
      inputs.release();
    }
  };
}

/** What a server measured of one request ({@link InferReply.server}, in the reply blob's header as `server`). */
export interface ServerTiming {
  /** From the request's arrival (all its bytes in) to its outputs being ready, µs: model loads and waits for a VM included. */
  totalUs: number;
  /** Of which the model runs, µs (a VM run's wait for a thread-pool slot included). */
  runUs: number;
}

/** Inputs by name, as the HTTP and gRPC front ends (lib/serve) pass them. */
export type NamedInputs = Readonly<Record<string, InputValue>>;

/** What {@link inferAsync} resolves with. */
export interface InferResult {
  /** The caller's to release once sent. */
  outputs: Tensor[];
  /** Their names (the manifest's or the artifact's; `output<k>` where neither says). */
  names: string[];
  timing: ServerTiming;
}

/**
 * The server side of an inference off the JS thread: the load and the run use the thread
 * pool. The request is a TNI1 blob, the tensors a streamed blob became (the caller's: they
 * are only read), or inputs by name (host data is bound as {@link bindInputs} does for the
 * model API). Tensors made for the inputs are released before it resolves.
 */
export async function inferAsync(repo: ModelRepository, model: string, request: Buffer | readonly Tensor[] | NamedInputs): Promise<InferResult> {
  const start = performance.now();
  if (model === PING) return { outputs: [], names: [], timing: { totalUs: 0, runUs: 0 } };
  const chain = planChain(await Promise.all(chainNames(model).map((name) => repo.get(name))));
  const inputs = bindRequest(chain.request, request);
  try {
    const runStart = performance.now();
    const outputs = await runChain(chain, inputs.tensors);
    const end = performance.now();
    const names = outputs.map((_, k) => chain.returned[k] ?? `output${k}`);
    return { outputs, names, timing: { totalUs: Math.round((end - start) * 1000), runUs: Math.round((end - runStart) * 1000) } };
  } finally {
    inputs.release();
  }
}

/**
 * The model name of a ping: a request that runs nothing, takes any inputs (they are read and
 * dropped) and answers none. Clients time round trips, and with inputs the link's bandwidth,
 * with it (lib/offload).
 */
export const PING = '';

/** Most models one request may chain: a request cannot make the server load and run the whole repository. */
export const MAX_CHAIN = 16;

/** The models a request names: one model, or a chain `a|b|c` (see {@link planChain}). */
function chainNames(model: string): string[] {
  const names = model.split(CHAIN_SEPARATOR);
  if (names.length > MAX_CHAIN) throw new TvmValueError('ValueError', `a chain of ${names.length} models: at most ${MAX_CHAIN} may run in one request`);
  return names;
}

/** Joins model names into a chain (one request runs them all on the server, see {@link planChain}). */
export const CHAIN_SEPARATOR = '|';

/**
 * Models run one after another in one request, their tensors passed by name.
 * `request` is what the request binds to: the chain's inputs that no earlier model makes,
 * in the order the models first take them (for one model: its inputs).
 */
interface Chain {
  models: LoadedModel[];
  request: Pick<LoadedModel, 'info' | 'arity' | 'inputs'>;
  /** The outputs the reply carries: every output no later model of the chain takes, in chain order. */
  returned: string[];
}

/**
 * How a chain runs: model k takes each input by name from the request or from an earlier
 * model's outputs, so one request can carry a whole stretch of a split model (lib/offload)
 * and its intermediate tensors never cross the network. Names come from the models'
 * manifests; a chain of one model is that model as it always was (positional, no names needed).
 */
function planChain(models: LoadedModel[]): Chain {
  if (models.length === 1) {
    const [m] = models;
    return { models, request: m, returned: m.outputs.map((o) => o.name) };
  }
  const external: TensorInfo[] = [];
  const produced = new Set<string>();
  const taken = new Set<string>();
  for (const m of models) {
    if (!m.info.inputs?.every((s) => s.name) || !m.info.outputs?.every((s) => s.name))
      throw new TvmValueError('ValueError', `model '${m.info.name}' cannot be chained: its manifest does not name all its inputs and outputs`);
    for (const input of m.inputs) {
      if (produced.has(input.name)) taken.add(input.name);
      else if (!external.some((e) => e.name === input.name)) external.push(input);
    }
    for (const output of m.outputs) {
      if (produced.has(output.name) || external.some((e) => e.name === output.name))
        throw new TvmValueError('ValueError', `model '${m.info.name}' cannot be chained: an earlier model of the chain has '${output.name}' too`);
      produced.add(output.name);
    }
  }
  const names = models.map((m) => m.info.name).join(CHAIN_SEPARATOR);
  const returned = models.flatMap((m) => m.outputs.map((o) => o.name)).filter((n) => !taken.has(n));
  return { models, request: { info: { ...models[0]?.info, name: names }, arity: external.length, inputs: external }, returned };
}

/** Runs a chain's models, each on the thread pool or, when it is that short, on the JS thread ({@link runModel}). */
async function runChain(chain: Chain, inputs: Tensor[]): Promise<Tensor[]> {
  const state = new ChainRun(chain, inputs);
  try {
    for (const [k, m] of chain.models.entries()) {
      const bound = state.bind(k);
      state.keep(k, await runModel(m, bound.tensors).finally(() => bound.release()));
    }
    return state.finish();
  } catch (err) {
    return state.fail(err);
  }
}

/**
 * A model whose runs take less than this (µs, measured on the JS thread) is run there: handing
 * a run to a pool thread and back costs more than that (~35–60 µs of thread wake-ups each way
 * on a 2-vCPU VM; bench group `model`), and a server's small-model latency is mostly that hop.
 * Blocking the event loop for under a quarter of a millisecond does not hold up other sessions.
 */
const INLINE_RUN_US = 250;
/** A model is tried on the JS thread only once a pool run of it took less than this (µs, thread hop included). */
const TRY_INLINE_US = 1000;

/** What the server has measured of a model's runs (by VM: a reloaded model is measured anew). */
const runCosts = new WeakMap<VirtualMachine, { poolUs?: number; inlineUs?: number; warm?: boolean; runs: number }>();
/** Every this many runs a model kept on the pool is timed on the JS thread again (it may have been moved by a pause). */
const RETRY_INLINE_EVERY = 256;

/**
 * Runs a model on the thread pool, or on the JS thread when its runs are known to be shorter
 * than {@link INLINE_RUN_US}. A model is first run on the pool; if that took under
 * {@link TRY_INLINE_US} (hop included), the next run is timed on the JS thread, and the model
 * stays there while its runs stay short: a moving average of samples capped at twice the
 * limit, so one run stretched by a GC pause does not move it, but a model that is slow moves
 * within a few runs.
 */
async function runModel(m: LoadedModel, args: Tensor[]): Promise<unknown> {
  let cost = runCosts.get(m.vm);
  if (!cost) {
    cost = { runs: 0 };
    runCosts.set(m.vm, cost);
  }
  const short = cost.poolUs !== undefined && cost.poolUs < TRY_INLINE_US;
  const inline =
    cost.inlineUs !== undefined && cost.inlineUs < INLINE_RUN_US ? true : short && (cost.inlineUs === undefined || ++cost.runs % RETRY_INLINE_EVERY === 0);
  const start = performance.now();
  if (!inline) {
    const result = await m.vm.run(m.info.function, ...args);
    cost.poolUs = (performance.now() - start) * 1000;
    return result;
  }
  const result = m.vm.runSync(m.info.function, ...args);
  const us = Math.min((performance.now() - start) * 1000, 2 * INLINE_RUN_US);
  // The first run on the JS thread sets up the VM's instance for it: not a run's cost.
  if (cost.warm) cost.inlineUs = cost.inlineUs === undefined ? us : cost.inlineUs + 0.2 * (us - cost.inlineUs);
  cost.warm = true;
  return result;
}

/** {@link runChain} on the JS thread. */
function runChainSync(chain: Chain, inputs: Tensor[]): Tensor[] {
  const state = new ChainRun(chain, inputs);
  try {
    chain.models.forEach((m, k) => {
      using bound = state.bind(k);
      state.keep(k, m.vm.runSync(m.info.function, ...bound.tensors));
    });
    return state.finish();
  } catch (err) {
    return state.fail(err);
  }
}

/** The tensors of one run of a chain, by name; those the reply does not carry are released as soon as the run ends. */
class ChainRun {
  private readonly values: Map<string, Tensor>;
  private readonly made: Tensor[] = [];
  /** A single model's outputs, all of them (its manifest may name none). */
  private only?: Tensor[];

  constructor(
    private readonly chain: Chain,
    private readonly inputs: Tensor[],
  ) {
    this.values = new Map(chain.request.inputs.map((s, i) => [s.name, inputs[i]]));
  }

  /** Model k's inputs (the request's, or earlier outputs), checked against what it takes. */
  bind(k: number): BoundInputs & Disposable {
    if (this.chain.models.length === 1) return disposable({ tensors: this.inputs, created: [], dims: {}, release: () => undefined });
    const m = this.chain.models[k];
    return disposable(
      bindInputs(
        m.inputs,
        m.inputs.map((s) => this.values.get(s.name)!),
        { model: `model '${m.info.name}'` },
      ),
    );
  }

  keep(k: number, result: unknown): void {
    const outputs = outputsOf<Tensor>(result);
    this.made.push(...outputs);
    if (this.chain.models.length === 1) this.only = outputs;
    else outputs.forEach((t, i) => this.values.set(this.chain.models[k].outputs[i].name, t));
  }

  finish(): Tensor[] {
    const outputs = this.only ?? this.chain.returned.map((n) => this.values.get(n)!);
    this.release(new Set(outputs));
    return outputs;
  }

  fail(err: unknown): never {
    this.release(new Set());
    throw err;
  }

  private release(keep: Set<Tensor>): void {
    for (const t of this.made) if (!keep.has(t) && t instanceof HandleOwner) t.disposeSync();
  }
}

const disposable = <T extends { release(): void }>(b: T): T & Disposable => Object.assign(b, { [Symbol.dispose]: () => b.release() });

/** Told of each answered (timing) or failed (error) inference request, e.g. for metrics. */
export type InferenceObserver = (model: string, timing: ServerTiming | undefined, error: Error | undefined) => void;

/** The functions an inference-only server offers (lib/rpc/inference-session.ts), over `repo`. */
export function inferenceFunctions(
  repo: ModelRepository,
  extra: ReadonlyMap<string, ServedFunction> = new Map(),
  observe?: InferenceObserver,
): Map<string, ServedFunction> {
  return new Map<string, ServedFunction>([
    [
      INFER_FUNCTION,
      async ([model, request]) => {
        if (model?.kind !== 'str' || (request?.kind !== 'bytes' && request?.kind !== 'tensors'))
          throw new WireError(`${INFER_FUNCTION} takes (model: str, request: bytes)`);
        try {
          const { outputs, timing } = await inferAsync(repo, model.value, request.value);
          observe?.(model.value, timing, undefined);
          return { kind: 'tensors', value: outputs, meta: { server: timing } };
        } catch (err) {
          observe?.(model.value, undefined, err as Error);
          throw err;
        }
      },
    ],
    [MODELS_FUNCTION, (): WireValue => ({ kind: 'str', value: modelsText(repo) })],
    [
      END_SESSION_FUNCTION,
      (_args, session): WireValue => {
        session.end();
        return { kind: 'none' };
      },
    ],
    ...extra,
  ]);
}

/** What {@link MODELS_FUNCTION} answers: the repository as clients may see it (no server paths). */
export function modelsText(repo: ModelRepository): string {
  return JSON.stringify(repo.publicList());
}

/**
 * A request (a blob, or the tensors a streamed blob became) as the model's input tensors,
 * in parameter order, and those made for it (the caller releases them). The tensor count is
 * checked against the model before any tensor is looked at; then each entry is checked
 * against the model's inputs (lib/bind.ts: dtype, rank, sizes, symbolic sizes, with a message
 * naming the input). A blob's entries are built with at most one copy of their bytes (none
 * when they happen to be 64-byte aligned); streamed tensors are passed as they are; inputs by
 * name are bound by name (unknown and missing names are errors).
 */
function bindRequest({ info, arity, inputs }: Chain['request'], request: Buffer | readonly Tensor[] | NamedInputs): { tensors: Tensor[]; release(): void } {
  const checkCount = (n: number) => {
    if (n !== arity) throw new TvmValueError('ValueError', `model '${info.name}' takes ${arity} input${arity === 1 ? '' : 's'}; the request has ${n}`);
  };
  if (Array.isArray(request)) {
    checkCount(request.length);
    return bindInputs(inputs, [...request], { model: `model '${info.name}'` });
  }
  if (!Buffer.isBuffer(request)) {
    if (typeof request !== 'object' || request === null) throw new TvmValueError('ValueError', 'the request must be a tensor blob (bytes)');
    return bindInputs(inputs, request as NamedInputs, { model: `model '${info.name}'` });
  }
  const entries = decodeBlob(request, { checkCount }).map((t) => ({ data: t.bytes, shape: t.shape, dtype: t.dtype }));
  return bindInputs(inputs, entries, { model: `model '${info.name}'` });
}

/**
 * A model's result (a tensor or a tuple of them) as a blob, each output copied once, into
 * place; the outputs are released once copied (or when the copy fails).
 */
function encodeOutputs(result: unknown): Buffer {
  const outputs = outputsOf<Tensor>(result);
  try {
    return writeBlob(
      outputs,
      outputs.map((t) => t.byteLength),
      (i, view) => outputs[i].handle.copyToBytes(view),
    );
  } finally {
    for (const o of outputs) if (o instanceof HandleOwner) o.disposeSync();
  }
}

/** What a client gives {@link RPCSession.infer}: tensors, or host data with a shape. */
export type InferInput = Tensor | { data: TypedArray; shape: readonly number[]; dtype?: DType };

/** Encodes client inputs (tensors are copied to the host first). */
export function encodeInputs(inputs: readonly InferInput[]): Buffer {
  return encodeBlob(
    inputs.map((i) =>
      i instanceof Tensor
        ? { data: i.toArraySync(), shape: i.shape, dtype: i.dtype }
        : { data: i.data, shape: i.shape, dtype: i.dtype ?? dtypeOfArray(i.data) },
    ),
  );
}
