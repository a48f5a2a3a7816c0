/**
 * TVM RPC client: sessions with a TVM RPC server (TVM's own, or tvm-node's), built on the
 * runtime's wire-compatible client (`rpc.Connect`). Everything that touches the socket runs
 * on the thread pool and in the session's queue, one request at a time.
 */
import fs from 'node:fs';
import path from 'node:path';
import { type InputValue, orderInputs } from '../bind';
import { checkIndex, Device, type DeviceKind, DeviceType, RPC_SESS_MASK } from '../device';
import type { DType } from '../dtype';
import { TvmTypeError, TvmValueError } from '../errors';
import { type PackedFunc, requireGlobalFunc } from '../function';
import type { Module } from '../module';
import { checkEnum, checkNumber, checkOptions, checkString, received, requireNumber, requireString } from '../options';
import { registerSessionQueue, SerialQueue, withRequestSlot } from '../scheduling';
import { Tensor, type TensorData } from '../tensor';
import { CHANNEL_KEY_PREFIX, InferenceChannel, type InferReply, OPEN_CHANNEL_FUNCTION, replyOf } from './channel';
import { END_SESSION_FUNCTION, encodeInputs, INFER_FUNCTION, type InferInput, MODELS_FUNCTION, PING } from './infer';
import type { PublicModelInfo } from './repository';
import { outgoingTensor } from './tensor-stream';

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** The server's key to match (TVM: `--key`); empty matches a server started without one. */
  key?: string;
  /** Seconds the server lets this session live (TVM's `-timeout=`); 0 for no limit. */
  sessionTimeout?: number;
}

/** A function on the peer; each call is one request in the session's queue. */
export class RemoteFunction implements AsyncDisposable {
  /** @internal */
  constructor(
    private readonly fn: PackedFunc,
    private readonly queue: SerialQueue,
    /** Its name on the peer. */
    readonly name: string,
  ) {}

  /**
   * Calls it on the peer; arguments and results cross the socket. A result that holds
   * resources (a remote tensor, module, ...) is the caller's to dispose.
   */
  call(...args: unknown[]): Promise<unknown> {
    return this.queue.run(() => this.fn.call(...args));
  }

  /** Whether {@link RemoteFunction.dispose} was called. */
  get disposed(): boolean {
    return this.fn.disposed;
  }

