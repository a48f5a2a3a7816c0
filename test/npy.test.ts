import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type DType, encodeNpy, type NpyArray, parseNpy, readNpy, Tensor, TvmValueError, tensorFromNpy, toFloat32, writeNpy } from '../lib';
import { HOST_ARRAY } from '../lib/dtype';
import { type ArraySpec, fixture, fixtureDir, python } from './fixtures';

const NUMPY_PRINT = 'import numpy as np, sys; a=np.load(sys.argv[1]); print(a.dtype, a.shape, a.ravel().tolist())';

/** What numpy itself reads from a file: dtype, shape and the values as printed by Python. */
function numpyLoad(file: string): { dtype: string; shape: number[]; values: string[] } {
  const out = execFileSync(python, ['-c', NUMPY_PRINT, file], { encoding: 'utf8' }).trim();
  const m = /^(\w+) \(([^)]*)\) \[(.*)\]$/s.exec(out);
  assert.ok(m, `unexpected numpy output: ${out}`);
  return {
    dtype: m[1],
    shape: m[2]
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
      .map(Number),
    values: m[3] ? m[3].split(', ') : [],
  };
}

/** Python's printed value -> the JS value tvm-node holds for that dtype (float16: decoded). */
function fromPython(text: string, dtype: DType): unknown {
  if (dtype === 'bool') return text === 'True' ? 1 : text === 'False' ? 0 : assert.fail(`bool ${text}`);
  if (dtype === 'int64' || dtype === 'uint64') return BigInt(text);
  if (text === 'inf') return Infinity;
  if (text === '-inf') return -Infinity;
  if (text === 'nan') return NaN;
  return Number(text);
}

/** JS values comparable with fromPython(): float16 bits decoded, everything else as is. */
const jsValues = (a: NpyArray) => Array.from((a.dtype === 'float16' ? toFloat32(a.data as Uint16Array, 'float16') : a.data) as ArrayLike<unknown>);

function assertNumpySees(file: string, dtype: DType, shape: number[], values: unknown[]): void {
  const np = numpyLoad(file);
  assert.equal(np.dtype, dtype, `numpy dtype of ${file}`);
  assert.deepEqual(np.shape, shape, `numpy shape of ${file}`);
  assert.deepEqual(
    np.values.map((v) => fromPython(v, dtype)),
    values,
    `numpy values of ${file}`,
  );
}

/** Arrays of every dtype with a standard .npy form, at their extremes. */
const ARRAYS: NpyArray[] = [
  { dtype: 'float32', shape: [2, 3], data: new Float32Array([1.5, -2, 3.25, 0, 1e-7, 3e38]) },
  { dtype: 'float64', shape: [3], data: new Float64Array([Math.PI, -1e300, 5e-324]) },
  { dtype: 'float16', shape: [2, 2], data: new Uint16Array([0x3c00, 0xc100, 0x7bff, 0x0001]) },
  { dtype: 'int8', shape: [4], data: new Int8Array([-128, -1, 0, 127]) },
  { dtype: 'uint8', shape: [2, 2], data: new Uint8Array([0, 1, 254, 255]) },
  { dtype: 'int16', shape: [2], data: new Int16Array([-32768, 32767]) },
  { dtype: 'uint16', shape: [2], data: new Uint16Array([0, 65535]) },
  { dtype: 'int32', shape: [2, 1], data: new Int32Array([-2147483648, 2147483647]) },
  { dtype: 'uint32', shape: [2], data: new Uint32Array([0, 4294967295]) },
  { dtype: 'int64', shape: [3], data: new BigInt64Array([-(2n ** 63n), 2n ** 62n + 1n, 2n ** 53n + 1n]) },
  { dtype: 'uint64', shape: [2], data: new BigUint64Array([2n ** 64n - 1n, 2n ** 53n + 1n]) },
  { dtype: 'bool', shape: [3], data: new Uint8Array([1, 0, 1]) },
];

