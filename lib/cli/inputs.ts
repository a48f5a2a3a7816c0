/**
 * Command-line inputs: `name=file.npy` / `file.npy` specs, `name=1x3x224x224` shapes,
 * dtypes and devices, bound to a model function's parameters and turned into tensors.
 * Parsers throw {@link UsageError} (exit status 2); reading files throws {@link CliError}.
 */
import { type Device, DeviceType, device as deviceOf } from '../device';
import { checkDType, type DType, fromFloat32, HOST_ARRAY, type TypedArray } from '../dtype';
import { TvmError } from '../errors';
import { type NpyArray, readNpy } from '../npy';
import { Tensor } from '../tensor';
import { CliError, UsageError } from './errors';

/** `--input [name=]file.npy`: a named input, or (no name) the next parameter in order. */
export interface InputSpec {
  name?: string;
  file: string;
}

/** `--shape [name=]1x3x224x224`: an input generated at random with this shape. */
export interface ShapeSpec {
  name?: string;
  shape: number[];
}

/** `--dtype [name=]float32`: the dtype of generated inputs (all of them, or one by name). */
export interface DTypeSpec {
  name?: string;
  dtype: DType;
}

/**
 * A parameter name as it may appear before `=`: no `=` or white space, and not starting like
 * a path (`.`, `/`, `~`). Names may contain `/`, `:` and `.` (ONNX names like `gpu_0/data_0`).
 */
const PARAM_NAME = /^[^\s=./~][^\s=]*$/;

/**
 * Splits `name=value` at the last `=` whose left side is a {@link PARAM_NAME}; no name when
 * there is none (no `=`, or a path like `./a=b.npy`).
 */
function splitNamed(spec: string, what: string, example: string): { name?: string; value: string } {
  for (let eq = spec.lastIndexOf('='); eq > 0; eq = spec.lastIndexOf('=', eq - 1)) {
    const name = spec.slice(0, eq);
    if (!PARAM_NAME.test(name)) continue;
    const value = spec.slice(eq + 1);
    if (!value) throw new UsageError(`nothing after '='`, `write ${what} as ${example}`);
    return { name, value };
  }
  if (spec.startsWith('=')) throw new UsageError(`empty name before '='`, `write ${what} as ${example}`);
  if (!spec) throw new UsageError('empty value', `write it as ${example}`);
  return { value: spec };
}

/**
 * Parses `--input`: `x=in.npy`, `gpu_0/data_0=in.npy` or `in.npy` (prefix `./` for a file
 * whose name has `=`: `data/a=b.npy` reads as input `data/a` from `b.npy`).
 */
export function parseInputSpec(spec: string): InputSpec {
  const { name, value } = splitNamed(spec, '--input', 'NAME=FILE.npy or FILE.npy');
  return name === undefined ? { file: value } : { name, file: value };
}

/** Parses dimensions: `1x3x224x224`, `1,3,224,224` or `[1, 3, 224, 224]`; `scalar` or `[]` is 0-d. */
export function parseShape(text: string): number[] {
  const t = text
    .trim()
    .replace(/^\[(.*)\]$/, '$1')
    .trim();
  if (t === '' || t === 'scalar') {
    if (text.trim() === '') throw new UsageError('empty shape', 'write a shape as 1x3x224x224');
    return [];
  }
  const dims = t.split(/\s*[x×,]\s*/);
  const out = dims.map((d) => (/^\d+$/.test(d) ? Number(d) : NaN));
  if (out.some((d) => !Number.isSafeInteger(d))) {
    throw new UsageError(`bad shape '${text}'`, 'write a shape as non-negative integers joined by x, e.g. 1x3x224x224');
  }
  return out;
}

/** Parses `--shape`: `x=1x3x224x224` or `1x3x224x224`. */
export function parseShapeSpec(spec: string): ShapeSpec {
  const { name, value } = splitNamed(spec, '--shape', 'NAME=1x3x224x224 or 1x3x224x224');
  const shape = parseShape(value);
  return name === undefined ? { shape } : { name, shape };
}

/** Parses a dtype name, as a usage error when unknown. */
export function parseDType(text: string): DType {
  try {
    return checkDType(text);
  } catch (err) {
    throw new UsageError((err as Error).message, `one of ${Object.keys(HOST_ARRAY).join(', ')}`, { cause: err });
  }
}

/** Parses `--dtype`: `float16` (every generated input) or `x=int64` (one input). */
export function parseDTypeSpec(spec: string): DTypeSpec {
  const { name, value } = splitNamed(spec, '--dtype', 'DTYPE or NAME=DTYPE');
  const dtype = parseDType(value);
  return name === undefined ? { dtype } : { name, dtype };
}

/** Parses `--device`: `cpu`, `cuda:0`, `cuda:1`, `vulkan`, ... An unknown kind is a usage error. */
export function parseDevice(text: string): Device {
  try {
    return deviceOf(text);
  } catch (err) {
    throw new UsageError((err as Error).message, `write a device as KIND or KIND:INDEX, KIND one of ${Object.keys(DeviceType).join(', ')}`, { cause: err });
  }
}

/** Parses a whole number of at least `min`, for counts like `--runs`. */
export function parseCount(text: string, min = 0): number {
  const n = /^\s*\d+\s*$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`not a whole number >= ${min}`);
  return n;
}

/** Where one parameter's value comes from. */
export type InputSource = { kind: 'file'; file: string } | { kind: 'random'; shape: number[]; dtype: DType };

/** A parameter with its source. */
export interface BoundInput {
  name: string;
  source: InputSource;
}

/** What {@link bindInputs} needs to know about the function, for messages. */
export interface BindTarget {
  name: string;
  params: readonly string[];
}

