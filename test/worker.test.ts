import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { threadId, Worker } from 'node:worker_threads';
import { getGlobalFunc, outputsOf, requireGlobalFunc, Tensor, TvmRuntimeError, VirtualMachine } from '../lib';
import { type ArraySpec, assertMatches, fixture, inputTensor, repoRoot } from './fixtures';

/**
 * Code run by each worker thread: loads the library through tsx, as an application would,
 * then does what `workerData.task` asks and reports through the parent port.
 */
const WORKER = `
const { parentPort, workerData, threadId } = require('node:worker_threads');
require(workerData.tsx);
const T = require(workerData.lib);

async function runModel() {
  const { model, input, shape, runs } = workerData;
  const vm = await T.VirtualMachine.load(model);
  const x = T.Tensor.fromSync(new Float32Array(input), { shape });
  const outputs = [];
  for (let i = 0; i < runs; i++) {
    // Mix the synchronous and the pooled paths.
    const out = T.outputsOf(i % 2 === 0 ? await vm.run('main', x) : vm.runSync('main', x));
    outputs.push({ shape: out[0].shape, dtype: out[0].dtype, data: out[0].toArraySync() });
    for (const t of out) t.disposeSync();
  }
  await vm.dispose();
  parentPort.postMessage({ threadId, outputs });
  // Stay alive until the parent terminates this worker.
  parentPort.on('message', () => {});
}

function registerAndExit() {
  T.registerFunc(workerData.name, (x) => ({ _tvmKind: 'float', value: x * 2 + 0.5 }));
  // Callable from the main thread while this worker is alive: the call runs here.
  T.registerFunc(workerData.name + '.where', () => threadId);
  parentPort.postMessage({ threadId, registered: true });
  parentPort.once('message', () => {
    // Leave the registrations in TVM's global table and end this environment.
    parentPort.close();
  });
}

Promise.resolve().then(() => ({ runModel, registerAndExit })[workerData.task]()).catch((err) => {
  parentPort.postMessage({ error: String(err && err.stack || err) });
});
`;

const TSX = require.resolve('tsx/cjs');
const LIB = path.join(repoRoot, 'lib');

function startWorker(workerData: Record<string, unknown>): Worker {
  return new Worker(WORKER, { eval: true, workerData: { tsx: TSX, lib: LIB, ...workerData } });
}

/** The next message of a worker; rejects on a worker error or a reported error. */
function nextMessage<T>(w: Worker): Promise<T> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => reject(e);
    w.once('error', onError);
    w.once('message', (m: T & { error?: string }) => {
      w.off('error', onError);
      if (m.error) reject(new Error(`worker failed: ${m.error}`));
      else resolve(m);
    });
  });
}

interface RunResult {
  threadId: number;
  outputs: { shape: number[]; dtype: string; data: Float32Array }[];
}

function assertOutput(out: { shape: number[]; dtype: string; data: Float32Array }, spec: ArraySpec, tol: { rtol: number; atol: number }): void {
  assert.ok(out.data instanceof Float32Array);
  assertMatches(Tensor.fromSync(out.data, { shape: out.shape, dtype: out.dtype }), spec, tol);
}

