/**
 * The model API: a compiled model with names and metadata, in the spirit of onnxruntime's
 * `InferenceSession`.
 *
 * ```ts
 * const model = await Model.load('mobilenet_v2.so');     // + mobilenet_v2.json, if there is one
 * model.inputs;  // [{ name: 'input', shape: [1, 3, 224, 224], dtype: 'float32' }]
 * const { logits } = await model.run({ input: pixels }); // a Float32Array, a Tensor, or { data, shape }
 * console.log(await logits.toArray());
 * await logits.dispose();                                // outputs are the caller's
 * await model.dispose();                                 // the model owns its module and VM
 * ```
 *
 * Metadata comes from the artifact where TVM keeps it (see lib/signature.ts: the parameter
 * checks TVM compiles in give the inputs' names, shapes with symbolic sizes, and dtypes; the
 * bytecode gives the outputs' count and, mostly, their shapes and dtypes) and from the
 * manifest beside it (lib/manifest.ts: names TVM does not keep, such as an ONNX graph's output
 * names, and declared shapes). Where both say something they must agree, or the load fails
 * naming the manifest.
 */
import path from 'node:path';
import { type BindOptions, bindInputs, bindInputsAsync, type Dim, type Inputs, type TensorInfo } from './bind';
import { Device, device as parseDevice } from './device';
import { DisposedError, TvmTypeError, TvmValueError } from './errors';
import { checkManifest, type Manifest, ManifestError, manifestPathOf, readManifest, type TensorSpec } from './manifest';
import { loadModule, loadModuleSync, type Module } from './module';
import { checkOptions } from './options';
import { type ArtifactTensor, readSignature } from './signature';
import { Tensor } from './tensor';
import { type MemoryConfig, VirtualMachine } from './vm';

export { type Dim, type HostInput, InputError, type InputProblem, type Inputs, type InputValue, type TensorInfo } from './bind';

/** Options of {@link Model.load}. */
export interface ModelOptions {
  /** Where the model runs: a {@link Device} or a name such as `'cuda:0'`. Default: the manifest's `device`, else the CPU. */
  device?: Device | string;
  /** The function to run. Default: the manifest's `function`, else `'main'`. */
  function?: string;
  /** Most runs in flight at once (VM instances). Default 4 (see {@link VirtualMachine}). */
  concurrency?: number;
  /** The VM's allocator (`VMOptions.memory`). */
  memory?: MemoryConfig;
  /**
   * The manifest: a path, a manifest object, or `false` for none. Default: `NAME.json` beside
   * `NAME.so`, when it exists.
   */
  manifest?: string | Manifest | false;
  /** Load the artifact from a private copy (see `LoadOptions.privateCopy` of {@link loadModule}). Default false. */
  privateCopy?: boolean;
}

/** Options of {@link Model.run}. */
export interface ModelRunOptions {
  /** The outputs to return, by name (the others are released at once). Default: all. */
  outputs?: readonly string[];
}

/** A run's outputs by name; they are the caller's to dispose. */
export type ModelOutputs = Record<string, Tensor>;

/** What {@link Model.load} checked and worked out before loading. */
interface Plan {
  file: string;
  name: string;
  device: Device;
  fn: string;
  /** Whether the function came from the manifest (for messages). */
  fnFromManifest: boolean;
  manifest?: Manifest;
  /** How messages name the manifest; its path when it is a file. */
  manifestName?: string;
  manifestPath?: string;
  vmOptions: { devices: Device[]; concurrency?: number; memory?: MemoryConfig };
  privateCopy: boolean;
}

const MODEL_OPTIONS = new Set(['device', 'function', 'concurrency', 'memory', 'manifest', 'privateCopy']);

const got = (v: unknown) =>
  typeof v === 'string'
    ? JSON.stringify(v)
    : typeof v === 'number' || typeof v === 'boolean' || v == null
      ? String(v)
      : Array.isArray(v)
        ? 'an array'
        : `a ${typeof v}`;

