import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpu, DisposedError, loadModule, loadModuleSync, outputsOf, Tensor, TvmAttributeError, TvmError, VirtualMachine } from '../lib';
import { assertMatches, fixture, inputTensor, repoRoot } from './fixtures';

describe('VirtualMachine (Relax VM)', () => {
  for (const name of ['mlp', 'conv', 'multi_out', 'fp16']) {
    it(`runs ${name} and matches the numpy reference (sync and async)`, async () => {
      const fx = fixture(name);
      const vm = await VirtualMachine.load(fx.path, { devices: [cpu()] });
      for (const c of fx.cases) {
        const inputs = c.inputs.map(inputTensor);
        const sync = outputsOf<Tensor>(vm.runSync(fx.function!, ...inputs));
        const async = outputsOf<Tensor>(await vm.run(fx.function!, ...inputs));
        assert.equal(sync.length, c.outputs.length);
        c.outputs.forEach((spec, i) => {
          assertMatches(sync[i], spec, fx.tolerance);
          assertMatches(async[i], spec, fx.tolerance);
        });
      }
      await vm.dispose();
    });
  }

  it('returns a tuple output as an array of tensors', async () => {
    const fx = fixture('multi_out');
    const vm = await VirtualMachine.load(fx.path);
    const out = await vm.run('main', inputTensor(fx.cases[0].inputs[0]));
    assert.ok(Array.isArray(out));
    assert.deepEqual(
      (out as Tensor[]).map((t) => t.dtype),
      ['float32', 'float32', 'int64'],
    );
    await vm.dispose();
  });

  it('lists functions with arity and parameter names', async () => {
    const vm = await VirtualMachine.load(fixture('mlp').path);
    assert.deepEqual(vm.functions(), [{ name: 'main', arity: 1, params: ['x'] }]);
    await vm.dispose();
  });

  it('runs an artifact that calls the Python-only relax.run.* functions, without Python', async () => {
    const fx = fixture('dynamic');
    assert.ok(fx.needs_host_functions!.includes('relax.run.unique'));
    const vm = await VirtualMachine.load(fx.path);
    for (const c of fx.cases) {
      const out = outputsOf<Tensor>(await vm.run('main', ...c.inputs.map(inputTensor)));
      c.outputs.forEach((spec, i) => assertMatches(out[i], spec, fx.tolerance));
    }
    await vm.dispose();
  });

  it('prints what relax.run.print prints, as Python would', () => {
    const fx = fixture('dynamic');
    const script = `
      const { VirtualMachine, tensorFromNpy } = require('./lib');
      const vm = new VirtualMachine(require('./lib').loadModuleSync(${JSON.stringify(fx.path)}));
      vm.runSync('main', tensorFromNpy(process.argv[1]));`;
    const file = require('node:path').join(require('./fixtures').fixtureDir(), fx.cases[0].inputs[0].file);
    const out = execFileSync(process.execPath, ['--require', 'tsx/cjs', '-e', script, file], { cwd: repoRoot, encoding: 'utf8' });
    assert.equal(out, fx.cases[0].stdout);
  });

  it('keeps the event loop ticking during a long async run', async () => {
    const fx = fixture('slow');
    const vm = await VirtualMachine.load(fx.path);
    const x = inputTensor(fx.cases[0].inputs[0]);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const started = Date.now();
    const out = outputsOf<Tensor>(await vm.run('main', x));
    const elapsed = Date.now() - started;
    clearInterval(timer);
    assertMatches(out[0], fx.cases[0].outputs[0], fx.tolerance);
    // A blocked loop would fire the timer at most once; a free one about elapsed/5 times.
    assert.ok(ticks >= Math.min(10, elapsed / 20), `only ${ticks} ticks in ${elapsed} ms`);
    await vm.dispose();
  });

  it('serves many runs in flight at once with correct results', async () => {
    const fx = fixture('mlp');
    const vm = await VirtualMachine.load(fx.path, { concurrency: 3 });
    const x = inputTensor(fx.cases[0].inputs[0]);
    const outs = await Promise.all(Array.from({ length: 12 }, () => vm.run('main', x)));
    for (const o of outs) assertMatches(o as Tensor, fx.cases[0].outputs[0], fx.tolerance);
    await vm.dispose();
  });

  it('dispose() waits for runs in flight, then refuses new ones', async () => {
    const fx = fixture('slow');
    const vm = await VirtualMachine.load(fx.path, { concurrency: 1 });
    const x = inputTensor(fx.cases[0].inputs[0]);
    const runs = [vm.run('main', x), vm.run('main', x)];
    await vm.dispose();
    assert.equal(vm.pending, 0);
    for (const r of await Promise.all(runs)) assertMatches(outputsOf<Tensor>(r)[0], fx.cases[0].outputs[0], fx.tolerance);
    await assert.rejects(vm.run('main', x), DisposedError);
  });

  it('a VM loaded from a path owns its module (load and loadSync); one made over a module leaves it to the caller', async () => {
    const fx = fixture('mlp');
    const x = inputTensor(fx.cases[0].inputs[0]);
    const expect = fx.cases[0].outputs[0];
    const loaded = await VirtualMachine.load(fx.path);
    const loadedSync = VirtualMachine.loadSync(fx.path);
    assertMatches(outputsOf<Tensor>(loadedSync.runSync('main', x))[0], expect, fx.tolerance);
    assertMatches(outputsOf<Tensor>(await loaded.run('main', x))[0], expect, fx.tolerance);
    await Promise.all([loaded.dispose(), loadedSync.dispose()]);
    assert.deepEqual([loaded.module.disposed, loadedSync.module.disposed], [true, true]);
    await loaded.dispose(); // idempotent

    const mod = await loadModule(fx.path);
    const created = await VirtualMachine.create(mod);
    const constructed = new VirtualMachine(mod);
    assertMatches(outputsOf<Tensor>(await created.run('main', x))[0], expect, fx.tolerance);
    assertMatches(outputsOf<Tensor>(constructed.runSync('main', x))[0], expect, fx.tolerance);
    await created.dispose();
    await constructed.dispose();
    assert.equal(mod.disposed, false);
    const again = await VirtualMachine.create(mod);
    assertMatches(outputsOf<Tensor>(await again.run('main', x))[0], expect, fx.tolerance);
    await again.dispose();
    await mod.dispose();
    assert.equal(mod.disposed, true);
  });

  it('`await using` disposes a VM and the module it loaded', async () => {
    const fx = fixture('mlp');
    let vm: VirtualMachine;
    {
      await using v = await VirtualMachine.load(fx.path);
      vm = v;
      assert.equal(vm.disposed, false);
    }
    assert.equal(vm.disposed, true);
    assert.equal(vm.module.disposed, true);
  });

  it('wrong input shape, dtype and arity give TVM errors, and the VM still works', async () => {
    const fx = fixture('mlp');
    const vm = await VirtualMachine.load(fx.path);
    await assert.rejects(vm.run('main', Tensor.empty([3, 16])), (e: Error) => e instanceof TvmError && /shape\[0\] mismatch/.test(e.message));
    await assert.rejects(vm.run('main', Tensor.empty([4, 16], 'int32')), (e: Error) => e instanceof TvmError && /dtype|float32/.test(e.message));
    assert.throws(
      () => vm.runSync('main'),
      (e: Error) => e instanceof TvmError && /expects 1 arguments/.test(e.message),
    );
    assert.throws(() => vm.runSync('nope'), TvmAttributeError);
    assertMatches(vm.runSync('main', inputTensor(fx.cases[0].inputs[0])) as Tensor, fx.cases[0].outputs[0], fx.tolerance);
    await vm.dispose();
  });

  it('a kernel library is not a VM executable', () => {
    assert.throws(() => new VirtualMachine(loadModuleSync(fixture('kernels').path)), /not a Relax VM executable/);
  });
});
