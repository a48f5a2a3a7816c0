import assert from 'node:assert/strict';
import v8 from 'node:v8';
import vm from 'node:vm';
import { getGlobalFunc, outputsOf, registerFunc, Tensor, VirtualMachine } from '../lib';
import { assertMatches, fixture, inputTensor, npy } from './fixtures';

const MiB = 1024 * 1024;

/** A full GC: `global.gc` when node runs with --expose-gc, else one obtained through V8's flags. */
function collector(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return g;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

/** RSS after letting finalizers run and collecting twice. */
async function settledRss(gc: () => void): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return process.memoryUsage().rss;
}

describe('soak: many runs do not leak', function () {
  this.timeout(120_000);
  const fx = fixture('mlp');
  const spec = fx.cases[0];
  const gc = collector();

  /** Compares a result with the reference without re-reading the .npy each time. */
  const ref = Float32Array.from(npy(spec.outputs[0]).data as Float32Array);
  function matchesReference(t: Tensor): boolean {
    const got = t.toArraySync() as Float32Array;
    if (got.length !== ref.length) return false;
    for (let i = 0; i < ref.length; i++) {
      if (Math.abs(got[i] - ref[i]) > fx.tolerance.atol + fx.tolerance.rtol * Math.abs(ref[i])) return false;
    }
    return true;
  }

  it('10,000 runs of mlp (vm.runSync and batched vm.run), outputs disposed: RSS stays flat, results stay right', async () => {
    const model = await VirtualMachine.load(fx.path, { concurrency: 4 });
    const x = inputTensor(spec.inputs[0]);
    let runs = 0;
    let mismatches = 0;
    let last: Tensor | undefined;

    /** `n` runs: half on the JS thread, half as async runs 8 at a time. */
    async function soak(n: number): Promise<void> {
      for (let done = 0; done < n; ) {
        for (let i = 0; i < 50 && done < n; i++, done++) {
          const out = outputsOf<Tensor>(model.runSync('main', x));
          if (++runs % 997 === 0 && !matchesReference(out[0])) mismatches++;
          for (const t of out) t.disposeSync();
        }
        for (let i = 0; i < 50 && done < n; ) {
          const batch = Math.min(8, 50 - i, n - done);
          const results = await Promise.all(Array.from({ length: batch }, () => model.run('main', x)));
          for (const r of results) {
            const out = outputsOf<Tensor>(r);
            if (++runs % 997 === 0 && !matchesReference(out[0])) mismatches++;
            last?.disposeSync();
            last = out[0];
            for (const t of out.slice(1)) t.disposeSync();
          }
          i += batch;
          done += batch;
        }
      }
    }

    await soak(1_000);
    const before = await settledRss(gc);
    await soak(10_000);
    const after = await settledRss(gc);

    assert.equal(runs, 11_000);
    assert.equal(mismatches, 0, `${mismatches} sampled outputs differed from the reference`);
    assert.equal(model.pending, 0);
    assert.ok(last && !last.disposed);
    assertMatches(last, spec.outputs[0], fx.tolerance);
    assertMatches(outputsOf<Tensor>(model.runSync('main', x))[0], spec.outputs[0], fx.tolerance);
    const growth = (after - before) / MiB;
    assert.ok(growth < 40, `RSS grew by ${growth.toFixed(1)} MiB over 10,000 runs (${(before / MiB).toFixed(1)} -> ${(after / MiB).toFixed(1)} MiB)`);
    await model.dispose();
  });

  it('5,000 runs whose outputs are never disposed are reclaimed by the GC (finalizer safety net)', async () => {
    const model = await VirtualMachine.load(fx.path);
    const x = inputTensor(spec.inputs[0]);
    let last: unknown;
    const soak = async (n: number) => {
      for (let i = 0; i < n; i += 10) {
        for (let k = 0; k < 5; k++) last = model.runSync('main', x);
        for (const r of await Promise.all(Array.from({ length: 5 }, () => model.run('main', x)))) last = r;
      }
    };
    await soak(1_000);
    const before = await settledRss(gc);
    await soak(5_000);
    const after = await settledRss(gc);
    assertMatches(outputsOf<Tensor>(last)[0], spec.outputs[0], fx.tolerance);
    const growth = (after - before) / MiB;
    assert.ok(growth < 40, `RSS grew by ${growth.toFixed(1)} MiB over 5,000 undisposed runs`);
    await model.dispose();
  });

  it('10,000 round trips through a registered JS function (sync and async) do not leak', async () => {
    const reg = registerFunc('test.soak.echo', (t: Tensor, s: string, n: number) => [t, `${s}!`, n + 1]);
    try {
      const echo = getGlobalFunc('test.soak.echo')!;
      const t = Tensor.fromSync(new Float32Array(64).fill(1.5));
      const soak = async (n: number) => {
        let check: unknown[] = [];
        for (let i = 0; i < n; i += 10) {
          for (let k = 0; k < 5; k++) check = echo.callSync(t, 'x', i) as unknown[];
          for (const r of await Promise.all(Array.from({ length: 5 }, (_, k) => echo.call(t, 'y', i + k)))) check = r as unknown[];
          (check[0] as Tensor).disposeSync();
        }
        return check;
      };
      await soak(1_000);
      const before = await settledRss(gc);
      const lastResult = await soak(10_000);
      const after = await settledRss(gc);
      assert.deepEqual(lastResult.slice(1), ['y!', 9_990 + 4 + 1]);
      const growth = (after - before) / MiB;
      assert.ok(growth < 40, `RSS grew by ${growth.toFixed(1)} MiB over 10,000 JS-function round trips`);
      assert.deepEqual(Array.from(t.toArraySync() as Float32Array), new Array(64).fill(1.5));
    } finally {
      reg.unregister();
    }
  });
});