describe('.npy files', () => {
  let tmp: string;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-npy-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  describe('readNpy of the fixtures', () => {
    const specs = (): [string, ArraySpec, DType, number[]][] => [
      ['mlp input', fixture('mlp').cases[0].inputs[0], 'float32', [4, 16]],
      ['mlp output', fixture('mlp').cases[0].outputs[0], 'float32', [4, 8]],
      ['multi_out int64 output', fixture('multi_out').cases[0].outputs[2], 'int64', [2]],
      ['fp16 input', fixture('fp16').cases[0].inputs[0], 'float16', [8, 8]],
      ['fp16 output', fixture('fp16').cases[0].outputs[0], 'float16', [8, 8]],
    ];

    it("gives the dtype and shape the fixture index says, in the dtype's host array", () => {
      for (const [what, spec, dtype, shape] of specs()) {
        const a = readNpy(path.join(fixtureDir(), spec.file));
        assert.equal(spec.dtype, dtype, `index dtype of ${what}`);
        assert.deepEqual(spec.shape, shape, `index shape of ${what}`);
        assert.equal(a.dtype, dtype, what);
        assert.deepEqual(a.shape, shape, what);
        assert.ok(a.data instanceof HOST_ARRAY[dtype], `${what}: ${a.data.constructor.name}`);
        assert.equal(
          a.data.length,
          shape.reduce((x, y) => x * y, 1),
          what,
        );
      }
    });

    it('gives the same values numpy reads from the same files', () => {
      for (const [, spec, dtype, shape] of specs()) {
        const file = path.join(fixtureDir(), spec.file);
        assertNumpySees(file, dtype, shape, jsValues(readNpy(file)));
      }
      // The multi_out int64 output is an argmax: small non-negative indices, as bigints.
      const idx = readNpy(path.join(fixtureDir(), fixture('multi_out').cases[0].outputs[2].file));
      assert.ok(Array.from(idx.data as BigInt64Array).every((v) => typeof v === 'bigint' && v >= 0n && v < 5n));
    });

    it('tensorFromNpy loads a fixture into a tensor with its shape, dtype and bits', () => {
      const spec = fixture('fp16').cases[0].inputs[0];
      const file = path.join(fixtureDir(), spec.file);
      const t = tensorFromNpy(file);
      assert.deepEqual([t.shape, t.dtype], [[8, 8], 'float16']);
      assert.deepEqual(Array.from(t.toArraySync() as Uint16Array), Array.from(readNpy(file).data as Uint16Array));
      assertNumpySees(file, 'float16', [8, 8], Array.from(t.toFloat32ArraySync()));
    });
  });

  describe('writeNpy', () => {
    for (const a of ARRAYS) {
      it(`${a.dtype} [${a.shape.join(', ')}]: writeNpy -> readNpy round trip, and numpy reads the same values`, () => {
        const file = path.join(tmp, `${a.dtype}.npy`);
        writeNpy(file, a);
        const back = readNpy(file);
        assert.equal(back.dtype, a.dtype);
        assert.deepEqual(back.shape, a.shape);
        assert.ok(back.data instanceof HOST_ARRAY[a.dtype]);
        assert.deepEqual(Array.from(back.data as ArrayLike<unknown>), Array.from(a.data as ArrayLike<unknown>));
        assertNumpySees(file, a.dtype, a.shape, jsValues(a));
      });
    }

    it('scalar ([]) and zero-size ([0, 3]) arrays round trip and numpy agrees', () => {
      const scalar = path.join(tmp, 'scalar.npy');
      writeNpy(scalar, { dtype: 'float64', shape: [], data: new Float64Array([-7.25]) });
      assert.deepEqual(readNpy(scalar), { dtype: 'float64', shape: [], data: new Float64Array([-7.25]) });
      assertNumpySees(scalar, 'float64', [], [-7.25]);
      const empty = path.join(tmp, 'empty.npy');
      writeNpy(empty, { dtype: 'int32', shape: [0, 3], data: new Int32Array(0) });
      const back = readNpy(empty);
      assert.deepEqual([back.dtype, back.shape, back.data.length], ['int32', [0, 3], 0]);
      assertNumpySees(empty, 'int32', [0, 3], []);
    });

    it('writes a tensor (copied to the host) that numpy and tensorFromNpy read back', () => {
      const file = path.join(tmp, 'tensor.npy');
      writeNpy(file, Tensor.fromSync([1, -2, 3, 2147483647, 5, 6], { shape: [2, 3], dtype: 'int32' }));
      assertNumpySees(file, 'int32', [2, 3], [1, -2, 3, 2147483647, 5, 6]);
      const t = tensorFromNpy(file);
      assert.deepEqual([t.shape, t.dtype, Array.from(t.toArraySync() as Int32Array)], [[2, 3], 'int32', [1, -2, 3, 2147483647, 5, 6]]);
      const half = path.join(tmp, 'half.npy');
      writeNpy(half, Tensor.fromSync([1, -2.5, 65504, 0.1], { dtype: 'float16', shape: [4, 1] }));
      assertNumpySees(half, 'float16', [4, 1], [1, -2.5, 65504, 0.0999755859375]);
    });

    it('encodeNpy / parseNpy work in memory: bytes start with the .npy magic and round trip', () => {
      const a: NpyArray = { dtype: 'uint64', shape: [1, 2], data: new BigUint64Array([1n, 2n ** 64n - 2n]) };
      const bytes = encodeNpy(a);
      assert.equal(bytes.subarray(0, 6).toString('latin1'), '\x93NUMPY');
      assert.deepEqual(parseNpy(bytes), a);
      // A view at an offset inside a larger buffer parses the same.
      const padded = Buffer.concat([Buffer.from('junk'), bytes]).subarray(4);
      assert.deepEqual(parseNpy(padded), a);
    });
  });

  describe('files written by numpy', () => {
    it("readNpy reads numpy's bool, uint16, int64 (beyond 2^53), float16 and float64 files", () => {
      const script = `
import numpy as np, sys, os
d = sys.argv[1]
np.save(os.path.join(d, 'b.npy'), np.array([[True, False], [False, True]]))
np.save(os.path.join(d, 'u2.npy'), np.arange(6, dtype=np.uint16).reshape(2, 3) * 10000)
np.save(os.path.join(d, 'i8.npy'), np.array([2**62 + 1, -(2**63), 9007199254740993], dtype=np.int64))
np.save(os.path.join(d, 'f2.npy'), np.array([1, -2.5, 65504, np.inf], dtype=np.float16))
np.save(os.path.join(d, 'f8.npy'), np.array([0.1, -1e-300], dtype=np.float64))`;
      execFileSync(python, ['-c', script, tmp]);
      const read = (f: string) => readNpy(path.join(tmp, f));
      const b = read('b.npy');
      assert.deepEqual([b.dtype, b.shape, Array.from(b.data as Uint8Array)], ['bool', [2, 2], [1, 0, 0, 1]]);
      assert.ok(b.data instanceof Uint8Array);
      const u2 = read('u2.npy');
      assert.deepEqual([u2.dtype, u2.shape, Array.from(u2.data as Uint16Array)], ['uint16', [2, 3], [0, 10000, 20000, 30000, 40000, 50000]]);
      const i8 = read('i8.npy');
      assert.deepEqual([i8.dtype, Array.from(i8.data as BigInt64Array)], ['int64', [2n ** 62n + 1n, -(2n ** 63n), 9007199254740993n]]);
      const f2 = read('f2.npy');
      assert.deepEqual([f2.dtype, Array.from(f2.data as Uint16Array)], ['float16', [0x3c00, 0xc100, 0x7bff, 0x7c00]]);
      const f8 = read('f8.npy');
      assert.deepEqual([f8.dtype, Array.from(f8.data as Float64Array)], ['float64', [0.1, -1e-300]]);
      // A numpy bool file becomes a bool tensor.
      const t = tensorFromNpy(path.join(tmp, 'b.npy'));
      assert.deepEqual([t.dtype, t.shape, Array.from(t.toArraySync() as Uint8Array)], ['bool', [2, 2], [1, 0, 0, 1]]);
    });
  });

  describe('errors', () => {
    it('bfloat16 has no .npy dtype: writing it is a TvmValueError and writes nothing', () => {
      const file = path.join(tmp, 'bf16.npy');
      const refused = (e: Error) => e instanceof TvmValueError && /^bfloat16 has no standard \.npy dtype$/.test(e.message);
      assert.throws(() => writeNpy(file, { dtype: 'bfloat16', shape: [1], data: new Uint16Array([0x3f80]) }), refused);
      assert.throws(() => writeNpy(file, Tensor.fromSync([1, 2], { dtype: 'bfloat16' })), refused);
      assert.throws(() => encodeNpy({ dtype: 'bfloat16', shape: [1], data: new Uint16Array([0x3f80]) }), refused);
      assert.equal(fs.existsSync(file), false);
    });

    it('BAD CALL - data that does not fit the shape is a TvmValueError, not a corrupt file', () => {
      assert.throws(
        () => encodeNpy({ dtype: 'float32', shape: [5], data: new Float32Array(3) }),
        (e: Error) => e instanceof TvmValueError && /shape \[5\] needs 5 elements but the data has 3/.test(e.message),
      );
      assert.throws(() => writeNpy(path.join(tmp, 'bad.npy'), { dtype: 'int8', shape: [2, 2], data: new Int8Array(5) }), TvmValueError);
      assert.equal(fs.existsSync(path.join(tmp, 'bad.npy')), false);
    });

    it('files that are not .npy, or are truncated, are a TvmValueError', () => {
      assert.throws(
        () => parseNpy(Buffer.from('not an npy file at all')),
        (e: Error) => e instanceof TvmValueError && /not a readable \.npy file: Not an \.npy file/.test(e.message),
      );
      assert.throws(
        () => parseNpy(new Uint8Array([0x93, 0x4e])),
        (e: Error) => e instanceof TvmValueError && /not a readable \.npy file/.test(e.message),
      );
      const whole = encodeNpy({ dtype: 'float64', shape: [4], data: new Float64Array([1, 2, 3, 4]) });
      assert.throws(
        () => parseNpy(whole.subarray(0, whole.length - 16)),
        (e: Error) => e instanceof TvmValueError && /truncated \.npy file: shape \[4\] needs 4 elements, found 2/.test(e.message),
      );
    });

    it('numpy files tvm-node cannot hold (Fortran order, big-endian, complex) are a TvmValueError', () => {
      const script = `
import numpy as np, sys, os
d = sys.argv[1]
np.save(os.path.join(d, 'fortran.npy'), np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
np.save(os.path.join(d, 'be.npy'), np.arange(3, dtype='>i4'))
np.save(os.path.join(d, 'c8.npy'), np.arange(3, dtype=np.complex64))`;
      execFileSync(python, ['-c', script, tmp]);
      const err = (re: RegExp) => (e: Error) => e instanceof TvmValueError && re.test(e.message);
      assert.throws(() => readNpy(path.join(tmp, 'fortran.npy')), err(/^Fortran-order \.npy arrays are not supported$/));
      assert.throws(() => readNpy(path.join(tmp, 'be.npy')), err(/not a readable \.npy file: Unsupported dtype: >i4/));
      assert.throws(() => readNpy(path.join(tmp, 'c8.npy')), err(/^unsupported \.npy dtype 'c8'$/));
    });
  });
});
