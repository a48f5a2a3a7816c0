import assert from 'node:assert/strict';
import {
  cpu,
  cuda,
  DisposedError,
  type DType,
  fromFloat32,
  loadModuleSync,
  type Module,
  type PackedFunc,
  Tensor,
  TvmError,
  TvmInternalError,
  TvmTypeError,
  TvmValueError,
  toFloat32,
} from '../lib';
import { HOST_ARRAY } from '../lib/dtype';
import { fixture } from './fixtures';

/** Element-wise copy of any host array, for exact comparisons (NaN == NaN, -0 != 0). */
const list = (a: ArrayLike<unknown>) => Array.from(a);

/**
 * One sample per dtype of HOST_ARRAY: what Tensor.from is given, and what toArray() must
 * return (extremes of each integer range, int64/uint64 beyond 2^53, float specials).
 */
const SAMPLES: Record<DType, { input: number[] | bigint[] | boolean[]; host: unknown[] }> = {
  float32: {
    input: [1.5, -2.25, 3.4028234663852886e38, 1.401298464324817e-45, -0, Infinity, NaN],
    host: [1.5, -2.25, 3.4028234663852886e38, 1.401298464324817e-45, -0, Infinity, NaN],
  },
  float64: { input: [Math.PI, -1e300, 5e-324, -0, -Infinity], host: [Math.PI, -1e300, 5e-324, -0, -Infinity] },
  int8: { input: [-128, -1, 0, 127], host: [-128, -1, 0, 127] },
  int16: { input: [-32768, 32767, 12345], host: [-32768, 32767, 12345] },
  int32: { input: [-2147483648, 2147483647, 0], host: [-2147483648, 2147483647, 0] },
  int64: {
    input: [-(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n + 1n, -(2n ** 60n) - 3n],
    host: [-(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n + 1n, -(2n ** 60n) - 3n],
  },
  uint8: { input: [0, 1, 128, 255], host: [0, 1, 128, 255] },
  uint16: { input: [0, 65535, 4660], host: [0, 65535, 4660] },
  uint32: { input: [0, 4294967295, 305419896], host: [0, 4294967295, 305419896] },
  uint64: { input: [2n ** 64n - 1n, 2n ** 53n + 1n, 0n], host: [2n ** 64n - 1n, 2n ** 53n + 1n, 0n] },
  // Raw bits (references from numpy's float16 and ml_dtypes' bfloat16).
  float16: { input: [1, -2.5, 65504, 6e-8], host: [0x3c00, 0xc100, 0x7bff, 0x0001] },
  bfloat16: { input: [1, -2.5, 1e-8, 0.1], host: [0x3f80, 0xc020, 0x322c, 0x3dcd] },
  bool: { input: [true, false, true, true], host: [1, 0, 1, 1] },
};

describe('Tensor', () => {
  describe('host -> tensor -> host round trips', () => {
    for (const dtype of Object.keys(HOST_ARRAY) as DType[]) {
      it(`${dtype}: Tensor.fromSync(array) then toArraySync() gives the same values in a ${HOST_ARRAY[dtype].name}`, () => {
        const { input, host } = SAMPLES[dtype];
        const t = Tensor.fromSync(input, { dtype });
        assert.equal(t.dtype, dtype);
        assert.deepEqual(t.shape, [input.length]);
        assert.equal(t.byteLength, input.length * HOST_ARRAY[dtype].BYTES_PER_ELEMENT);
        assert.ok(t.device.equals(cpu()));
        const out = t.toArraySync();
        assert.equal(out.constructor, HOST_ARRAY[dtype]);
        assert.deepEqual(list(out), host);
        // The host array itself goes back in unchanged (no conversion, exact bits).
        const again = Tensor.fromSync(out, { dtype, shape: [1, input.length] });
        assert.deepEqual(again.shape, [1, input.length]);
        assert.deepEqual(list(again.toArraySync()), host);
        t.disposeSync();
        again.disposeSync();
      });
    }

    it("float16: fromFloat32 gives numpy's bits (rounding, subnormals, overflow, NaN, Inf) and TVM keeps them", () => {
      const values = [1, -2.5, 65504, 1e-8, 6e-8, 1e-5, NaN, Infinity, -Infinity, 0, -0, 65520, 2049, 2051, 0.1];
      // np.array(values, dtype=np.float16).view(np.uint16)
      const bits = [0x3c00, 0xc100, 0x7bff, 0x0000, 0x0001, 0x00a8, 0x7e00, 0x7c00, 0xfc00, 0x0000, 0x8000, 0x7c00, 0x6800, 0x6802, 0x2e66];
      assert.deepEqual(list(fromFloat32(values, 'float16')), bits);
      const t = Tensor.fromSync(values, { dtype: 'float16' });
      assert.deepEqual(list(t.toArraySync()), bits);
      // Decoded back (numpy: .view(np.float16).astype(np.float64)).
      const decoded = [1, -2.5, 65504, 0, 2 ** -24, 1.0013580322265625e-5, NaN, Infinity, -Infinity, 0, -0, Infinity, 2048, 2052, 0.0999755859375];
      assert.deepEqual(list(t.toFloat32ArraySync()), decoded);
      assert.deepEqual(list(toFloat32(new Uint16Array(bits), 'float16')), decoded);
    });

    it("bfloat16: fromFloat32 gives ml_dtypes' bits (round to nearest even, NaN, Inf, f32 subnormal) and TVM keeps them", () => {
      const values = [1, -2.5, 65504, 1e-8, 1e-40, NaN, Infinity, -Infinity, 3e38, 3.4e38, 0.1, 1.00390625, 1.01171875];
      // np.array(values, np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
      const bits = [0x3f80, 0xc020, 0x4780, 0x322c, 0x0001, 0x7fc0, 0x7f80, 0xff80, 0x7f62, 0x7f80, 0x3dcd, 0x3f80, 0x3f82];
      assert.deepEqual(list(fromFloat32(values, 'bfloat16')), bits);
      const t = Tensor.fromSync(values, { dtype: 'bfloat16' });
      assert.deepEqual(list(t.toArraySync()), bits);
      const decoded = [
        1,
        -2.5,
        65536,
        1.0011717677116394e-8,
        9.183549615799121e-41,
        NaN,
        Infinity,
        -Infinity,
        3.00405527047391e38,
        Infinity,
        0.10009765625,
        1,
        1.015625,
      ];
      assert.deepEqual(list(t.toFloat32ArraySync()), decoded);
    });

    it('bool: booleans become 0/1 bytes and toFloat32ArraySync decodes them', () => {
      const t = Tensor.fromSync([true, false, false, true, true, false], { dtype: 'bool', shape: [2, 3] });
      assert.equal(t.byteLength, 6);
      assert.deepEqual(list(t.toArraySync()), [1, 0, 0, 1, 1, 0]);
      assert.deepEqual(list(t.toFloat32ArraySync()), [1, 0, 0, 1, 1, 0]);
    });

    it('int64/uint64 from plain numbers, and bigints beyond 2^53 stay exact', () => {
      const i = Tensor.fromSync([-3, 2 ** 40, 0], { dtype: 'int64' });
      assert.deepEqual(list(i.toArraySync()), [-3n, 2n ** 40n, 0n]);
      const big = 2n ** 53n + 1n; // 9007199254740993: not representable as a JS number
      const u = Tensor.fromSync([big, big * 1024n + 7n], { dtype: 'uint64' });
      assert.deepEqual(list(u.toArraySync()), [9007199254740993n, 9223372036854776839n]);
    });
  });

  describe('Tensor.fromSync / Tensor.empty', () => {
    it('infers dtype from the data: number[] -> float32, TypedArray -> its own, Buffer -> uint8', () => {
      const cases: [Parameters<typeof Tensor.fromSync>[0], DType, unknown[]][] = [
        [[1, 2.5, -3], 'float32', [1, 2.5, -3]],
        [new Float64Array([0.1, 0.2]), 'float64', [0.1, 0.2]],
        [new Int8Array([-5, 5]), 'int8', [-5, 5]],
        [new Int16Array([-300, 300]), 'int16', [-300, 300]],
        [new Int32Array([7, -7]), 'int32', [7, -7]],
        [new BigInt64Array([-(2n ** 62n)]), 'int64', [-(2n ** 62n)]],
        [new Uint16Array([65535]), 'uint16', [65535]],
        [new Uint32Array([4000000000]), 'uint32', [4000000000]],
        [new BigUint64Array([2n ** 63n]), 'uint64', [2n ** 63n]],
        [Buffer.from([9, 8, 7]), 'uint8', [9, 8, 7]],
      ];
      for (const [data, dtype, want] of cases) {
        const t = Tensor.fromSync(data);
        assert.equal(t.dtype, dtype, `dtype of ${data.constructor.name}`);
        assert.deepEqual(list(t.toArraySync()), want);
      }
    });

    it('a Buffer is raw bytes for any dtype, even at an odd byte offset', () => {
      const f = new Float32Array([1.5, -2, 1024.25]);
      const bytes = Buffer.concat([Buffer.from([0xee]), Buffer.from(f.buffer)]).subarray(1); // byteOffset 1
      assert.equal(bytes.byteOffset % 2, 1, 'the floats start at an odd address');
      const t = Tensor.fromSync(bytes, { dtype: 'float32' });
      assert.deepEqual(t.shape, [3]);
      assert.deepEqual(list(t.toArraySync()), [1.5, -2, 1024.25]);
      const h = Tensor.fromSync(Buffer.from(new Uint16Array([0x3c00, 0xc100]).buffer), { dtype: 'float16' });
      assert.deepEqual(list(h.toFloat32ArraySync()), [1, -2.5]);
    });

    it('shapes: n-d, scalar ([]) and zero-size tensors report shape, ndim, size and byteLength', () => {
      const t = Tensor.fromSync([1, 2, 3, 4, 5, 6], { shape: [2, 3], dtype: 'int32' });
      assert.deepEqual([t.shape, t.ndim, t.size, t.byteLength], [[2, 3], 2, 6, 24]);
      assert.deepEqual(list(t.toArraySync()), [1, 2, 3, 4, 5, 6]);
      assert.equal(t.toString(), 'Tensor(shape=[2, 3], dtype=int32, device=cpu(0))');
      const s = Tensor.fromSync([42], { shape: [] });
      assert.deepEqual([s.shape, s.ndim, s.size, s.byteLength], [[], 0, 1, 4]);
      assert.deepEqual(list(s.toArraySync()), [42]);
      const z = Tensor.empty([2, 0, 3], 'float64');
      assert.deepEqual([z.shape, z.ndim, z.size, z.byteLength], [[2, 0, 3], 3, 0, 0]);
      assert.equal(z.toArraySync().length, 0);
      const d = Tensor.fromSync(
        new Float64Array(24).map((_, i) => i),
        { shape: [2, 3, 4] },
      );
      assert.deepEqual(d.shape, [2, 3, 4]);
      assert.equal(d.toArraySync()[23], 23);
    });

    it("Tensor.empty allocates the dtype's size on the cpu, and copyFromSync fills it", () => {
      for (const dtype of Object.keys(HOST_ARRAY) as DType[]) {
        const t = Tensor.empty([3, 5], dtype);
        assert.equal(t.dtype, dtype);
        assert.deepEqual(t.shape, [3, 5]);
        assert.equal(t.byteLength, 15 * HOST_ARRAY[dtype].BYTES_PER_ELEMENT);
        assert.equal(t.device.kind, 'cpu');
        t.disposeSync();
      }
      const t = Tensor.empty([2, 2], 'int16').copyFromSync([1, -2, 3, -4]);
      assert.deepEqual(list(t.toArraySync()), [1, -2, 3, -4]);
      assert.equal(Tensor.empty([4]).dtype, 'float32');
    });
  });

  describe('copies between tensors', () => {
    it('copyFromSync(tensor) copies the data into separate memory', () => {
      const a = Tensor.fromSync([1, 2, 3, 4, 5, 6], { shape: [2, 3] });
      const b = Tensor.empty([2, 3]);
      assert.equal(b.copyFromSync(a), b);
      assert.deepEqual(list(b.toArraySync()), [1, 2, 3, 4, 5, 6]);
      a.copyFromSync([9, 9, 9, 9, 9, 9]);
      assert.deepEqual(list(b.toArraySync()), [1, 2, 3, 4, 5, 6], "b does not share a's memory");
    });

    it('copyToSync(cpu()) makes an independent copy with the same shape, dtype and data', () => {
      const a = Tensor.fromSync([2n ** 60n, -1n, 3n], { dtype: 'int64', shape: [3, 1] });
      const c = a.copyToSync(cpu());
      assert.deepEqual([c.shape, c.dtype], [[3, 1], 'int64']);
      assert.deepEqual(list(c.toArraySync()), [2n ** 60n, -1n, 3n]);
      (a.hostView() as BigInt64Array)[1] = 5n;
      assert.deepEqual(list(c.toArraySync()), [2n ** 60n, -1n, 3n]);
    });

    it('copyFromSync(tensor) of another byte size is refused by TVM', () => {
      const a = Tensor.fromSync([1, 2, 3]);
      assert.throws(
        () => Tensor.empty([4]).copyFromSync(a),
        (e: Error) => e instanceof TvmInternalError && /size in bytes must exactly match/.test(e.message),
      );
    });

    it('copyFromSync(tensor) of another dtype is refused, not reinterpreted', () => {
      const a = Tensor.fromSync([1, 2, 3], { dtype: 'int32' });
      const b = Tensor.fromSync([0.5, 0.5, 0.5]);
      assert.throws(
        () => b.copyFromSync(a),
        (e: Error) => e instanceof TvmValueError && /cannot copy a int32 tensor into a float32 tensor/.test(e.message),
      );
      assert.deepEqual(list(b.toArraySync()), [0.5, 0.5, 0.5]);
    });

    it('copyFromSync(host data) of the wrong size is a TvmValueError and leaves the tensor as it was', () => {
      const t = Tensor.fromSync([1, 2, 3]);
      assert.throws(
        () => t.copyFromSync([1, 2]),
        (e: Error) => e instanceof TvmValueError && /data has 8 bytes but tensor \[3\] of float32 needs 12/.test(e.message),
      );
      assert.throws(
        () => t.copyFromSync(new Float32Array(4)),
        (e: Error) => e instanceof TvmValueError && /data has 16 bytes/.test(e.message),
      );
      assert.deepEqual(list(t.toArraySync()), [1, 2, 3]);
    });
  });

  describe('async copies', () => {
    const n = 16 * 1024 * 1024; // 16 Mi float32 = 64 MiB; i < 2^24 is exact in float32
    let ramp: Float32Array;
    before(() => {
      ramp = new Float32Array(n);
      for (let i = 0; i < n; i++) ramp[i] = i;
    });
    const sameBytes = (a: ArrayBufferView, b: ArrayBufferView) =>
      Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

    it('from + toArray (async) move 64 MiB intact', async () => {
      const t = await Tensor.from(ramp, { shape: [4096, 4096] });
      assert.deepEqual(t.shape, [4096, 4096]);
      assert.equal(t.byteLength, 64 * 1024 * 1024);
      const out = (await t.toArray()) as Float32Array;
      assert.equal(out.length, n);
      assert.ok(sameBytes(out, ramp));
      assert.deepEqual([out[0], out[4097], out[n - 1]], [0, 4097, n - 1]);
      t.disposeSync();
    });

    it('copyFrom(host data) (async) overwrites 64 MiB and returns the tensor', async () => {
      const t = Tensor.empty([n]);
      const down = new Float32Array(n);
      for (let i = 0; i < n; i++) down[i] = n - 1 - i;
      assert.equal(await t.copyFrom(down), t);
      const out = t.toArraySync() as Float32Array;
      assert.ok(sameBytes(out, down));
      assert.deepEqual([out[0], out[n - 1]], [n - 1, 0]);
      t.disposeSync();
    });

    it('copyFrom(tensor) and copyTo(cpu()) (async) copy 64 MiB between tensors', async () => {
      const src = Tensor.fromSync(ramp);
      const dst = await Tensor.empty([n]).copyFrom(src);
      assert.ok(sameBytes(dst.toArraySync(), ramp));
      const copy = await src.copyTo(cpu());
      assert.deepEqual([copy.shape, copy.dtype], [[n], 'float32']);
      const out = (await copy.toArray()) as Float32Array;
      assert.ok(sameBytes(out, ramp));
      assert.equal(out[12345678], 12345678);
      for (const t of [src, dst, copy]) t.disposeSync();
    });

    it('async forms reject with typed errors (size mismatch, bad shape, disposed)', async () => {
      const t = Tensor.fromSync([1, 2]);
      await assert.rejects(
        t.copyFrom([1, 2, 3]),
        (e: Error) => e instanceof TvmValueError && /data has 12 bytes but tensor \[2\] of float32 needs 8/.test(e.message),
      );
      await assert.rejects(Tensor.from([1, 2, 3], { shape: [2, 2] }), (e: Error) => e instanceof TvmValueError && /needs 16/.test(e.message));
      t.disposeSync();
      await assert.rejects(t.toArray(), (e: Error) => e instanceof DisposedError && /Tensor has been disposed/.test(e.message));
      await assert.rejects(t.copyFrom([1, 2]), DisposedError);
    });
  });

  describe('zero copy: Tensor.wrap and hostView', () => {
    let kernels: Module;
    let addOne: PackedFunc;
    before(() => {
      kernels = loadModuleSync(fixture('kernels').path);
      addOne = kernels.requireFunctionSync('add_one'); // B[i] = A[i] + 1, float32[n]
    });
    after(() => kernels.disposeSync());

    /** 64-byte aligned JS memory: TVM's allocator aligns every tensor to 64 bytes. */
    const alignedFloats = (n: number) => {
      const owner = Tensor.empty([n]);
      const view = owner.hostView() as Float32Array;
      owner.disposeSync(); // the view keeps the memory alive on its own
      return view;
    };

    it('wrap() of 64-byte aligned memory shares it: JS writes are seen by toArraySync and by a TVM kernel', () => {
      const mem = alignedFloats(64);
      mem.set(Array.from({ length: 64 }, (_, i) => i));
      const w = Tensor.wrap(mem, { shape: [8, 8] });
      assert.equal(w.sharesMemory, true);
      assert.deepEqual([w.shape, w.dtype], [[8, 8], 'float32']);
      mem[5] = 42;
      mem[63] = -1;
      const seen = w.toArraySync();
      assert.deepEqual([seen[0], seen[5], seen[63]], [0, 42, -1]);
      // Tensor writes land in the JS memory too.
      w.copyFromSync(new Float32Array(64).fill(3));
      assert.deepEqual([mem[0], mem[5], mem[63]], [3, 3, 3]);
    });

    it('wrap() of aligned memory as a kernel output: TVM writes straight into the JS array', () => {
      const input = Tensor.fromSync([1, 2, 3, 4, 5, 6, 7, 8]);
      const outMem = alignedFloats(8).fill(0);
      const out = Tensor.wrap(outMem);
      assert.equal(out.sharesMemory, true);
      addOne.callSync(input, out);
      assert.deepEqual(list(outMem), [2, 3, 4, 5, 6, 7, 8, 9]);
    });

    it('wrap() of unaligned memory (byteOffset 4 into aligned memory) copies instead', () => {
      const mem = alignedFloats(17);
      mem.set(Array.from({ length: 17 }, (_, i) => i * 10));
      const sub = mem.subarray(1); // 4 bytes past a 64-byte boundary
      assert.equal(sub.byteOffset, 4);
      const w = Tensor.wrap(sub, { shape: [4, 4] });
      assert.equal(w.sharesMemory, false);
      assert.deepEqual(list(w.toArraySync()), [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160]);
      mem[1] = -5; // not seen: the tensor holds its own copy
      assert.equal(w.toArraySync()[0], 10);
      w.copyFromSync(new Float32Array(16));
      assert.equal(mem[2], 20);
    });

    it('wrap() with a shape that does not fit the memory, or a foreign TypedArray', () => {
      const mem = alignedFloats(16);
      assert.throws(
        () => Tensor.wrap(mem, { shape: [3, 3] }),
        (e: Error) => e instanceof TvmValueError && /data has 64 bytes but shape \[3, 3\] of float32 needs 36/.test(e.message),
      );
      assert.throws(
        () => Tensor.wrap(mem, { dtype: 'float16' }),
        (e: Error) => e instanceof TvmTypeError && /Float32Array cannot hold float16 data/.test(e.message),
      );
    });

    it('hostView() writes are seen by toArraySync and by a TVM kernel; kernel results appear in the view', () => {
      const a = Tensor.empty([5]);
      const b = Tensor.empty([5]);
      const av = a.hostView() as Float32Array;
      const bv = b.hostView() as Float32Array;
      av.set([0.5, -1, 10, 100, 1e6]);
      assert.deepEqual(list(a.toArraySync()), [0.5, -1, 10, 100, 1e6]);
      addOne.callSync(a, b);
      assert.deepEqual(list(bv), [1.5, 0, 11, 101, 1000001]);
    });

    it("hostView() has the dtype's host type and stays valid after the tensor is disposed", () => {
      const t = Tensor.fromSync([2n ** 62n, -7n], { dtype: 'int64' });
      const v = t.hostView();
      assert.ok(v instanceof BigInt64Array);
      t.disposeSync();
      assert.equal(t.disposed, true);
      assert.deepEqual(list(v), [2n ** 62n, -7n]);
      (v as BigInt64Array)[1] = 8n;
      assert.deepEqual(list(v), [2n ** 62n, 8n]);
      assert.ok(Tensor.fromSync([1], { dtype: 'float16' }).hostView() instanceof Uint16Array);
      assert.ok(Tensor.fromSync([true], { dtype: 'bool' }).hostView() instanceof Uint8Array);
    });
  });

  describe('DLPack', () => {
    it('toDLPack -> fromDLPack gives the same data, shape and dtype over the same memory', () => {
      const t = Tensor.fromSync([1n, 2n, 3n, 4n, 5n, 2n ** 62n], { dtype: 'int64', shape: [2, 3] });
      const u = Tensor.fromDLPack(t.toDLPack());
      assert.deepEqual([u.shape, u.dtype, u.device.kind], [[2, 3], 'int64', 'cpu']);
      assert.deepEqual(list(u.toArraySync()), [1n, 2n, 3n, 4n, 5n, 2n ** 62n]);
      (t.hostView() as BigInt64Array)[0] = 100n;
      assert.equal(u.toArraySync()[0], 100n, "the import shares the exporter's memory");
      t.disposeSync(); // the capsule holds its own reference
      assert.deepEqual(list(u.toArraySync()), [100n, 2n, 3n, 4n, 5n, 2n ** 62n]);
    });

    it('DLPack keeps float16 and bool dtypes', () => {
      const h = Tensor.fromDLPack(Tensor.fromSync([1, -2.5], { dtype: 'float16' }).toDLPack());
      assert.deepEqual([h.dtype, list(h.toArraySync())], ['float16', [0x3c00, 0xc100]]);
      const b = Tensor.fromDLPack(Tensor.fromSync([true, false], { dtype: 'bool' }).toDLPack());
      assert.deepEqual([b.dtype, list(b.toArraySync())], ['bool', [1, 0]]);
    });

    it('a consumed capsule cannot be imported twice', () => {
      const t = Tensor.fromSync([7, 8]);
      const capsule = t.toDLPack();
      const u = Tensor.fromDLPack(capsule);
      assert.throws(
        () => Tensor.fromDLPack(capsule),
        (e: Error) => e instanceof TvmValueError && /already consumed/.test(e.message),
      );
      assert.deepEqual(list(u.toArraySync()), [7, 8]);
    });

    it('BAD CALL - fromDLPack of something that is not a capsule', () => {
      assert.throws(
        () => Tensor.fromDLPack({} as never),
        (e: Error) => e instanceof TvmTypeError && /expects a capsule made by toDLPack/.test(e.message),
      );
    });
  });

  describe('errors and lifetime', () => {
    it('data that does not fit the shape is a TvmValueError naming both sizes', () => {
      assert.throws(
        () => Tensor.fromSync([1, 2, 3], { shape: [2, 2] }),
        (e: Error) => e instanceof TvmValueError && /data has 12 bytes but shape \[2, 2\] of float32 needs 16/.test(e.message),
      );
      assert.throws(
        () => Tensor.fromSync(new Int8Array(5), { shape: [2, 3] }),
        (e: Error) => e instanceof TvmValueError && /data has 5 bytes but shape \[2, 3\] of int8 needs 6/.test(e.message),
      );
    });

    it('BAD CALL - unknown dtypes are a TvmValueError listing the supported ones', () => {
      assert.throws(
        () => Tensor.empty([2], 'float8'),
        (e: Error) => e instanceof TvmValueError && /unsupported dtype 'float8' \(supported: float16, bfloat16, float32/.test(e.message),
      );
      assert.throws(
        () => Tensor.fromSync([1], { dtype: 'complex64' }),
        (e: Error) => e instanceof TvmValueError && /unsupported dtype 'complex64'/.test(e.message),
      );
    });

    it('BAD CALL - negative or fractional dimensions are a TvmValueError', () => {
      assert.throws(
        () => Tensor.empty([2, -1]),
        (e: Error) => e instanceof TvmValueError && /^Tensor\.empty: shape must be an array of whole numbers >= 0, got \[2, -1\]$/.test(e.message),
      );
      assert.throws(
        () => Tensor.fromSync([1, 2, 3], { shape: [1.5, 2] }),
        (e: Error) => e instanceof TvmValueError && /^Tensor\.fromSync: shape must be an array of whole numbers >= 0, got \[1\.5, 2\]$/.test(e.message),
      );
    });

    it('BAD CALL - a TypedArray of another element type is refused, not reinterpreted', () => {
      assert.throws(
        () => Tensor.fromSync(new Float32Array([1, 2]), { dtype: 'float16' }),
        (e: Error) => e instanceof TvmTypeError && /Float32Array cannot hold float16 data \(expected Uint16Array/.test(e.message),
      );
      assert.throws(
        () => Tensor.fromSync(new Int32Array([1, 2]), { dtype: 'float32' }),
        (e: Error) => e instanceof TvmTypeError && /Int32Array cannot hold float32/.test(e.message),
      );
      assert.throws(() => Tensor.empty([2]).copyFromSync(new Int32Array([1, 2])), TvmTypeError);
    });

    it('use after dispose is a DisposedError; dispose is idempotent', () => {
      const t = Tensor.fromSync([1, 2, 3]);
      assert.equal(t.disposed, false);
      t.disposeSync();
      t.disposeSync();
      assert.equal(t.disposed, true);
      const disposed = (e: Error) => e instanceof DisposedError && e instanceof TvmError && /Tensor has been disposed/.test(e.message);
      assert.throws(() => t.toArraySync(), disposed);
      assert.throws(() => t.dtype, disposed);
      assert.throws(() => t.byteLength, disposed);
      assert.throws(() => t.copyFromSync([1, 2, 3]), disposed);
      assert.throws(() => t.hostView(), disposed);
      assert.throws(() => t.toDLPack(), disposed);
      assert.throws(() => Tensor.empty([3]).copyFromSync(t), disposed);
    });

    it('`using` disposes the tensor at the end of the block', () => {
      let inner: Tensor | undefined;
      {
        using t = Tensor.fromSync([4, 5]);
        inner = t;
        assert.deepEqual(list(t.toArraySync()), [4, 5]);
      }
      assert.equal(inner.disposed, true);
      assert.throws(() => inner!.toArraySync(), DisposedError);
      const u = Tensor.fromSync([1]);
      u[Symbol.dispose]();
      assert.equal(u.disposed, true);
    });
    it('dispose() releases on the thread pool (marked disposed at once), idempotent; `await using` calls it', async () => {
      const t = Tensor.fromSync([1, 2, 3]);
      const pending = t.dispose();
      assert.equal(t.disposed, true);
      await pending;
      await t.dispose();
      t.disposeSync();
      await assert.rejects(t.toArray(), DisposedError);
      let inner: Tensor | undefined;
      {
        await using u = await Tensor.from([4, 5]);
        inner = u;
        assert.deepEqual(list(await u.toArray()), [4, 5]);
      }
      assert.equal(inner.disposed, true);
    });

    it('toFloat32Array (async) and toFloat32ArraySync decode float16 and bfloat16 alike', async () => {
      for (const dtype of ['float16', 'bfloat16', 'float32'] as const) {
        using t = Tensor.fromSync([0.5, -2, 3], { dtype });
        assert.deepEqual(list(await t.toFloat32Array()), [0.5, -2, 3]);
        assert.deepEqual(list(t.toFloat32ArraySync()), [0.5, -2, 3]);
      }
    });
  });

  describe('cuda tensors', () => {
    // Only meaningful with a CUDA GPU and a loadable libtvm_runtime_cuda.so; the missing-GPU
    // error itself is covered in device.test.ts.
    it('host -> cuda -> host round trip and copyToSync(cpu()) (skipped without a CUDA GPU)', function () {
      if (!cuda().exists) this.skip(); // no usable CUDA device on this machine
      const data = Float32Array.from({ length: 1000 }, (_, i) => i * 0.5);
      const g = Tensor.fromSync(data, { device: cuda(), shape: [10, 100] });
      assert.deepEqual([g.device.kind, g.shape], ['cuda', [10, 100]]);
      assert.deepEqual(list(g.toArraySync()), list(data));
      const back = g.copyToSync(cpu());
      assert.ok(back.device.equals(cpu()));
      assert.deepEqual(list(back.toArraySync()), list(data));
      assert.throws(() => g.hostView(), /needs a CPU tensor/);
    });
  });
});
