/**
 * Tensors: n-dimensional arrays on a device, moved to and from JS TypedArrays in bulk.
 */

import { addon, type DLPackCapsule, type NativeTensor, registerWrapper } from './binding';
import { cpu, Device } from './device';
import { bytesPerElement, checkDType, type DType, dtypeOfArray, fromFloat32, HOST_ARRAY, type TypedArray, toFloat32 } from './dtype';
import { callerStack, TvmTypeError, TvmValueError } from './errors';
import { HandleOwner } from './handle';
import { checkInstance, checkOptions, received } from './options';
import { onDevice } from './scheduling';
import { Shape } from './values';

/** Where and how to create a tensor. */
export interface TensorOptions {
  /** Shape; defaults to 1-D of the data's length. */
  shape?: readonly number[];
  /** dtype; defaults to the TypedArray's own (Float32Array -> float32, ...), float32 for arrays. */
  dtype?: DType | string;
  /** Device; defaults to `cpu()`. */
  device?: Device;
}

/**
 * What tensors can be created from: a TypedArray, a Buffer of raw bytes, or a plain array of
 * numbers, booleans and bigints (any other element is a {@link TvmTypeError} naming its index).
 */
export type TensorData = TypedArray | Buffer | readonly (number | bigint | boolean)[];

const SHAPE = 'an array of whole numbers >= 0';

function checkShape(caller: string, shape: unknown): number[] {
  if (!Array.isArray(shape)) throw new TvmTypeError('TypeError', `${caller}: shape must be ${SHAPE}, got ${received(shape)}`);
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) {
      const Err = typeof d === 'number' ? TvmValueError : TvmTypeError;
      throw new Err(
        Err === TvmValueError ? 'ValueError' : 'TypeError',
        `${caller}: shape must be ${SHAPE}, got [${shape.map((v) => (typeof v === 'number' ? String(v) : received(v))).join(', ')}]`,
      );
    }
  }
  return [...shape];
}

function checkDTypeArg(caller: string, dtype: unknown): DType {
  if (typeof dtype !== 'string') throw new TvmTypeError('TypeError', `${caller}: dtype must be a dtype name such as 'float32', got ${received(dtype)}`);
  return checkDType(dtype);
}

const checkDevice = (caller: string, device: unknown): Device => checkInstance(`${caller}: device`, device, Device, 'a Device (e.g. cpu(), cuda(0))');

/**
 * Checks the elements of a plain array before they are converted: numbers, booleans or
 * bigints (anything else would silently become NaN or 0), whole numbers for 64-bit dtypes.
 * Returns what the host array constructor takes (bigints as numbers for 32-bit dtypes).
 */
function checkElements(caller: string, data: readonly unknown[], dtype: DType, wide: boolean): readonly unknown[] {
  let bigints = false;
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    switch (typeof v) {
      case 'number':
        if (wide && !Number.isInteger(v)) throw new TvmValueError('ValueError', `${caller}: data[${i}] must be a whole number for ${dtype}, got ${v}`);
        break;
      case 'bigint':
        bigints = true;
        break;
      case 'boolean':
        break;
      default:
        throw new TvmTypeError('TypeError', `${caller}: data[${i}] must be a number, a boolean or a bigint, got ${received(v)}`);
    }
  }
  return bigints && !wide ? data.map(Number) : data;
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Turns JS data into the host array of `dtype` (a view when it already is one). */
function toHostArray(caller: string, data: TensorData, dtype: DType): ArrayBufferView {
  const Ctor = HOST_ARRAY[dtype];
  if (ArrayBuffer.isView(data)) {
    // A Buffer is raw bytes for any dtype; any other TypedArray must be the dtype's own host
    // array, or its bytes would be silently reinterpreted (Float32Array as float16, ...).
    if (Buffer.isBuffer(data) || data instanceof Ctor) return data;
    throw new TvmTypeError(
      'TypeError',
      `a ${data.constructor.name} cannot hold ${dtype} data (expected ${Ctor.name}, a Buffer of raw bytes, or a plain array)`,
    );
  }
  if (!Array.isArray(data)) {
    throw new TvmTypeError('TypeError', `${caller}: data must be a TypedArray, a Buffer or an array of numbers, got ${received(data)}`);
  }
  const wide = Ctor === BigInt64Array || Ctor === BigUint64Array;
  data = checkElements(caller, data, dtype, wide) as TensorData;
  if (dtype === 'float16' || dtype === 'bfloat16') return fromFloat32(data as number[], dtype);
  if (dtype === 'bool') return Uint8Array.from(data as boolean[], (v) => (v ? 1 : 0));
  if (wide) {
    return (Ctor as unknown as { from(a: ArrayLike<unknown>, f: (v: unknown) => bigint): ArrayBufferView }).from(data, (v) => BigInt(v as number));
  }
  return (Ctor as unknown as { from(a: ArrayLike<unknown>): ArrayBufferView }).from(data as number[]);
}

