/**
 * Binding inputs to a model's parameters: the one place tvm-node turns what a caller passes
 * (by name or by position; Tensors, TypedArrays, or host data with a shape) into the Tensors a
 * model function takes, in parameter order, after checking every input against what the model
 * says it takes. The model API ({@link Model.run}), the CLI (`run`, `bench`), the model
 * repository's inference server (TNI1 requests) and the RPC client's `session.infer` use it.
 *
 * Checks, all before any tensor is made, each message naming the model and the input:
 * unknown names, missing inputs, the count of positional inputs, the JS type, the dtype, the
 * rank, each static size, symbolic sizes (a name such as `N` takes one value across all
 * inputs of a call), and the data's length against the shape.
 *
 * Host data becomes a tensor with at most one copy: on the CPU, {@link Tensor.wrap} shares
 * the caller's memory when it is 64-byte aligned and copies it once otherwise. Tensors the
 * binding makes are listed in {@link BoundInputs.created}: the binder's to release after the
 * run; tensors the caller passed stay the caller's.
 */
import { cpu, type Device } from './device';
import { bytesPerElement, checkDType, type DType, dtypeOfArray, HOST_ARRAY, type TypedArray } from './dtype';
import { TvmValueError } from './errors';
import type { Dim } from './manifest';
import { Tensor } from './tensor';

export type { Dim } from './manifest';

/** What a model says about one of its inputs or outputs. */
export interface TensorInfo {
  /** The name inputs are passed by and outputs returned by. */
  readonly name: string;
  /**
   * Sizes: numbers, names of symbolic sizes (`'N'`: the same value wherever it appears in one
   * call), or null (any size). null for the whole shape: the rank is not known.
   */
  readonly shape: readonly Dim[] | null;
  /** dtype, e.g. `'float32'`; null when not known. */
  readonly dtype: string | null;
}

/** Host data with its shape (and dtype; default: the TypedArray's own, see {@link dtypeOfArray}). */
export interface HostInput {
  /** The elements in row-major order; a Buffer holds raw bytes of `dtype` (which must be given). */
  data: TypedArray | Buffer;
  shape: readonly number[];
  dtype?: DType | string;
}

/**
 * One input: a Tensor (passed as it is, moved to the model's device if it is elsewhere), a
 * TypedArray (its shape is the model's, when the model's shape tells it), or host data with
 * a shape.
 */
export type InputValue = Tensor | TypedArray | HostInput;

/** Inputs by name (`{ x: ..., y: ... }`) or in parameter order (`[x, y]`). */
export type Inputs = Readonly<Record<string, InputValue>> | readonly InputValue[];

/** What was wrong with an input ({@link InputError.problem}). */
export type InputProblem = 'unknown' | 'missing' | 'count' | 'type' | 'dtype' | 'rank' | 'shape' | 'size' | 'disposed';

/**
 * An input that does not fit the model. The message names the model and the input;
 * `input` and `problem` say the same for programs.
 */
export class InputError extends TvmValueError {
  constructor(
    /** The input's name (undefined for problems of the whole call, e.g. the count). */
    readonly input: string | undefined,
    readonly problem: InputProblem,
    message: string,
  ) {
    super('ValueError', message);
  }
}

/** Options of {@link bindInputs}. */
export interface BindOptions {
  /** How messages name the model, e.g. `model 'mlp'` (the default is `the model`). */
  model?: string;
  /** The device the model runs on: host data is put there, tensors elsewhere are copied there. Default `cpu()`. */
  device?: Device;
}

/** One input checked against its spec: what to pass, and whether a tensor must be made. */
export interface CheckedInput {
  /** The parameter's name (its spec's). */
  name: string;
  /** The caller's tensor, when one was passed. */
  tensor?: Tensor;
  /** Host data to make a tensor of (when no tensor was passed). */
  data?: TypedArray | Buffer;
  shape: number[];
  dtype: DType;
}

/** Inputs checked against the specs, in parameter order, with the symbolic sizes they set. */
export interface CheckedInputs {
  inputs: CheckedInput[];
  /** The value each symbolic size took, e.g. `{ N: 4 }`. */
  dims: Record<string, number>;
}

