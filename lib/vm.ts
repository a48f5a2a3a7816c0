/**
 * The model executor: TVM's Relax virtual machine, driven from Node.
 *
 * Concurrency model: a Relax VM instance holds registers and allocator state, so it is not
 * safe to run one instance from two threads. A {@link VirtualMachine} therefore keeps a
 * small pool of instances over the same executable (compiled kernels and constants are
 * shared and thread-safe): each {@link VirtualMachine.run} takes an idle instance (creating
 * one up to `concurrency`), runs on a libuv worker thread, and gives it back; runs beyond
 * `concurrency` wait in FIFO order. {@link VirtualMachine.runSync} runs on the JS thread on
 * an instance of its own.
 *
 * Ownership: a VM loaded from a path ({@link VirtualMachine.load}) owns its module and
 * disposes it with itself; a VM made over a module the caller passed leaves that module to
 * the caller. Outputs of runs are the caller's to dispose.
 */
import { cpu, Device, DeviceType } from './device';
import { atCallers, DisposedError, TvmAttributeError, TvmIndexError } from './errors';
import { type PackedFunc, unwrapArgs } from './function';
import { loadModule, loadModuleSync, Module } from './module';
import { checkArrayOf, checkEnum, checkInstance, checkNumber, checkOptions, requireString } from './options';
import { onDevice } from './scheduling';

/** How a VM allocates memory: `pooled` reuses freed blocks (TVM's default), `naive` does not. */
export type MemoryConfig = 'pooled' | 'naive';

/** Options of {@link VirtualMachine}. */
export interface VMOptions {
  /**
   * Devices the model runs on, e.g. `[cuda(0)]`; a CPU host device is appended when the last
   * one is not the CPU (shape functions run there), as TVM's Python VM does. Default `[cpu()]`.
   */
  devices?: Device[];
  /** Allocator kind, default `pooled`. */
  memory?: MemoryConfig;
  /** Most runs in flight at once (VM instances in the pool). Default 4, the libuv pool size. */
  concurrency?: number;
}

/** A function of the executable, as {@link VirtualMachine.functions} lists it. */
export interface VMFunctionInfo {
  name: string;
  arity: number;
  params: string[];
}

const ALLOCATOR = { naive: 1, pooled: 2 } as const;

/** Checks {@link VMOptions} at the public boundary (`caller` names the entry point in messages). */
function checkVMOptions(caller: string, opts: VMOptions | undefined): { devices?: Device[]; memory: MemoryConfig; concurrency: number } {
  const o = checkOptions(caller, opts, ['devices', 'memory', 'concurrency']);
  return {
    devices: checkArrayOf(`${caller}: devices`, o.devices, Device, 'Device', { nonEmpty: true }),
    memory: checkEnum(`${caller}: memory`, o.memory, ['pooled', 'naive'], 'pooled'),
    concurrency: checkNumber(`${caller}: concurrency`, o.concurrency, { min: 1, integer: true }, 4),
  };
}

/** One VM instance over the executable, with its entry functions cached. */
class Instance {
  private readonly funcs = new Map<string, PackedFunc>();

  constructor(readonly vm: Module) {}

  func(name: string): PackedFunc {
    return this.funcs.get(name) ?? this.cached(name, this.vm.getFunctionSync(name, { queryImports: false }));
  }

  /** The function when it was looked up before. */
  lookedUp(name: string): PackedFunc | undefined {
    return this.funcs.get(name);
  }

  /** {@link Instance.func} with the lookup on the thread pool (over RPC it is a round trip). */
  async funcAsync(name: string): Promise<PackedFunc> {
    return this.funcs.get(name) ?? this.cached(name, await this.vm.getFunction(name));
  }

  /** Caches a function just looked up (an instance serves one run at a time: no race). */
  private cached(name: string, f: PackedFunc | null): PackedFunc {
    if (!f) throw new TvmAttributeError('AttributeError', `the model has no function '${name}'`);
    this.funcs.set(name, f);
    return f;
  }

  async dispose(): Promise<void> {
    await Promise.all([...this.funcs.values()].map((f) => f.dispose()));
    this.funcs.clear();
    await this.vm.dispose();
  }
}

/** Runs a compiled Relax model (a `.so` from `tvm.compile(...).export_library(...)`). */
export class VirtualMachine implements AsyncDisposable {
  private readonly idle: Instance[] = [];
  private readonly waiting: Array<(i: Instance) => void> = [];
  private created = 0;
  private active = 0;
  private drained?: () => void;
  private syncInstance?: Instance;
  private closed = false;
  private disposing?: Promise<void>;
  /** Whether the module was loaded by {@link VirtualMachine.load} (disposed with the VM). */
  private ownsModule = false;
  private readonly initArgs: number[];
  private readonly loadExecutable: PackedFunc;
  readonly devices: readonly Device[];
  readonly concurrency: number;
  private readonly remote: boolean;

