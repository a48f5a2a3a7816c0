/**
 * NumPy `.npy` files, through npyjs (a maintained reader/writer), so arrays move between
 * numpy and Node. float16 stays raw bits (Uint16Array) both ways; bfloat16 has no
 * standard `.npy` dtype and is refused.
 */
import fs from 'node:fs';
import { dump, parse } from 'npyjs';
import { TvmValueError } from './errors';
import { type DType, HOST_ARRAY, type TypedArray } from './dtype';
import { Tensor, type TensorOptions } from './tensor';

/** An array read from or written to a `.npy` file (C order). */
export interface NpyArray {
  data: TypedArray;
  shape: number[];
  dtype: DType;
}

type NpyCode = 'i1' | 'u1' | 'i2' | 'u2' | 'i4' | 'u4' | 'i8' | 'u8' | 'f2' | 'f4' | 'f8' | 'b1';

const TO_NPY: Partial<Record<DType, NpyCode>> = {
  int8: 'i1', uint8: 'u1', int16: 'i2', uint16: 'u2', int32: 'i4', uint32: 'u4',
  int64: 'i8', uint64: 'u8', float16: 'f2', float32: 'f4', float64: 'f8', bool: 'b1',
};
const FROM_NPY = Object.fromEntries(Object.entries(TO_NPY).map(([k, v]) => [v, k as DType])) as Record<string, DType>;

/** Parses `.npy` bytes. */
export function parseNpy(bytes: Uint8Array): NpyArray {
  const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  let arr: ReturnType<typeof parse>;
  try {
    arr = parse(buf, { convertFloat16: false });
  } catch (err) {
    // npyjs throws plain Errors (bad magic, big-endian dtypes) or RangeErrors (truncated header).
    throw new TvmValueError('ValueError', `not a readable .npy file: ${(err as Error).message}`, '', { cause: err });
  }
  if (arr.fortranOrder) throw new TvmValueError('ValueError', 'Fortran-order .npy arrays are not supported');
  const dtype = FROM_NPY[arr.dtype];
  if (!dtype) throw new TvmValueError('ValueError', `unsupported .npy dtype '${arr.dtype}'`);
  const count = arr.shape.reduce((a, b) => a * b, 1);
  const Ctor = HOST_ARRAY[dtype];
  // npyjs gives bool as a JS boolean[]; every other dtype as a TypedArray over the file.
  const data = Array.isArray(arr.data)
    ? Uint8Array.from(arr.data as boolean[], (v) => (v ? 1 : 0))
    : new Ctor(arr.data.buffer, arr.data.byteOffset, arr.data.byteLength / Ctor.BYTES_PER_ELEMENT);
  if (data.length < count) {
    throw new TvmValueError('ValueError', `truncated .npy file: shape [${arr.shape.join(', ')}] needs ${count} elements, found ${data.length}`);
  }
  return { data: data.length === count ? data : data.subarray(0, count), shape: arr.shape, dtype };
}

/** Reads a `.npy` file. */
export function readNpy(path: string): NpyArray {
  return parseNpy(fs.readFileSync(path));
}

/** Encodes an array as `.npy` bytes. */
export function encodeNpy(a: NpyArray): Buffer {
  const code = TO_NPY[a.dtype];
  if (!code) throw new TvmValueError('ValueError', `${a.dtype} has no standard .npy dtype`);
  const count = a.shape.reduce((x, y) => x * y, 1);
  if (a.data.length !== count) {
    throw new TvmValueError('ValueError', `shape [${a.shape.join(', ')}] needs ${count} elements but the data has ${a.data.length}`);
  }
  return Buffer.from(dump(a.data, a.shape, { dtype: code }));
}

/** Writes an array, or a tensor (copied to the host), as a `.npy` file. */
export function writeNpy(path: string, a: NpyArray | Tensor): void {
  const arr = a instanceof Tensor ? { data: a.toArraySync(), shape: a.shape, dtype: a.dtype } : a;
  fs.writeFileSync(path, encodeNpy(arr));
}

/** Reads a `.npy` file into a new tensor. */
export function tensorFromNpy(path: string, opts: Omit<TensorOptions, 'shape' | 'dtype'> = {}): Tensor {
  const a = readNpy(path);
  return Tensor.fromSync(a.data, { ...opts, shape: a.shape, dtype: a.dtype });
}
