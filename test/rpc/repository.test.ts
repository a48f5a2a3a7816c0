/**
 * ModelRepository over temp folders holding copies of the compiled fixtures under chosen
 * names: listing and manifests, name checks, the LFU cache (count and byte bounds, ties,
 * changed files) and loads shared by concurrent getAsync() calls.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { outputsOf, type Tensor, TvmError, TvmValueError, type VirtualMachine } from '../../lib';
import { type CacheLimits, ModelRepository, type TensorSpec } from '../../lib/rpc/repository';
import { assertMatches, fixture, inputTensor } from '../fixtures';

const scratch: string[] = [];
const opened: ModelRepository[] = [];

/** A fresh folder with fixture `models[name]` copied to `<name>.so`, and `<name>.json` where `manifests` has one. */
function repoFolder(models: Record<string, string>, manifests: Record<string, object> = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-repo-'));
  scratch.push(dir);
  for (const [name, fx] of Object.entries(models)) fs.copyFileSync(fixture(fx).path, path.join(dir, `${name}.so`));
  for (const [name, m] of Object.entries(manifests)) fs.writeFileSync(path.join(dir, `${name}.json`), JSON.stringify(m));
  return dir;
}

/**
 * A byte bound no test reaches, passed explicitly so that tests of other behaviour do not
 * depend on the default one (which has its own test).
 */
const ROOMY = 1 << 30;

/** A repository over a fresh folder; disposed after each test. */
function openRepo(models: Record<string, string>, limits: CacheLimits = {}): ModelRepository {
  const repo = new ModelRepository(repoFolder(models), { maxBytes: ROOMY, ...limits });
  opened.push(repo);
  return repo;
}

const sizeOf = (fx: string) => fs.statSync(fixture(fx).path).size;

/** Runs fixture `fx`'s first case on `vm` and checks every output against numpy's. */
async function assertRuns(vm: VirtualMachine, fx: string): Promise<void> {
  const f = fixture(fx);
  const c = f.cases[0];
  const outs = outputsOf<Tensor>(await vm.run(f.function ?? 'main', ...c.inputs.map(inputTensor)));
  assert.equal(outs.length, c.outputs.length, `${fx}: number of outputs`);
  c.outputs.forEach((spec, i) => assertMatches(outs[i], spec, f.tolerance));
}

/** Loads `names` in order with get(), returning the VMs. */
const getAll = (repo: ModelRepository, names: string[]) => names.map((n) => repo.get(n).vm);

const isValueError = (message: RegExp) => (e: unknown) => e instanceof TvmValueError && message.test((e as Error).message);

