import assert from 'node:assert/strict';
import { threadId } from 'node:worker_threads';
import {
  cpu,
  Device,
  DeviceType,
  DisposedError,
  dataType,
  float,
  getGlobalFunc,
  int,
  listGlobalFuncs,
  PackedFunc,
  type Registration,
  registerFunc,
  requireGlobalFunc,
  Shape,
  Tensor,
  TvmAssertionError,
  TvmAttributeError,
  TvmNotImplementedError,
  TvmRuntimeError,
  TvmTypeError,
  TvmValueError,
} from '../lib';

function isError<E extends Error>(cls: new (...a: any[]) => E, re: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    assert.match((e as Error).message, re);
    return true;
  };
}

/** Tensor contents as plain numbers (int64 results come back as BigInt64Array). */
const values = (t: unknown): number[] => {
  assert.ok(t instanceof Tensor, `expected a Tensor, got ${String(t)}`);
  return Array.from(t.toArraySync() as ArrayLike<number | bigint>, Number);
};

/** Checks a tensor's dtype, shape and contents. */
function assertTensor(t: unknown, dtype: string, shape: number[], data: number[]): void {
  assert.ok(t instanceof Tensor, `expected a Tensor, got ${String(t)}`);
  assert.equal(t.dtype, dtype);
  assert.deepEqual(t.shape, shape);
  assert.deepEqual(values(t), data);
}

