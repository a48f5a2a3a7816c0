/**
 * Data types: TVM dtype strings and the TypedArray that holds each one on the host.
 */
import { TvmTypeError, TvmValueError } from './errors';

/** The dtypes tvm-node moves between JS and TVM. */
export type DType = 'float16' | 'bfloat16' | 'float32' | 'float64' | 'int8' | 'int16' | 'int32' | 'int64' | 'uint8' | 'uint16' | 'uint32' | 'uint64' | 'bool';

/** Host arrays tvm-node accepts and returns. */
export type TypedArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array;

type TypedArrayCtor = { new (buf: ArrayBufferLike, offset: number, length: number): TypedArray; new (n: number): TypedArray; BYTES_PER_ELEMENT: number };

/**
 * The host array for each dtype. float16/bfloat16 are held as raw bits (Uint16Array);
 * {@link toFloat32} / {@link fromFloat32} convert them. bool is one byte per element.
 */
export const HOST_ARRAY: Record<DType, TypedArrayCtor> = {
  float16: Uint16Array,
  bfloat16: Uint16Array,
  float32: Float32Array,
  float64: Float64Array,
  int8: Int8Array,
  int16: Int16Array,
  int32: Int32Array,
  int64: BigInt64Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
  uint64: BigUint64Array,
  bool: Uint8Array,
} as unknown as Record<DType, TypedArrayCtor>;

/** Checks a dtype string and narrows it. */
export function checkDType(dtype: string): DType {
  if (!(dtype in HOST_ARRAY)) {
    throw new TvmValueError('ValueError', `unsupported dtype '${dtype}' (supported: ${Object.keys(HOST_ARRAY).join(', ')})`);
  }
  return dtype as DType;
}

/** Bytes per element. */
export function bytesPerElement(dtype: DType): number {
  return HOST_ARRAY[dtype].BYTES_PER_ELEMENT;
}

/**
 * The dtype a TypedArray carries when none is given: its own element type (a Buffer or
 * Uint8Array is uint8, a Uint16Array uint16: float16/bfloat16 bits need the dtype given).
 * The one place tvm-node infers a dtype from a host array (`Tensor.from`, `Tensor.wrap`,
 * `session.infer`, ...). Any other view (DataView, Uint8ClampedArray, ...) is a
 * {@link TvmTypeError}.
 */
export function dtypeOfArray(a: ArrayBufferView): DType {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof Int8Array) return 'int8';
  if (a instanceof Int16Array) return 'int16';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof BigInt64Array) return 'int64';
  if (a instanceof Uint8Array) return 'uint8';
  if (a instanceof Uint16Array) return 'uint16';
  if (a instanceof Uint32Array) return 'uint32';
  if (a instanceof BigUint64Array) return 'uint64';
  throw new TvmTypeError(
    'TypeError',
    `cannot infer a dtype from a ${a?.constructor?.name ?? typeof a} (give a TypedArray of the dtype's host type, e.g. Float32Array for float32, or the dtype)`,
  );
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float16 bits -> number. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

/** number -> float16 bits (round to nearest even). */
export function floatToHalf(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

/** Raw float16 / bfloat16 bits -> Float32Array. */
export function toFloat32(bits: Uint16Array, dtype: 'float16' | 'bfloat16'): Float32Array {
  const out = new Float32Array(bits.length);
  if (dtype === 'bfloat16') {
    for (let i = 0; i < bits.length; i++) {
      u32[0] = bits[i] << 16;
      out[i] = f32[0];
    }
  } else {
    for (let i = 0; i < bits.length; i++) out[i] = halfToFloat(bits[i]);
  }
  return out;
}

/** Numbers -> raw float16 / bfloat16 bits (round to nearest even). */
export function fromFloat32(values: ArrayLike<number>, dtype: 'float16' | 'bfloat16'): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    if (dtype === 'bfloat16') {
      f32[0] = values[i];
      const b = u32[0];
      out[i] = Number.isNaN(values[i]) ? 0x7fc0 : (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    } else {
      out[i] = floatToHalf(values[i]);
    }
  }
  return out;
}