describe('rpc ModelRepository', () => {
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((r) => r.dispose()));
  });

  after(() => {
    for (const dir of scratch.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('lists the .so files with sizes, defaults and manifest fields', () => {
    const inputs: TensorSpec[] = [{ name: 'x', shape: ['n', 16], dtype: 'float32' }];
    const outputs: TensorSpec[] = [{ shape: ['n', 8], dtype: 'float32' }];
    const dir = repoFolder({ classifier: 'mlp', 'conv-v2.1': 'conv' }, { classifier: { inputs, outputs, device: 'cpu:0', function: 'forward' } });
    // neither is a model: a stray file and a manifest without an artifact
    fs.writeFileSync(path.join(dir, 'README.md'), 'models');
    fs.writeFileSync(path.join(dir, 'orphan.json'), '{}');
    const mtime = (name: string) => fs.statSync(path.join(dir, `${name}.so`)).mtimeMs;

    assert.deepEqual(new ModelRepository(dir).list(), [
      {
        name: 'classifier',
        file: path.join(dir, 'classifier.so'),
        bytes: sizeOf('mlp'),
        mtimeMs: mtime('classifier'),
        inputs,
        outputs,
        device: 'cpu:0',
        function: 'forward',
      },
      {
        name: 'conv-v2.1',
        file: path.join(dir, 'conv-v2.1.so'),
        bytes: sizeOf('conv'),
        mtimeMs: mtime('conv-v2.1'),
        inputs: undefined,
        outputs: undefined,
        device: 'cpu',
        function: 'main',
      },
    ]);
  });

  it('info() refuses bad names and unknown models', () => {
    const repo = openRepo({ mlp: 'mlp' });
    for (const bad of ['../x', '', '.hidden', 'a/b', '-rf', 'mlp\n']) {
      assert.throws(() => repo.info(bad), isValueError(/^bad model name/), JSON.stringify(bad));
    }
    assert.throws(() => repo.info('nope'), isValueError(/^no model 'nope' in the repository$/));
    // while a good name in the same folder is served
    assert.equal(repo.info('mlp').bytes, sizeOf('mlp'));
  });

  it('get() loads a model once, then serves it from the cache', async () => {
    const repo = openRepo({ mlp: 'mlp' });
    const first = repo.get('mlp');
    assert.deepEqual(repo.stats, { loads: 1, hits: 0, evictions: 0 });
    const second = repo.get('mlp');
    assert.equal(second.vm, first.vm);
    assert.deepEqual(repo.stats, { loads: 1, hits: 1, evictions: 0 });
    assert.deepEqual(second.info, repo.info('mlp'));
    assert.deepEqual(repo.loaded, ['mlp']);
    await assertRuns(first.vm, 'mlp');
  });

  describe('LFU eviction', () => {
    it('evicts the least frequently used when maxModels is reached', async () => {
      const repo = openRepo({ a: 'mlp', b: 'conv', c: 'multi_out' }, { maxModels: 2 });
      const [a, , b] = getAll(repo, ['a', 'a', 'b']); // a used twice, b once
      const c = repo.get('c').vm;
      assert.deepEqual(repo.loaded, ['a', 'c']);
      assert.deepEqual(repo.stats, { loads: 3, hits: 1, evictions: 1 });
      assert.equal(b.disposed, true);
      assert.equal(a.disposed, false);
      await assertRuns(a, 'mlp');
      await assertRuns(c, 'multi_out');

      // b comes back as a fresh load and pushes out c, now the least used
      const b2 = repo.get('b').vm;
      assert.notEqual(b2, b);
      assert.deepEqual(repo.loaded, ['a', 'b']);
      assert.deepEqual(repo.stats, { loads: 4, hits: 1, evictions: 2 });
      await assertRuns(b2, 'conv');
    });

    it('breaks ties by evicting the least recently used', () => {
      const repo = openRepo({ a: 'mlp', b: 'conv', c: 'multi_out' }, { maxModels: 2 });
      getAll(repo, ['a', 'b', 'a', 'b']); // two uses each, b last
      repo.get('c');
      assert.deepEqual(repo.loaded, ['b', 'c']);
      assert.deepEqual(repo.stats, { loads: 3, hits: 2, evictions: 1 });
    });

    it('by default keeps 8 models, however small', () => {
      // nine small copies are far below the default byte bound (2 GiB): only the count bound acts
      const names = Array.from({ length: 9 }, (_, i) => `m${i}`);
      const repo = new ModelRepository(repoFolder(Object.fromEntries(names.map((n) => [n, 'multi_out']))));
      opened.push(repo);
      getAll(repo, names.slice(0, 8));
      assert.deepEqual(repo.loaded, names.slice(0, 8));
      assert.equal(repo.stats.evictions, 0);
      repo.get('m8'); // all used once: the least recent goes
      assert.deepEqual(repo.loaded, names.slice(1));
      assert.deepEqual(repo.stats, { loads: 9, hits: 0, evictions: 1 });
    });

    it('keeps the loaded artifacts within maxBytes', () => {
      // conv + mlp fill the budget exactly, and multi_out fits in place of either
      assert.ok(sizeOf('multi_out') <= sizeOf('mlp') && sizeOf('mlp') <= sizeOf('conv'), 'fixture sizes changed: revise this test');
      const maxBytes = sizeOf('conv') + sizeOf('mlp');
      const repo = openRepo({ a: 'conv', b: 'mlp', c: 'multi_out' }, { maxBytes });
      const loadedBytes = () => repo.loaded.reduce((n, name) => n + repo.info(name).bytes, 0);

      getAll(repo, ['a', 'b']);
      assert.deepEqual(repo.loaded, ['a', 'b']);
      assert.equal(loadedBytes(), maxBytes);

      repo.get('c'); // one eviction (a, the older of two single uses) makes room
      assert.deepEqual(repo.loaded, ['b', 'c']);
      assert.deepEqual(repo.stats, { loads: 3, hits: 0, evictions: 1 });

      repo.get('a');
      assert.deepEqual(repo.loaded, ['c', 'a']);
      assert.equal(repo.stats.evictions, 2);
      assert.ok(loadedBytes() <= maxBytes, `${loadedBytes()} bytes loaded, limit ${maxBytes}`);
    });
  });

  it('reloads a model whose file changed, as a new cache entry', async () => {
    const repo = openRepo({ mlp: 'mlp' });
    const old = repo.get('mlp');
    const file = old.info.file;
    const later = new Date(old.info.mtimeMs + 10_000);
    fs.utimesSync(file, later, later);

    const fresh = repo.get('mlp');
    assert.notEqual(fresh.vm, old.vm);
    // mtimeMs is derived from nanoseconds as a float: within a millisecond of what was set
    assert.ok(Math.abs(fresh.info.mtimeMs - later.getTime()) < 1, `mtime ${fresh.info.mtimeMs}, set ${later.getTime()}`);
    assert.deepEqual(repo.stats, { loads: 2, hits: 0, evictions: 1 });
    assert.deepEqual(repo.loaded, ['mlp']);
    assert.equal(old.vm.disposed, true);
    await assertRuns(fresh.vm, 'mlp');
    // the new version is the cached one from now on
    assert.equal(repo.get('mlp').vm, fresh.vm);
    assert.equal(repo.stats.hits, 1);
  });

  describe('getAsync()', () => {
    it('loads a model once for concurrent callers', async () => {
      const repo = openRepo({ mlp: 'mlp' }, { concurrency: 2 });
      const results = await Promise.all(Array.from({ length: 5 }, () => repo.getAsync('mlp')));
      assert.deepEqual(repo.stats, { loads: 1, hits: 0, evictions: 0 });
      for (const r of results) assert.equal(r.vm, results[0].vm);
      await Promise.all(results.map((r) => assertRuns(r.vm, 'mlp')));

      // once loaded, it is a hit
      assert.equal((await repo.getAsync('mlp')).vm, results[0].vm);
      assert.deepEqual(repo.stats, { loads: 1, hits: 1, evictions: 0 });
    });

    it('rejects an unknown model with TvmValueError', async () => {
      const repo = openRepo({ mlp: 'mlp' });
      await assert.rejects(repo.getAsync('nope'), isValueError(/^no model 'nope'/));
      await assert.rejects(repo.getAsync('../mlp'), isValueError(/^bad model name/));
      assert.deepEqual(repo.stats, { loads: 0, hits: 0, evictions: 0 });
    });

    it('does not keep a failed load: the next call tries again', async () => {
      const repo = openRepo({ mlp: 'mlp' });
      fs.writeFileSync(path.join(repo.dir, 'broken.so'), 'not an ELF file');
      const cannotLoad = (e: unknown) => e instanceof TvmError && /cannot load .*broken\.so/.test((e as Error).message);
      await assert.rejects(repo.getAsync('broken'), cannotLoad);
      await assert.rejects(repo.getAsync('broken'), cannotLoad);
      assert.deepEqual(repo.loaded, []);

      // repaired in place, it loads
      fs.copyFileSync(fixture('mlp').path, path.join(repo.dir, 'broken.so'));
      await assertRuns((await repo.getAsync('broken')).vm, 'mlp');
      assert.deepEqual(repo.stats, { loads: 1, hits: 0, evictions: 0 });
    });
  });

  it('list() leaves out files whose names cannot be models, instead of failing', () => {
    const repo = openRepo({ mlp: 'mlp' });
    for (const odd of ['my model.so', '.x.so', '_x.so']) fs.copyFileSync(fixture('mlp').path, path.join(repo.dir, odd));
    assert.deepEqual(repo.list().map((m) => m.name), ['mlp']);
  });

  it('a get() during a getAsync() of the same model: one cached VM, the other load dropped', async () => {
    const repo = openRepo({ mlp: 'mlp' });
    const pending = repo.getAsync('mlp');
    const sync = repo.get('mlp');
    const late = await pending;
    assert.equal(late.vm, sync.vm);
    assert.equal(sync.vm.disposed, false);
    assert.deepEqual(repo.loaded, ['mlp']);
    assert.equal(repo.stats.evictions, 0);
    await assertRuns(sync.vm, 'mlp');
  });

  it('a manifest naming an unknown device fails that load without evicting others', () => {
    const dir = repoFolder({ mlp: 'mlp', conv: 'conv' }, { conv: { device: 'tpu' } });
    const repo = new ModelRepository(dir, { maxModels: 1, maxBytes: ROOMY });
    opened.push(repo);
    repo.get('mlp');
    assert.throws(() => repo.get('conv'), isValueError(/unknown device 'tpu'/));
    assert.deepEqual(repo.loaded, ['mlp']);
    assert.equal(repo.stats.evictions, 0);
  });

  it('dispose() releases every loaded model', async () => {
    const repo = openRepo({ a: 'mlp', b: 'conv' });
    // getAsync's hit must be the same VM get() loaded, released with the rest
    const vms = [...getAll(repo, ['a', 'b']), (await repo.getAsync('a')).vm];
    assert.equal(vms[2], vms[0]);
    assert.deepEqual(repo.loaded, ['a', 'b']);
    await repo.dispose();
    assert.deepEqual(repo.loaded, []);
    assert.deepEqual(vms.map((vm) => vm.disposed), [true, true, true]);
    await assert.rejects(vms[0].run('main', inputTensor(fixture('mlp').cases[0].inputs[0])), /disposed/);
  });
});