describe('PackedFunc and the global registry', () => {
  const registrations: Registration[] = [];
  const register = (name: string, fn: (...args: any[]) => unknown, opts?: { override?: boolean }) => {
    const r = registerFunc(name, fn, opts);
    registrations.push(r);
    return r;
  };
  afterEach(() => {
    for (const r of registrations.splice(0).reverse()) r.unregister();
  });

  describe('listing and looking up globals', () => {
    it("lists the relax.run.* functions tvm-node registers natively and the runtime's own globals", () => {
      const names = listGlobalFuncs();
      assert.ok(Array.isArray(names) && names.length > 50, `${names.length} globals`);
      for (const n of [
        'relax.run.unique',
        'relax.run.nonzero',
        'relax.run.shape_to_tensor',
        'relax.run.assert_op',
        'relax.run.print',
        'vm.builtin.debug_print',
        'runtime.TVMTensorAllocWithScope',
        'ffi.FunctionRemoveGlobal',
      ]) {
        assert.ok(names.includes(n), `${n} is not listed`);
      }
      assert.equal(new Set(names).size, names.length, 'names are unique');
    });

    it('getGlobalFunc returns a PackedFunc for a known name and null for an unknown one', () => {
      const f = getGlobalFunc('relax.run.shape_to_tensor');
      assert.ok(f instanceof PackedFunc);
      assert.equal(f.name, 'relax.run.shape_to_tensor');
      assertTensor(f.callSync(new Shape([7])), 'int64', [1], [7]);
      assert.equal(getGlobalFunc('tvm_node.test.no_such_function'), null);
      assert.equal(getGlobalFunc(''), null);
    });

    it('requireGlobalFunc of a missing name is a TvmAttributeError', () => {
      assert.throws(
        () => requireGlobalFunc('tvm_node.test.no_such_function'),
        isError(TvmAttributeError, /no global function 'tvm_node\.test\.no_such_function' is registered/),
      );
      assert.ok(requireGlobalFunc('relax.run.unique') instanceof PackedFunc);
    });

    it('BAD CALL - a non-string name is a TvmTypeError, not a crash', () => {
      assert.throws(() => getGlobalFunc(undefined as unknown as string), isError(TvmTypeError, /the name must be a string, got undefined/));
      assert.throws(() => registerFunc(42 as unknown as string, () => 1), isError(TvmTypeError, /the name must be a string, got number/));
      assert.throws(
        () => registerFunc('test.not_a_function', 42 as unknown as () => unknown),
        isError(TvmTypeError, /^registerFunc: fn must be a function, got 42$/),
      );
      assert.equal(getGlobalFunc('test.not_a_function'), null);
    });

    it('BAD CALL - a disposed PackedFunc is a DisposedError (sync and async)', async () => {
      const f = requireGlobalFunc('relax.run.shape_to_tensor');
      f.disposeSync();
      assert.equal(f.disposed, true);
      assert.throws(() => f.callSync(new Shape([1])), isError(DisposedError, /PackedFunc has been disposed/));
      await assert.rejects(f.call(new Shape([1])), isError(DisposedError, /PackedFunc has been disposed/));
      // Another handle to the same global is unaffected.
      assertTensor(requireGlobalFunc('relax.run.shape_to_tensor').callSync(new Shape([1, 2])), 'int64', [2], [1, 2]);
    });
  });

  describe('value conversion round trips through a JS function registered in TVM', () => {
    let echo: PackedFunc;
    let seen: unknown[][];
    beforeEach(() => {
      seen = [];
      register('test.echo', (...args: unknown[]) => {
        seen.push(args);
        return args.length === 1 ? args[0] : args;
      });
      echo = requireGlobalFunc('test.echo');
    });

    it('ints, floats and float() wrappers', () => {
      for (const v of [0, 1, -7, 123456789, 2 ** 53 - 1, -(2 ** 53 - 1)]) {
        const r = echo.callSync(v);
        assert.equal(typeof r, 'number');
        assert.equal(r, v);
      }
      for (const v of [1.5, -0.25, 1e300, Math.PI, Infinity, -Infinity]) assert.equal(echo.callSync(v), v);
      assert.ok(Number.isNaN(echo.callSync(NaN)));
      // float(2) passes a float 2.0 (JS cannot tell it from int 2 once back, but the value survives).
      assert.equal(echo.callSync(float(2)), 2);
      assert.equal(echo.callSync(int(3)), 3);
      assert.deepEqual(seen.map((a) => a[0]).slice(-2), [2, 3], 'the JS function received the plain values');
    });

    it('bigints beyond 2^53 stay exact; safe-range results come back as numbers', () => {
      for (const v of [2n ** 53n + 1n, 2n ** 60n, -(2n ** 62n), 2n ** 63n - 1n, -(2n ** 63n)]) {
        const r = echo.callSync(v);
        assert.equal(typeof r, 'bigint');
        assert.equal(r, v);
        assert.equal(echo.callSync(int(v)), v);
      }
      // A bigint argument within the safe range comes back as a number.
      assert.equal(echo.callSync(42n), 42);
      // The JS function saw the bigint, not a rounded double.
      assert.equal(seen.find((a) => a[0] === 2n ** 53n + 1n)?.[0], 2n ** 53n + 1n);
    });

    it('strings (unicode), booleans, null and undefined', () => {
      for (const s of ['', 'hello', 'héllo wörld', '日本語テキスト', '🌍🚀 emoji', 'nul\u0000inside', 'x'.repeat(10000)]) {
        assert.equal(echo.callSync(s), s);
      }
      assert.equal(echo.callSync(true), true);
      assert.equal(echo.callSync(false), false);
      assert.equal(echo.callSync(null), null);
      assert.equal(echo.callSync(undefined), null);
    });

    it('Buffers and TypedArrays pass as bytes and come back as Buffers', () => {
      const b = Buffer.from([0, 1, 2, 254, 255]);
      const r = echo.callSync(b);
      assert.ok(Buffer.isBuffer(r));
      assert.deepEqual([...(r as Buffer)], [0, 1, 2, 254, 255]);
      assert.notEqual(r, b, 'a copy');
      assert.ok(Buffer.isBuffer(seen[0][0]), 'the JS function receives a Buffer too');

      const r2 = echo.callSync(new Float32Array([1.5]));
      assert.ok(Buffer.isBuffer(r2));
      assert.deepEqual([...(r2 as Buffer)], [0x00, 0x00, 0xc0, 0x3f]);

      // A view into a larger buffer passes only its own bytes.
      const big = Buffer.from('0123456789');
      assert.equal((echo.callSync(big.subarray(3, 6)) as Buffer).toString(), '345');
      const empty = echo.callSync(Buffer.alloc(0));
      assert.ok(Buffer.isBuffer(empty));
      assert.equal((empty as Buffer).length, 0);
    });

    it('Shape, Device and DataType values', () => {
      const s = echo.callSync(new Shape([2, 3, 4]));
      assert.ok(s instanceof Shape);
      assert.deepEqual((s as Shape).dims, [2, 3, 4]);
      assert.deepEqual((echo.callSync(new Shape([])) as Shape).dims, []);

      const d = echo.callSync(cpu());
      assert.ok(d instanceof Device);
      assert.ok((d as Device).equals(cpu()));
      assert.equal((d as Device).kind, 'cpu');
      const d1 = echo.callSync(new Device(DeviceType.cpu, 1)) as Device;
      assert.deepEqual([d1.deviceType, d1.deviceId], [1, 1]);

      // A DLDataType comes back as its string form.
      assert.equal(echo.callSync(dataType('float16')), 'float16');
      assert.equal(echo.callSync(dataType('int8x4')), 'int8x4');
      assert.equal(echo.callSync(dataType('bool')), 'bool');
    });

    it('nested arrays of mixed values', () => {
      const v = [1, [2.5, 'a', [true, null, []]], 2n ** 60n, new Shape([5])];
      const r = echo.callSync(v) as unknown[];
      assert.ok(Array.isArray(r));
      assert.equal(r.length, 4);
      assert.deepEqual(r.slice(0, 3), [1, [2.5, 'a', [true, null, []]], 2n ** 60n]);
      assert.deepEqual((r[3] as Shape).dims, [5]);
      assert.deepEqual(echo.callSync([]), []);
      // Several arguments: the JS function returns them as an array.
      assert.deepEqual(echo.callSync(1, 'two', 3.5, false), [1, 'two', 3.5, false]);
      assert.deepEqual(echo.callSync(), []);
    });

    it('tensors pass by reference: same data, same memory', () => {
      const t = Tensor.fromSync(new Float32Array([1, 2, 3, 4]), { shape: [2, 2] });
      const r = echo.callSync(t) as Tensor;
      assert.ok(r instanceof Tensor);
      assert.deepEqual(r.shape, [2, 2]);
      assert.equal(r.dtype, 'float32');
      assert.deepEqual(Array.from(r.toArraySync() as Float32Array), [1, 2, 3, 4]);
      // Writing through the returned tensor is seen by the original: it is the same tensor.
      r.hostView()[0] = 42;
      assert.deepEqual(Array.from(t.toArraySync() as Float32Array), [42, 2, 3, 4]);
      // Disposing the returned wrapper leaves the original usable.
      r.disposeSync();
      assert.deepEqual(Array.from(t.toArraySync() as Float32Array), [42, 2, 3, 4]);

      const i64 = Tensor.fromSync([1n, -(2n ** 62n)], { dtype: 'int64' });
      assert.deepEqual(Array.from((echo.callSync(i64) as Tensor).toArraySync() as BigInt64Array), [1n, -(2n ** 62n)]);
      const tensors = echo.callSync([t, i64]) as Tensor[];
      assert.deepEqual(
        tensors.map((x) => x.dtype),
        ['float32', 'int64'],
      );
    });

    it('PackedFuncs pass through and stay callable', () => {
      const f = echo.callSync(requireGlobalFunc('relax.run.shape_to_tensor')) as PackedFunc;
      assert.ok(f instanceof PackedFunc);
      assertTensor(f.callSync(new Shape([3, 1])), 'int64', [2], [3, 1]);
      const e = echo.callSync(echo) as PackedFunc;
      assert.equal(e.callSync('again'), 'again');
    });

    it('BAD CALL - values with no TVM form are TvmTypeError / TvmValueError and the process survives', () => {
      assert.throws(() => echo.callSync({}), isError(TvmTypeError, /cannot pass this object to TVM/));
      assert.throws(() => echo.callSync(new Map()), isError(TvmTypeError, /cannot pass this object to TVM/));
      assert.throws(() => echo.callSync(() => 1), isError(TvmTypeError, /cannot pass a JS function or symbol to TVM directly/));
      assert.throws(() => echo.callSync(Symbol('s')), isError(TvmTypeError, /cannot pass a JS function or symbol/));
      assert.throws(() => echo.callSync([1, {}]), isError(TvmTypeError, /cannot pass this object to TVM/));
      assert.throws(() => echo.callSync(2n ** 64n), isError(TvmValueError, /bigint argument does not fit in int64/));
      assert.throws(() => echo.callSync(int(-(2n ** 63n) - 1n)), isError(TvmValueError, /does not fit in int64/));
      assert.throws(() => echo.callSync({ _tvmKind: 'nonsense' }), isError(TvmTypeError, /unknown _tvmKind 'nonsense'/));
      assert.throws(() => echo.callSync(new Shape(['x' as unknown as number])), isError(TvmTypeError, /shape dimension 0 must be an integer, got string/));
      // A malformed dtype fails in conversion as a TvmTypeError (it used to abort the process).
      assert.throws(() => echo.callSync(dataType('bogus_type')), isError(TvmTypeError, /unknown dtype `bogus_type`/));
      assert.throws(() => echo.callSync([1, dataType('not-a-dtype')]), isError(TvmTypeError, /unknown dtype/));
      // None of those reached the JS function, and it still works.
      assert.equal(seen.length, 0);
      assert.equal(echo.callSync('ok'), 'ok');
    });

    it('BAD CALL - a JS function returning something with no TVM form raises a TvmRuntimeError', () => {
      register('test.returns_promise', async () => 1);
      register('test.returns_object', () => ({ a: 1 }));
      assert.throws(() => requireGlobalFunc('test.returns_promise').callSync(), isError(TvmRuntimeError, /cannot pass this object to TVM/));
      assert.throws(() => requireGlobalFunc('test.returns_object').callSync(), isError(TvmRuntimeError, /cannot pass this object to TVM/));
    });

    it('BAD CALL - conversion failures of async calls reject the promise instead of throwing', async () => {
      register('test.returns_promise_async', async () => 1);
      await assert.rejects(requireGlobalFunc('test.returns_promise_async').call(), isError(TvmRuntimeError, /cannot pass this object to TVM/));
      const p = echo.call({});
      assert.ok(p instanceof Promise);
      await assert.rejects(p, isError(TvmTypeError, /cannot pass this object to TVM/));
      await assert.rejects(echo.call(dataType('bogus_type')), isError(TvmTypeError, /unknown dtype/));
      assert.equal(await echo.call('still works'), 'still works');
    });
  });

  describe('errors raised by JS functions', () => {
    it('a thrown TvmValueError reaches the caller as a TvmValueError with its message', async () => {
      register('test.throws_value', (x: number) => {
        throw new TvmValueError('ValueError', `bad value ${x}`);
      });
      const f = requireGlobalFunc('test.throws_value');
      assert.throws(
        () => f.callSync(42),
        (e: unknown) => {
          isError(TvmValueError, /^bad value 42$/)(e);
          assert.equal((e as TvmValueError).kind, 'ValueError');
          return true;
        },
      );
      // From a pool thread, marshalled back to the JS thread and the error back to the caller.
      await assert.rejects(f.call(7), isError(TvmValueError, /^bad value 7$/));
    });

    it('other TvmError kinds keep their kind', () => {
      register('test.throws_index', () => {
        throw new TvmTypeError('TypeError', 'wrong type here');
      });
      assert.throws(() => requireGlobalFunc('test.throws_index').callSync(), isError(TvmTypeError, /^wrong type here$/));
    });

    it('a thrown plain Error (or TypeError) reaches the caller as a TvmRuntimeError', async () => {
      register('test.throws_plain', () => {
        throw new Error('plain boom');
      });
      register('test.throws_js_type', () => {
        throw new TypeError('js type boom');
      });
      assert.throws(() => requireGlobalFunc('test.throws_plain').callSync(), isError(TvmRuntimeError, /^plain boom$/));
      await assert.rejects(requireGlobalFunc('test.throws_plain').call(), isError(TvmRuntimeError, /^plain boom$/));
      assert.throws(() => requireGlobalFunc('test.throws_js_type').callSync(), isError(TvmRuntimeError, /^js type boom$/));
    });

    it('a JS function may call back into TVM (re-entrancy), sync and from a pool thread', async () => {
      register('test.inner', (x: number) => x + 1);
      register('test.outer', (x: number) => (requireGlobalFunc('test.inner').callSync(x) as number) * 10);
      const outer = requireGlobalFunc('test.outer');
      assert.equal(outer.callSync(4), 50);
      assert.equal(await outer.call(5), 60);
    });
  });

  describe('JS functions called from TVM worker threads', () => {
    it('50 concurrent async calls run the JS function on the JS thread with correct results', async () => {
      const threads = new Set<number>();
      register('test.async_square', (x: number, label: string) => {
        threads.add(threadId);
        return `${label}:${x * x}`;
      });
      const f = requireGlobalFunc('test.async_square');
      const results = await Promise.all(Array.from({ length: 50 }, (_, i) => f.call(i, `call${i}`)));
      assert.deepEqual(
        results,
        Array.from({ length: 50 }, (_, i) => `call${i}:${i * i}`),
      );
      // Every call ran on this (the main) JS thread.
      assert.deepEqual([...threads], [threadId]);
    });

    it('tensors cross to the JS thread and back in concurrent calls', async () => {
      register('test.async_sum', (t: Tensor) => float(Array.from(t.toArraySync() as Float32Array).reduce((a, b) => a + b, 0)));
      register('test.async_fill', (t: Tensor, v: number) => {
        t.copyFromSync(new Float32Array(t.size).fill(v));
        return t;
      });
      const sum = requireGlobalFunc('test.async_sum');
      const fill = requireGlobalFunc('test.async_fill');
      const inputs = Array.from({ length: 50 }, (_, i) => Tensor.fromSync(Float32Array.from({ length: 8 }, (_, k) => i + k)));
      const sums = await Promise.all(inputs.map((t) => sum.call(t)));
      assert.deepEqual(
        sums,
        inputs.map((_, i) => 8 * i + 28),
      );
      const filled = (await Promise.all(inputs.map((t, i) => fill.call(t, i)))) as Tensor[];
      filled.forEach((t, i) => assert.deepEqual(Array.from(t.toArraySync() as Float32Array), new Array(8).fill(i)));
      assert.deepEqual(Array.from(inputs[3].toArraySync() as Float32Array), new Array(8).fill(3), 'filled in place');
    });
  });

  describe('registering and unregistering', () => {
    it('registering an existing name without override throws; with override it replaces', () => {
      register('test.dup', () => 'first');
      assert.throws(() => registerFunc('test.dup', () => 'second'), isError(TvmRuntimeError, /Global Function `test\.dup` is already registered/));
      assert.equal(requireGlobalFunc('test.dup').callSync(), 'first');
      const held = requireGlobalFunc('test.dup');
      register('test.dup', () => 'second', { override: true });
      assert.equal(requireGlobalFunc('test.dup').callSync(), 'second');
      // A handle taken before the override keeps the function it was looked up as.
      assert.equal(held.callSync(), 'first');
    });

    it('a runtime global cannot be replaced without override', () => {
      assert.throws(() => registerFunc('relax.run.unique', () => null), isError(TvmRuntimeError, /relax\.run\.unique` is already registered/));
      // Still the native implementation.
      assertTensor(requireGlobalFunc('relax.run.unique').callSync(Tensor.fromSync(new Int32Array([2, 1, 2])), 1, 0, 0, 0), 'int32', [2], [1, 2]);
    });

    it('unregister removes the name from listGlobalFuncs; held handles then fail cleanly', () => {
      const r = registerFunc('test.temp', (x: number) => x * 3);
      assert.equal(r.name, 'test.temp');
      assert.ok(listGlobalFuncs().includes('test.temp'));
      const held = requireGlobalFunc('test.temp');
      assert.equal(held.callSync(5), 15);
      r.unregister();
      r.unregister(); // idempotent
      assert.equal(listGlobalFuncs().includes('test.temp'), false);
      assert.equal(getGlobalFunc('test.temp'), null);
      assert.throws(() => held.callSync(5), isError(TvmRuntimeError, /the JavaScript function was unregistered/));
      // The name can be registered again.
      const again = registerFunc('test.temp', (x: number) => x * 4);
      assert.equal(requireGlobalFunc('test.temp').callSync(5), 20);
      again.unregister();
      assert.equal(getGlobalFunc('test.temp'), null);
    });

    // Unregistering removes the global only while it is still this registration's function.
    it('unregistering a replaced registration leaves the override in place', () => {
      const first = register('test.stale', () => 'first');
      register('test.stale', () => 'second', { override: true });
      first.unregister();
      assert.equal(getGlobalFunc('test.stale')?.callSync(), 'second');
    });

    it('`using` unregisters at the end of the scope', () => {
      {
        using r = registerFunc('test.scoped', () => 'in scope');
        assert.equal(requireGlobalFunc(r.name).callSync(), 'in scope');
      }
      assert.equal(getGlobalFunc('test.scoped'), null);
    });
  });

  describe('relax.run.* host functions (native, no Python)', () => {
    const unique = () => requireGlobalFunc('relax.run.unique');
    // numpy.unique([3, 1, 3, 2, 1, 5, 3], return_index, return_inverse, return_counts)
    const x = () => Tensor.fromSync(new Int32Array([3, 1, 3, 2, 1, 5, 3]));

    it('unique, sorted=1, with every combination of return_index / return_inverse / return_counts', () => {
      const sortedValues = [1, 2, 3, 5];
      const index = [1, 3, 0, 5];
      const inverse = [2, 0, 2, 1, 0, 3, 2];
      const counts = [2, 1, 3, 1];
      assertTensor(unique().callSync(x(), 1, 0, 0, 0), 'int32', [4], sortedValues);
      for (let mask = 1; mask < 8; mask++) {
        const [wi, wv, wc] = [mask & 1, (mask >> 1) & 1, (mask >> 2) & 1];
        const out = unique().callSync(x(), 1, wi, wv, wc) as Tensor[];
        assert.ok(Array.isArray(out), `mask ${mask}`);
        const want: [string, number[], number[]][] = [['int32', [4], sortedValues]];
        if (wi) want.push(['int64', [4], index]);
        if (wv) want.push(['int64', [7], inverse]);
        if (wc) want.push(['int64', [4], counts]);
        assert.equal(out.length, want.length, `mask ${mask}`);
        want.forEach(([dt, shape, data], i) => assertTensor(out[i], dt, shape, data));
      }
    });

    it('unique, sorted=0, keeps first-occurrence order', () => {
      assertTensor(unique().callSync(x(), 0, 0, 0, 0), 'int32', [4], [3, 1, 2, 5]);
      const [values, index, inverse, counts] = unique().callSync(x(), 0, 1, 1, 1) as Tensor[];
      assertTensor(values, 'int32', [4], [3, 1, 2, 5]);
      assertTensor(index, 'int64', [4], [0, 1, 3, 5]);
      assertTensor(inverse, 'int64', [7], [0, 1, 0, 2, 1, 3, 0]);
      assertTensor(counts, 'int64', [4], [3, 2, 1, 1]);
    });

    it('unique over float32 and a 2-D input (flattened, axis=None)', () => {
      const [v, i, inv, c] = unique().callSync(Tensor.fromSync(new Float32Array([2.5, -1, 2.5, 0, -1])), 1, 1, 1, 1) as Tensor[];
      assertTensor(v, 'float32', [3], [-1, 0, 2.5]);
      assertTensor(i, 'int64', [3], [1, 3, 0]);
      assertTensor(inv, 'int64', [5], [2, 0, 2, 1, 0]);
      assertTensor(c, 'int64', [3], [2, 1, 2]);
      const m = Tensor.fromSync(new Int32Array([4, 4, 1, 2, 1, 4]), { shape: [2, 3] });
      const [mv, minv] = unique().callSync(m, 1, 0, 1, 0, null) as Tensor[];
      assertTensor(mv, 'int32', [3], [1, 2, 4]);
      assertTensor(minv, 'int64', [6], [2, 2, 0, 1, 0, 2]);
      // Async, on a pool thread.
      return unique()
        .call(Tensor.fromSync(new Int32Array([9, 9, 9])), 1, 0, 0, 1)
        .then((r) => {
          const [uv, uc] = r as Tensor[];
          assertTensor(uv, 'int32', [1], [9]);
          assertTensor(uc, 'int64', [1], [3]);
        });
    });

    it('unique with an axis is a TvmNotImplementedError', () => {
      assert.throws(
        () => unique().callSync(x(), 1, 0, 0, 0, 0),
        isError(TvmNotImplementedError, /relax\.run\.unique with an axis is not supported outside Python/),
      );
    });

    it('nonzero returns numpy.nonzero stacked as int64 [ndim, count]', () => {
      // np.nonzero([[0, 3, 0], [0, 5, 6]]) -> ([0, 1, 1], [1, 1, 2])
      assertTensor(
        requireGlobalFunc('relax.run.nonzero').callSync(Tensor.fromSync(new Int32Array([0, 3, 0, 0, 5, 6]), { shape: [2, 3] })),
        'int64',
        [2, 3],
        [0, 1, 1, 1, 1, 2],
      );
      assertTensor(requireGlobalFunc('relax.run.nonzero').callSync(Tensor.fromSync([true, false, true], { dtype: 'bool' })), 'int64', [1, 2], [0, 2]);
      assertTensor(requireGlobalFunc('relax.run.nonzero').callSync(Tensor.fromSync([0, 0], { dtype: 'float32' })), 'int64', [1, 0], []);
      // A 0-d input is treated as 1-d (np.atleast_1d).
      assertTensor(requireGlobalFunc('relax.run.nonzero').callSync(Tensor.fromSync([7], { shape: [] })), 'int64', [1, 1], [0]);
    });

    it('shape_to_tensor turns a Shape into an int64 tensor', () => {
      const s2t = requireGlobalFunc('relax.run.shape_to_tensor');
      assertTensor(s2t.callSync(new Shape([2, 3, 4])), 'int64', [3], [2, 3, 4]);
      assertTensor(s2t.callSync(new Shape([])), 'int64', [0], []);
      assert.throws(() => s2t.callSync(5), isError(TvmTypeError, /Expected `ffi\.Shape` but got `int`/));
    });

    it('assert_op passes on a true condition and returns null', () => {
      const assertOp = requireGlobalFunc('relax.run.assert_op');
      assert.equal(assertOp.callSync(Tensor.fromSync([true], { dtype: 'bool', shape: [] }), 'never shown {}', 1), null);
      assert.equal(assertOp.callSync(true, 'never shown'), null);
    });

    it('assert_op on a false bool scalar is a TvmAssertionError with the formatted message', async () => {
      const assertOp = requireGlobalFunc('relax.run.assert_op');
      const no = Tensor.fromSync([false], { dtype: 'bool', shape: [] });
      assert.throws(() => assertOp.callSync(no, 'x={} y={} s={}', 7, 2.5, 'hi'), isError(TvmAssertionError, /^x=7 y=2\.5 s=hi$/));
      assert.throws(() => assertOp.callSync(no, ''), isError(TvmAssertionError, /^Assertion Failed$/));
      assert.throws(
        () => assertOp.callSync(no, 'got {}', Tensor.fromSync(new Int32Array([1, 2]))),
        isError(TvmAssertionError, /^got Tensor\(shape=\[2\], dtype=int32\)\[1, 2\]$/),
      );
      assert.throws(() => assertOp.callSync(false, 'shape {}', new Shape([1, 2])), isError(TvmAssertionError, /^shape \(1, 2\)$/));
      await assert.rejects(assertOp.call(no, 'async {}', 3), isError(TvmAssertionError, /^async 3$/));
    });

    it('assert_op with a non-bool or non-scalar tensor condition is a TvmValueError', () => {
      const assertOp = requireGlobalFunc('relax.run.assert_op');
      const re = /the assert condition must be a bool scalar/;
      assert.throws(() => assertOp.callSync(Tensor.fromSync([false, false], { dtype: 'bool' }), 'm'), isError(TvmValueError, re));
      assert.throws(() => assertOp.callSync(Tensor.fromSync([1], { shape: [] }), 'm'), isError(TvmValueError, re));
    });
  });
});