/** The result of {@link bindInputs}: tensors in parameter order, and those the binding made. */
export interface BoundInputs {
  /** One tensor per parameter, in order: pass them to the function. */
  tensors: Tensor[];
  /** The tensors the binding made (from host data, or copies to the device): release them after the run. */
  created: Tensor[];
  /** The value each symbolic size took. */
  dims: Record<string, number>;
  /** Disposes {@link BoundInputs.created} (idempotent). */
  release(): void;
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const fmtShape = (shape: readonly Dim[]) => `[${shape.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;
const list = (names: readonly string[]) => names.map((n) => `'${n}'`).join(', ');
/** Only a plain name binds: an expression such as `n * 2` or a null size is not checked. */
const isSymbol = (d: Dim): d is string => typeof d === 'string' && /^[A-Za-z_][\w.]*$/.test(d);

/** "a Float32Array", "an Int32Array", ... */
const article = (word: string) => `${/^(?:[AEIOaeio]|[Uu](?!int))/.test(word) ? 'an' : 'a'} ${word}`;

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (ArrayBuffer.isView(v)) return article(v.constructor.name);
  if (v instanceof ArrayBuffer) return 'an ArrayBuffer';
  if (typeof v === 'object')
    return `an object with keys ${
      Object.keys(v as object)
        .map((k) => `'${k}'`)
        .join(', ') || '(none)'
    }`;
  return article(typeof v);
}

const isTypedArray = (v: unknown): v is TypedArray =>
  ArrayBuffer.isView(v) && !(v instanceof DataView) && !(typeof Uint8ClampedArray !== 'undefined' && v instanceof Uint8ClampedArray);

/**
 * Orders inputs as the specs' parameters: by name (each must be a parameter, each parameter
 * given) or by position (as many as there are parameters). Throws {@link InputError}.
 */
export function orderInputs(specs: readonly Pick<TensorInfo, 'name'>[], inputs: Inputs, opts: Pick<BindOptions, 'model'> = {}): InputValue[] {
  const model = opts.model ?? 'the model';
  const names = specs.map((s) => s.name);
  const takes = `${model} takes ${specs.length} input${specs.length === 1 ? '' : 's'} (${names.join(', ') || 'none'})`;
  if (Array.isArray(inputs)) {
    if (inputs.length !== specs.length) throw new InputError(undefined, 'count', `${takes}; got ${inputs.length}`);
    return [...inputs];
  }
  if (typeof inputs !== 'object' || inputs === null || isTypedArray(inputs) || inputs instanceof Tensor) {
    throw new InputError(
      undefined,
      'type',
      `${model}: inputs must be an object of inputs by name or an array in parameter order; got ${inputs instanceof Tensor ? 'a Tensor' : describeValue(inputs)}`,
    );
  }
  const given = inputs as Readonly<Record<string, InputValue>>;
  const unknown = Object.keys(given).filter((k) => !names.includes(k));
  if (unknown.length) {
    throw new InputError(unknown[0], 'unknown', `${model} has no input ${list(unknown)}; its inputs are ${list(names) || '(none)'}`);
  }
  const missing = names.filter((n) => !Object.hasOwn(given, n) || given[n] === undefined);
  if (missing.length) {
    throw new InputError(
      missing[0],
      'missing',
      `${model}: missing input${missing.length === 1 ? '' : 's'} ${list(missing)} (${takes.slice(model.length + 1)})`,
    );
  }
  return names.map((n) => given[n]);
}

/**
 * Checks inputs against the specs without making any tensor (what {@link bindInputs} does
 * first; a client can check before sending). Throws {@link InputError}.
 */
export function checkInputs(specs: readonly TensorInfo[], inputs: Inputs, opts: Pick<BindOptions, 'model'> = {}): CheckedInputs {
  const model = opts.model ?? 'the model';
  const values = orderInputs(specs, inputs, opts);
  // No prototype: a size may be named like an Object method ('constructor', 'toString').
  const dims: Record<string, number> = Object.create(null);
  const setBy: Record<string, string> = Object.create(null);
  const checked = values.map((value, i) => {
    const spec = specs[i];
    const c = checkOne(spec, value, model, dims);
    // Symbolic sizes: the first input that has one sets it; later ones must agree.
    const rule = spec.shape;
    if (rule) {
      rule.forEach((d, k) => {
        if (!isSymbol(d)) return;
        const got = c.shape[k];
        if (dims[d] === undefined) {
          dims[d] = got;
          setBy[d] = spec.name;
        } else if (dims[d] !== got) {
          const from = setBy[d] === spec.name ? `earlier in input '${spec.name}'` : `set by input '${setBy[d]}'`;
          throw new InputError(
            spec.name,
            'shape',
            `${model}: input '${spec.name}' has size ${got} at dimension ${k}, which is '${d}' = ${dims[d]} (${from}); shape ${fmtShape(c.shape)} for ${fmtShape(rule)}`,
          );
        }
      });
    }
    return c;
  });
  return { inputs: checked, dims: { ...dims } };
}

/** Checks one input; returns its shape and dtype (a TypedArray's shape from the spec, with `dims` known so far). */
function checkOne(spec: TensorInfo, value: InputValue, model: string, dims: Readonly<Record<string, number>>): CheckedInput {
  const at = `${model}: input '${spec.name}'`;
  const fail = (problem: InputProblem, text: string) => new InputError(spec.name, problem, `${at} ${text}`);
  let shape: number[];
  let dtype: DType;
  let data: TypedArray | Buffer | undefined;
  let tensor: Tensor | undefined;
  let what: string;

  if (value instanceof Tensor) {
    if (value.disposed) throw fail('disposed', 'is a disposed Tensor');
    tensor = value;
    shape = value.shape;
    dtype = value.dtype;
    what = article(`${dtype} Tensor`);
  } else if (isTypedArray(value)) {
    data = value;
    dtype = dtypeOfArray(value);
    what = `${article(value.constructor.name)} (${dtype})`;
    shape = shapeForArray(spec, value.length, dims, (text) => fail('shape', text));
  } else if (typeof value === 'object' && value !== null && !Array.isArray(value) && 'data' in value && 'shape' in value) {
    const host = value as HostInput;
    if (!isTypedArray(host.data))
      throw fail('type', `has data of ${describeValue(host.data)}: it must be a TypedArray (or a Buffer of raw bytes with a dtype)`);
    if (!Array.isArray(host.shape) || host.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw fail('type', `has shape ${JSON.stringify(host.shape)}: it must be an array of non-negative integers`);
    }
    if (host.dtype !== undefined) {
      if (typeof host.dtype !== 'string') throw fail('type', `has dtype of ${describeValue(host.dtype)}: it must be a string such as 'float32'`);
      try {
        dtype = checkDType(host.dtype);
      } catch (err) {
        throw fail('dtype', `has dtype '${host.dtype}': ${(err as Error).message}`);
      }
      const Host = HOST_ARRAY[dtype];
      if (!Buffer.isBuffer(host.data) && !(host.data instanceof Host)) {
        throw fail(
          'type',
          `has data of ${article(host.data.constructor.name)} for dtype ${dtype}: ${dtype} data is ${article(Host.name)} (or a Buffer of raw bytes)`,
        );
      }
    } else {
      dtype = dtypeOfArray(host.data);
    }
    data = host.data;
    shape = [...host.shape];
    what = `${dtype} data`;
  } else {
    throw fail('type', `must be a Tensor, a TypedArray or { data, shape, dtype? }; got ${describeValue(value)}`);
  }

  if (spec.dtype !== null && spec.dtype !== dtype) {
    const hint =
      (spec.dtype === 'float16' || spec.dtype === 'bfloat16') && data
        ? ` (${spec.dtype} data is raw bits in a Uint16Array: pass { data, shape, dtype: '${spec.dtype}' }; fromFloat32() makes the bits)`
        : spec.dtype === 'bool' && data
          ? " (bool data is a Uint8Array of 0/1: pass { data, shape, dtype: 'bool' })"
          : '';
    throw fail('dtype', `must be ${spec.dtype}; got ${what}${hint}`);
  }
  if (spec.shape !== null) {
    if (shape.length !== spec.shape.length) {
      throw fail(
        'rank',
        `must have ${spec.shape.length} dimension${spec.shape.length === 1 ? '' : 's'} ${fmtShape(spec.shape)}; got ${shape.length}: ${fmtShape(shape)}`,
      );
    }
    spec.shape.forEach((d, k) => {
      if (typeof d === 'number' && shape[k] !== d)
        throw fail('shape', `must have size ${d} at dimension ${k} (shape ${fmtShape(spec.shape!)}); got ${shape[k]}: ${fmtShape(shape)}`);
    });
  }
  if (data) {
    const want = numel(shape);
    const bytes = Buffer.isBuffer(data) && !(HOST_ARRAY[dtype] === Uint8Array) ? data.byteLength : undefined;
    if (bytes !== undefined) {
      if (bytes !== want * bytesPerElement(dtype))
        throw fail('size', `has ${bytes} bytes of data; shape ${fmtShape(shape)} of ${dtype} needs ${want * bytesPerElement(dtype)}`);
    } else if (data.length !== want) {
      throw fail('size', `has ${data.length} element${data.length === 1 ? '' : 's'}; shape ${fmtShape(shape)} needs ${want}`);
    }
  }
  return { name: spec.name, tensor, data, shape, dtype };
}

/**
 * The shape of a bare TypedArray: the spec's, with symbolic sizes already set by earlier
 * inputs, and one size left open inferred from the length.
 */
function shapeForArray(spec: TensorInfo, length: number, dims: Readonly<Record<string, number>>, fail: (text: string) => InputError): number[] {
  if (spec.shape === null) {
    throw fail(`has no known shape: pass { data, shape }`);
  }
  const sizes = spec.shape.map((d) => (typeof d === 'number' ? d : isSymbol(d) && dims[d] !== undefined ? dims[d] : undefined));
  const open = sizes.flatMap((d, k) => (d === undefined ? [k] : []));
  if (open.length === 0) return sizes as number[];
  if (open.length === 1) {
    const rest = numel(sizes.filter((d): d is number => d !== undefined));
    if (rest > 0 && length % rest === 0) {
      sizes[open[0]] = length / rest;
      return sizes as number[];
    }
    throw fail(`has ${length} elements, which do not fill shape ${fmtShape(spec.shape)} (a multiple of ${rest} is needed); pass { data, shape }`);
  }
  throw fail(`has shape ${fmtShape(spec.shape)}, which a TypedArray alone does not settle: pass { data, shape }`);
}

const sameDevice = (a: Device, b: Device) => a.deviceType === b.deviceType && a.deviceId === b.deviceId;

/**
 * Binds inputs to the specs' parameters: checks them ({@link checkInputs}), then makes the
 * tensors the model needs on `opts.device`, on the JS thread. Throws {@link InputError}
 * before making anything; if making a tensor fails, those made so far are released.
 */
export function bindInputs(specs: readonly TensorInfo[], inputs: Inputs, opts: BindOptions = {}): BoundInputs {
  const device = opts.device ?? cpu();
  const { inputs: checked, dims } = checkInputs(specs, inputs, opts);
  const created: Tensor[] = [];
  try {
    const tensors = checked.map((c) => {
      if (c.tensor) {
        if (sameDevice(c.tensor.device, device)) return c.tensor;
        return keep(created, c.tensor.copyToSync(device));
      }
      const o = { shape: c.shape, dtype: c.dtype };
      return keep(created, sameDevice(device, cpu()) ? Tensor.wrap(c.data!, o) : Tensor.fromSync(c.data!, { ...o, device }));
    });
    return bound(tensors, created, dims);
  } catch (err) {
    for (const t of created) t.disposeSync();
    throw err;
  }
}

/**
 * {@link bindInputs} with copies to devices other than the CPU made on the thread pool (on
 * the CPU, host data is wrapped or copied once on the JS thread, as that is cheaper than a
 * thread hop).
 */
export async function bindInputsAsync(specs: readonly TensorInfo[], inputs: Inputs, opts: BindOptions = {}): Promise<BoundInputs> {
  const device = opts.device ?? cpu();
  const { inputs: checked, dims } = checkInputs(specs, inputs, opts);
  const created: Tensor[] = [];
  try {
    const tensors: Tensor[] = [];
    for (const c of checked) {
      if (c.tensor) {
        tensors.push(sameDevice(c.tensor.device, device) ? c.tensor : keep(created, await c.tensor.copyTo(device)));
        continue;
      }
      const o = { shape: c.shape, dtype: c.dtype };
      tensors.push(keep(created, sameDevice(device, cpu()) ? Tensor.wrap(c.data!, o) : await Tensor.from(c.data!, { ...o, device })));
    }
    return bound(tensors, created, dims);
  } catch (err) {
    await Promise.all(created.map((t) => t.dispose()));
    throw err;
  }
}

function keep(created: Tensor[], t: Tensor): Tensor {
  created.push(t);
  return t;
}

function bound(tensors: Tensor[], created: Tensor[], dims: Record<string, number>): BoundInputs {
  return {
    tensors,
    created,
    dims,
    release() {
      for (const t of created) t.disposeSync();
    },
  };
}