function plan(file: unknown, opts: unknown, caller: string): Plan {
  if (typeof file !== 'string' || file === '') throw new TvmTypeError('TypeError', `${caller}: path must be a non-empty string; got ${got(file)}`);
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts))
    throw new TvmTypeError('TypeError', `${caller}: options must be an object; got ${got(opts)}`);
  const o = opts as ModelOptions;
  const extra = Object.keys(o).filter((k) => !MODEL_OPTIONS.has(k));
  if (extra.length) throw new TvmValueError('ValueError', `${caller}: unknown option '${extra[0]}' (options: ${[...MODEL_OPTIONS].join(', ')})`);
  if (o.device !== undefined && !(o.device instanceof Device) && typeof o.device !== 'string') {
    throw new TvmTypeError('TypeError', `${caller}: option 'device' must be a Device or a name such as 'cpu' or 'cuda:0'; got ${got(o.device)}`);
  }
  if (o.function !== undefined && (typeof o.function !== 'string' || o.function === '')) {
    throw new TvmTypeError('TypeError', `${caller}: option 'function' must be a non-empty string; got ${got(o.function)}`);
  }
  if (o.concurrency !== undefined && !(Number.isSafeInteger(o.concurrency) && o.concurrency >= 1)) {
    throw new TvmValueError('ValueError', `${caller}: option 'concurrency' must be an integer >= 1; got ${got(o.concurrency)}`);
  }
  if (o.memory !== undefined && o.memory !== 'pooled' && o.memory !== 'naive') {
    throw new TvmValueError('ValueError', `${caller}: option 'memory' must be 'pooled' or 'naive'; got ${got(o.memory)}`);
  }
  if (o.privateCopy !== undefined && typeof o.privateCopy !== 'boolean') {
    throw new TvmTypeError('TypeError', `${caller}: option 'privateCopy' must be a boolean; got ${got(o.privateCopy)}`);
  }
  const m = o.manifest;
  if (m !== undefined && m !== false && typeof m !== 'string' && (typeof m !== 'object' || m === null || Array.isArray(m))) {
    throw new TvmTypeError('TypeError', `${caller}: option 'manifest' must be a path, a manifest object or false; got ${got(m)}`);
  }

  const resolved = path.resolve(file);
  let manifest: Manifest | undefined;
  let manifestName: string | undefined;
  let manifestPath: string | undefined;
  if (typeof m === 'string') {
    manifestPath = manifestName = path.resolve(m);
    manifest = readManifest(manifestPath).manifest;
    if (!manifest) throw new TvmValueError('ValueError', `${caller}: manifest ${manifestPath} does not exist`);
  } else if (typeof m === 'object') {
    manifestName = '(the manifest option)';
    manifest = checkManifest(m, manifestName);
  } else if (m === undefined) {
    const beside = manifestPathOf(resolved);
    manifest = readManifest(beside).manifest;
    if (manifest) manifestPath = manifestName = beside;
  }

  let dev: Device;
  const deviceName = o.device ?? manifest?.device ?? 'cpu';
  try {
    dev = deviceName instanceof Device ? deviceName : parseDevice(deviceName);
  } catch (err) {
    throw new TvmValueError(
      'ValueError',
      `${caller}: ${(err as Error).message}${o.device === undefined && manifest?.device ? ` (the device of manifest ${manifestName})` : ''}`,
      '',
      { cause: err },
    );
  }
  return {
    file: resolved,
    name: path.basename(resolved).replace(/\.so$/, ''),
    device: dev,
    fn: o.function ?? manifest?.function ?? 'main',
    fnFromManifest: o.function === undefined && manifest?.function !== undefined,
    manifest,
    manifestName,
    manifestPath,
    vmOptions: { devices: [dev], concurrency: o.concurrency, memory: o.memory },
    privateCopy: o.privateCopy ?? false,
  };
}

/** What {@link modelMetadata} describes, and how its messages name things. */
export interface MetadataTarget {
  /** The model's name (messages say `model 'NAME'`). */
  name: string;
  /** How messages name the artifact (a path, or just a file name where paths must not show). */
  artifact: string;
  /** The function to describe. */
  function: string;
  /** Whether the function was named by the manifest (messages then say where to fix it). */
  functionFromManifest?: boolean;
  manifest?: Manifest;
  /** How messages name the manifest. */
  manifestName?: string;
}

/**
 * The inputs and outputs of a function of a loaded model: the artifact's signature
 * (lib/signature.ts) merged with the manifest's; where both say something they must agree
 * (else a {@link ManifestError}). Used by {@link Model} and the model repository.
 * @internal
 */
