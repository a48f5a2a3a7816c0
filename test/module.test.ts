import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  DisposedError,
  loadModule,
  loadModuleAsync,
  Module,
  PackedFunc,
  Tensor,
  TvmAttributeError,
  TvmError,
  TvmRuntimeError,
  TvmTypeError,
  TvmValueError,
} from '../lib';
import { assertMatches, fixture, inputTensor, npy, type Case } from './fixtures';

/** Builds the positional arguments of a kernel case: inputs from their .npy, outputs empty. */
function caseArgs(c: Case): Tensor[] {
  return c.args!.map((spec) => (spec.role === 'output' ? Tensor.empty(spec.shape as number[], spec.dtype) : inputTensor(spec)));
}

/** Checks every output argument of a case against its reference. */
function checkOutputs(c: Case, args: Tensor[], tol: { rtol: number; atol: number }): void {
  c.args!.forEach((spec, i) => {
    if (spec.role === 'output') assertMatches(args[i], spec, tol);
  });
}

/** The generated argument checks of `add_one` / `scale_int32` name the function's signature. */
const signature = (fn: string, dtype: string) => `${fn}(A: Tensor([n], ${dtype}), B: Tensor([n], ${dtype}))`;

function isError<E extends Error>(cls: new (...a: any[]) => E, re: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    assert.match((e as Error).message, re);
    return true;
  };
}

