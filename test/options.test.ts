/**
 * Every public option and argument is checked where it is given (issue 9): a BAD CALL row
 * per option or argument, each naming the entry point, the parameter, what it must be and
 * the value received; a few GOOD CALL rows prove valid calls still work.
 *
 * A row fails when the call succeeds, fails later or elsewhere (another class, another
 * message), or, for an API that returns a promise, throws instead of rejecting.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  abiFingerprint,
  connect,
  connectTracker,
  cpu,
  cuda,
  Device,
  device,
  encodeNpy,
  getGlobalFunc,
  loadModule,
  loadModuleSync,
  Model,
  type Module,
  metal,
  opencl,
  parseNpy,
  RPCServer,
  type RPCSession,
  readNpy,
  registerFunc,
  Tensor,
  TrackerClient,
  TvmError,
  TvmTypeError,
  TvmValueError,
  tensorFromNpy,
  VirtualMachine,
  vulkan,
  writeNpy,
} from '../lib';
import { ModelRepository } from '../lib/rpc/repository';
import { assertMatches, fixture, inputTensor, npy } from './fixtures';

type ErrorClass = typeof TvmTypeError | typeof TvmValueError;

interface BadCall {
  /** What is wrong, for the test's title. */
  what: string;
  /** Makes the bad call. */
  call: () => unknown;
  /** 'sync': must throw; 'async': must return a promise that rejects (and not throw). */
  mode: 'sync' | 'async';
  cls: ErrorClass;
  message: RegExp;
}

const bad = (what: string, call: () => unknown, cls: ErrorClass, message: RegExp): BadCall => ({ what, call, mode: 'sync', cls, message });
const badAsync = (what: string, call: () => unknown, cls: ErrorClass, message: RegExp): BadCall => ({ what, call, mode: 'async', cls, message });

/** Releases whatever a call that should have failed made, so a failing row leaks nothing. */
async function release(made: unknown): Promise<void> {
  const m = made as { dispose?: () => unknown; [Symbol.dispose]?: () => void } | null;
  if (m && typeof m === 'object') {
    if (typeof m.dispose === 'function') await m.dispose();
    else if (typeof m[Symbol.dispose] === 'function') m[Symbol.dispose]!();
  }
}

/** Runs a row: the call must fail in the row's mode with its class and message. */
async function expectBadCall(row: BadCall): Promise<void> {
  let result: unknown;
  try {
    result = row.call();
  } catch (err) {
    assert.equal(row.mode, 'sync', `a promise API threw instead of rejecting: ${String(err)}`);
    return checkError(row, err);
  }
  assert.equal(row.mode, 'async', `no error thrown; the call returned ${String(result)}`);
  assert.ok(result instanceof Promise, `an async API returned ${String(result)}, not a promise`);
  let made: unknown;
  try {
    made = await result;
  } catch (err) {
    return checkError(row, err);
  }
  await release(made);
  assert.fail(`the promise resolved with ${String(made)} instead of rejecting`);
}

function checkError(row: BadCall, err: unknown): void {
  assert.ok(err instanceof TvmError, `not a TvmError: ${String(err)}`);
  assert.ok(err instanceof row.cls, `${err.name} (${err.message}), expected ${row.cls.name}`);
  assert.equal(err.kind, row.cls === TvmTypeError ? 'TypeError' : 'ValueError');
  assert.match(err.message, row.message);
}

const HOST = '127.0.0.1';
/** A port nothing listens on: a call whose check is missing fails fast instead of connecting. */
const CLOSED_PORT = 1;

