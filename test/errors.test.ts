/**
 * One error model: every error tvm-node raises, from TVM, from the native layer's argument
 * conversions, from lib/'s own checks, from the RPC wire and handshake and from the CLI, is
 * a TvmError subclass with a stable `kind`; an error that explains another keeps it as its
 * `cause`. One row per bad call, on real objects and real fixtures.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  cpu,
  DisposedError,
  dataType,
  getGlobalFunc,
  int,
  loadModuleSync,
  type Module,
  registerFunc,
  Shape,
  Tensor,
  TvmAssertionError,
  TvmError,
  TvmRuntimeError,
  TvmTypeError,
  TvmValueError,
  VirtualMachine,
} from '../lib';
import { CliError, describeFailure, UsageError } from '../lib/cli/errors';
import { inputTensor as cliInputTensor, parseInputSpec, parseShape } from '../lib/cli/inputs';
import { percentile } from '../lib/cli/stats';
import { dtypeOfArray } from '../lib/dtype';
import { decodeTensors } from '../lib/rpc/infer';
import { HandshakeError, parseClientKey } from '../lib/rpc/protocol';
import { WireDecoder, WireError } from '../lib/rpc/wire';
import { fixture } from './fixtures';

type Ctor = abstract new (...args: never[]) => TvmError;

/** One bad call and the error it must raise. */
interface Row {
  what: string;
  call: () => unknown;
  cls: Ctor;
  kind: string;
  message: RegExp;
  /** Checks of the error's `cause`, for errors that explain another. */
  cause?: (cause: unknown) => void;
}

/** The error `call` throws or rejects with; fails when it succeeds. */
async function errorOf(call: () => unknown): Promise<unknown> {
  try {
    await call();
  } catch (err) {
    return err;
  }
  assert.fail('expected an error, but the call succeeded');
}

function check(row: Row, err: unknown): void {
  const e = err as Error;
  const where = `${row.what}: got ${e?.constructor?.name} ${JSON.stringify(e?.message)}`;
  assert.ok(err instanceof TvmError, `${where}: not a TvmError`);
  assert.ok(err instanceof row.cls, `${where}: not a ${row.cls.name}`);
  assert.equal(err.kind, row.kind, `${where}: kind`);
  assert.equal(err.name, err.constructor.name, `${where}: name`);
  assert.match(err.message, row.message, where);
  if (row.cause) row.cause(err.cause);
}