function resolve(
  caller: string,
  data: TensorData,
  opts: TensorOptions | undefined,
  known: readonly (keyof TensorOptions)[],
): { dtype: DType; shape: number[]; host: ArrayBufferView; device?: Device } {
  const o = checkOptions(caller, opts, known);
  const device = o.device === undefined ? undefined : checkDevice(caller, o.device);
  const dtype =
    o.dtype !== undefined
      ? checkDTypeArg(caller, o.dtype)
      : ArrayBuffer.isView(data) && !Buffer.isBuffer(data)
        ? dtypeOfArray(data as TypedArray)
        : Buffer.isBuffer(data)
          ? 'uint8'
          : 'float32';
  const host = toHostArray(caller, data, dtype);
  const shape = o.shape !== undefined ? checkShape(caller, o.shape) : [host.byteLength / bytesPerElement(dtype)];
  const want = numel(shape) * bytesPerElement(dtype);
  if (host.byteLength !== want) {
    throw new TvmValueError('ValueError', `data has ${host.byteLength} bytes but shape [${shape.join(', ')}] of ${dtype} needs ${want}`);
  }
  return { dtype, shape, host, device };
}

const FROM_OPTIONS = ['shape', 'dtype', 'device'] as const;
const WRAP_OPTIONS = ['shape', 'dtype'] as const;

/**
 * An n-dimensional array on a device (TVM's `runtime.Tensor`, DLPack-compatible).
 *
 * Memory is released by {@link Tensor.dispose} (on the thread pool; `await using`) or
 * {@link Tensor.disposeSync} (`using`), with the garbage collector as a safety net; its size
 * is reported to V8 so GC pressure reflects device memory too. A tensor this library returns
 * (from {@link Tensor.from}, a model run, a function call, ...) is the caller's to dispose.
 */
export class Tensor extends HandleOwner<NativeTensor> {
  private cachedShape?: number[];
  private cachedDType?: DType;

  /** An uninitialized tensor. */
  static empty(shape: readonly number[], dtype: DType | string = 'float32', device: Device = cpu()): Tensor {
    const dims = checkShape('Tensor.empty', shape);
    const type = checkDTypeArg('Tensor.empty', dtype);
    checkDevice('Tensor.empty', device).assertAvailable();
    return new Tensor(addon.NativeTensor.empty(dims, type, device.deviceType, device.deviceId));
  }

  /** A new tensor holding a copy of `data`, the copy made on a worker thread. */
  static async from(data: TensorData, opts: TensorOptions = {}): Promise<Tensor> {
    const { dtype, shape, host, device = cpu() } = resolve('Tensor.from', data, opts, FROM_OPTIONS);
    const t = await onDevice(device, async () => Tensor.empty(shape, dtype, device));
    return t.copyFrom(host as TypedArray).catch(disposeAndThrow(t));
  }

  /** {@link Tensor.from} on the JS thread. */
  static fromSync(data: TensorData, opts: TensorOptions = {}): Tensor {
    const { dtype, shape, host, device = cpu() } = resolve('Tensor.fromSync', data, opts, FROM_OPTIONS);
    const t = Tensor.empty(shape, dtype, device);
    try {
      t.handle.copyFromBytes(host);
    } catch (err) {
      t.disposeSync();
      throw err;
    }
    return t;
  }

  /**
   * A CPU tensor over `data`'s memory, without a copy, when the memory is 64-byte aligned
   * (TVM kernels may assume that alignment); otherwise a copy. {@link Tensor.sharesMemory}
   * tells which happened. While a shared tensor lives, `data` must not be transferred.
   * {@link Tensor.hostView} gives the other direction: JS views of tensor memory.
   */
  static wrap(data: TypedArray | Buffer, opts: Omit<TensorOptions, 'device'> = {}): Tensor {
    const { dtype, shape, host } = resolve('Tensor.wrap', data, opts, WRAP_OPTIONS);
    const shared = addon.NativeTensor.fromHost(host, new Shape(shape), dtype);
    if (shared) {
      const t = new Tensor(shared);
      t.shared = true;
      return t;
    }
    return Tensor.fromSync(data, opts);
  }

  /** Imports a DLPack capsule made by {@link Tensor.toDLPack} (consumes it). */
  static fromDLPack(capsule: DLPackCapsule): Tensor {
    return new Tensor(addon.NativeTensor.fromDLPack(capsule));
  }

  private shared = false;

  /** Whether this tensor uses JS memory directly (made by {@link Tensor.wrap} without a copy). */
  get sharesMemory(): boolean {
    return this.shared;
  }

  /** Dimensions. */
  get shape(): number[] {
    this.cachedShape ??= this.handle.shape;
    return [...this.cachedShape];
  }
  /** Number of dimensions. */
  get ndim(): number {
    return this.shape.length;
  }
  /** Number of elements. */
  get size(): number {
    return numel(this.shape);
  }
  /** Element type. */
  get dtype(): DType {
    this.cachedDType ??= this.handle.dtype as DType;
    return this.cachedDType;
  }
  /** Where the data lives. */
  get device(): Device {
    return new Device(this.handle.deviceType, this.handle.deviceId);
  }
  /** Size of the data in bytes. */
  get byteLength(): number {
    return this.handle.byteLength;
  }