  /**
   * Creates a VM over a loaded module, which stays the caller's (the VM does not dispose it).
   * Over an RPC module this looks up the executable's loader with a round trip on the JS
   * thread: servers use {@link VirtualMachine.create}.
   */
  constructor(
    readonly module: Module,
    opts: VMOptions = {},
    /** @internal the loader, when {@link VirtualMachine.create} looked it up already */
    loader?: PackedFunc | null,
  ) {
    checkInstance('VirtualMachine: module', module, Module, 'a Module');
    const o = checkVMOptions('VirtualMachine', opts);
    const devices = [...(o.devices ?? [cpu()])];
    const last = devices[devices.length - 1];
    if (!last || last.localType !== DeviceType.cpu) devices.push(last?.isRemote ? new Device(last.deviceType - last.localType + DeviceType.cpu) : cpu());
    for (const d of devices) d.assertAvailable();
    this.devices = devices;
    // An RPC session serves one request at a time: a VM on a peer runs one call at a time.
    this.remote = devices.some((d) => d.isRemote);
    this.concurrency = this.remote ? 1 : o.concurrency;
    const alloc = ALLOCATOR[o.memory];
    // The VM runs where the module lives: on a peer, device types are the peer's own.
    this.initArgs = devices.flatMap((d) => [d.localType, d.deviceId, alloc]);
    const load = loader === undefined ? module.getFunctionSync('vm_load_executable') : loader;
    if (!load) {
      throw new TvmAttributeError(
        'AttributeError',
        `module (${module.typeKey}) is not a Relax VM executable: it has no vm_load_executable ` +
          '(a kernel library? call its functions with module.getFunction)',
      );
    }
    this.loadExecutable = load;
  }

  /**
   * Loads `path` off the JS thread and creates a VM over it. The VM owns the module: its
   * {@link VirtualMachine.dispose} disposes the module too.
   */
  static async load(path: string, opts: VMOptions = {}): Promise<VirtualMachine> {
    requireString('VirtualMachine.load: path', path);
    checkVMOptions('VirtualMachine.load', opts);
    const module = await loadModule(path);
    try {
      const vm = await VirtualMachine.create(module, opts);
      vm.ownsModule = true;
      return vm;
    } catch (err) {
      await module.dispose();
      throw err;
    }
  }

  /** {@link VirtualMachine.load} on the JS thread (the VM owns the module it loads). */
  static loadSync(path: string, opts: VMOptions = {}): VirtualMachine {
    requireString('VirtualMachine.loadSync: path', path);
    checkVMOptions('VirtualMachine.loadSync', opts);
    const module = loadModuleSync(path);
    try {
      const vm = new VirtualMachine(module, opts);
      vm.ownsModule = true;
      return vm;
    } catch (err) {
      module.disposeSync();
      throw err;
    }
  }

  /**
   * Creates a VM with every step that may cross the network (over an RPC module: the loader
   * lookup, and later each instance's set-up) on the thread pool. The module stays the
   * caller's.
   */
  static async create(module: Module, opts: VMOptions = {}): Promise<VirtualMachine> {
    checkInstance('VirtualMachine.create: module', module, Module, 'a Module');
    checkVMOptions('VirtualMachine.create', opts);
    const loader = await module.getFunction('vm_load_executable');
    try {
      return new VirtualMachine(module, opts, loader);
    } catch (err) {
      await loader?.dispose();
      throw err;
    }
  }

  /** The instance {@link VirtualMachine.runSync} uses, set up on the JS thread on first use. */
  private syncInstanceOf(): Instance {
    if (this.syncInstance) return this.syncInstance;
    const vm = this.loadExecutable.callSync() as Module;
    try {
      // Released at once: on an RPC peer every live handle keeps the session open.
      using init = vm.requireFunctionSync('vm_initialization');
      init.callSync(...this.initArgs);
    } catch (err) {
      vm.disposeSync();
      throw err;
    }
    this.syncInstance = new Instance(vm);
    return this.syncInstance;
  }

  /** A new instance for the run pool, set up on the thread pool. */
  private async newInstance(): Promise<Instance> {
    const vm = (await this.loadExecutable.call()) as Module;
    try {
      const init = await vm.getFunction('vm_initialization');
      try {
        if (!init) throw new TvmAttributeError('AttributeError', 'the VM has no vm_initialization');
        await init.call(...this.initArgs);
      } finally {
        await init?.dispose();
      }
    } catch (err) {
      await vm.dispose();
      throw err;
    }
    return new Instance(vm);
  }

  private checkOpen(): void {
    if (this.closed) throw new DisposedError('DisposedError', 'VirtualMachine has been disposed');
  }

