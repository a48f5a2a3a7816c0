/**
 * TVM RPC client: sessions with a TVM RPC server (TVM's own, or tvm-node's), built on the
 * runtime's wire-compatible client (`rpc.Connect`). Everything that touches the socket runs
 * on the thread pool and in the session's queue, one request at a time.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Device, DeviceType, RPC_SESS_MASK, type DeviceKind } from '../device';
import { TvmValueError } from '../errors';
import { PackedFunc, requireGlobalFunc } from '../function';
import { Module } from '../module';
import type { DType } from '../dtype';
import { Tensor, type TensorData } from '../tensor';
import { encodeInputs, END_SESSION_FUNCTION, INFER_FUNCTION, type InferInput, MODELS_FUNCTION } from './infer';
import { decodeBlob } from './tni1';
import { registerSessionQueue, SerialQueue, withRequestSlot } from './lock';
import type { PublicModelInfo } from './repository';

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** The server's key to match (TVM: `--key`); empty matches a server started without one. */
  key?: string;
  /** Seconds the server lets this session live (TVM's `-timeout=`); 0 for no limit. */
  sessionTimeout?: number;
}

/** A function on the peer; each call is one request in the session's queue. */
export class RemoteFunction {
  /** @internal */
  constructor(
    private readonly fn: PackedFunc,
    private readonly queue: SerialQueue,
    /** Its name on the peer. */
    readonly name: string,
  ) {}

  /** Calls it on the peer; arguments and results cross the socket. */
  call(...args: unknown[]): Promise<unknown> {
    return this.queue.run(() => this.fn.callAsync(...args));
  }

  /**
   * Releases the remote function (a request to the peer, made off the event loop). TVM keeps
   * a connection open while any remote object is referenced, and TVM's own server serves one
   * client at a time: release what you are done with.
   */
  dispose(): Promise<void> {
    return this.queue.run(() => this.fn.disposeAsync());
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

  /** @internal */
  constructor(
    /** The runtime's RPC session module. */
    readonly module: Module,
    /** The session's index in TVM's session table (it names its devices). */
    readonly tableIndex: number,
  ) {
    registerSessionQueue(tableIndex, this.queue);
  }

  /** A device of the peer, e.g. `session.device('cuda', 0)`. */
  device(kind: DeviceKind, index = 0): Device {
    return new Device(DeviceType[kind] + (this.tableIndex + 1) * RPC_SESS_MASK, index);
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

  /** A global function of the peer by name; throws if the peer has none. */
  async getFunction(name: string): Promise<RemoteFunction> {
    const fn = await this.queue.run(() => this.module.getFunctionAsync(name));
    if (!fn) throw new TvmValueError('ValueError', `the peer has no function '${name}'`);
    return new RemoteFunction(fn, this.queue, name);
  }

  /** Calls a global function of the peer by name. */
  async call(name: string, ...args: unknown[]): Promise<unknown> {
    const fn = await this.getFunction(name);
    try {
      return await fn.call(...args);
    } finally {
      await fn.dispose();
    }
  }

  /** Sends bytes (or a local file) into the session's work directory on the peer. */
  async upload(data: Buffer | string, target?: string): Promise<void> {
    const bytes = typeof data === 'string' ? await fs.promises.readFile(data) : data;
    const name = target ?? (typeof data === 'string' ? path.basename(data) : undefined);
    if (!name) throw new TvmValueError('ValueError', 'upload of bytes needs a target file name');
    await this.call('tvm.rpc.server.upload', name, bytes);
  }

  /** Fetches a file from the session's work directory. */
  async download(name: string): Promise<Buffer> {
    return (await this.call('tvm.rpc.server.download', name)) as Buffer;
  }

  /** Lists the session's work directory. */
  async listdir(): Promise<string[]> {
    const out = String(await this.call('tvm.rpc.server.listdir', '.'));
    return out ? out.split(',') : [];
  }

  /** Removes a file from the session's work directory. */
  async remove(name: string): Promise<void> {
    await this.call('tvm.rpc.server.remove', name);
  }

  /** Loads an uploaded artifact on the peer; its functions and VMs run there. */
  async loadModule(name: string): Promise<Module> {
    const load = requireGlobalFunc('rpc.LoadRemoteModule');
    return (await this.queue.run(() => load.callAsync(this.module, name))) as Module;
  }

  /**
   * Runs a model of the server's repository on `inputs` in one round trip (inputs and
   * outputs travel inside the request and its answer) and returns the outputs as local tensors.
   */
  async infer(model: string, inputs: readonly InferInput[]): Promise<Tensor[]> {
    // Looked up once per session, so each inference is exactly one request.
    this.inferFn ??= this.getFunction(INFER_FUNCTION);
    const reply = (await (await this.inferFn).call(model, encodeInputs(inputs))) as Buffer;
    // One copy each, from the reply's bytes into the tensor.
    return decodeBlob(reply).map((t) => Tensor.from(t.bytes, { shape: t.shape, dtype: t.dtype }));
  }

  /** The models of the server's repository. */
  async models(): Promise<PublicModelInfo[]> {
    return JSON.parse(String(await this.call(MODELS_FUNCTION))) as PublicModelInfo[];
  }

  /** A tensor on a device of the peer holding a copy of `data` (one bulk transfer). */
  async tensor(data: TensorData, opts: { shape?: readonly number[]; dtype?: DType; device?: Device } = {}): Promise<Tensor> {
    return Tensor.fromAsync(data, { ...opts, device: opts.device ?? this.cpu() });
  }

  /**
   * Ends the session (the peer cleans up its work directory), even while remote objects
   * taken from it are still referenced: they fail from then on. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await (await this.inferFn?.catch(() => undefined))?.dispose();
    await this.queue.run(async () => {
      // tvm-node's server ends the session on request; on TVM's own server the session ends
      // when the last reference to it is released.
      const end = await this.module.getFunctionAsync(END_SESSION_FUNCTION).catch(() => null);
      await end?.callAsync().catch(() => undefined);
      await end?.disposeAsync();
      registerSessionQueue(this.tableIndex, undefined);
      await this.module.disposeAsync();
    });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Connects to a TVM RPC server (`python -m tvm.exec.rpc_server`, or `tvm-node rpc-server`).
 * A key mismatch, refused connection or wrong protocol is a {@link TvmError}.
 */
export async function connect(host: string, port: number, opts: ConnectOptions = {}): Promise<RPCSession> {
  const key = (opts.key ?? '') + (opts.sessionTimeout ? ` -timeout=${opts.sessionTimeout}` : '');
  const rpcConnect = requireGlobalFunc('rpc.Connect');
  // The handshake and InitServer wait on the peer, on a pool thread.
  const module = (await withRequestSlot(() => rpcConnect.callAsync(host, port, key, false))) as Module;
  const index = Number(requireGlobalFunc('rpc.SessTableIndex').call(module));
  return new RPCSession(module, index);
}
