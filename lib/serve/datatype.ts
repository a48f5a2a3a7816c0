/**
 * KServe v2 tensors: the protocol's datatype names (`FP32`, `INT64`, ...) against tvm-node's
 * dtypes, and tensor data in the protocol's two forms: JSON numbers (flat or nested, row-major)
 * and raw little-endian bytes (Triton's binary-tensor extension over HTTP, `raw_*_contents`
 * over gRPC). Every check names the tensor, so a client sees which input was wrong.
 */
import { bytesPerElement, type DType, fromFloat32, HOST_ARRAY, type TypedArray, toFloat32 } from '../dtype';
import { BadRequestError } from './errors';

/** KServe datatype of each dtype tvm-node serves (BYTES, the protocol's strings, has none). */
const DATATYPE: Record<DType, string> = {
  bool: 'BOOL',
  uint8: 'UINT8',
  uint16: 'UINT16',
  uint32: 'UINT32',
  uint64: 'UINT64',
  int8: 'INT8',
  int16: 'INT16',
  int32: 'INT32',
  int64: 'INT64',
  float16: 'FP16',
  bfloat16: 'BF16',
  float32: 'FP32',
  float64: 'FP64',
};
const DTYPE = new Map(Object.entries(DATATYPE).map(([d, k]) => [k, d as DType]));

/** The KServe datatype of a dtype (`''` when the model does not say one). */
export function datatypeOf(dtype: string | null): string {
  return dtype === null ? '' : (DATATYPE[dtype as DType] ?? dtype.toUpperCase());
}

/** The dtype of a KServe datatype; one tvm-node cannot hold (BYTES, unknown) is a bad request. */
export function dtypeOfDatatype(datatype: unknown, tensor: string): DType {
  const d = typeof datatype === 'string' ? DTYPE.get(datatype) : undefined;
  if (d) return d;
  throw new BadRequestError(`input '${tensor}': unsupported datatype ${JSON.stringify(datatype)} (supported: ${[...DTYPE.keys()].join(', ')})`);
}

/** Most dimensions a tensor may have, and most elements (a shape is checked before anything is allocated for it). */
const MAX_RANK = 32;

/** Checks a shape from a request (non-negative integers) and returns its element count. */
export function elementCount(shape: unknown, tensor: string): number {
  if (!Array.isArray(shape) || shape.length > MAX_RANK) throw new BadRequestError(`input '${tensor}': shape must be an array of at most ${MAX_RANK} sizes`);
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0)
      throw new BadRequestError(`input '${tensor}': shape ${JSON.stringify(shape)} has a size that is not a non-negative integer`);
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw new BadRequestError(`input '${tensor}': shape ${JSON.stringify(shape)} is too large`);
  return n;
}

/** Raw bytes of a tensor (binary extension), checked against its shape; shared, not copied. */
export function rawTensor(bytes: Buffer, dtype: DType, count: number, tensor: string): Buffer {
  const want = count * bytesPerElement(dtype);
  if (bytes.byteLength !== want) {
    throw new BadRequestError(`input '${tensor}': ${bytes.byteLength} bytes of data for ${count} ${DATATYPE[dtype]} elements (expected ${want})`);
  }
  return bytes;
}

/**
 * JSON tensor data (a flat or nested array of numbers, or booleans for BOOL), in row-major
 * order, as a host array of `dtype`; the element count must be the shape's.
 */
export function jsonTensor(data: unknown, dtype: DType, count: number, tensor: string): TypedArray {
  const flat = flatten(data, tensor, count);
  if (flat.length !== count) throw new BadRequestError(`input '${tensor}': ${flat.length} elements of data for a shape of ${count}`);
  const bad = (v: unknown) => new BadRequestError(`input '${tensor}': ${JSON.stringify(v)} is not a ${DATATYPE[dtype]} value`);
  switch (dtype) {
    case 'bool':
      return Uint8Array.from(flat, (v) => {
        if (typeof v !== 'boolean' && v !== 0 && v !== 1) throw bad(v);
        return v ? 1 : 0;
      });
    case 'float16':
    case 'bfloat16':
      return fromFloat32(numbers(flat, bad), dtype);
    case 'int64':
    case 'uint64': {
      const out = dtype === 'int64' ? new BigInt64Array(count) : new BigUint64Array(count);
      flat.forEach((v, i) => {
        if (!Number.isInteger(v)) throw bad(v);
        out[i] = BigInt(v as number);
      });
      return out;
    }
    default: {
      const out = new HOST_ARRAY[dtype](count);
      const integer = !dtype.startsWith('float');
      numbers(flat, bad).forEach((v, i) => {
        if (integer && !Number.isInteger(v)) throw bad(v);
        out[i] = v;
      });
      return out;
    }
  }
}

function numbers(flat: unknown[], bad: (v: unknown) => Error): number[] {
  for (const v of flat) if (typeof v !== 'number') throw bad(v);
  return flat as number[];
}

/** Nested arrays flattened in row-major order; stops at `limit` + 1 elements, so a huge body cannot make a huge array. */
function flatten(data: unknown, tensor: string, limit: number): unknown[] {
  if (!Array.isArray(data)) throw new BadRequestError(`input '${tensor}': "data" must be an array`);
  const out: unknown[] = [];
  const walk = (a: unknown[], depth: number) => {
    if (depth > MAX_RANK) throw new BadRequestError(`input '${tensor}': "data" is nested deeper than ${MAX_RANK}`);
    for (const v of a) {
      if (out.length > limit) return;
      if (Array.isArray(v)) walk(v, depth + 1);
      else out.push(v);
    }
  };
  walk(data, 0);
  return out;
}

/** A host array as JSON numbers (float16/bfloat16 as their values, int64 as numbers, bool as booleans). */
export function toJsonData(data: TypedArray, dtype: DType): Array<number | boolean> {
  if (dtype === 'bool') return Array.from(data as Uint8Array, (v) => v !== 0);
  if (dtype === 'float16' || dtype === 'bfloat16') return Array.from(toFloat32(data as Uint16Array, dtype));
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) return Array.from(data, Number);
  return Array.from(data as ArrayLike<number>);
}