describe('errors: one hierarchy, stable kinds', () => {
  const kernels = fixture('kernels');
  const mlp = fixture('mlp');
  let mod: Module;
  let vm: VirtualMachine;
  let tmp: string;
  let unregister: () => void;

  before(() => {
    mod = loadModuleSync(kernels.path);
    vm = VirtualMachine.loadSync(mlp.path);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-errors-'));
    fs.writeFileSync(path.join(tmp, 'text.so'), 'not a shared library\n');
    unregister = registerFunc('tvm_node.test.errors.returns_object', () => ({ a: 1 })).unregister;
  });
  after(async () => {
    unregister();
    await vm.dispose();
    mod.disposeSync();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const x = () => Tensor.fromSync(new Float32Array(4 * 16), { shape: [4, 16] });
  const addOne = () => mod.requireFunctionSync('add_one');

  const rows = (): Row[] => [
    // ---- native argument conversions (native/convert.cc): TvmTypeError / TvmValueError ----
    {
      what: 'fn.callSync({a: 1})',
      call: () => addOne().callSync({ a: 1 }),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /^cannot pass this object to TVM \(expected a Tensor, PackedFunc, Module, Device, Shape, DataType, array, number, bigint, string or bytes\)$/,
    },
    {
      what: 'fn.call({a: 1}) (thread pool)',
      call: () => addOne().call({ a: 1 }),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /^cannot pass this object to TVM/,
    },
    {
      what: "vm.run('main', {x: t})",
      call: () => vm.run('main', { x: x() }),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /^cannot pass this object to TVM/,
    },
    {
      what: "vm.runSync('main', {x: t})",
      call: () => vm.runSync('main', { x: x() }),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /^cannot pass this object to TVM/,
    },
    {
      what: 'a JS function as an argument',
      call: () => addOne().callSync(() => 1),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /^cannot pass a JS function or symbol to TVM directly \(use registerFunc\)$/,
    },
    {
      what: 'a bigint beyond int64',
      call: () => addOne().callSync(2n ** 64n),
      cls: TvmValueError,
      kind: 'ValueError',
      message: /^bigint argument does not fit in int64$/,
    },
    {
      what: 'int() beyond int64',
      call: () => addOne().callSync(int(-(2n ** 63n) - 1n)),
      cls: TvmValueError,
      kind: 'ValueError',
      message: /^bigint argument does not fit in int64$/,
    },
    {
      what: 'a Shape with a string dimension',
      call: () => addOne().callSync(new Shape(['x' as unknown as number])),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /^shape dimension 0 must be an integer, got string$/,
    },
    {
      what: 'a malformed dtype',
      call: () => addOne().callSync(dataType('bogus_type')),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /unknown dtype `bogus_type`/,
    },
    {
      what: "N-API's own error (a dtype that is not a string) in a conversion",
      call: () => addOne().callSync(dataType(42 as unknown as string)),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /string was expected/i,
      cause: (c) => assert.ok(c instanceof Error && !(c instanceof TvmError), `cause: ${String(c)}`),
    },
    {
      what: 'a registered JS function returning an object (its own failure, a RuntimeError)',
      call: () => getGlobalFunc('tvm_node.test.errors.returns_object')!.callSync(),
      cls: TvmRuntimeError,
      kind: 'RuntimeError',
      message: /^cannot pass this object to TVM/,
    },
    // ---- native functions (native/function.cc, native/tensor.cc) ----
    {
      what: 'getGlobalFunc(undefined)',
      call: () => getGlobalFunc(undefined as unknown as string),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /^getGlobalFunc: the name must be a string, got undefined$/,
    },
    {
      what: 'registerFunc(42, fn)',
      call: () => registerFunc(42 as unknown as string, () => 1),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /^registerFunc: the name must be a string, got number$/,
    },
    {
      what: 'native copyFromBytes of the wrong size (CheckSameSize)',
      call: () => x().handle.copyFromBytes(new Float32Array(3)),
      cls: TvmValueError,
      kind: 'ValueError',
      message: /^host buffer has 12 bytes but the tensor needs 256$/,
    },
    {
      what: 'native copyToBytesAsync of the wrong size (CheckSameSize)',
      call: () => x().handle.copyToBytesAsync(new Uint8Array(1)),
      cls: TvmValueError,
      kind: 'ValueError',
      message: /^host buffer has 1 bytes but the tensor needs 256$/,
    },
    {
      what: 'native copyFromBytes of a string',
      call: () => x().handle.copyFromBytes('abc' as unknown as Uint8Array),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /^expected a TypedArray, Buffer or ArrayBuffer$/,
    },
    {
      what: 'native copyFrom of a non-tensor',
      call: () => x().handle.copyFrom({} as never),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /^expected a Tensor$/,
    },
    {
      what: 'Tensor.fromDLPack of a plain object',
      call: () => Tensor.fromDLPack({} as never),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /^fromDLPack\(\) expects a capsule made by toDLPack\(\)$/,
    },
    {
      what: 'a disposed tensor',
      call: () => {
        const t = x();
        t.disposeSync();
        return addOne().callSync(t, t);
      },
      cls: DisposedError,
      kind: 'DisposedError',
      message: /^Tensor has been disposed$/,
    },
    // ---- TVM's own errors ----
    {
      what: 'a kernel called with the wrong dtype',
      call: () => addOne().callSync(Tensor.fromSync(new Int32Array(3)), Tensor.empty([3])),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /^Mismatched A\.dtype on argument #0 when calling:/,
    },
    {
      what: 'a kernel called with the wrong shape',
      call: () => addOne().call(Tensor.fromSync([1, 2, 3]), Tensor.empty([4])),
      cls: TvmValueError,
      kind: 'ValueError',
      message: /^Mismatched B\.shape\[0\] on argument #1/,
    },
    // ---- lib/'s checks, with causes ----
    {
      what: 'loading a missing file',
      call: () => loadModuleSync(path.join(tmp, 'none.so')),
      cls: TvmRuntimeError,
      kind: 'RuntimeError',
      message: /^cannot load .*none\.so: no such file$/,
      cause: (c) => assert.equal((c as NodeJS.ErrnoException).code, 'ENOENT'),
    },
    {
      what: 'loading a text file named .so',
      call: () => loadModuleSync(path.join(tmp, 'text.so')),
      cls: TvmValueError,
      kind: 'ValueError',
      message: /^cannot load .*text\.so: /,
    },
    {
      what: 'an unknown dtype',
      call: () => Tensor.fromSync([1, 2], { dtype: 'float99' }),
      cls: TvmValueError,
      kind: 'ValueError',
      message: /^unsupported dtype 'float99' \(supported: /,
    },
    {
      what: 'a TypedArray of another dtype',
      call: () => Tensor.fromSync(new Float32Array(4), { dtype: 'float16' }),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /^a Float32Array cannot hold float16 data/,
    },
    {
      what: 'a DataView (no dtype to infer)',
      call: () => Tensor.fromSync(new DataView(new ArrayBuffer(4)) as never),
      cls: TvmTypeError,
      kind: 'TypeError',
      message: /^cannot infer a dtype from a DataView/,
    },
    {
      what: 'percentile of no values',
      call: () => percentile([], 50),
      cls: TvmValueError,
      kind: 'ValueError',
      message: /^percentile of no values$/,
    },
    // ---- RPC ----
    {
      what: 'a truncated packed sequence (WireError)',
      call: () => new WireDecoder(Buffer.from([1, 0, 0, 0])).values(),
      cls: WireError,
      kind: 'ValueError',
      message: /^truncated packet: wanted 4 bytes at offset 4 of 4$/,
    },
    {
      what: 'a TNI1 blob that is not one',
      call: () => decodeTensors(Buffer.from('junk')),
      cls: TvmValueError,
      kind: 'ValueError',
      message: /^bad tensor blob: /,
    },
    {
      what: 'a handshake key without client: (HandshakeError)',
      call: () => parseClientKey('server:x'),
      cls: HandshakeError,
      kind: 'HandshakeError',
      message: /^not a client key: "server:x"$/,
    },
    // ---- CLI ----
    {
      what: "--input '=x.npy' (UsageError)",
      call: () => parseInputSpec('=x.npy'),
      cls: UsageError,
      kind: 'usage',
      message: /^empty name before '='$/,
    },
    {
      what: "--shape '1xq' (UsageError)",
      call: () => parseShape('1xq'),
      cls: UsageError,
      kind: 'usage',
      message: /^bad shape '1xq'$/,
    },
    {
      what: 'a missing input file (CliError)',
      call: () => cliInputTensor({ name: 'x', source: { kind: 'file', file: path.join(tmp, 'none.npy') } }, cpu()),
      cls: CliError,
      kind: 'ENOENT',
      message: /^cannot read input 'x' from .*none\.npy: no such file$/,
      cause: (c) => assert.equal((c as NodeJS.ErrnoException).code, 'ENOENT'),
    },
  ];

  it('raises a TvmError subclass with its kind and message for every bad call', async () => {
    const table = rows();
    for (const row of table) check(row, await errorOf(row.call));
    assert.ok(table.length >= 30);
  });

  it("wraps the loader's error as the cause of a load error, instead of rewriting it", () => {
    // A shared library whose dependency is gone: the dynamic loader refuses it.
    const dir = path.join(tmp, 'dl');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'dep.c'), 'int dep(void) { return 1; }\n');
    fs.writeFileSync(path.join(dir, 'm.c'), 'int dep(void);\nint f(void) { return dep(); }\n');
    // A C compiler comes with g++, a prerequisite of the project (.ci/run checks it).
    execFileSync('cc', ['-shared', '-fPIC', '-o', 'libtvmnodegone.so', 'dep.c'], { cwd: dir, stdio: 'ignore' });
    execFileSync('cc', ['-shared', '-fPIC', '-o', 'm.so', 'm.c', '-L.', '-ltvmnodegone'], { cwd: dir, stdio: 'ignore' });
    fs.rmSync(path.join(dir, 'libtvmnodegone.so'));
    const file = path.join(dir, 'm.so');
    check(
      {
        what: 'a library whose dependency is missing',
        call: () => undefined,
        cls: TvmRuntimeError,
        kind: 'RuntimeError',
        message: new RegExp(`^cannot load ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: libtvmnodegone\\.so: cannot open shared object file`),
        cause: (c) => {
          // TVM's own error, untouched: its kind, its message naming the file it was given.
          assert.ok(c instanceof TvmError, `cause: ${String(c)}`);
          assert.match(c.message, /Failed to load dynamic shared library/);
          assert.notEqual(c.kind, '');
        },
      },
      (() => {
        try {
          loadModuleSync(file);
        } catch (e) {
          return e;
        }
        return assert.fail('loaded a library with a missing dependency');
      })(),
    );
  });

  it('the process and the objects survive every row', async () => {
    const out = Tensor.empty([3]);
    addOne().callSync(Tensor.fromSync([1, 2, 3]), out);
    assert.deepEqual(Array.from(out.toArraySync() as Float32Array), [2, 3, 4]);
    assert.ok(await vm.run('main', x()));
  });

  it('dtypeOfArray: the one inference, uint16 for a Uint16Array', () => {
    assert.equal(dtypeOfArray(new Uint16Array(1)), 'uint16');
    assert.equal(dtypeOfArray(Buffer.alloc(1)), 'uint8');
    assert.equal(dtypeOfArray(new BigUint64Array(1)), 'uint64');
    assert.equal(Tensor.fromSync(new Uint16Array(2)).dtype, 'uint16');
    assert.throws(
      () => dtypeOfArray(new Uint8ClampedArray(1)),
      (e: unknown) => e instanceof TvmTypeError && /Uint8ClampedArray/.test(e.message),
    );
  });

  it('the CLI keeps its exit statuses and its one-line format for the TvmError subclasses', () => {
    const usage = describeFailure(new UsageError('bad flag'), 'run');
    assert.deepEqual(usage, { lines: ['tvm-node: bad flag [usage]', 'hint: run `tvm-node run --help` for usage'], exitCode: 2 });
    const cli = describeFailure(new CliError('cannot read it', 'ENOENT', 'check the path'));
    assert.deepEqual(cli, { lines: ['tvm-node: cannot read it [ENOENT]', 'hint: check the path'], exitCode: 1 });
    const wire = describeFailure(new WireError('too busy', 'RPCServerBusy'));
    assert.deepEqual(wire.lines[0], 'tvm-node: too busy [RPCServerBusy]');
    assert.ok(new UsageError('x') instanceof TvmError && new CliError('x', 'K') instanceof TvmError);
    assert.ok(new TvmAssertionError('AssertionError', 'x') instanceof TvmError);
  });
});