  /**
   * Releases the remote function (a request to the peer, made off the event loop; idempotent).
   * TVM keeps a connection open while any remote object is referenced, and TVM's own server
   * serves one client at a time: release what you are done with.
   */
  dispose(): Promise<void> {
    if (this.fn.disposed) return Promise.resolve();
    return this.queue.run(() => this.fn.dispose());
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

/** A session with a TVM RPC server. Devices of the peer are ordinary {@link Device}s. */
export class RPCSession implements AsyncDisposable {
  private readonly queue = new SerialQueue();
  private closed = false;
  private inferFn?: Promise<RemoteFunction>;
  /** The inference channel, once asked for; undefined inside when the server offers none. */
  private channel?: Promise<InferenceChannel | undefined>;

  /** @internal */
  constructor(
    /** The runtime's RPC session module. */
    readonly module: Module,
    /** The session's index in TVM's session table (it names its devices). */
    readonly tableIndex: number,
    /** Where the session's server listens (an inference channel connects there too). */
    private readonly peer?: { host: string; port: number },
  ) {
    registerSessionQueue(tableIndex, this.queue);
  }

  /** A device of the peer, e.g. `session.device('cuda', 0)`. */
  device(kind: DeviceKind, index = 0): Device {
    checkEnum('RPCSession.device: kind', kind, Object.keys(DeviceType) as DeviceKind[]);
    return new Device(DeviceType[kind] + (this.tableIndex + 1) * RPC_SESS_MASK, checkIndex(`RPCSession.device(${received(kind)})`, kind, index));
  }
  /** The peer's CPU. */
  cpu(index = 0): Device {
    return this.device('cpu', index);
  }
  /** A GPU of the peer. */
  cuda(index = 0): Device {
    return this.device('cuda', index);
  }
  /** An OpenCL device of the peer (e.g. a Mali GPU on an RK3588 board). */
  opencl(index = 0): Device {
    return this.device('opencl', index);
  }
  /** A Vulkan device of the peer. */
  vulkan(index = 0): Device {
    return this.device('vulkan', index);
  }

  /** A global function of the peer by name (the caller's to dispose); throws if the peer has none. */
  async getFunction(name: string): Promise<RemoteFunction> {
    requireString('RPCSession.getFunction: name', name);
    const fn = await this.queue.run(() => this.module.getFunction(name));
    if (!fn) throw new TvmValueError('ValueError', `the peer has no function '${name}'`);
    return new RemoteFunction(fn, this.queue, name);
  }

  /** Calls a global function of the peer by name. */
  async call(name: string, ...args: unknown[]): Promise<unknown> {
    requireString('RPCSession.call: name', name);
    const fn = await this.getFunction(name);
    try {
      return await fn.call(...args);
    } finally {
      await fn.dispose();
    }
  }

  /** Sends bytes (or a local file) into the session's work directory on the peer. */
  async upload(data: Buffer | string, target?: string): Promise<void> {
    if (typeof data === 'string') requireString('RPCSession.upload: data', data);
    else if (!(data instanceof Uint8Array))
      throw new TvmTypeError('TypeError', `RPCSession.upload: data must be a Buffer (bytes) or a local file path, got ${received(data)}`);
    checkString('RPCSession.upload: target', target, { nonEmpty: true });
    const bytes = typeof data === 'string' ? await fs.promises.readFile(data) : data;
    const name = target ?? (typeof data === 'string' ? path.basename(data) : undefined);
    if (!name) throw new TvmValueError('ValueError', 'upload of bytes needs a target file name');
    await this.call('tvm.rpc.server.upload', name, bytes);
  }

  /** Fetches a file from the session's work directory. */
  async download(name: string): Promise<Buffer> {
    requireString('RPCSession.download: name', name);
    return (await this.call('tvm.rpc.server.download', name)) as Buffer;
  }

  /** Lists the session's work directory. */
  async listdir(): Promise<string[]> {
    const out = String(await this.call('tvm.rpc.server.listdir', '.'));
    return out ? out.split(',') : [];
  }

  /** Removes a file from the session's work directory. */
  async remove(name: string): Promise<void> {
    requireString('RPCSession.remove: name', name);
    await this.call('tvm.rpc.server.remove', name);
  }

  /** Loads an uploaded artifact on the peer; its functions and VMs run there. The module is the caller's to dispose. */
  async loadModule(name: string): Promise<Module> {
    requireString('RPCSession.loadModule: name', name);
    using load = requireGlobalFunc('rpc.LoadRemoteModule');
    return (await this.queue.run(() => load.call(this.module, name))) as Module;
  }

  /**
   * Runs a model of the server's repository on `inputs` in one round trip (inputs and
   * outputs travel inside the request and its answer) and returns the outputs as local
   * tensors, which are the caller's to dispose. The server checks the inputs against the
   * model (lib/bind.ts); a mismatch is a `ValueError` naming the input.
   *
   * Inputs by name (`{ x: { data, shape } }`) are put in the order of the model's manifest on
   * the server (one more round trip, for {@link RPCSession.models}), and the outputs come
   * back by the manifest's names (`output0`, ... where it names none).
   */
  async infer(model: string, inputs: readonly InferInput[]): Promise<Tensor[]>;
  async infer(model: string, inputs: Readonly<Record<string, InferInput>>): Promise<Record<string, Tensor>>;
  async infer(model: string, inputs: readonly InferInput[] | Readonly<Record<string, InferInput>>): Promise<Tensor[] | Record<string, Tensor>> {
    checkInferArgs(model, inputs);
    if (!Array.isArray(inputs)) return this.inferByName(model, inputs as Readonly<Record<string, InferInput>>);
    return (await this.inferReply(model, inputs as readonly InferInput[])).outputs;
  }

  /**
   * {@link RPCSession.infer} with inputs in order, answering also how long the server took
   * (tvm-node servers say; others leave `server` undefined). `model` may name a chain of the
   * repository's models, `a|b|c`: the server runs them in order, each taking its inputs by
   * name from the request or from earlier outputs, and answers the outputs no later model
   * takes (lib/rpc/infer.ts); the empty name is a ping (no inputs, no outputs).
   */
  async inferReply(model: string, inputs: readonly InferInput[]): Promise<InferReply> {
    checkInferArgs(model, inputs);
    const channel = await this.inferenceChannel();
    if (channel) return channel.infer(model, await Promise.all(inputs.map(outgoingTensor)));
    // TVM's own transport: looked up once per session, so each inference is one request.
    this.inferFn ??= this.getFunction(INFER_FUNCTION);
    return replyOf((await (await this.inferFn).call(model, encodeInputs(inputs))) as Buffer);
  }

  /**
   * The session's inference channel (lib/rpc/channel.ts): opened on first use when the
   * server offers one (tvm-node servers with a model repository), opened again when the
   * server ended it (idle timeout); undefined for servers without one (TVM's own), or when
   * it cannot be reached: `infer()` then goes through TVM's transport.
   */
  private async inferenceChannel(): Promise<InferenceChannel | undefined> {
    const open = await this.channel;
    if (this.channel && (open === undefined || open.usable)) return open;
    this.channel = this.openChannel();
    return this.channel;
  }

  private async openChannel(): Promise<InferenceChannel | undefined> {
    if (!this.peer) return undefined;
    const token = await this.call(OPEN_CHANNEL_FUNCTION).catch(() => undefined);
    if (typeof token !== 'string') return undefined;
    return InferenceChannel.open(this.peer.host, this.peer.port, CHANNEL_KEY_PREFIX + token).catch(() => undefined);
  }

  private async inferByName(model: string, inputs: Readonly<Record<string, InferInput>>): Promise<Record<string, Tensor>> {
    const info = (await this.models()).find((m) => m.name === model);
    if (!info) throw new TvmValueError('ValueError', `no model '${model}' in the server's repository`);
    if (info.error !== undefined) throw new TvmValueError('ValueError', `model '${model}': ${info.error}`);
    const specs = info.inputs;
    if (!specs || specs.some((s) => s.name === undefined)) {
      throw new TvmValueError(
        'ValueError',
        `model '${model}' has no input names on the server (its manifest names none): pass its inputs in order, as an array`,
      );
    }
    const ordered = orderInputs(
      specs.map((s) => ({ name: s.name! })),
      inputs as Readonly<Record<string, InputValue>>,
      { model: `model '${model}'` },
    );
    const outputs = await this.infer(model, ordered as InferInput[]);
    return Object.fromEntries(outputs.map((t, i) => [info.outputs?.[i]?.name ?? `output${i}`, t]));
  }

  /** The models of the server's repository. */
  async models(): Promise<PublicModelInfo[]> {
    return JSON.parse(String(await this.call(MODELS_FUNCTION))) as PublicModelInfo[];
  }

  /** A tensor on a device of the peer holding a copy of `data` (one bulk transfer); the caller's to dispose. */
  async tensor(data: TensorData, opts: { shape?: readonly number[]; dtype?: DType; device?: Device } = {}): Promise<Tensor> {
    checkOptions('RPCSession.tensor', opts, ['shape', 'dtype', 'device']);
    return Tensor.from(data, { ...opts, device: opts.device ?? this.cpu() });
  }

  /** Whether {@link RPCSession.dispose} was called. */
  get disposed(): boolean {
    return this.closed;
  }

  /**
   * Ends the session (the peer cleans up its work directory), even while remote objects
   * taken from it are still referenced: they fail from then on. Idempotent.
   */
  async dispose(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    (await this.channel?.catch(() => undefined))?.close();
    await (await this.inferFn?.catch(() => undefined))?.dispose();
    await this.queue.run(async () => {
      // tvm-node's server ends the session on request; on TVM's own server the session ends
      // when the last reference to it is released.
      const end = await this.module.getFunction(END_SESSION_FUNCTION).catch(() => null);
      await end?.call().catch(() => undefined);
      await end?.dispose();
      registerSessionQueue(this.tableIndex, undefined);
      await this.module.dispose();
    });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

/**
 * Connects to a TVM RPC server (`python -m tvm.exec.rpc_server`, or `tvm-node rpc-server`).
 * A key mismatch, refused connection or wrong protocol is a {@link TvmError}.
 */
export async function connect(host: string, port: number, opts: ConnectOptions = {}): Promise<RPCSession> {
  requireString('connect: host', host);
  requireNumber('connect: port', port, { min: 1, max: 65535, integer: true });
  const o = checkOptions('connect', opts, ['key', 'sessionTimeout']);
  const timeout = checkNumber('connect: sessionTimeout', o.sessionTimeout, { min: 0 });
  const key = checkString('connect: key', o.key, {}, '') + (timeout ? ` -timeout=${timeout}` : '');
  using rpcConnect = requireGlobalFunc('rpc.Connect');
  // The handshake and InitServer wait on the peer, on a pool thread.
  const module = (await withRequestSlot(() => rpcConnect.call(host, port, key, false))) as Module;
  try {
    using tableIndex = requireGlobalFunc('rpc.SessTableIndex');
    return new RPCSession(module, Number(tableIndex.callSync(module)), { host, port });
  } catch (err) {
    await module.dispose();
    throw err;
  }
}

/**
 * Checks {@link RPCSession.infer}'s arguments before anything is sent: the model's name, and
 * each input a Tensor or `{ data: TypedArray, shape, dtype? }` (the server checks them
 * against the model).
 */
function checkInferArgs(model: unknown, inputs: unknown): void {
  // The empty name is a ping (lib/rpc/infer.ts, PING).
  if (model !== PING) requireString('RPCSession.infer: model', model);
  if (typeof inputs !== 'object' || inputs === null || inputs instanceof Tensor || ArrayBuffer.isView(inputs)) {
    throw new TvmTypeError('TypeError', `RPCSession.infer: inputs must be an array of inputs or an object of inputs by name, got ${received(inputs)}`);
  }
  for (const [k, v] of Object.entries(inputs)) {
    const at = Array.isArray(inputs) ? `inputs[${k}]` : `inputs.${k}`;
    if (v instanceof Tensor) continue;
    if (typeof v !== 'object' || v === null || Array.isArray(v) || ArrayBuffer.isView(v)) {
      throw new TvmTypeError('TypeError', `RPCSession.infer: ${at} must be a Tensor or { data, shape, dtype? }, got ${received(v)}`);
    }
    const { data, shape, dtype } = v as { data?: unknown; shape?: unknown; dtype?: unknown };
    if (!ArrayBuffer.isView(data) || data instanceof DataView)
      throw new TvmTypeError('TypeError', `RPCSession.infer: ${at}.data must be a TypedArray, got ${received(data)}`);
    if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw new TvmTypeError(
        'TypeError',
        `RPCSession.infer: ${at}.shape must be an array of whole numbers >= 0, got ${Array.isArray(shape) ? `[${shape.map(received).join(', ')}]` : received(shape)}`,
      );
    }
    checkString(`RPCSession.infer: ${at}.dtype`, dtype, { nonEmpty: true });
  }
}