export function modelMetadata(vm: VirtualMachine, t: MetadataTarget): { inputs: TensorInfo[]; outputs: TensorInfo[]; arity: number } {
  const functions = vm.functions();
  const fn = functions.find((f) => f.name === t.function);
  if (!fn) {
    throw new TvmValueError(
      'ValueError',
      `model '${t.name}' (${t.artifact}) has no function '${t.function}' (it has ${functions.map((f) => `'${f.name}'`).join(', ') || 'none'})` +
        (t.functionFromManifest ? `: fix "function" in manifest ${t.manifestName}` : ''),
    );
  }
  const text = (name: string) => {
    try {
      using f = vm.module.requireFunctionSync(name);
      return String(f.callSync());
    } catch {
      return ''; // an executable TVM cannot print: nothing is known from it
    }
  };
  const sig = readSignature(text('stats'), text('as_text'), fn.name, fn.arity);
  const m = t.manifest ?? {};
  const bad = (problem: string) => new ManifestError(t.manifestName ?? '', problem);
  if (m.inputs && m.inputs.length !== fn.arity) {
    throw bad(
      `lists ${m.inputs.length} input${m.inputs.length === 1 ? '' : 's'}, but function '${fn.name}' of ${t.artifact} takes ${fn.arity} (${fn.params.join(', ') || 'none'})`,
    );
  }
  if (m.outputs && sig.outputs && m.outputs.length !== sig.outputs.length) {
    throw bad(`lists ${m.outputs.length} output${m.outputs.length === 1 ? '' : 's'}, but function '${fn.name}' of ${t.artifact} returns ${sig.outputs.length}`);
  }
  const inputs = sig.inputs.map((a, i) => merge(a, m.inputs?.[i], m.inputs?.[i]?.name ?? fn.params[i] ?? `input${i}`, `"inputs"[${i}]`, t.artifact, bad));
  const count = sig.outputs?.length ?? m.outputs?.length ?? 0;
  const outputs = Array.from({ length: count }, (_, i) =>
    merge(sig.outputs?.[i] ?? { shape: null, dtype: null }, m.outputs?.[i], m.outputs?.[i]?.name ?? `output${i}`, `"outputs"[${i}]`, t.artifact, bad),
  );
  for (const [what, infos] of [
    ['inputs', inputs],
    ['outputs', outputs],
  ] as const) {
    const names = infos.map((t) => t.name);
    const twice = names.find((n, i) => names.indexOf(n) !== i);
    if (twice !== undefined)
      throw new TvmValueError('ValueError', `model '${t.name}': two ${what} are named '${twice}'${t.manifestName ? ` (see manifest ${t.manifestName})` : ''}`);
  }
  return { inputs, outputs, arity: fn.arity };
}

/**
 * {@link modelMetadata} of function `fn` of a VM loaded from `file`, merged with the manifest
 * beside the file when there is one (what the CLI checks its inputs against).
 * @internal
 */
export function metadataOfFile(vm: VirtualMachine, file: string, fn: string): { name: string; inputs: TensorInfo[]; outputs: TensorInfo[]; arity: number } {
  const resolved = path.resolve(file);
  const manifestPath = manifestPathOf(resolved);
  const { manifest } = readManifest(manifestPath);
  const name = path.basename(resolved).replace(/\.so$/, '');
  return { name, ...modelMetadata(vm, { name, artifact: resolved, function: fn, manifest, manifestName: manifest ? manifestPath : undefined }) };
}

/** {@link modelMetadata} of what {@link Model.load} planned. */
function describe(vm: VirtualMachine, p: Plan): { inputs: TensorInfo[]; outputs: TensorInfo[] } {
  return modelMetadata(vm, {
    name: p.name,
    artifact: p.file,
    function: p.fn,
    functionFromManifest: p.fnFromManifest,
    manifest: p.manifest,
    manifestName: p.manifestName,
  });
}

/**
 * One tensor's info from the artifact (`a`) and the manifest (`m`): where both know a dtype,
 * a rank or a static size they must agree; a static size beats a symbolic one, and the
 * manifest's names of symbolic sizes beat the artifact's.
 */
