/**
 * NumPy `.npy` files, through npyjs (a maintained reader/writer), so arrays move between
 * numpy and Node. float16 stays raw bits (Uint16Array) both ways; bfloat16 has no
 * standard `.npy` dtype and is refused.
 */
import fs from 'node:fs';
import { dump, parse } from 'npyjs';
import { type DType, HOST_ARRAY, type TypedArray } from './dtype';
import { TvmTypeError, TvmValueError } from './errors';
import { checkInstance, checkOptions, received, requireString } from './options';
import { Tensor, type TensorOptions } from './tensor';

/** An array read from or written to a `.npy` file (C order). */
export interface NpyArray {
  data: TypedArray;
  shape: number[];
  dtype: DType;
}

type NpyCode = 'i1' | 'u1' | 'i2' | 'u2' | 'i4' | 'u4' | 'i8' | 'u8' | 'f2' | 'f4' | 'f8' | 'b1';

const TO_NPY: Partial<Record<DType, NpyCode>> = {
  int8: 'i1',
  uint8: 'u1',
  int16: 'i2',
  uint16: 'u2',
  int32: 'i4',
  uint32: 'u4',
  int64: 'i8',
  uint64: 'u8',
  float16: 'f2',
  float32: 'f4',
  float64: 'f8',
  bool: 'b1',
};
const FROM_NPY = Object.fromEntries(Object.entries(TO_NPY).map(([k, v]) => [v, k as DType])) as Record<string, DType>;

/** Parses `.npy` bytes. */
export function parseNpy(bytes: Uint8Array): NpyArray {
  checkInstance('parseNpy: bytes', bytes, Uint8Array, 'a Uint8Array or Buffer');
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
  requireString('readNpy: path', path);
  return parseNpy(fs.readFileSync(path));
}

/** Encodes an array as `.npy` bytes. */
export function encodeNpy(a: NpyArray): Buffer {
  checkNpyArray('encodeNpy', a);
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
  requireString('writeNpy: path', path);
  if (!(a instanceof Tensor)) checkNpyArray('writeNpy', a, 'a Tensor or { data, shape, dtype }');
  const arr = a instanceof Tensor ? { data: a.toArraySync(), shape: a.shape, dtype: a.dtype } : a;
  fs.writeFileSync(path, encodeNpy(arr));
}

/** Reads a `.npy` file into a new tensor. */
export function tensorFromNpy(path: string, opts: Omit<TensorOptions, 'shape' | 'dtype'> = {}): Tensor {
  requireString('tensorFromNpy: path', path);
  checkOptions('tensorFromNpy', opts, ['device']);
  const a = readNpy(path);
  return Tensor.fromSync(a.data, { ...opts, shape: a.shape, dtype: a.dtype });
}

/** Checks that `a` is an {@link NpyArray} before it is encoded (`what` says what the caller takes). */
function checkNpyArray(caller: string, a: unknown, what = '{ data, shape, dtype }'): void {
  if (typeof a !== 'object' || a === null || Array.isArray(a)) throw new TvmTypeError('TypeError', `${caller}: array must be ${what}, got ${received(a)}`);
  const { data, shape, dtype } = a as Partial<NpyArray>;
  if (!ArrayBuffer.isView(data)) throw new TvmTypeError('TypeError', `${caller}: data must be a TypedArray, got ${received(data)}`);
  if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
    throw new TvmTypeError(
      'TypeError',
      `${caller}: shape must be an array of whole numbers >= 0, got ${Array.isArray(shape) ? `[${shape.map(received).join(', ')}]` : received(shape)}`,
    );
  }
  if (typeof dtype !== 'string') throw new TvmTypeError('TypeError', `${caller}: dtype must be a dtype name such as 'float32', got ${received(dtype)}`);
}