describe('options and arguments: BAD CALL rows (lib/options.ts at every public entry point)', function () {
  this.timeout(60_000);
  const mlp = () => fixture('mlp').path;
  let module: Module;
  let model: Model;
  let tensor: Tensor;
  let server: RPCServer;
  let session: RPCSession;
  let port: number;
  let dir: string;
  const fn = () => 1;

  before(async () => {
    module = loadModuleSync(mlp());
    model = Model.loadSync(mlp());
    tensor = Tensor.fromSync([1, 2]);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-options-'));
    fs.copyFileSync(mlp(), path.join(dir, 'mlp.so'));
    server = new RPCServer({ host: HOST, port: 0, inferenceOnly: true, modelsDir: dir });
    ({ port } = await server.listen());
    session = await connect(HOST, port);
  });

  after(async () => {
    await session?.dispose();
    await server?.close(1000);
    await tensor?.dispose();
    await model?.dispose();
    await module?.dispose();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const f32 = new Float32Array(4);
  const npyFile = () => path.join(dir, 'x.npy');

  const rows: BadCall[] = [
    // ---- VirtualMachine: constructor, load, loadSync, create ----
    bad(
      'VirtualMachine concurrency NaN',
      () => new VirtualMachine(module, { concurrency: NaN }),
      TvmValueError,
      /^VirtualMachine: concurrency must be a whole number >= 1, got NaN$/,
    ),
    bad(
      'VirtualMachine concurrency 0',
      () => new VirtualMachine(module, { concurrency: 0 }),
      TvmValueError,
      /^VirtualMachine: concurrency must be a whole number >= 1, got 0$/,
    ),
    bad(
      'VirtualMachine concurrency 2.5',
      () => new VirtualMachine(module, { concurrency: 2.5 }),
      TvmValueError,
      /^VirtualMachine: concurrency must be a whole number >= 1, got 2\.5$/,
    ),
    bad(
      'VirtualMachine concurrency a string',
      () => new VirtualMachine(module, { concurrency: '4' as never }),
      TvmTypeError,
      /^VirtualMachine: concurrency must be a whole number >= 1, got "4"$/,
    ),
    bad(
      "VirtualMachine memory 'fast'",
      () => new VirtualMachine(module, { memory: 'fast' as never }),
      TvmValueError,
      /^VirtualMachine: memory must be one of 'pooled', 'naive', got "fast"$/,
    ),
    bad(
      'VirtualMachine memory a number',
      () => new VirtualMachine(module, { memory: 2 as never }),
      TvmTypeError,
      /^VirtualMachine: memory must be one of 'pooled', 'naive', got 2$/,
    ),
    bad(
      'VirtualMachine devices not an array',
      () => new VirtualMachine(module, { devices: cpu() as never }),
      TvmTypeError,
      /^VirtualMachine: devices must be a non-empty array of Devices, got a Device$/,
    ),
    bad(
      'VirtualMachine devices empty',
      () => new VirtualMachine(module, { devices: [] }),
      TvmValueError,
      /^VirtualMachine: devices must be a non-empty array of Devices, got an empty array$/,
    ),
    bad(
      'VirtualMachine devices with a name',
      () => new VirtualMachine(module, { devices: ['cpu'] as never }),
      TvmTypeError,
      /^VirtualMachine: devices\[0\] must be a Device, got "cpu"$/,
    ),
    bad(
      'VirtualMachine unknown option (typo)',
      () => new VirtualMachine(module, { concurency: 2 } as never),
      TvmValueError,
      /^VirtualMachine: unknown option 'concurency' \(did you mean 'concurrency'\?\); known options: devices, memory, concurrency$/,
    ),
    bad('VirtualMachine options null', () => new VirtualMachine(module, null as never), TvmTypeError, /^VirtualMachine: options must be an object, got null$/),
    bad('VirtualMachine module a path', () => new VirtualMachine('mlp.so' as never), TvmTypeError, /^VirtualMachine: module must be a Module, got "mlp\.so"$/),
    badAsync(
      'VirtualMachine.load path a number',
      () => VirtualMachine.load(42 as never),
      TvmTypeError,
      /^VirtualMachine\.load: path must be a non-empty string, got 42$/,
    ),
    badAsync('VirtualMachine.load path empty', () => VirtualMachine.load(''), TvmValueError, /^VirtualMachine\.load: path must be a non-empty string, got ""$/),
    badAsync(
      'VirtualMachine.load memory',
      () => VirtualMachine.load(mlp(), { memory: 'fast' as never }),
      TvmValueError,
      /^VirtualMachine\.load: memory must be one of 'pooled', 'naive', got "fast"$/,
    ),
    badAsync(
      'VirtualMachine.load unknown option',
      () => VirtualMachine.load(mlp(), { device: cpu() } as never),
      TvmValueError,
      /^VirtualMachine\.load: unknown option 'device' \(did you mean 'devices'\?\)/,
    ),
    bad(
      'VirtualMachine.loadSync path undefined',
      () => VirtualMachine.loadSync(undefined as never),
      TvmTypeError,
      /^VirtualMachine\.loadSync: path must be a non-empty string, got undefined$/,
    ),
    bad(
      'VirtualMachine.loadSync concurrency',
      () => VirtualMachine.loadSync(mlp(), { concurrency: -1 }),
      TvmValueError,
      /^VirtualMachine\.loadSync: concurrency must be a whole number >= 1, got -1$/,
    ),
    bad(
      'VirtualMachine.loadSync devices',
      () => VirtualMachine.loadSync(mlp(), { devices: [0] as never }),
      TvmTypeError,
      /^VirtualMachine\.loadSync: devices\[0\] must be a Device, got 0$/,
    ),
    badAsync(
      'VirtualMachine.create devices',
      () => VirtualMachine.create(module, { devices: [] }),
      TvmValueError,
      /^VirtualMachine\.create: devices must be a non-empty array of Devices, got an empty array$/,
    ),
    badAsync(
      'VirtualMachine.create concurrency',
      () => VirtualMachine.create(module, { concurrency: Infinity }),
      TvmValueError,
      /^VirtualMachine\.create: concurrency must be a whole number >= 1, got Infinity$/,
    ),
    badAsync(
      'VirtualMachine.create module',
      () => VirtualMachine.create({} as never),
      TvmTypeError,
      /^VirtualMachine\.create: module must be a Module, got an object$/,
    ),

    // ---- Model.load / loadSync / run (lib/model.ts) ----
    badAsync('Model.load path', () => Model.load(7 as never), TvmTypeError, /^Model\.load: path must be a non-empty string; got 7$/),
    badAsync('Model.load options', () => Model.load(mlp(), 'cpu' as never), TvmTypeError, /^Model\.load: options must be an object; got "cpu"$/),
    badAsync(
      'Model.load device cpu:7',
      () => Model.load(mlp(), { device: 'cpu:7' }),
      TvmValueError,
      /^Model\.load: device\("cpu:7"\): index must be 0 \(TVM has one CPU device.*\), got 7$/,
    ),
    badAsync(
      'Model.load device type',
      () => Model.load(mlp(), { device: 0 as never }),
      TvmTypeError,
      /^Model\.load: option 'device' must be a Device or a name such as 'cpu' or 'cuda:0'; got 0$/,
    ),
    badAsync(
      'Model.load function',
      () => Model.load(mlp(), { function: 5 as never }),
      TvmTypeError,
      /^Model\.load: option 'function' must be a non-empty string; got 5$/,
    ),
    badAsync(
      'Model.load concurrency',
      () => Model.load(mlp(), { concurrency: NaN }),
      TvmValueError,
      /^Model\.load: option 'concurrency' must be an integer >= 1; got NaN$/,
    ),
    badAsync(
      'Model.load memory',
      () => Model.load(mlp(), { memory: 'fast' as never }),
      TvmValueError,
      /^Model\.load: option 'memory' must be 'pooled' or 'naive'; got "fast"$/,
    ),
    badAsync(
      'Model.load manifest',
      () => Model.load(mlp(), { manifest: true as never }),
      TvmTypeError,
      /^Model\.load: option 'manifest' must be a path, a manifest object or false; got true$/,
    ),
    badAsync(
      'Model.load privateCopy',
      () => Model.load(mlp(), { privateCopy: 1 as never }),
      TvmTypeError,
      /^Model\.load: option 'privateCopy' must be a boolean; got 1$/,
    ),
    bad(
      'Model.loadSync unknown option',
      () => Model.loadSync(mlp(), { concurency: 2 } as never),
      TvmValueError,
      /^Model\.loadSync: unknown option 'concurency' \(options: device, function, concurrency, memory, manifest, privateCopy\)$/,
    ),
    badAsync(
      'model.run unknown option',
      () => model.run({ x: new Float32Array(64) }, { output: ['y'] } as never),
      TvmValueError,
      /^model 'mlp': run: unknown option 'output' \(did you mean 'outputs'\?\); known options: outputs$/,
    ),
    bad(
      'model.runSync outputs',
      () => model.runSync({ x: new Float32Array(64) }, { outputs: 'y' as never }),
      TvmTypeError,
      /^model 'mlp': option 'outputs' must be an array of output names; got "y"$/,
    ),

    // ---- Tensor: from, fromSync, wrap, empty, copyFrom, copyTo ----
    badAsync(
      'Tensor.from a string element',
      () => Tensor.from([1, 2, 'a'] as never),
      TvmTypeError,
      /^Tensor\.from: data\[2\] must be a number, a boolean or a bigint, got "a"$/,
    ),
    bad(
      'Tensor.fromSync a hole',
      () => Tensor.fromSync([1, undefined] as never),
      TvmTypeError,
      /^Tensor\.fromSync: data\[1\] must be a number, a boolean or a bigint, got undefined$/,
    ),
    bad(
      'Tensor.fromSync an object element',
      () => Tensor.fromSync([{}] as never),
      TvmTypeError,
      /^Tensor\.fromSync: data\[0\] must be a number, a boolean or a bigint, got an object$/,
    ),
    bad(
      'Tensor.fromSync a fraction for int64',
      () => Tensor.fromSync([1, 1.5], { dtype: 'int64' }),
      TvmValueError,
      /^Tensor\.fromSync: data\[1\] must be a whole number for int64, got 1\.5$/,
    ),
    bad(
      'Tensor.fromSync data a string',
      () => Tensor.fromSync('abc' as never),
      TvmTypeError,
      /^Tensor\.fromSync: data must be a TypedArray, a Buffer or an array of numbers, got "abc"$/,
    ),
    bad(
      'Tensor.fromSync data an ArrayBuffer',
      () => Tensor.fromSync(new ArrayBuffer(8) as never, { dtype: 'float32' }),
      TvmTypeError,
      /^Tensor\.fromSync: data must be a TypedArray, a Buffer or an array of numbers, got an ArrayBuffer$/,
    ),
    bad(
      'Tensor.fromSync shape a number',
      () => Tensor.fromSync([1, 2], { shape: 2 as never }),
      TvmTypeError,
      /^Tensor\.fromSync: shape must be an array of whole numbers >= 0, got 2$/,
    ),
    bad(
      'Tensor.fromSync shape negative',
      () => Tensor.fromSync([1, 2], { shape: [-2] }),
      TvmValueError,
      /^Tensor\.fromSync: shape must be an array of whole numbers >= 0, got \[-2\]$/,
    ),
    bad(
      'Tensor.fromSync shape with a string',
      () => Tensor.fromSync([1, 2], { shape: ['2'] as never }),
      TvmTypeError,
      /^Tensor\.fromSync: shape must be an array of whole numbers >= 0, got \["2"\]$/,
    ),
    bad(
      'Tensor.fromSync dtype a number',
      () => Tensor.fromSync([1], { dtype: 32 as never }),
      TvmTypeError,
      /^Tensor\.fromSync: dtype must be a dtype name such as 'float32', got 32$/,
    ),
    bad(
      'Tensor.fromSync dtype unknown',
      () => Tensor.fromSync([1], { dtype: 'float99' }),
      TvmValueError,
      /^unsupported dtype 'float99' \(supported: float16, /,
    ),
    badAsync(
      'Tensor.from device a name',
      () => Tensor.from([1], { device: 'cpu' as never }),
      TvmTypeError,
      /^Tensor\.from: device must be a Device \(e\.g\. cpu\(\), cuda\(0\)\), got "cpu"$/,
    ),
    badAsync(
      'Tensor.from unknown option',
      () => Tensor.from([1], { devcie: cpu() } as never),
      TvmValueError,
      /^Tensor\.from: unknown option 'devcie' \(did you mean 'device'\?\); known options: shape, dtype, device$/,
    ),
    bad('Tensor.fromSync options null', () => Tensor.fromSync([1], null as never), TvmTypeError, /^Tensor\.fromSync: options must be an object, got null$/),
    bad(
      'Tensor.wrap device (not an option of wrap)',
      () => Tensor.wrap(f32, { device: cpu() } as never),
      TvmValueError,
      /^Tensor\.wrap: unknown option 'device'; known options: shape, dtype$/,
    ),
    bad(
      'Tensor.wrap shape',
      () => Tensor.wrap(f32, { shape: [2.5] }),
      TvmValueError,
      /^Tensor\.wrap: shape must be an array of whole numbers >= 0, got \[2\.5\]$/,
    ),
    bad(
      'Tensor.wrap dtype',
      () => Tensor.wrap(f32, { dtype: null as never }),
      TvmTypeError,
      /^Tensor\.wrap: dtype must be a dtype name such as 'float32', got null$/,
    ),
    bad('Tensor.empty shape', () => Tensor.empty('2' as never), TvmTypeError, /^Tensor\.empty: shape must be an array of whole numbers >= 0, got "2"$/),
    bad('Tensor.empty dtype', () => Tensor.empty([2], 7 as never), TvmTypeError, /^Tensor\.empty: dtype must be a dtype name such as 'float32', got 7$/),
    bad(
      'Tensor.empty device',
      () => Tensor.empty([2], 'float32', 'cpu' as never),
      TvmTypeError,
      /^Tensor\.empty: device must be a Device \(e\.g\. cpu\(\), cuda\(0\)\), got "cpu"$/,
    ),
    badAsync(
      'tensor.copyFrom a string element',
      () => tensor.copyFrom([1, 'x'] as never),
      TvmTypeError,
      /^Tensor\.copyFrom: data\[1\] must be a number, a boolean or a bigint, got "x"$/,
    ),
    badAsync(
      'tensor.copyTo device',
      () => tensor.copyTo('cpu' as never),
      TvmTypeError,
      /^Tensor\.copyTo: device must be a Device \(e\.g\. cpu\(\), cuda\(0\)\), got "cpu"$/,
    ),
    bad(
      'tensor.copyToSync device',
      () => tensor.copyToSync(0 as never),
      TvmTypeError,
      /^Tensor\.copyToSync: device must be a Device \(e\.g\. cpu\(\), cuda\(0\)\), got 0$/,
    ),

    // ---- devices: device(), cpu(i), cuda(i), ... ----
    bad('cpu(7)', () => cpu(7), TvmValueError, /^cpu: index must be 0 \(TVM has one CPU device, cpu\(0\); set its threads with TVM_NUM_THREADS\), got 7$/),
    bad("device('cpu:7')", () => device('cpu:7'), TvmValueError, /^device\("cpu:7"\): index must be 0 .*, got 7$/),
    bad("device('cpu', 1)", () => device('cpu', 1), TvmValueError, /^device\("cpu"\): index must be 0 .*, got 1$/),
    bad('cuda(-1)', () => cuda(-1), TvmValueError, /^cuda: index must be a whole number from 0 to 2147483647, got -1$/),
    bad('cuda(1.5)', () => cuda(1.5), TvmValueError, /^cuda: index must be a whole number from 0 to 2147483647, got 1\.5$/),
    bad("vulkan('0')", () => vulkan('0' as never), TvmTypeError, /^vulkan: index must be a whole number from 0 to 2147483647, got "0"$/),
    bad('opencl(NaN)', () => opencl(NaN), TvmValueError, /^opencl: index must be a whole number from 0 to 2147483647, got NaN$/),
    bad('metal(2 ** 31)', () => metal(2 ** 31), TvmValueError, /^metal: index must be a whole number from 0 to 2147483647, got 2147483648$/),
    bad("device('cuda:x')", () => device('cuda:x'), TvmValueError, /^device\("cuda:x"\): index must be a whole number >= 0, got "x"$/),
    bad("device('cuda:')", () => device('cuda:'), TvmValueError, /^device\("cuda:"\): index must be a whole number >= 0, got ""$/),
    bad("device('cuda:1', 2)", () => device('cuda:1', 2), TvmValueError, /^device\("cuda:1"\): the name gives the index; give no index argument, got 2$/),
    bad('device(3)', () => device(3 as never), TvmTypeError, /^device: kind must be a device name such as 'cpu' or 'cuda:0', got 3$/),
    bad("device('tpu')", () => device('tpu'), TvmValueError, /^unknown device 'tpu' \(known: cpu, cuda, /),
    bad("device('cuda:1:2')", () => device('cuda:1:2'), TvmValueError, /^unknown device 'cuda:1:2' \(known: /),

    // ---- loadModule / loadModuleSync / Module lookups ----
    badAsync('loadModule path undefined', () => loadModule(undefined as never), TvmTypeError, /^loadModule: path must be a non-empty string, got undefined$/),
    badAsync('loadModule path empty', () => loadModule(''), TvmValueError, /^loadModule: path must be a non-empty string, got ""$/),
    badAsync('loadModule options a string', () => loadModule(mlp(), 'x' as never), TvmTypeError, /^loadModule: options must be an object, got "x"$/),
    bad(
      'loadModuleSync privateCopy',
      () => loadModuleSync(mlp(), { privateCopy: 'yes' as never }),
      TvmTypeError,
      /^loadModuleSync: privateCopy must be true or false, got "yes"$/,
    ),
    bad(
      'loadModuleSync unknown option',
      () => loadModuleSync(mlp(), { privatecopy: true } as never),
      TvmValueError,
      /^loadModuleSync: unknown option 'privatecopy' \(did you mean 'privateCopy'\?\); known options: privateCopy$/,
    ),
    bad(
      'module.getFunctionSync queryImports',
      () => module.getFunctionSync('main', { queryImports: 1 as never }),
      TvmTypeError,
      /^Module\.getFunctionSync: queryImports must be true or false, got 1$/,
    ),
    bad(
      'module.implementsFunction unknown option',
      () => module.implementsFunction('main', { imports: true } as never),
      TvmValueError,
      /^Module\.implementsFunction: unknown option 'imports'; known options: queryImports$/,
    ),

    // ---- registerFunc ----
    bad('registerFunc name empty', () => registerFunc('', fn), TvmValueError, /^registerFunc: name must be a non-empty string, got ""$/),
    bad('registerFunc fn', () => registerFunc('tvm_node.test.options.bad', 'fn' as never), TvmTypeError, /^registerFunc: fn must be a function, got "fn"$/),
    bad(
      'registerFunc override',
      () => registerFunc('tvm_node.test.options.bad', fn, { override: 'yes' as never }),
      TvmTypeError,
      /^registerFunc: override must be true or false, got "yes"$/,
    ),
    bad(
      'registerFunc unknown option',
      () => registerFunc('tvm_node.test.options.bad', fn, { overide: true } as never),
      TvmValueError,
      /^registerFunc: unknown option 'overide' \(did you mean 'override'\?\); known options: override$/,
    ),

    // ---- .npy ----
    bad('readNpy path', () => readNpy(undefined as never), TvmTypeError, /^readNpy: path must be a non-empty string, got undefined$/),
    bad('writeNpy path', () => writeNpy('', { data: f32, shape: [4], dtype: 'float32' }), TvmValueError, /^writeNpy: path must be a non-empty string, got ""$/),
    bad('writeNpy array', () => writeNpy(npyFile(), 5 as never), TvmTypeError, /^writeNpy: array must be a Tensor or \{ data, shape, dtype \}, got 5$/),
    bad(
      'writeNpy data',
      () => writeNpy(npyFile(), { data: [1, 2], shape: [2], dtype: 'float32' } as never),
      TvmTypeError,
      /^writeNpy: data must be a TypedArray, got an array of 2$/,
    ),
    bad(
      'writeNpy shape',
      () => writeNpy(npyFile(), { data: f32, shape: 4, dtype: 'float32' } as never),
      TvmTypeError,
      /^writeNpy: shape must be an array of whole numbers >= 0, got 4$/,
    ),
    bad(
      'writeNpy dtype',
      () => writeNpy(npyFile(), { data: f32, shape: [4], dtype: undefined } as never),
      TvmTypeError,
      /^writeNpy: dtype must be a dtype name such as 'float32', got undefined$/,
    ),
    bad('encodeNpy array', () => encodeNpy(null as never), TvmTypeError, /^encodeNpy: array must be \{ data, shape, dtype \}, got null$/),
    bad('parseNpy bytes', () => parseNpy('abc' as never), TvmTypeError, /^parseNpy: bytes must be a Uint8Array or Buffer, got "abc"$/),
    bad('tensorFromNpy path', () => tensorFromNpy(42 as never), TvmTypeError, /^tensorFromNpy: path must be a non-empty string, got 42$/),
    bad(
      'tensorFromNpy unknown option',
      () => tensorFromNpy(npyFile(), { shape: [2] } as never),
      TvmValueError,
      /^tensorFromNpy: unknown option 'shape'; known options: device$/,
    ),
    bad('abiFingerprint file', () => abiFingerprint(42 as never), TvmTypeError, /^abiFingerprint: file must be a non-empty string, got 42$/),

    // ---- connect / connectTracker / TrackerClient.request ----
    badAsync(
      'connect port undefined',
      () => connect(HOST, undefined as never),
      TvmTypeError,
      /^connect: port must be a whole number from 1 to 65535, got undefined$/,
    ),
    badAsync('connect port out of range', () => connect(HOST, 70000), TvmValueError, /^connect: port must be a whole number from 1 to 65535, got 70000$/),
    badAsync('connect port a string', () => connect(HOST, '9090' as never), TvmTypeError, /^connect: port must be a whole number from 1 to 65535, got "9090"$/),
    badAsync('connect host empty', () => connect('', CLOSED_PORT), TvmValueError, /^connect: host must be a non-empty string, got ""$/),
    badAsync(
      'connect host undefined',
      () => connect(undefined as never, CLOSED_PORT),
      TvmTypeError,
      /^connect: host must be a non-empty string, got undefined$/,
    ),
    badAsync('connect key', () => connect(HOST, CLOSED_PORT, { key: 5 as never }), TvmTypeError, /^connect: key must be a string, got 5$/),
    badAsync(
      'connect sessionTimeout',
      () => connect(HOST, CLOSED_PORT, { sessionTimeout: -1 }),
      TvmValueError,
      /^connect: sessionTimeout must be a number >= 0, got -1$/,
    ),
    badAsync(
      'connect unknown option',
      () => connect(HOST, CLOSED_PORT, { timeout: 5 } as never),
      TvmValueError,
      /^connect: unknown option 'timeout'; known options: key, sessionTimeout$/,
    ),
    badAsync('connectTracker host', () => connectTracker(42 as never, CLOSED_PORT), TvmTypeError, /^connectTracker: host must be a non-empty string, got 42$/),
    badAsync('connectTracker port', () => connectTracker(HOST, 0), TvmValueError, /^connectTracker: port must be a whole number from 1 to 65535, got 0$/),
    // The client's connection is never touched: the arguments are refused first.
    badAsync(
      'TrackerClient.request key',
      () => new TrackerClient(null as never).request(undefined as never),
      TvmTypeError,
      /^TrackerClient\.request: key must be a non-empty string, got undefined$/,
    ),
    badAsync(
      'TrackerClient.request priority',
      () => new TrackerClient(null as never).request('edge', { priority: 'high' as never }),
      TvmTypeError,
      /^TrackerClient\.request: priority must be a finite whole number, got "high"$/,
    ),
    badAsync(
      'TrackerClient.request sessionTimeout',
      () => new TrackerClient(null as never).request('edge', { sessionTimeout: -5 }),
      TvmValueError,
      /^TrackerClient\.request: sessionTimeout must be a number >= 0, got -5$/,
    ),
    badAsync(
      'TrackerClient.request unknown option',
      () => new TrackerClient(null as never).request('edge', { timeout: 5 } as never),
      TvmValueError,
      /^TrackerClient\.request: unknown option 'timeout'; known options: priority, sessionTimeout$/,
    ),

    // ---- RPCSession methods ----
    badAsync('session.infer model', () => session.infer(42 as never, []), TvmTypeError, /^RPCSession\.infer: model must be a non-empty string, got 42$/),
    badAsync(
      'session.infer inputs',
      () => session.infer('mlp', f32 as never),
      TvmTypeError,
      /^RPCSession\.infer: inputs must be an array of inputs or an object of inputs by name, got a Float32Array$/,
    ),
    badAsync(
      'session.infer an input',
      () => session.infer('mlp', [5 as never]),
      TvmTypeError,
      /^RPCSession\.infer: inputs\[0\] must be a Tensor or \{ data, shape, dtype\? \}, got 5$/,
    ),
    badAsync(
      'session.infer data',
      () => session.infer('mlp', [{ data: [1, 2] as never, shape: [2] }]),
      TvmTypeError,
      /^RPCSession\.infer: inputs\[0\]\.data must be a TypedArray, got an array of 2$/,
    ),
    badAsync(
      'session.infer shape',
      () => session.infer('mlp', { x: { data: f32, shape: '4' as never } }),
      TvmTypeError,
      /^RPCSession\.infer: inputs\.x\.shape must be an array of whole numbers >= 0, got "4"$/,
    ),
    badAsync(
      'session.infer dtype',
      () => session.infer('mlp', [{ data: f32, shape: [4], dtype: 3 as never }]),
      TvmTypeError,
      /^RPCSession\.infer: inputs\[0\]\.dtype must be a non-empty string, got 3$/,
    ),
    badAsync(
      'session.upload data',
      () => session.upload(42 as never),
      TvmTypeError,
      /^RPCSession\.upload: data must be a Buffer \(bytes\) or a local file path, got 42$/,
    ),
    badAsync(
      'session.upload target',
      () => session.upload(Buffer.from('x'), ''),
      TvmValueError,
      /^RPCSession\.upload: target must be a non-empty string, got ""$/,
    ),
    badAsync(
      'session.download name',
      () => session.download(undefined as never),
      TvmTypeError,
      /^RPCSession\.download: name must be a non-empty string, got undefined$/,
    ),
    badAsync('session.remove name', () => session.remove(''), TvmValueError, /^RPCSession\.remove: name must be a non-empty string, got ""$/),
    badAsync('session.loadModule name', () => session.loadModule(3 as never), TvmTypeError, /^RPCSession\.loadModule: name must be a non-empty string, got 3$/),
    badAsync(
      'session.getFunction name',
      () => session.getFunction(null as never),
      TvmTypeError,
      /^RPCSession\.getFunction: name must be a non-empty string, got null$/,
    ),
    badAsync('session.call name', () => session.call(7 as never), TvmTypeError, /^RPCSession\.call: name must be a non-empty string, got 7$/),
    badAsync(
      'session.tensor unknown option',
      () => session.tensor([1], { devices: [] } as never),
      TvmValueError,
      /^RPCSession\.tensor: unknown option 'devices' \(did you mean 'device'\?\)/,
    ),
    bad('session.device kind', () => session.device('tpu' as never), TvmValueError, /^RPCSession\.device: kind must be one of 'cpu', 'cuda', .*, got "tpu"$/),
    bad('session.cpu index', () => session.cpu(2), TvmValueError, /^RPCSession\.device\("cpu"\): index must be 0 .*, got 2$/),
    bad(
      'session.cuda index',
      () => session.cuda(-1),
      TvmValueError,
      /^RPCSession\.device\("cuda"\): index must be a whole number from 0 to 2147483647, got -1$/,
    ),

    // ---- ModelRepository and CacheLimits ----
    bad('ModelRepository dir', () => new ModelRepository(42 as never), TvmTypeError, /^ModelRepository: dir must be a non-empty string, got 42$/),
    bad(
      'ModelRepository maxModels',
      () => new ModelRepository(dir, { maxModels: 0 }),
      TvmValueError,
      /^ModelRepository: limits\.maxModels must be a whole number >= 1, got 0$/,
    ),
    bad(
      'ModelRepository maxBytes',
      () => new ModelRepository(dir, { maxBytes: NaN }),
      TvmValueError,
      /^ModelRepository: limits\.maxBytes must be a whole number >= 1, got NaN$/,
    ),
    bad(
      'ModelRepository concurrency',
      () => new ModelRepository(dir, { concurrency: '2' as never }),
      TvmTypeError,
      /^ModelRepository: limits\.concurrency must be a whole number >= 1, got "2"$/,
    ),
    bad(
      'ModelRepository unknown limit',
      () => new ModelRepository(dir, { maxModel: 2 } as never),
      TvmValueError,
      /^ModelRepository: unknown key 'maxModel' in limits \(did you mean 'maxModels'\?\); known keys: maxModels, maxBytes, concurrency$/,
    ),
    bad('ModelRepository limits null', () => new ModelRepository(dir, null as never), TvmTypeError, /^ModelRepository: limits must be an object, got null$/),

    // ---- RPCServer (resolveOptions in lib/rpc/server.ts) ----
    bad('RPCServer options null', () => new RPCServer(null as never), TvmTypeError, /^RPCServer: options must be an object, got null$/),
    bad(
      'RPCServer unknown option',
      () => new RPCServer({ maxSession: 3 } as never),
      TvmValueError,
      /^RPCServer: unknown option 'maxSession' \(did you mean 'maxSessions'\?\); known options: host, port, /,
    ),
    bad('RPCServer host a number', () => new RPCServer({ host: 42 as never }), TvmTypeError, /^RPCServer: host must be a non-empty string, got 42$/),
    bad('RPCServer host empty', () => new RPCServer({ host: '' }), TvmValueError, /^RPCServer: host must be a non-empty string, got ""$/),
    bad('RPCServer port', () => new RPCServer({ port: -1 }), TvmValueError, /^RPCServer: port must be a whole number from 0 to 65535, got -1$/),
    bad('RPCServer key', () => new RPCServer({ key: 5 as never }), TvmTypeError, /^RPCServer: key must be a string, got 5$/),
    bad(
      'RPCServer trustRemoteClients',
      () => new RPCServer({ trustRemoteClients: 'yes' as never }),
      TvmTypeError,
      /^RPCServer: trustRemoteClients must be true or false, got "yes"$/,
    ),
    bad('RPCServer inferenceOnly', () => new RPCServer({ inferenceOnly: 1 as never }), TvmTypeError, /^RPCServer: inferenceOnly must be true or false, got 1$/),
    bad(
      'RPCServer maxMessageBytes',
      () => new RPCServer({ maxMessageBytes: 0 }),
      TvmValueError,
      /^RPCServer: maxMessageBytes must be a whole number >= 1, got 0$/,
    ),
    bad(
      'RPCServer maxUploadBytes',
      () => new RPCServer({ maxUploadBytes: 1.5 }),
      TvmValueError,
      /^RPCServer: maxUploadBytes must be a whole number >= 1, got 1\.5$/,
    ),
    bad(
      'RPCServer maxPendingBytes',
      () => new RPCServer({ maxPendingBytes: Infinity }),
      TvmValueError,
      /^RPCServer: maxPendingBytes must be a whole number >= 1, got Infinity$/,
    ),
    bad(
      'RPCServer stallTimeoutMs',
      () => new RPCServer({ stallTimeoutMs: 0 }),
      TvmValueError,
      /^RPCServer: stallTimeoutMs must be a number from 1 to 1000000000000, got 0$/,
    ),
    bad(
      'RPCServer idleTimeoutMs',
      () => new RPCServer({ idleTimeoutMs: -1 }),
      TvmValueError,
      /^RPCServer: idleTimeoutMs must be a number from 1 to 1000000000000, got -1$/,
    ),
    bad(
      'RPCServer readTimeoutMs',
      () => new RPCServer({ readTimeoutMs: '30' as never }),
      TvmTypeError,
      /^RPCServer: readTimeoutMs must be a number from 1 to 1000000000000, got "30"$/,
    ),
    bad(
      'RPCServer prestartSessions',
      () => new RPCServer({ prestartSessions: 65 }),
      TvmValueError,
      /^RPCServer: prestartSessions must be a whole number from 0 to 64, got 65$/,
    ),
    bad('RPCServer maxSessions', () => new RPCServer({ maxSessions: 0 }), TvmValueError, /^RPCServer: maxSessions must be a whole number >= 1, got 0$/),
    bad(
      'RPCServer maxSessionsPerAddress',
      () => new RPCServer({ maxSessionsPerAddress: 0.5 }),
      TvmValueError,
      /^RPCServer: maxSessionsPerAddress must be a whole number >= 1, got 0\.5$/,
    ),
    bad(
      'RPCServer sessionTimeout',
      () => new RPCServer({ sessionTimeout: 0 }),
      TvmValueError,
      /^RPCServer: sessionTimeout must be a number from 0\.001 to 1000000000, got 0$/,
    ),
    bad(
      'RPCServer handshakeTimeoutMs',
      () => new RPCServer({ handshakeTimeoutMs: NaN }),
      TvmValueError,
      /^RPCServer: handshakeTimeoutMs must be a number from 1 to 1000000000000, got NaN$/,
    ),
    bad('RPCServer workRoot', () => new RPCServer({ workRoot: '' }), TvmValueError, /^RPCServer: workRoot must be a non-empty string, got ""$/),
    bad('RPCServer modelsDir', () => new RPCServer({ modelsDir: 5 as never }), TvmTypeError, /^RPCServer: modelsDir must be a non-empty string, got 5$/),
    bad('RPCServer customAddr', () => new RPCServer({ customAddr: 1 as never }), TvmTypeError, /^RPCServer: customAddr must be a non-empty string, got 1$/),
    bad(
      'RPCServer tracker a string',
      () => new RPCServer({ tracker: '127.0.0.1:9190' as never }),
      TvmTypeError,
      /^RPCServer: tracker must be an object, got "127\.0\.0\.1:9190"$/,
    ),
    bad(
      'RPCServer tracker.port',
      () => new RPCServer({ tracker: { host: HOST } as never }),
      TvmTypeError,
      /^RPCServer: tracker\.port must be a whole number from 1 to 65535, got undefined$/,
    ),
    bad(
      'RPCServer tracker.host',
      () => new RPCServer({ tracker: { host: '', port: 9190 } }),
      TvmValueError,
      /^RPCServer: tracker\.host must be a non-empty string, got ""$/,
    ),
    bad(
      'RPCServer tracker unknown key',
      () => new RPCServer({ tracker: { hots: HOST, port: 9190 } as never }),
      TvmValueError,
      /^RPCServer: unknown key 'hots' in tracker \(did you mean 'host'\?\); known keys: host, port$/,
    ),
    bad('RPCServer cache', () => new RPCServer({ cache: { maxModels: 0 } }), TvmValueError, /^RPCServer: cache\.maxModels must be a whole number >= 1, got 0$/),
  ];

  for (const row of rows) {
    it(`BAD CALL - ${row.what}`, () => expectBadCall(row));
  }

  it('no two BAD CALL rows have the same description', () => {
    assert.equal(new Set(rows.map((r) => r.what)).size, rows.length);
  });

  describe('GOOD CALL rows: valid calls still work', () => {
    it('VirtualMachine with every option, and options given as undefined', async () => {
      const fx = fixture('mlp');
      const x = inputTensor(fx.cases[0].inputs[0]);
      try {
        await using vm = VirtualMachine.loadSync(fx.path, { devices: [cpu()], memory: 'naive', concurrency: 2 });
        const y = (await vm.run('main', x)) as Tensor;
        assertMatches(y, fx.cases[0].outputs[0], fx.tolerance);
        await y.dispose();
        await using vm2 = await VirtualMachine.create(module, { devices: undefined, memory: undefined, concurrency: undefined });
        assert.equal(vm2.concurrency, 4);
        await using vm3 = await VirtualMachine.load(fx.path, { memory: 'pooled', devices: [device('cpu:0')] });
        const y3 = vm3.runSync('main', x) as Tensor;
        assertMatches(y3, fx.cases[0].outputs[0], fx.tolerance);
        y3.disposeSync();
      } finally {
        x.disposeSync();
      }
    });

    it('Tensor from numbers, booleans and bigints, for float, int64 and float16', async () => {
      await using a = await Tensor.from([1, 2n, true, false], { shape: [2, 2] });
      assert.deepEqual([a.shape, a.dtype, Array.from(a.toArraySync() as Float32Array)], [[2, 2], 'float32', [1, 2, 1, 0]]);
      using b = Tensor.fromSync([1, 2n, true], { dtype: 'int64' });
      assert.deepEqual(Array.from(b.toArraySync() as BigInt64Array), [1n, 2n, 1n]);
      using c = Tensor.fromSync([0.5, 3n], { dtype: 'float16' });
      assert.deepEqual(Array.from(c.toFloat32ArraySync()), [0.5, 3]);
      using e = Tensor.empty([2, 0], 'int8', cpu(0));
      assert.deepEqual(e.shape, [2, 0]);
      using w = Tensor.wrap(new Float32Array(4), { shape: [2, 2], dtype: 'float32' });
      assert.deepEqual(w.shape, [2, 2]);
    });

    it('devices by name and index', () => {
      assert.ok(device('cuda:1').equals(cuda(1)));
      assert.ok(device('cuda', 1).equals(cuda(1)));
      assert.ok(device('cpu').equals(cpu(0)));
      assert.ok(device('vulkan:0').equals(vulkan()));
      assert.ok(cpu() instanceof Device);
      assert.equal(String(session.cuda(1)).endsWith('cuda(1)'), true);
    });

    it('loadModule with privateCopy, lookups with queryImports', async () => {
      await using m = await loadModule(mlp(), { privateCopy: true });
      using f = m.getFunctionSync('vm_load_executable', { queryImports: false });
      assert.ok(f);
      assert.equal(m.implementsFunction('vm_load_executable', { queryImports: true }), true);
    });

    it('Model with every option, run with outputs', async () => {
      await using m = Model.loadSync(mlp(), { device: 'cpu:0', function: 'main', concurrency: 1, memory: 'pooled', manifest: false, privateCopy: false });
      const fx = fixture('mlp');
      const [name] = m.outputNames;
      const out = await m.run({ x: npy(fx.cases[0].inputs[0]).data }, { outputs: [name] });
      assertMatches(out[name], fx.cases[0].outputs[0], fx.tolerance);
      await out[name].dispose();
    });

    it('connect with key and sessionTimeout; infer with { data, shape }', async () => {
      const fx = fixture('mlp');
      await using s = await connect(HOST, port, { key: '', sessionTimeout: 0 });
      const x = npy(fx.cases[0].inputs[0]);
      const [y] = await s.infer('mlp', [{ data: x.data, shape: x.shape, dtype: 'float32' }]);
      assertMatches(y, fx.cases[0].outputs[0], fx.tolerance);
      await y.dispose();
    });

    it('ModelRepository with every limit; RPCServer with every string and boolean option', async () => {
      await using repo = new ModelRepository(dir, { maxModels: 1, maxBytes: 2 ** 30, concurrency: 2 });
      assert.deepEqual(
        repo.list().map((m) => m.name),
        ['mlp'],
      );
      await using s = new RPCServer({
        host: HOST,
        port: 0,
        key: 'k',
        trustRemoteClients: false,
        inferenceOnly: true,
        modelsDir: dir,
        workRoot: os.tmpdir(),
        customAddr: HOST,
        tracker: { host: HOST, port: 9190 },
        cache: { maxModels: 2, maxBytes: 2 ** 30, concurrency: 1 },
        sessionTimeout: 60,
        maxSessionsPerAddress: 2,
      });
      assert.equal(s.options.key, 'k');
    });

    it('registerFunc with override; .npy round trip', () => {
      using reg = registerFunc('tvm_node.test.options.good', (a: number) => a + 1, { override: true });
      using g = getGlobalFunc(reg.name)!;
      assert.equal(g.callSync(41), 42);
      writeNpy(npyFile(), { data: Float32Array.of(1, 2), shape: [2], dtype: 'float32' });
      assert.deepEqual(Array.from(readNpy(npyFile()).data as Float32Array), [1, 2]);
      using t = tensorFromNpy(npyFile(), { device: cpu() });
      assert.deepEqual(t.shape, [2]);
      assert.equal(parseNpy(encodeNpy({ data: Int8Array.of(3), shape: [1], dtype: 'int8' })).dtype, 'int8');
    });
  });
});