function merge(a: ArtifactTensor, m: TensorSpec | undefined, name: string, at: string, artifact: string, bad: (problem: string) => ManifestError): TensorInfo {
  if (!m) return Object.freeze({ name, shape: a.shape && Object.freeze([...a.shape]), dtype: a.dtype });
  const says = `has ${at} ('${name}')`;
  if (a.dtype !== null && m.dtype !== a.dtype) throw bad(`${says} of dtype ${m.dtype}, but ${artifact} takes ${a.dtype} there`);
  let shape: Dim[] = m.shape;
  if (a.shape !== null) {
    if (a.shape.length !== m.shape.length) throw bad(`${says} of shape ${fmt(m.shape)}, but ${artifact} has rank ${a.shape.length} there: ${fmt(a.shape)}`);
    shape = a.shape.map((d, k) => {
      const md = m.shape[k];
      if (typeof d === 'number') {
        if (typeof md === 'number' && md !== d) throw bad(`${says} of shape ${fmt(m.shape)}, but ${artifact} has ${fmt(a.shape!)} there`);
        return d;
      }
      return md ?? d;
    });
  }
  return Object.freeze({ name, shape: Object.freeze(shape), dtype: m.dtype });
}

const fmt = (shape: readonly Dim[]) => `[${shape.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;

/**
 * A compiled model (a `.so` from `tvm.compile(...).export_library(...)`), its inputs and
 * outputs by name, run off the event loop. It owns its module and VM: {@link Model.dispose}
 * releases them (after runs in flight). Outputs of a run are the caller's to dispose; inputs
 * the model made from host data are released by the model after the run.
 */
export class Model implements AsyncDisposable {
  /** The artifact's absolute path. */
  readonly path: string;
  /** The artifact's name: its file name without `.so`. */
  readonly name: string;
  /** The function {@link Model.run} runs. */
  readonly function: string;
  /** Where the model runs. */
  readonly device: Device;
  /** The inputs, in parameter order. */
  readonly inputs: readonly TensorInfo[];
  /** The outputs, in order (tuples flattened); empty when neither the artifact nor a manifest tells. */
  readonly outputs: readonly TensorInfo[];
  /** The manifest file the metadata was merged with, if one was read. */
  readonly manifestPath?: string;
  /** The model's VM (functions, devices), for what the model API does not cover. The model owns it. */
  readonly vm: VirtualMachine;
  private readonly label: string;
  /** Runs in flight ({@link Model.run}), which dispose waits for. */
  private readonly running = new Set<Promise<void>>();
  private closed = false;
  private disposing?: Promise<void>;

  private constructor(
    p: Plan,
    /** The loaded artifact; the model owns it. */
    private readonly module: Module,
    vm: VirtualMachine,
    meta: { inputs: TensorInfo[]; outputs: TensorInfo[] },
  ) {
    this.path = p.file;
    this.name = p.name;
    this.function = p.fn;
    this.device = p.device;
    this.inputs = Object.freeze(meta.inputs);
    this.outputs = Object.freeze(meta.outputs);
    this.manifestPath = p.manifestPath;
    this.vm = vm;
    this.label = `model '${p.name}'`;
  }

  /**
   * Loads a model: the artifact on the thread pool, then its metadata (artifact and manifest,
   * see the module's documentation). A bad option or manifest is a {@link TvmError} naming it;
   * load errors are {@link loadModule}'s.
   */
  static async load(file: string, opts: ModelOptions = {}): Promise<Model> {
    const p = plan(file, opts, 'Model.load');
    const module = await loadModule(p.file, { privateCopy: p.privateCopy });
    let vm: VirtualMachine | undefined;
    try {
      vm = await VirtualMachine.create(module, p.vmOptions);
      return new Model(p, module, vm, describe(vm, p));
    } catch (err) {
      await vm?.dispose();
      await module.dispose();
      throw err;
    }
  }

  /** {@link Model.load} on the JS thread. */
  static loadSync(file: string, opts: ModelOptions = {}): Model {
    const p = plan(file, opts, 'Model.loadSync');
    const module = loadModuleSync(p.file, { privateCopy: p.privateCopy });
    let vm: VirtualMachine | undefined;
    try {
      vm = new VirtualMachine(module, p.vmOptions);
      return new Model(p, module, vm, describe(vm, p));
    } catch (err) {
      const made = vm;
      void (made ? made.dispose() : Promise.resolve()).then(() => module.dispose());
      throw err;
    }
  }

  /** The inputs' names, in parameter order. */
  get inputNames(): string[] {
    return this.inputs.map((i) => i.name);
  }

  /** The outputs' names, in order. */
  get outputNames(): string[] {
    return this.outputs.map((o) => o.name);
  }

  /** Whether {@link Model.dispose} was called. */
  get disposed(): boolean {
    return this.closed || this.vm.disposed;
  }

  /**
   * Runs the model on a worker thread with inputs by name (or in parameter order), checked
   * against {@link Model.inputs} first (an {@link InputError} names the input), and resolves
   * with the outputs by name. Host data is made into tensors with at most one copy and
   * released after the run; the outputs are the caller's.
   */
  async run(inputs: Inputs, opts: ModelRunOptions = {}): Promise<ModelOutputs> {
    const keep = this.prepare(opts);
    // Counted from the call on, so that dispose() waits for it even while its inputs are bound.
    let done!: () => void;
    const running = new Promise<void>((resolve) => (done = resolve));
    this.running.add(running);
    try {
      const bound = await bindInputsAsync(this.inputs, inputs, this.bindOptions());
      let result: unknown;
      try {
        result = await this.vm.run(this.function, ...bound.tensors);
      } finally {
        bound.release();
      }
      return this.outputsByName(result, keep);
    } finally {
      this.running.delete(running);
      done();
    }
  }

  /** {@link Model.run} on the JS thread, blocking the event loop for the whole run. */
  runSync(inputs: Inputs, opts: ModelRunOptions = {}): ModelOutputs {
    const keep = this.prepare(opts);
    const bound = bindInputs(this.inputs, inputs, this.bindOptions());
    let result: unknown;
    try {
      result = this.vm.runSync(this.function, ...bound.tensors);
    } finally {
      bound.release();
    }
    return this.outputsByName(result, keep);
  }

  /** Releases the VM and the module, after runs in flight finish (idempotent; later calls wait for the first). */
  dispose(): Promise<void> {
    this.disposing ??= (async () => {
      this.closed = true;
      await Promise.all(this.running);
      await this.vm.dispose();
      await this.module.dispose();
    })();
    return this.disposing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  toString(): string {
    const show = (t: TensorInfo) => `${t.name}: ${t.dtype ?? '?'}${t.shape ? fmt(t.shape) : '[...]'}`;
    return `Model(${this.name}: (${this.inputs.map(show).join(', ')}) -> (${this.outputs.map(show).join(', ')}))`;
  }

  private bindOptions(): BindOptions {
    return { model: this.label, device: this.device };
  }

  /** Checks the model is usable and the run options; returns the names of the outputs to keep. */
  private prepare(opts: ModelRunOptions): Set<string> | undefined {
    if (this.disposed) throw new DisposedError('DisposedError', `${this.label} has been disposed`);
    if (typeof opts !== 'object' || opts === null) throw new TvmTypeError('TypeError', `${this.label}: run options must be an object; got ${got(opts)}`);
    checkOptions(`${this.label}: run`, opts, ['outputs']);
    if (opts.outputs === undefined) return undefined;
    if (!Array.isArray(opts.outputs) || opts.outputs.some((n) => typeof n !== 'string')) {
      throw new TvmTypeError('TypeError', `${this.label}: option 'outputs' must be an array of output names; got ${got(opts.outputs)}`);
    }
    const names = this.outputNames;
    const unknown = opts.outputs.find((n) => !names.includes(n));
    if (unknown !== undefined)
      throw new TvmValueError(
        'ValueError',
        `${this.label} has no output '${unknown}'; its outputs are ${names.map((n) => `'${n}'`).join(', ') || '(unknown)'}`,
      );
    return new Set(opts.outputs);
  }

  /** A run's result (a tensor or nested tuples of them) as outputs by name; the ones not kept are released. */
  private outputsByName(result: unknown, keep: Set<string> | undefined): ModelOutputs {
    const leaves: unknown[] = [];
    const flatten = (v: unknown) => (Array.isArray(v) ? v.forEach(flatten) : leaves.push(v));
    flatten(result);
    const named: ModelOutputs = {};
    const notTensor = leaves.findIndex((v) => !(v instanceof Tensor));
    const nameOf = (i: number) => this.outputs[i]?.name ?? `output${i}`;
    if (notTensor >= 0) {
      for (const v of leaves) if (v instanceof Tensor) v.disposeSync();
      const v = leaves[notTensor];
      throw new TvmTypeError(
        'TypeError',
        `${this.label}: output '${nameOf(notTensor)}' is ${v === null || v === undefined ? 'empty' : `a ${(v as object).constructor?.name ?? typeof v}`}, not a tensor (run such functions with model.vm.run)`,
      );
    }
    (leaves as Tensor[]).forEach((t, i) => {
      const name = nameOf(i);
      if (keep && !keep.has(name)) t.disposeSync();
      else named[name] = t;
    });
    return named;
  }
}