  /** The executable's functions with their arity and parameter names. */
  functions(): VMFunctionInfo[] {
    this.checkOpen();
    const vm = this.syncInstanceOf().vm;
    using arity = vm.requireFunctionSync('get_function_arity');
    using paramName = vm.requireFunctionSync('get_function_param_name');
    // The runtime offers no list of functions; its disassembly (`as_text`) opens each
    // bytecode function with `@name:` and marks the packed functions it calls `packed_func`.
    using asText = this.module.requireFunctionSync('as_text');
    const text = String(asText.callSync());
    return [...text.matchAll(/^@(\S+):$/gm)]
      .map((m) => m[1])
      .map((name) => {
        const n = Number(arity.callSync(name));
        const params = Array.from({ length: n }, (_, i) => String(paramName.callSync(name, i)));
        return { name, arity: n, params };
      });
  }

  /**
   * {@link VirtualMachine.run} on the JS thread, blocking the event loop for the whole run:
   * use {@link VirtualMachine.run} in servers. Outputs are the caller's to dispose.
   */
  runSync(fn: string, ...inputs: unknown[]): unknown {
    this.checkOpen();
    return this.syncInstanceOf()
      .func(fn)
      .callSync(...inputs);
  }

  /**
   * Runs `fn` on a worker thread and resolves with its result: a Tensor, or an array for a
   * tuple output; the outputs are the caller's to dispose (inputs stay the caller's too).
   * Many runs may be in flight; see the concurrency model above.
   */
  async run(fn: string, ...inputs: unknown[]): Promise<unknown> {
    this.checkOpen();
    // The common case in one await, with no allocation of its own beyond the native call's:
    // a local VM with an idle instance that has run `fn` before. (What a run costs and which
    // part is the thread hop itself: bench group `model`, "async run ... breakdown".)
    const inst = this.remote ? undefined : this.idle.pop();
    const f = inst?.lookedUp(fn);
    if (!inst || !f) {
      if (inst) this.idle.push(inst);
      return await this.runQueued(fn, inputs);
    }
    this.active++;
    try {
      return await f.handle.callAsync(unwrapArgs(inputs));
    } catch (err) {
      throw atCallers(err, VirtualMachine.prototype.run);
    } finally {
      this.release(inst);
      if (--this.active === 0) this.drained?.();
    }
  }

  /** {@link VirtualMachine.run} that waits: for an instance, a first lookup of `fn`, or its RPC session's turn. */
  private async runQueued(fn: string, inputs: unknown[]): Promise<unknown> {
    this.active++;
    try {
      // A VM on a peer: the whole run (set-up included) is one turn in the session's queue.
      return await (this.remote ? onDevice(this.devices[0], () => this.runOnInstance(fn, inputs)) : this.runOnInstance(fn, inputs));
    } finally {
      if (--this.active === 0) this.drained?.();
    }
  }

  private async runOnInstance(fn: string, inputs: unknown[]): Promise<unknown> {
    const inst = await this.acquire();
    try {
      return await (await inst.funcAsync(fn)).call(...inputs);
    } finally {
      this.release(inst);
    }
  }

  private acquire(): Promise<Instance> {
    const inst = this.idle.pop();
    if (inst) return Promise.resolve(inst);
    if (this.created < this.concurrency) {
      this.created++;
      return this.newInstance().catch((err: unknown) => {
        this.created--;
        throw err;
      });
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private release(inst: Instance): void {
    const next = this.waiting.shift();
    if (next) next(inst);
    else this.idle.push(inst);
  }

  /** Number of runs executing or waiting for an instance right now. */
  get pending(): number {
    return this.active;
  }

  /** Whether {@link VirtualMachine.dispose} was called. */
  get disposed(): boolean {
    return this.closed;
  }

  /**
   * Stops accepting runs, waits for those in flight, then releases every VM instance, and the
   * module when the VM loaded it ({@link VirtualMachine.load}); a module the caller passed
   * stays usable (the caller disposes it). Idempotent: later calls wait for the first.
   */
  dispose(): Promise<void> {
    this.disposing ??= this.shutDown();
    return this.disposing;
  }

  private async shutDown(): Promise<void> {
    this.closed = true;
    if (this.pending > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    const instances = [...this.idle.splice(0), ...(this.syncInstance ? [this.syncInstance] : [])];
    this.syncInstance = undefined;
    await Promise.all(instances.map((i) => i.dispose()));
    await this.loadExecutable.dispose();
    if (this.ownsModule) await this.module.dispose();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

/** Unpacks a VM result into a list of outputs (a single tensor becomes a list of one). */
export function outputsOf<T = unknown>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  if (result === null || result === undefined) throw new TvmIndexError('IndexError', 'the model returned no outputs');
  return [result as T];
}