/**
 * Binds specs to `fn`'s parameters: named ones by name, then unnamed `--input` files and
 * then unnamed `--shape`s to the remaining parameters in order. Every parameter must get
 * exactly one source. `random` (commands that can generate inputs) gives the `--shape`s
 * and the `--dtype`s of generated inputs (default float32).
 */
export function bindInputs(fn: BindTarget, files: readonly InputSpec[], random?: { shapes: readonly ShapeSpec[]; dtypes: readonly DTypeSpec[] }): BoundInput[] {
  const shapes = random?.shapes ?? [];
  const dtypes = random?.dtypes ?? [];
  const signature = `${fn.name}(${fn.params.join(', ')})`;
  const sources = new Map<string, InputSource>();
  let defaultDType: DType = 'float32';
  const dtypeOf = new Map<string, DType>();
  for (const d of dtypes) {
    if (d.name === undefined) defaultDType = d.dtype;
    else dtypeOf.set(d.name, d.dtype);
  }
  const named = (name: string, what: string, source: InputSource) => {
    if (!fn.params.includes(name)) {
      throw new UsageError(
        `${what} names '${name}', which is not a parameter of ${signature}`,
        `the parameters are: ${fn.params.join(', ') || '(none)'}${what === '--input' && name.includes('/') ? ` (for a file whose name has '=', write ./${name}=...)` : ''}`,
      );
    }
    if (sources.has(name)) throw new UsageError(`parameter '${name}' of ${signature} is given twice`);
    sources.set(name, source);
  };
  const generated = (shape: number[]): InputSource => ({ kind: 'random', shape, dtype: defaultDType });
  for (const f of files) if (f.name !== undefined) named(f.name, '--input', { kind: 'file', file: f.file });
  for (const s of shapes) if (s.name !== undefined) named(s.name, '--shape', generated(s.shape));
  const unnamed: InputSource[] = [
    ...files.filter((f) => f.name === undefined).map((f): InputSource => ({ kind: 'file', file: f.file })),
    ...shapes.filter((s) => s.name === undefined).map((s) => generated(s.shape)),
  ];
  for (const p of fn.params) if (!sources.has(p) && unnamed.length) sources.set(p, unnamed.shift()!);
  if (unnamed.length) {
    throw new UsageError(`${signature} takes ${fn.params.length} input(s), but ${files.length + shapes.length} were given`);
  }
  const missing = fn.params.filter((p) => !sources.has(p));
  if (missing.length) {
    throw new UsageError(
      `no input for parameter${missing.length > 1 ? 's' : ''} ${missing.map((m) => `'${m}'`).join(', ')} of ${signature}`,
      random ? `give --input ${missing[0]}=FILE.npy, or --shape ${missing[0]}=DIMS for random data` : `give --input ${missing[0]}=FILE.npy`,
    );
  }
  for (const [name, dtype] of dtypeOf) {
    const src = sources.get(name);
    if (!src)
      throw new UsageError(`--dtype names '${name}', which is not a parameter of ${signature}`, `the parameters are: ${fn.params.join(', ') || '(none)'}`);
    if (src.kind !== 'random') throw new UsageError(`--dtype ${name}=${dtype}: '${name}' is read from a file, which has its own dtype`);
    src.dtype = dtype;
  }
  return fn.params.map((name) => ({ name, source: sources.get(name)! }));
}

/** A small deterministic PRNG (mulberry32): uniform numbers in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Random host data for a shape and dtype: floats uniform in [-1, 1), integers in [0, 8)
 * (valid as small indices), bools 0/1.
 */
export function randomArray(shape: readonly number[], dtype: DType, rand: () => number = seededRandom(0x5eed)): TypedArray {
  const n = shape.reduce((a, b) => a * b, 1);
  if (dtype === 'float16' || dtype === 'bfloat16')
    return fromFloat32(
      Array.from({ length: n }, () => rand() * 2 - 1),
      dtype,
    );
  const out = new HOST_ARRAY[dtype](n);
  if (out instanceof BigInt64Array || out instanceof BigUint64Array) {
    for (let i = 0; i < n; i++) out[i] = BigInt(Math.floor(rand() * 8));
  } else if (dtype === 'float32' || dtype === 'float64') {
    for (let i = 0; i < n; i++) out[i] = rand() * 2 - 1;
  } else {
    const hi = dtype === 'bool' ? 2 : 8;
    for (let i = 0; i < n; i++) out[i] = Math.floor(rand() * hi);
  }
  return out;
}

/** A tensor on `device` for a bound input: the `.npy` file read, or random data. */
export function inputTensor(input: BoundInput, device: Device, rand?: () => number): Tensor {
  const src = input.source;
  if (src.kind === 'random') return Tensor.fromSync(randomArray(src.shape, src.dtype, rand), { shape: src.shape, dtype: src.dtype, device });
  let arr: NpyArray;
  try {
    arr = readNpy(src.file);
  } catch (err) {
    const e = err as Error & { code?: string };
    const kind = e instanceof TvmError ? e.kind : (e.code ?? 'NpyError');
    const why = e.code === 'ENOENT' ? 'no such file' : e.message.split('\n')[0];
    throw new CliError(
      `cannot read input '${input.name}' from ${src.file}: ${why}`,
      kind,
      e.code === 'ENOENT' ? 'check the path' : 'inputs are .npy files as numpy.save writes them (C order)',
      { cause: err },
    );
  }
  return Tensor.fromSync(arr.data, { shape: arr.shape, dtype: arr.dtype, device });
}

/** `[4, 16] float32` */
export function describeArray(shape: readonly number[], dtype: string): string {
  return `[${shape.join(', ')}] ${dtype}`;
}