  /**
   * Overwrites the contents from a host array or another tensor (any device), the copy made
   * on a worker thread; resolves with this tensor.
   */
  async copyFrom(src: TensorData | Tensor): Promise<this> {
    const rethrow = callerStack();
    const copy =
      src instanceof Tensor ? () => this.handle.copyFromAsync(this.checkedSource(src).handle) : () => this.handle.copyFromBytesAsync(this.checkedHost(src));
    // A copy touching an RPC peer takes its turn on that session (either side may be remote).
    const remote = src instanceof Tensor && src.device.isRemote ? src.device : this.device;
    await onDevice(remote, copy).catch(rethrow);
    return this;
  }

  /** {@link Tensor.copyFrom} on the JS thread. */
  copyFromSync(src: TensorData | Tensor): this {
    if (src instanceof Tensor) this.handle.copyFrom(this.checkedSource(src).handle);
    else this.handle.copyFromBytes(this.checkedHost(src));
    return this;
  }

  /** Host data for a copy into this tensor; a size mismatch is a {@link TvmValueError}. */
  private checkedHost(src: TensorData): ArrayBufferView {
    const host = toHostArray('Tensor.copyFrom', src, this.dtype);
    if (host.byteLength !== this.byteLength) {
      throw new TvmValueError(
        'ValueError',
        `data has ${host.byteLength} bytes but tensor [${this.shape.join(', ')}] of ${this.dtype} needs ${this.byteLength}`,
      );
    }
    return host;
  }

  /** A source tensor for a copy; TVM checks only the byte count, so dtypes are checked here. */
  private checkedSource(src: Tensor): Tensor {
    if (src.dtype !== this.dtype) {
      throw new TvmValueError('ValueError', `cannot copy a ${src.dtype} tensor into a ${this.dtype} tensor`);
    }
    return src;
  }

  private hostArray(): TypedArray {
    return new HOST_ARRAY[this.dtype](this.size);
  }

  /**
   * A copy of the data as the dtype's TypedArray (float16/bfloat16: raw bits in a
   * Uint16Array, see {@link Tensor.toFloat32Array}; bool: Uint8Array of 0/1), copied on a
   * worker thread.
   */
  async toArray(): Promise<TypedArray> {
    const out = this.hostArray();
    await onDevice(this.device, () => this.handle.copyToBytesAsync(out)).catch(callerStack());
    return out;
  }

  /** {@link Tensor.toArray} on the JS thread. */
  toArraySync(): TypedArray {
    const out = this.hostArray();
    this.handle.copyToBytes(out);
    return out;
  }

  /** The data as float32 numbers, whatever the float dtype (decodes float16/bfloat16), copied on a worker thread. */
  async toFloat32Array(): Promise<Float32Array> {
    return this.asFloat32(await this.toArray());
  }

  /** {@link Tensor.toFloat32Array} on the JS thread. */
  toFloat32ArraySync(): Float32Array {
    return this.asFloat32(this.toArraySync());
  }

  private asFloat32(a: TypedArray): Float32Array {
    if (this.dtype === 'float16' || this.dtype === 'bfloat16') return toFloat32(a as Uint16Array, this.dtype);
    return Float32Array.from(a as ArrayLike<number>);
  }

  /** A copy of this tensor on `device` (the caller's to dispose), made on a worker thread. */
  async copyTo(device: Device): Promise<Tensor> {
    checkDevice('Tensor.copyTo', device);
    const t = await onDevice(device, async () => Tensor.empty(this.shape, this.dtype, device));
    return t.copyFrom(this).catch(disposeAndThrow(t));
  }

  /** {@link Tensor.copyTo} on the JS thread. */
  copyToSync(device: Device): Tensor {
    checkDevice('Tensor.copyToSync', device);
    const t = Tensor.empty(this.shape, this.dtype, device);
    try {
      return t.copyFromSync(this);
    } catch (err) {
      t.disposeSync();
      throw err;
    }
  }

  /**
   * A TypedArray over this CPU tensor's own memory (no copy): writes are seen by TVM and
   * reads see TVM's results. The view keeps the memory alive on its own.
   */
  hostView(): TypedArray {
    const Ctor = HOST_ARRAY[this.dtype];
    const buf = this.handle.hostView();
    return new Ctor(buf, 0, this.size);
  }

  /** Exports a DLPack capsule; the tensor stays valid. */
  toDLPack(): DLPackCapsule {
    return this.handle.toDLPack();
  }

  toString(): string {
    return `Tensor(shape=[${this.shape.join(', ')}], dtype=${this.dtype}, device=${this.device})`;
  }
}

/** A rejection handler that releases `t` (made for a copy that failed) and passes the error on. */
function disposeAndThrow(t: Tensor): (err: unknown) => Promise<never> {
  return async (err) => {
    await t.dispose();
    throw err;
  };
}

registerWrapper(addon.NativeTensor, (h) => new Tensor(h));