describe('Module (TIR kernel library)', () => {
  const fx = fixture('kernels');
  let mod: Module;
  let tmp: string;

  before(() => {
    mod = loadModule(fx.path);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-module-'));
  });
  after(() => {
    mod.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('loads a kernel library and reports its kind, functions and imports', () => {
    assert.equal(mod.typeKey, 'library');
    assert.equal(mod.disposed, false);
    assert.deepEqual(mod.imports, []);
    for (const name of ['add_one', 'scale_int32', 'nop']) {
      assert.equal(mod.implementsFunction(name), true, name);
      assert.equal(mod.implementsFunction(name, { queryImports: false }), true, name);
      const f = mod.getFunction(name);
      assert.ok(f instanceof PackedFunc);
      assert.equal(f.name, name);
      assert.equal(f.disposed, false);
      f.dispose();
    }
    assert.deepEqual(Object.keys(fx.functions!).sort(), ['add_one', 'nop', 'scale_int32']);
  });

  it('a Relax artifact imports its kernel library; queryImports controls the lookup', () => {
    const m = loadModule(fixture('mlp').path);
    assert.equal(m.typeKey, 'relax.VMExecutable');
    const imports = m.imports;
    assert.equal(imports.length, 1);
    assert.ok(imports[0] instanceof Module);
    assert.equal(imports[0].typeKey, 'library');
    assert.deepEqual(imports[0].imports, []);
    // The kernels live in the import: found through the executable only when imports are searched.
    for (const k of ['matmul', 'matmul1', 'relu']) {
      assert.equal(imports[0].implementsFunction(k), true, k);
      assert.equal(m.implementsFunction(k), true, k);
      assert.equal(m.implementsFunction(k, { queryImports: false }), false, k);
      assert.equal(m.getFunction(k, { queryImports: false }), null, k);
    }
    assert.equal(m.implementsFunction('vm_load_executable', { queryImports: false }), true);
    assert.equal(imports[0].implementsFunction('vm_load_executable'), false);

    // An imported kernel is callable directly: relu(lv1: [4, 32], compute: [4, 32]).
    const relu = m.requireFunction('relu');
    const data = Float32Array.from({ length: 128 }, (_, i) => (i % 7) - 3.5);
    const out = Tensor.empty([4, 32]);
    relu.call(Tensor.from(data, { shape: [4, 32] }), out);
    assert.deepEqual(Array.from(out.toArray() as Float32Array), Array.from(data, (v) => Math.max(v, 0)));

    // Disposing the executable leaves the import wrapper (its own reference) usable.
    m.dispose();
    assert.equal(imports[0].implementsFunction('relu'), true);
    imports[0].dispose();
    relu.dispose();
  });

  it('getFunction returns null and implementsFunction false for unknown names', () => {
    assert.equal(mod.getFunction('no_such_kernel'), null);
    assert.equal(mod.getFunction('no_such_kernel', { queryImports: false }), null);
    assert.equal(mod.getFunction(''), null);
    assert.equal(mod.implementsFunction('no_such_kernel'), false);
    assert.equal(mod.implementsFunction('add_one_'), false);
  });

  it('EXPECTED FAILURE - requireFunction of an unknown name is a TvmAttributeError', () => {
    assert.throws(() => mod.requireFunction('no_such_kernel'), isError(TvmAttributeError, /module \(library\) has no function 'no_such_kernel'/));
    // The module is unaffected.
    assert.equal(mod.implementsFunction('add_one'), true);
  });

  for (const fn of ['add_one', 'scale_int32']) {
    it(`calls ${fn} for every fixture case, sync (call) and async (callAsync), matching numpy`, async () => {
      const f = mod.requireFunction(fn);
      const cases = fx.functions![fn].cases;
      assert.ok(cases.length >= 1);
      for (const c of cases) {
        const syncArgs = caseArgs(c);
        assert.equal(f.call(...syncArgs), null, 'kernels return nothing (destination-passing style)');
        checkOutputs(c, syncArgs, fx.tolerance);

        const asyncArgs = caseArgs(c);
        assert.equal(await f.callAsync(...asyncArgs), null);
        checkOutputs(c, asyncArgs, fx.tolerance);

        // The inputs are left untouched.
        c.args!.forEach((spec, i) => {
          if (spec.role === 'input') assert.deepEqual(Array.from(syncArgs[i].toArray() as ArrayLike<number>), Array.from(npy(spec).data as ArrayLike<number>));
        });
        for (const t of [...syncArgs, ...asyncArgs]) t.dispose();
      }
      f.dispose();
    });
  }

  it('computes add_one and scale_int32 on hand-written data (n is dynamic)', () => {
    const addOne = mod.requireFunction('add_one');
    const a = Tensor.from(new Float32Array([-1.5, 0, 2.25, 1e6, -0]));
    const b = Tensor.empty([5]);
    addOne.call(a, b);
    assert.deepEqual(Array.from(b.toArray() as Float32Array), [-0.5, 1, 3.25, 1000001, 1]);

    const scale = mod.requireFunction('scale_int32');
    const x = Tensor.from(new Int32Array([0, 1, -7, 715827882, -715827882]));
    const y = Tensor.empty([5], 'int32');
    scale.call(x, y);
    assert.deepEqual(Array.from(y.toArray() as Int32Array), [0, 3, -21, 2147483646, -2147483646]);

    // Zero-length tensors are valid for a dynamic n.
    const e = Tensor.empty([0]);
    assert.equal(addOne.call(e, Tensor.empty([0])), null);
  });

  it('calls nop (argument checks only) with its fixture input', async () => {
    const nop = mod.requireFunction('nop');
    const [spec] = fx.functions!.nop.cases[0].args!;
    const x = inputTensor(spec);
    assert.equal(nop.call(x), null);
    assert.equal(await nop.callAsync(x), null);
    // nop must not write to its argument.
    assert.deepEqual(Array.from(x.toArray() as Float32Array), Array.from(npy(spec).data as Float32Array));
    assert.deepEqual(Array.from(x.toArray() as Float32Array), [0.5]);
  });

  it('loadModuleAsync gives an equivalent module', async () => {
    const m = await loadModuleAsync(fx.path);
    assert.ok(m instanceof Module);
    assert.equal(m.typeKey, 'library');
    assert.deepEqual(m.imports, []);
    assert.equal(m.implementsFunction('add_one'), true);
    assert.equal(m.getFunction('missing'), null);
    const c = fx.functions!.add_one.cases.at(-1)!;
    const args = caseArgs(c);
    await m.requireFunction('add_one').callAsync(...args);
    checkOutputs(c, args, fx.tolerance);
    m.dispose();
    assert.equal(m.disposed, true);
  });

  it('runs many async kernel calls in flight at once with correct results', async () => {
    const f = mod.requireFunction('add_one');
    const inputs = Array.from({ length: 24 }, (_, k) => Float32Array.from({ length: 100 + k }, (_, i) => i * 0.5 - k));
    const outs = inputs.map((a) => Tensor.empty([a.length]));
    await Promise.all(inputs.map((a, k) => f.callAsync(Tensor.from(a), outs[k])));
    outs.forEach((o, k) => assert.deepEqual(Array.from(o.toArray() as Float32Array), Array.from(inputs[k], (v) => v + 1)));
  });

  it('EXPECTED FAILURE - a missing file is a TvmRuntimeError naming the path (sync and async)', async () => {
    const missing = path.join(tmp, 'does-not-exist.so');
    assert.throws(() => loadModule(missing), isError(TvmRuntimeError, new RegExp(`${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} does not exist`)));
    await assert.rejects(loadModuleAsync(missing), isError(TvmRuntimeError, /does-not-exist\.so does not exist/));
    // A directory is not a module either.
    assert.throws(() => loadModule(tmp), isError(TvmRuntimeError, /is not a file/));
  });

  it('EXPECTED FAILURE - a corrupt .so (random bytes, a text file) is a TvmError, and the process survives', async () => {
    const random = path.join(tmp, 'random.so');
    fs.writeFileSync(random, crypto.randomBytes(8192));
    const text = path.join(tmp, 'x.so');
    fs.writeFileSync(text, 'this is not a shared library\n');
    const empty = path.join(tmp, 'empty.so');
    fs.writeFileSync(empty, '');
    for (const file of [random, text, empty]) {
      const re = new RegExp(`cannot load .*${path.basename(file).replace('.', '\\.')}.*Failed to load dynamic shared library.*tvm-node runs TVM runtime`, 's');
      assert.throws(() => loadModule(file), isError(TvmError, re));
      await assert.rejects(loadModuleAsync(file), isError(TvmError, re));
    }
    // Still alive: the real library loads and runs.
    const m = loadModule(fx.path);
    const b = Tensor.empty([2]);
    m.requireFunction('add_one').call(Tensor.from([1, 2]), b);
    assert.deepEqual(Array.from(b.toArray() as Float32Array), [2, 3]);
    m.dispose();
  });

  it('EXPECTED FAILURE - a kernel called with the wrong dtype raises TVM\'s TypeError (sync and async)', async () => {
    const addOne = mod.requireFunction('add_one');
    const scale = mod.requireFunction('scale_int32');
    const i32 = Tensor.from(new Int32Array([1, 2, 3]));
    const f32 = Tensor.from(new Float32Array([1, 2, 3]));
    const re = (fn: string, dtype: string, arg: string, idx: number) =>
      new RegExp(`Mismatched ${arg}\\.dtype on argument #${idx} when calling:[\\s\\S]*${signature(fn, dtype).replace(/[()[\]]/g, '\\$&')}[\\s\\S]*expected ${dtype}`);
    assert.throws(() => addOne.call(i32, Tensor.empty([3])), isError(TvmTypeError, re('add_one', 'float32', 'A', 0)));
    assert.throws(() => addOne.call(f32, Tensor.empty([3], 'float64')), isError(TvmTypeError, re('add_one', 'float32', 'B', 1)));
    assert.throws(() => scale.call(f32, Tensor.empty([3], 'int32')), isError(TvmTypeError, re('scale_int32', 'int32', 'A', 0)));
    await assert.rejects(scale.callAsync(i32, Tensor.empty([3], 'int64')), isError(TvmTypeError, re('scale_int32', 'int32', 'B', 1)));
    // A non-tensor argument.
    assert.throws(() => addOne.call(1, Tensor.empty([3])), isError(TvmTypeError, /Mismatched type on argument #0[\s\S]*expected Tensor/));
    assert.throws(() => addOne.call(f32, 2.5), isError(TvmTypeError, /Mismatched type on argument #1[\s\S]*expected Tensor/));
    assert.throws(() => addOne.call(f32, null), isError(TvmTypeError, /Mismatched type on argument #1[\s\S]*expected Tensor/));
    // The kernel still works after raising.
    const out = Tensor.empty([3]);
    addOne.call(f32, out);
    assert.deepEqual(Array.from(out.toArray() as Float32Array), [2, 3, 4]);
  });

  it('EXPECTED FAILURE - a kernel called with the wrong shape raises TVM\'s ValueError (sync and async)', async () => {
    const addOne = mod.requireFunction('add_one');
    const nop = mod.requireFunction('nop');
    const a = Tensor.from([1, 2, 3]);
    assert.throws(() => addOne.call(a, Tensor.empty([4])), isError(TvmValueError, /Mismatched B\.shape\[0\] on argument #1[\s\S]*expected to match A\.shape\[0\]/));
    assert.throws(() => addOne.call(Tensor.empty([3, 1]), Tensor.empty([3])), isError(TvmValueError, /Mismatched A\.ndim on argument #0[\s\S]*expected 1/));
    await assert.rejects(addOne.callAsync(a, Tensor.empty([2])), isError(TvmValueError, /Mismatched B\.shape\[0\]/));
    // nop's shape is static: [1].
    assert.throws(() => nop.call(a), isError(TvmValueError, /Invalid A\.shape\[0\] on argument #0 when calling:[\s\S]*nop\(A: Tensor\(\[1\], float32\)\)[\s\S]*expected 1/));
    const out = Tensor.empty([3]);
    addOne.call(a, out);
    assert.deepEqual(Array.from(out.toArray() as Float32Array), [2, 3, 4]);
  });

  it('EXPECTED FAILURE - a kernel called with the wrong number of arguments raises TVM\'s TypeError', async () => {
    const addOne = mod.requireFunction('add_one');
    const a = Tensor.from([1, 2, 3]);
    const b = Tensor.empty([3]);
    const re = /Expected 2 arguments when calling:[\s\S]*add_one\(A: Tensor\(\[n\], float32\), B: Tensor\(\[n\], float32\)\)/;
    assert.throws(() => addOne.call(), isError(TvmTypeError, re));
    assert.throws(() => addOne.call(a), isError(TvmTypeError, re));
    assert.throws(() => addOne.call(a, b, b), isError(TvmTypeError, re));
    await assert.rejects(addOne.callAsync(a), isError(TvmTypeError, re));
    assert.throws(() => mod.requireFunction('nop').call(), isError(TvmTypeError, /Expected 1 arguments? when calling/));
    addOne.call(a, b);
    assert.deepEqual(Array.from(b.toArray() as Float32Array), [2, 3, 4]);
  });

  it('a function outlives its disposed module; a disposed function is a DisposedError', async () => {
    const m = loadModule(fx.path);
    const f = m.requireFunction('scale_int32');
    m.dispose();
    m.dispose(); // idempotent
    assert.equal(m.disposed, true);
    assert.equal(f.disposed, false);

    // The library stays mapped while the function is alive.
    const x = Tensor.from(new Int32Array([1, -2, 300]));
    const y = Tensor.empty([3], 'int32');
    f.call(x, y);
    assert.deepEqual(Array.from(y.toArray() as Int32Array), [3, -6, 900]);
    const y2 = Tensor.empty([3], 'int32');
    await f.callAsync(x, y2);
    assert.deepEqual(Array.from(y2.toArray() as Int32Array), [3, -6, 900]);

    f.dispose();
    f.dispose(); // idempotent
    assert.equal(f.disposed, true);
  });

  it('BAD CALL - use of a disposed function or module is a DisposedError', async () => {
    const m = loadModule(fx.path);
    const f = m.requireFunction('add_one');
    f.dispose();
    const a = Tensor.from([1]);
    const b = Tensor.empty([1]);
    assert.throws(() => f.call(a, b), isError(DisposedError, /PackedFunc has been disposed/));
    await assert.rejects(f.callAsync(a, b), isError(DisposedError, /PackedFunc has been disposed/));
    m.dispose();
    assert.throws(() => m.getFunction('add_one'), isError(DisposedError, /Module has been disposed/));
    assert.throws(() => m.implementsFunction('add_one'), isError(DisposedError, /Module has been disposed/));
    assert.throws(() => m.typeKey, isError(DisposedError, /Module has been disposed/));
    assert.throws(() => m.imports, isError(DisposedError, /Module has been disposed/));
    // Other handles to the same library are unaffected.
    const g = mod.requireFunction('add_one');
    g.call(Tensor.from([41]), b);
    assert.deepEqual(Array.from(b.toArray() as Float32Array), [42]);
  });

  it('supports `using` for modules and functions', () => {
    let f: PackedFunc;
    let m: Module;
    {
      using mm = loadModule(fx.path);
      using ff = mm.requireFunction('add_one');
      m = mm;
      f = ff;
      const b = Tensor.empty([1]);
      ff.call(Tensor.from([1]), b);
      assert.deepEqual(Array.from(b.toArray() as Float32Array), [2]);
    }
    assert.equal(m.disposed, true);
    assert.equal(f.disposed, true);
  });
});