describe('worker_threads (context-aware addon)', () => {
  const fx = fixture('mlp');
  const spec = fx.cases[0];
  const RUNS = 20;

  it('runs the mlp model in 3 workers and the main thread at once, all matching the reference', async () => {
    const x = inputTensor(spec.inputs[0]);
    const workers = Array.from({ length: 3 }, () =>
      startWorker({ task: 'runModel', model: fx.path, input: Array.from(x.toArraySync() as Float32Array), shape: x.shape, runs: RUNS }),
    );
    const results = workers.map((w) => nextMessage<RunResult>(w));

    // The main thread runs the same model meanwhile.
    const vm = await VirtualMachine.load(fx.path);
    const mainOutputs: Tensor[] = [];
    for (let i = 0; i < RUNS; i++) {
      mainOutputs.push(...outputsOf<Tensor>(i % 2 === 0 ? await vm.run('main', x) : vm.runSync('main', x)));
    }

    const got = await Promise.all(results);
    assert.equal(got.length, 3);
    assert.equal(new Set(got.map((r) => r.threadId)).size, 3, 'three distinct worker threads');
    assert.ok(!got.some((r) => r.threadId === threadId));
    for (const r of got) {
      assert.equal(r.outputs.length, RUNS);
      for (const out of r.outputs) assertOutput(out, spec.outputs[0], fx.tolerance);
    }
    assert.equal(mainOutputs.length, RUNS);
    for (const t of mainOutputs) assertMatches(t, spec.outputs[0], fx.tolerance);

    // Terminating the (idle) workers tears down their environments without touching ours.
    const codes = await Promise.all(workers.map((w) => w.terminate()));
    assert.deepEqual(codes, [1, 1, 1]);

    // The main thread's VM, and a fresh one, still run.
    assertMatches(outputsOf<Tensor>(vm.runSync('main', x))[0], spec.outputs[0], fx.tolerance);
    assertMatches(outputsOf<Tensor>(await vm.run('main', x))[0], spec.outputs[0], fx.tolerance);
    await vm.dispose();
    const vm2 = await VirtualMachine.load(fx.path);
    assertMatches(outputsOf<Tensor>(await vm2.run('main', x))[0], spec.outputs[0], fx.tolerance);
    await vm2.dispose();
  });

  it('workers can be started again after others exited (per-environment addon state)', async () => {
    const x = inputTensor(spec.inputs[0]);
    for (let round = 0; round < 2; round++) {
      const w = startWorker({ task: 'runModel', model: fx.path, input: Array.from(x.toArraySync() as Float32Array), shape: x.shape, runs: 2 });
      const r = await nextMessage<RunResult>(w);
      assert.equal(r.outputs.length, 2);
      for (const out of r.outputs) assertOutput(out, spec.outputs[0], fx.tolerance);
      assert.equal(await w.terminate(), 1);
    }
  });

  it('a JS function registered by a worker that has exited gives a TvmRuntimeError, not a crash', async () => {
    const name = `test.worker.${process.pid}.times2`;
    const w = startWorker({ task: 'registerAndExit', name });
    const { threadId: workerThread } = await nextMessage<{ threadId: number }>(w);
    try {
      // While the worker lives, the main thread can call its function: it runs on the worker's thread.
      assert.equal(requireGlobalFunc(name).callSync(20), 40.5);
      assert.equal(requireGlobalFunc(`${name}.where`).callSync(), workerThread);
      assert.equal(await requireGlobalFunc(name).call(1), 2.5);

      const exited = new Promise<number>((resolve) => w.once('exit', resolve));
      w.postMessage('exit');
      assert.equal(await exited, 0);

      // The names stay registered (nobody unregistered them), but their environment is gone.
      const f = getGlobalFunc(name);
      assert.ok(f, 'the global is still registered');
      const re = new RegExp(`the JavaScript environment that registered '${name.replace(/\./g, '\\.')}' has exited`);
      assert.throws(
        () => f.callSync(1),
        (e: unknown) => e instanceof TvmRuntimeError && re.test(e.message),
      );
      await assert.rejects(f.call(1), (e: unknown) => e instanceof TvmRuntimeError && re.test(e.message));
      assert.throws(
        () => requireGlobalFunc(`${name}.where`).callSync(),
        (e: unknown) => e instanceof TvmRuntimeError && /has exited/.test(e.message),
      );
    } finally {
      const remove = requireGlobalFunc('ffi.FunctionRemoveGlobal');
      remove.callSync(name);
      remove.callSync(`${name}.where`);
    }
    assert.equal(getGlobalFunc(name), null);

    // The main thread is unaffected.
    const vm = await VirtualMachine.load(fx.path);
    assertMatches(outputsOf<Tensor>(await vm.run('main', inputTensor(spec.inputs[0])))[0], spec.outputs[0], fx.tolerance);
    await vm.dispose();
  });

  // Regression: a JS error of a dying environment once crossed to the calling thread and
  // entered the other isolate (V8 fatal error / segfault). Runs in a child process so a
  // regression cannot take mocha down.
  it('calling into a worker that is dying gives a TvmRuntimeError, not a crash', () => {
    const script = `
      const { Worker } = require('node:worker_threads');
      const T = require(${JSON.stringify(LIB)});
      const src = ${JSON.stringify(`
        const { parentPort, workerData } = require('node:worker_threads');
        require(workerData.tsx);
        const T = require(workerData.lib);
        T.registerFunc('test.dying', (x) => x * 2);
        parentPort.postMessage('registered');
        throw new Error('worker dies');`)};
      const w = new Worker(src, { eval: true, workerData: ${JSON.stringify({ tsx: TSX, lib: LIB })} });
      w.on('error', () => {});
      w.once('message', () => {
        let outcome;
        try { outcome = 'value ' + T.requireGlobalFunc('test.dying').callSync(20); }
        catch (e) { outcome = e.constructor.name + ': ' + e.message; }
        process.stdout.write(outcome);
      });`;
    const stdout = execFileSync(process.execPath, ['--require', TSX, '-e', script], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    // Either the worker still served the call, or the caller gets a clean error.
    assert.match(stdout, /^(value 40|TvmRuntimeError: .*(has exited|could not run|shutting down))/);
  });

  // Regression: terminating a worker inside a tvm-node call (runSync loop, run/async call in
  // flight) once aborted the process (napi_throw fails in a terminating environment; the
  // addon is now built with NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS). Child process, as above.
  it('terminating a worker in the middle of runs does not crash the process', () => {
    const script = `
      const { Worker } = require('node:worker_threads');
      const T = require(${JSON.stringify(LIB)});
      const src = ${JSON.stringify(`
        const { parentPort, workerData } = require('node:worker_threads');
        require(workerData.tsx);
        const T = require(workerData.lib);
        (async () => {
          const vm = await T.VirtualMachine.load(workerData.model);
          const x = T.tensorFromNpy(workerData.input);
          parentPort.postMessage('ready');
          for (;;) { (await vm.run('main', x)).disposeSync(); vm.runSync('main', x).disposeSync(); }
        })();`)};
      (async () => {
        for (let i = 0; i < 3; i++) {
          const w = new Worker(src, { eval: true, workerData: Object.assign(${JSON.stringify({ tsx: TSX, lib: LIB, model: fx.path })}, { input: process.argv[1] }) });
          await new Promise((r) => w.once('message', r));
          await new Promise((r) => setTimeout(r, 20));
          await w.terminate();
        }
        const vm = await T.VirtualMachine.load(${JSON.stringify(fx.path)});
        const out = await vm.run('main', T.tensorFromNpy(process.argv[1]));
        process.stdout.write(JSON.stringify(Array.from(await out.toArray())));
      })();`;
    const input = path.join(path.dirname(fx.path), spec.inputs[0].file);
    const stdout = execFileSync(process.execPath, ['--require', TSX, '-e', script, input], {
      cwd: repoRoot,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out = Float32Array.from(JSON.parse(stdout) as number[]);
    assertMatches(Tensor.fromSync(out, { shape: spec.outputs[0].shape as number[] }), spec.outputs[0], fx.tolerance);
  });
});
