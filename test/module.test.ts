import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import {
  DisposedError,
  loadModule,
  loadModuleSync,
  Module,
  outputsOf,
  PackedFunc,
  Tensor,
  TvmAttributeError,
  TvmRuntimeError,
  TvmTypeError,
  TvmValueError,
  VersionMismatchError,
  VirtualMachine,
} from '../lib';
import { assertMatches, type Case, fixture, fixtureFile, inputTensor, npy, repoRoot } from './fixtures';

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

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
    mod = loadModuleSync(fx.path);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-module-'));
  });
  after(() => {
    mod.disposeSync();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('loads a kernel library and reports its kind, functions and imports', () => {
    assert.equal(mod.typeKey, 'library');
    assert.equal(mod.disposed, false);
    assert.deepEqual(mod.imports, []);
    for (const name of ['add_one', 'scale_int32', 'nop']) {
      assert.equal(mod.implementsFunction(name), true, name);
      assert.equal(mod.implementsFunction(name, { queryImports: false }), true, name);
      const f = mod.getFunctionSync(name);
      assert.ok(f instanceof PackedFunc);
      assert.equal(f.name, name);
      assert.equal(f.disposed, false);
      f.disposeSync();
    }
    assert.deepEqual(Object.keys(fx.functions!).sort(), ['add_one', 'nop', 'scale_int32']);
  });

  it('a Relax artifact imports its kernel library; queryImports controls the lookup', () => {
    const m = loadModuleSync(fixture('mlp').path);
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
      assert.equal(m.getFunctionSync(k, { queryImports: false }), null, k);
    }
    assert.equal(m.implementsFunction('vm_load_executable', { queryImports: false }), true);
    assert.equal(imports[0].implementsFunction('vm_load_executable'), false);

    // An imported kernel is callable directly: relu(lv1: [4, 32], compute: [4, 32]).
    const relu = m.requireFunctionSync('relu');
    const data = Float32Array.from({ length: 128 }, (_, i) => (i % 7) - 3.5);
    const out = Tensor.empty([4, 32]);
    relu.callSync(Tensor.fromSync(data, { shape: [4, 32] }), out);
    assert.deepEqual(
      Array.from(out.toArraySync() as Float32Array),
      Array.from(data, (v) => Math.max(v, 0)),
    );

    // Disposing the executable leaves the import wrapper (its own reference) usable.
    m.disposeSync();
    assert.equal(imports[0].implementsFunction('relu'), true);
    imports[0].disposeSync();
    relu.disposeSync();
  });

  it('getFunction/getFunctionSync return null and implementsFunction false for unknown names', async () => {
    assert.equal(await mod.getFunction('no_such_kernel'), null);
    assert.equal(mod.getFunctionSync('no_such_kernel'), null);
    assert.equal(mod.getFunctionSync('no_such_kernel', { queryImports: false }), null);
    assert.equal(mod.getFunctionSync(''), null);
    assert.equal(mod.implementsFunction('no_such_kernel'), false);
    assert.equal(mod.implementsFunction('add_one_'), false);
  });

  it('requireFunction/requireFunctionSync of an unknown name is a TvmAttributeError', async () => {
    await assert.rejects(mod.requireFunction('no_such_kernel'), isError(TvmAttributeError, /module \(library\) has no function 'no_such_kernel'/));
    assert.throws(() => mod.requireFunctionSync('no_such_kernel'), isError(TvmAttributeError, /module \(library\) has no function 'no_such_kernel'/));
    // The module is unaffected.
    assert.equal(mod.implementsFunction('add_one'), true);
  });

  for (const fn of ['add_one', 'scale_int32']) {
    it(`calls ${fn} for every fixture case, sync (callSync) and async (call), matching numpy`, async () => {
      const f = mod.requireFunctionSync(fn);
      const cases = fx.functions![fn].cases;
      assert.ok(cases.length >= 1);
      for (const c of cases) {
        const syncArgs = caseArgs(c);
        assert.equal(f.callSync(...syncArgs), null, 'kernels return nothing (destination-passing style)');
        checkOutputs(c, syncArgs, fx.tolerance);

        const asyncArgs = caseArgs(c);
        assert.equal(await f.call(...asyncArgs), null);
        checkOutputs(c, asyncArgs, fx.tolerance);

        // The inputs are left untouched.
        c.args!.forEach((spec, i) => {
          if (spec.role === 'input')
            assert.deepEqual(Array.from(syncArgs[i].toArraySync() as ArrayLike<number>), Array.from(npy(spec).data as ArrayLike<number>));
        });
        for (const t of [...syncArgs, ...asyncArgs]) t.disposeSync();
      }
      f.disposeSync();
    });
  }

  it('computes add_one and scale_int32 on hand-written data (n is dynamic)', () => {
    const addOne = mod.requireFunctionSync('add_one');
    const a = Tensor.fromSync(new Float32Array([-1.5, 0, 2.25, 1e6, -0]));
    const b = Tensor.empty([5]);
    addOne.callSync(a, b);
    assert.deepEqual(Array.from(b.toArraySync() as Float32Array), [-0.5, 1, 3.25, 1000001, 1]);

    const scale = mod.requireFunctionSync('scale_int32');
    const x = Tensor.fromSync(new Int32Array([0, 1, -7, 715827882, -715827882]));
    const y = Tensor.empty([5], 'int32');
    scale.callSync(x, y);
    assert.deepEqual(Array.from(y.toArraySync() as Int32Array), [0, 3, -21, 2147483646, -2147483646]);

    // Zero-length tensors are valid for a dynamic n.
    const e = Tensor.empty([0]);
    assert.equal(addOne.callSync(e, Tensor.empty([0])), null);
  });

  it('calls nop (argument checks only) with its fixture input', async () => {
    const nop = mod.requireFunctionSync('nop');
    const [spec] = fx.functions!.nop.cases[0].args!;
    const x = inputTensor(spec);
    assert.equal(nop.callSync(x), null);
    assert.equal(await nop.call(x), null);
    // nop must not write to its argument.
    assert.deepEqual(Array.from(x.toArraySync() as Float32Array), Array.from(npy(spec).data as Float32Array));
    assert.deepEqual(Array.from(x.toArraySync() as Float32Array), [0.5]);
  });

  it("loadModule (async) gives a module equivalent to loadModuleSync's", async () => {
    const m = await loadModule(fx.path);
    assert.ok(m instanceof Module);
    assert.equal(m.typeKey, 'library');
    assert.deepEqual(m.imports, []);
    assert.equal(m.implementsFunction('add_one'), true);
    assert.equal(await m.getFunction('missing'), null);
    const c = fx.functions!.add_one.cases.at(-1)!;
    const args = caseArgs(c);
    const f = await m.requireFunction('add_one');
    assert.equal(f.name, 'add_one');
    await f.call(...args);
    checkOutputs(c, args, fx.tolerance);
    await f.dispose();
    const disposing = m.dispose();
    assert.equal(m.disposed, true);
    await disposing;
    await m.dispose(); // idempotent
  });

  it('runs many async kernel calls in flight at once with correct results', async () => {
    const f = mod.requireFunctionSync('add_one');
    const inputs = Array.from({ length: 24 }, (_, k) => Float32Array.from({ length: 100 + k }, (_, i) => i * 0.5 - k));
    const outs = inputs.map((a) => Tensor.empty([a.length]));
    await Promise.all(inputs.map((a, k) => f.call(Tensor.fromSync(a), outs[k])));
    outs.forEach((o, k) =>
      assert.deepEqual(
        Array.from(o.toArraySync() as Float32Array),
        Array.from(inputs[k], (v) => v + 1),
      ),
    );
  });

  it('a missing file or a directory is a TvmRuntimeError naming the path (sync and async)', async () => {
    const missing = path.join(tmp, 'does-not-exist.so');
    const named = (file: string, why: string) => new RegExp(`^cannot load ${escapeRe(file)}: ${why}$`);
    assert.throws(() => loadModuleSync(missing), isError(TvmRuntimeError, named(missing, 'no such file')));
    await assert.rejects(loadModule(missing), isError(TvmRuntimeError, named(missing, 'no such file')));
    // A missing folder on the way is the same.
    const deeper = path.join(tmp, 'no-such-folder', 'm.so');
    assert.throws(() => loadModuleSync(deeper), isError(TvmRuntimeError, named(deeper, 'no such file')));
    // A directory is not a module either, whatever its name says.
    const dirSo = path.join(tmp, 'folder.so');
    fs.mkdirSync(dirSo, { recursive: true });
    for (const dir of [tmp, dirSo]) {
      assert.throws(() => loadModuleSync(dir), isError(TvmRuntimeError, named(dir, 'it is a directory, not a file')));
      await assert.rejects(loadModule(dir), isError(TvmRuntimeError, named(dir, 'it is a directory, not a file')));
    }
  });

  it('a file that is not a shared library says so, without blaming TVM versions, and the process survives', async () => {
    const files: Array<[string, string | Buffer, RegExp]> = [
      ['x.so', 'this is not a shared library\n', /: not a shared library \(no ELF header: the file starts with text "this is not a shared library"\)$/],
      [
        'lfs.so',
        'version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n',
        /no ELF header: the file starts with a Git LFS pointer: fetch the real file \(git lfs pull\)\)$/,
      ],
      ['empty.so', '', /: the file is empty, not a shared library$/],
      [
        'random.so',
        Buffer.concat([Buffer.from([0x00, 0xff, 0x10, 0x80]), crypto.randomBytes(8188)]),
        /no ELF header: the file starts with bytes 00 ff 10 80( [0-9a-f]{2}){4}\)$/,
      ],
      ['short.so', Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1]), /: a truncated ELF file \(6 bytes\)$/],
    ];
    for (const [name, content, why] of files) {
      const file = path.join(tmp, name);
      fs.writeFileSync(file, content);
      const check = (e: unknown) => {
        isError(TvmValueError, new RegExp(`^cannot load ${escapeRe(file)}: `))(e);
        assert.match((e as Error).message, why);
        assert.doesNotMatch((e as Error).message, /TVM|Failed to load dynamic shared library/);
        return true;
      };
      assert.throws(() => loadModuleSync(file), check, name);
      await assert.rejects(loadModule(file), check, name);
    }
    // Still alive: the real library loads and runs.
    const m = loadModuleSync(fx.path);
    const b = Tensor.empty([2]);
    m.requireFunctionSync('add_one').callSync(Tensor.fromSync([1, 2]), b);
    assert.deepEqual(Array.from(b.toArraySync() as Float32Array), [2, 3]);
    m.disposeSync();
  });

  it('a truncated shared library is refused with the reason, never a SIGBUS (sync and async)', async () => {
    // The loader maps segments past the end of a cut file, and touching them kills the process.
    const cut = path.join(tmp, 'cut.so');
    fs.writeFileSync(cut, fs.readFileSync(fx.path).subarray(0, 4096));
    const truncated = new RegExp(`^cannot load ${escapeRe(cut)}: it is truncated or corrupt: its segments end at byte \\d+ of a 4096-byte file$`);
    assert.throws(() => loadModuleSync(cut), isError(TvmValueError, truncated));
    await assert.rejects(loadModule(cut), isError(TvmValueError, truncated));
    // The whole file still loads.
    const whole = await loadModule(fx.path);
    await whole.dispose();
  });

  it('an ELF file for another machine, or not a shared object, is refused with the reason', async () => {
    const original = fs.readFileSync(fx.path);
    /** The kernel library with its ELF header's 16-bit field at `offset` set to `value`. */
    const patched = (name: string, offset: number, value: number) => {
      const bytes = Buffer.from(original);
      bytes.writeUInt16LE(value, offset);
      const file = path.join(tmp, name);
      fs.writeFileSync(file, bytes);
      return file;
    };
    const [other, otherName] = process.arch === 'arm64' ? [62, 'x86-64'] : [183, 'aarch64'];
    const here = process.arch === 'arm64' ? 'aarch64' : 'x86-64';
    const foreign = patched('foreign.so', 18, other);
    const wrongArch = new RegExp(`^cannot load ${escapeRe(foreign)}: built for ${otherName}, but this process runs on ${here} \\(${process.arch}\\)`);
    assert.throws(() => loadModuleSync(foreign), isError(TvmValueError, wrongArch));
    await assert.rejects(loadModule(foreign), isError(TvmValueError, wrongArch));
    assert.throws(() => loadModuleSync(patched('gpu.so', 18, 190)), isError(TvmValueError, /built for CUDA, but this process runs on/));
    assert.throws(
      () => loadModuleSync(patched('object.so', 16, 1)),
      isError(TvmValueError, /: an object file \(ELF relocatable\), not a shared library: link it into one/),
    );
    assert.throws(() => loadModuleSync(patched('exec.so', 16, 2)), isError(TvmValueError, /: an executable, not a shared library$/));
    // A position-independent executable looks like a shared object: the loader's own words.
    const pie = path.join(tmp, 'pie.so');
    fs.copyFileSync('/bin/true', pie);
    assert.throws(
      () => loadModuleSync(pie),
      (e: unknown) => {
        assert.ok(e instanceof TvmRuntimeError || e instanceof TvmValueError, String(e));
        assert.match(
          (e as Error).message,
          new RegExp(`^cannot load ${escapeRe(pie)}: (cannot dynamically load position-independent executable|an executable, not a shared library)$`),
        );
        return true;
      },
    );
  });

  it('a missing symbol is a VersionMismatchError naming the symbol and the runtime versions', async () => {
    const src = path.join(tmp, 'needs.c');
    const lib = path.join(tmp, 'needs-symbol.so');
    // A data reference is bound when the library is loaded, even lazily (as TVM's loader does).
    fs.writeFileSync(src, 'extern int tvm_node_test_missing_symbol;\nint read_it(void) { return tvm_node_test_missing_symbol; }\n');
    // A C compiler comes with g++, a prerequisite of the project (.ci/run checks it).
    execFileSync('cc', ['-shared', '-fPIC', '-o', lib, src], { stdio: 'pipe' });
    const re = new RegExp(
      `^cannot load ${escapeRe(lib)}: undefined symbol: tvm_node_test_missing_symbol \\(tvm-node runs TVM runtime \\S+, tvm-ffi \\S+: .*compile it with a matching TVM\\)$`,
    );
    assert.throws(() => loadModuleSync(lib), isError(VersionMismatchError, re));
    await assert.rejects(loadModule(lib), isError(VersionMismatchError, re));
  });

  it("a kernel called with the wrong dtype raises TVM's TypeError (sync and async)", async () => {
    const addOne = mod.requireFunctionSync('add_one');
    const scale = mod.requireFunctionSync('scale_int32');
    const i32 = Tensor.fromSync(new Int32Array([1, 2, 3]));
    const f32 = Tensor.fromSync(new Float32Array([1, 2, 3]));
    const re = (fn: string, dtype: string, arg: string, idx: number) =>
      new RegExp(
        `Mismatched ${arg}\\.dtype on argument #${idx} when calling:[\\s\\S]*${signature(fn, dtype).replace(/[()[\]]/g, '\\$&')}[\\s\\S]*expected ${dtype}`,
      );
    assert.throws(() => addOne.callSync(i32, Tensor.empty([3])), isError(TvmTypeError, re('add_one', 'float32', 'A', 0)));
    assert.throws(() => addOne.callSync(f32, Tensor.empty([3], 'float64')), isError(TvmTypeError, re('add_one', 'float32', 'B', 1)));
    assert.throws(() => scale.callSync(f32, Tensor.empty([3], 'int32')), isError(TvmTypeError, re('scale_int32', 'int32', 'A', 0)));
    await assert.rejects(scale.call(i32, Tensor.empty([3], 'int64')), isError(TvmTypeError, re('scale_int32', 'int32', 'B', 1)));
    // A non-tensor argument.
    assert.throws(() => addOne.callSync(1, Tensor.empty([3])), isError(TvmTypeError, /Mismatched type on argument #0[\s\S]*expected Tensor/));
    assert.throws(() => addOne.callSync(f32, 2.5), isError(TvmTypeError, /Mismatched type on argument #1[\s\S]*expected Tensor/));
    assert.throws(() => addOne.callSync(f32, null), isError(TvmTypeError, /Mismatched type on argument #1[\s\S]*expected Tensor/));
    // The kernel still works after raising.
    const out = Tensor.empty([3]);
    addOne.callSync(f32, out);
    assert.deepEqual(Array.from(out.toArraySync() as Float32Array), [2, 3, 4]);
  });

  it("a kernel called with the wrong shape raises TVM's ValueError (sync and async)", async () => {
    const addOne = mod.requireFunctionSync('add_one');
    const nop = mod.requireFunctionSync('nop');
    const a = Tensor.fromSync([1, 2, 3]);
    assert.throws(
      () => addOne.callSync(a, Tensor.empty([4])),
      isError(TvmValueError, /Mismatched B\.shape\[0\] on argument #1[\s\S]*expected to match A\.shape\[0\]/),
    );
    assert.throws(() => addOne.callSync(Tensor.empty([3, 1]), Tensor.empty([3])), isError(TvmValueError, /Mismatched A\.ndim on argument #0[\s\S]*expected 1/));
    await assert.rejects(addOne.call(a, Tensor.empty([2])), isError(TvmValueError, /Mismatched B\.shape\[0\]/));
    // nop's shape is static: [1].
    assert.throws(
      () => nop.callSync(a),
      isError(TvmValueError, /Invalid A\.shape\[0\] on argument #0 when calling:[\s\S]*nop\(A: Tensor\(\[1\], float32\)\)[\s\S]*expected 1/),
    );
    const out = Tensor.empty([3]);
    addOne.callSync(a, out);
    assert.deepEqual(Array.from(out.toArraySync() as Float32Array), [2, 3, 4]);
  });

  it("a kernel called with the wrong number of arguments raises TVM's TypeError", async () => {
    const addOne = mod.requireFunctionSync('add_one');
    const a = Tensor.fromSync([1, 2, 3]);
    const b = Tensor.empty([3]);
    const re = /Expected 2 arguments when calling:[\s\S]*add_one\(A: Tensor\(\[n\], float32\), B: Tensor\(\[n\], float32\)\)/;
    assert.throws(() => addOne.callSync(), isError(TvmTypeError, re));
    assert.throws(() => addOne.callSync(a), isError(TvmTypeError, re));
    assert.throws(() => addOne.callSync(a, b, b), isError(TvmTypeError, re));
    await assert.rejects(addOne.call(a), isError(TvmTypeError, re));
    assert.throws(() => mod.requireFunctionSync('nop').callSync(), isError(TvmTypeError, /Expected 1 arguments? when calling/));
    addOne.callSync(a, b);
    assert.deepEqual(Array.from(b.toArraySync() as Float32Array), [2, 3, 4]);
  });

  it('a function outlives its disposed module; a disposed function is a DisposedError', async () => {
    const m = loadModuleSync(fx.path);
    const f = m.requireFunctionSync('scale_int32');
    m.disposeSync();
    m.disposeSync(); // idempotent
    assert.equal(m.disposed, true);
    assert.equal(f.disposed, false);

    // The library stays mapped while the function is alive.
    const x = Tensor.fromSync(new Int32Array([1, -2, 300]));
    const y = Tensor.empty([3], 'int32');
    f.callSync(x, y);
    assert.deepEqual(Array.from(y.toArraySync() as Int32Array), [3, -6, 900]);
    const y2 = Tensor.empty([3], 'int32');
    await f.call(x, y2);
    assert.deepEqual(Array.from(y2.toArraySync() as Int32Array), [3, -6, 900]);

    f.disposeSync();
    f.disposeSync(); // idempotent
    assert.equal(f.disposed, true);
  });

  it('BAD CALL - use of a disposed function or module is a DisposedError', async () => {
    const m = loadModuleSync(fx.path);
    const f = m.requireFunctionSync('add_one');
    f.disposeSync();
    const a = Tensor.fromSync([1]);
    const b = Tensor.empty([1]);
    assert.throws(() => f.callSync(a, b), isError(DisposedError, /PackedFunc has been disposed/));
    await assert.rejects(f.call(a, b), isError(DisposedError, /PackedFunc has been disposed/));
    m.disposeSync();
    assert.throws(() => m.getFunctionSync('add_one'), isError(DisposedError, /Module has been disposed/));
    assert.throws(() => m.implementsFunction('add_one'), isError(DisposedError, /Module has been disposed/));
    assert.throws(() => m.typeKey, isError(DisposedError, /Module has been disposed/));
    assert.throws(() => m.imports, isError(DisposedError, /Module has been disposed/));
    // Other handles to the same library are unaffected.
    const g = mod.requireFunctionSync('add_one');
    g.callSync(Tensor.fromSync([41]), b);
    assert.deepEqual(Array.from(b.toArraySync() as Float32Array), [42]);
  });

  it('supports `using` for modules and functions', () => {
    let f: PackedFunc;
    let m: Module;
    {
      using mm = loadModuleSync(fx.path);
      using ff = mm.requireFunctionSync('add_one');
      m = mm;
      f = ff;
      const b = Tensor.empty([1]);
      ff.callSync(Tensor.fromSync([1]), b);
      assert.deepEqual(Array.from(b.toArraySync() as Float32Array), [2]);
    }
    assert.equal(m.disposed, true);
    assert.equal(f.disposed, true);
  });
});

/** Runs VM fixture `name`'s first case on `vm` (runSync, or run when `async`), checking every output against numpy's. */
async function assertModel(vm: VirtualMachine, name: string, { async = false } = {}): Promise<void> {
  const f = fixture(name);
  const c = f.cases[0];
  const inputs = c.inputs.map(inputTensor);
  const outs = outputsOf<Tensor>(async ? await vm.run(f.function ?? 'main', ...inputs) : vm.runSync(f.function ?? 'main', ...inputs));
  assert.equal(outs.length, c.outputs.length, `${name}: number of outputs`);
  c.outputs.forEach((spec, i) => assertMatches(outs[i], spec, f.tolerance));
}

/** Ways of putting a new artifact where the old one was, each leaving a new inode at the path. */
const REPLACE: Record<string, (file: string, fx: string) => void> = {
  'renamed over the old one': (file, fx) => {
    fs.copyFileSync(fixture(fx).path, `${file}.partial`);
    fs.renameSync(`${file}.partial`, file);
  },
  'deleted and put back': (file, fx) => {
    fs.rmSync(file);
    fs.copyFileSync(fixture(fx).path, file);
  },
};

/** `cp new.so file`: writes the new bytes into the old inode. */
function overwriteInPlace(file: string, fx: string): void {
  const ino = fs.statSync(file).ino;
  execFileSync('cp', [fixture(fx).path, file]);
  assert.equal(fs.statSync(file).ino, ino, 'cp must have written into the same inode');
}

/** This process's folder of private copies (lib/module.ts). */
const PROCESS_DIR = path.join(os.tmpdir(), `tvm-node-${process.pid}`);
/** The files the dynamic loader has mapped now, as /proc/self/maps names them. */
const mapped = () =>
  new Set(
    fs
      .readFileSync('/proc/self/maps', 'utf8')
      .split('\n')
      .map((l) => l.split(/\s+/).slice(5).join(' '))
      .filter(Boolean),
  );

describe('loadModule of a changed file, relative paths', () => {
  let dir: string;
  const disposeLater: Array<{ dispose(): unknown }> = [];

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-reload-'));
  });
  afterEach(async () => {
    for (const d of disposeLater.splice(0).reverse()) await d.dispose();
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** Loads `file` (sync or async) and makes a VM over it, both released after the test. */
  async function load(file: string, opts: { async?: boolean; privateCopy?: boolean } = {}): Promise<VirtualMachine> {
    const mod = opts.async ? await loadModule(file, { privateCopy: opts.privateCopy }) : loadModuleSync(file, { privateCopy: opts.privateCopy });
    const vm = new VirtualMachine(mod);
    disposeLater.push(mod, vm);
    return vm;
  }

  for (const [how, replace] of Object.entries(REPLACE)) {
    it(`a file ${how} gives the new model, sync and async; VMs of the old one keep giving the old results`, async () => {
      const file = path.join(dir, `${how.split(' ')[0]}.so`);
      fs.copyFileSync(fixture('mlp').path, file);
      const mlp = await load(file);
      await assertModel(mlp, 'mlp');
      // The first load maps the file itself: no copy in the usual case.
      assert.ok(mapped().has(file), `${file} is not mapped`);

      replace(file, 'conv');
      const conv = await load(file);
      await assertModel(conv, 'conv');
      await assertModel(mlp, 'mlp');
      await assertModel(mlp, 'mlp', { async: true });

      replace(file, 'multi_out');
      const multi = await load(file, { async: true });
      await assertModel(multi, 'multi_out', { async: true });
      await assertModel(conv, 'conv', { async: true });
      await assertModel(mlp, 'mlp');
      // Loading the current version again gives it again.
      await assertModel(await load(file), 'multi_out');

      // The changed versions came from private copies, each removed once loaded.
      const stem = path.basename(file, '.so');
      const copies = [...mapped()].filter((m) => m.startsWith(`${PROCESS_DIR}/${stem}-`));
      assert.ok(copies.length >= 2, `copies mapped: ${copies.join(', ')}`);
      for (const c of copies) assert.match(c, new RegExp(`^${escapeRe(PROCESS_DIR)}/${stem}-[0-9a-f]{16}-[0-9a-f]{12}\\.so \\(deleted\\)$`));
      assert.deepEqual(
        fs.readdirSync(PROCESS_DIR).filter((f) => f.startsWith(`${stem}-`)),
        [],
      );
    });
  }

  it('a file overwritten in place (cp) gives the new model, sync and async', () => {
    // The module loaded from the file itself cannot survive this (its code is the file's
    // pages, rewritten under it), so the scenario runs in a process of its own that is killed
    // at the end rather than left to unload that module.
    const file = path.join(dir, 'in-place.so');
    fs.copyFileSync(fixture('mlp').path, file);
    const child = `
      const fs = require('node:fs');
      const { execFileSync } = require('node:child_process');
      const T = require(process.env.LIB);
      const file = process.env.FILE;
      const input = (f) => { const a = T.readNpy(f); return T.Tensor.fromSync(a.data, { shape: a.shape, dtype: a.dtype }); };
      const out = (r) => T.outputsOf(r).map((t) => ({ shape: t.shape, data: Array.from(t.toArraySync()) }));
      (async () => {
        const old = new T.VirtualMachine(T.loadModuleSync(file));
        const before = out(old.runSync('main', input(process.env.MLP_IN)));
        const ino = fs.statSync(file).ino;
        execFileSync('cp', [process.env.CONV_SO, file]);
        const inoAfter = fs.statSync(file).ino;
        const sync = out(new T.VirtualMachine(T.loadModuleSync(file)).runSync('main', input(process.env.CONV_IN)));
        const later = out(await new T.VirtualMachine(await T.loadModule(file)).run('main', input(process.env.CONV_IN)));
        fs.writeSync(1, JSON.stringify({ ino, inoAfter, before, sync, later }) + '\\n');
        process.kill(process.pid, 'SIGKILL');
      })().catch((e) => { fs.writeSync(2, String((e && e.stack) || e)); process.kill(process.pid, 'SIGKILL'); });
    `;
    const [mlp, conv] = [fixture('mlp'), fixture('conv')];
    const env = {
      ...process.env,
      LIB: path.join(repoRoot, 'lib'),
      FILE: file,
      MLP_IN: fixtureFile(mlp.cases[0].inputs[0]),
      CONV_IN: fixtureFile(conv.cases[0].inputs[0]),
      CONV_SO: conv.path,
    };
    const r = spawnSync(process.execPath, ['-r', require.resolve('tsx/cjs'), '-e', child], { env, encoding: 'utf8', timeout: 60_000 });
    fs.rmSync(path.join(os.tmpdir(), `tvm-node-${r.pid}`), { recursive: true, force: true });
    assert.equal(r.signal, 'SIGKILL', `child ended with ${r.status}/${r.signal}: ${r.stderr}`);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<'before' | 'sync' | 'later', Array<{ shape: number[]; data: number[] }>> & {
      ino: number;
      inoAfter: number;
    };
    assert.equal(report.inoAfter, report.ino, 'the scenario must overwrite the same inode');
    const check = (got: Array<{ shape: number[]; data: number[] }>, fx: typeof mlp) => {
      assert.equal(got.length, 1);
      assertMatches(Tensor.fromSync(Float32Array.from(got[0].data), { shape: got[0].shape }), fx.cases[0].outputs[0], fx.tolerance);
    };
    check(report.before, mlp);
    check(report.sync, conv);
    check(report.later, conv);
  });

  it('with privateCopy a module survives its file being overwritten in place', async () => {
    const file = path.join(dir, 'private.so');
    fs.copyFileSync(fixture('mlp').path, file);
    const mlp = await load(file, { privateCopy: true });
    overwriteInPlace(file, 'conv');
    const conv = await load(file, { privateCopy: true, async: true });
    await assertModel(conv, 'conv', { async: true });
    await assertModel(mlp, 'mlp', { async: true });
    await assertModel(mlp, 'mlp');
    overwriteInPlace(file, 'multi_out');
    await assertModel(await load(file, { privateCopy: true }), 'multi_out');
    await assertModel(conv, 'conv');
    await assertModel(mlp, 'mlp');
    assert.ok(!mapped().has(file), 'loaded from the file itself');
  });

  it("what was loaded is recorded for the whole process: a worker thread's old model does not come back", async () => {
    const file = path.join(dir, 'threads.so');
    fs.copyFileSync(fixture('mlp').path, file);
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      require(workerData.tsx);
      const T = require(workerData.lib);
      const a = T.readNpy(workerData.input);
      const vm = new T.VirtualMachine(T.loadModuleSync(workerData.file));
      parentPort.postMessage('loaded');
      parentPort.once('message', () => {
        const [y] = T.outputsOf(vm.runSync('main', T.Tensor.fromSync(a.data, { shape: a.shape })));
        parentPort.postMessage({ shape: y.shape, data: Array.from(y.toArraySync()) });
      });
    `;
    const mlp = fixture('mlp');
    const worker = new Worker(code, {
      eval: true,
      workerData: { tsx: require.resolve('tsx/cjs'), lib: path.join(repoRoot, 'lib'), file, input: fixtureFile(mlp.cases[0].inputs[0]) },
    });
    try {
      const next = () =>
        new Promise<unknown>((resolve, reject) => {
          worker.once('message', resolve);
          worker.once('error', reject);
        });
      assert.equal(await next(), 'loaded');
      // This thread has never loaded the file; the worker holds the old version.
      REPLACE['renamed over the old one'](file, 'conv');
      await assertModel(await load(file), 'conv');
      const reply = next();
      worker.postMessage('run');
      const y = (await reply) as { shape: number[]; data: number[] };
      assertMatches(Tensor.fromSync(Float32Array.from(y.data), { shape: y.shape }), mlp.cases[0].outputs[0], mlp.tolerance);
    } finally {
      await worker.terminate();
    }
  });

  it('a bare or relative name is taken from the current directory (sync, async, VirtualMachine.load)', async () => {
    const cwd = process.cwd();
    const here = fs.realpathSync(fs.mkdtempSync(path.join(dir, 'cwd-')));
    fs.copyFileSync(fixture('mlp').path, path.join(here, 'model.so'));
    process.chdir(here);
    try {
      await assertModel(await load('model.so'), 'mlp');
      await assertModel(await load('model.so', { async: true }), 'mlp', { async: true });
      const vm = await VirtualMachine.load('./model.so');
      disposeLater.push(vm.module, vm);
      await assertModel(vm, 'mlp');
      // An error names the file it looked for.
      assert.throws(
        () => loadModuleSync('nope.so'),
        isError(TvmRuntimeError, new RegExp(`^cannot load ${escapeRe(path.join(here, 'nope.so'))}: no such file$`)),
      );
    } finally {
      process.chdir(cwd);
    }
  });
});
