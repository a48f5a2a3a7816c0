/**
 * ModelRepository over temp folders holding copies of the compiled fixtures under chosen
 * names: listing and manifests, name checks, the LFU cache (count and byte bounds, ties,
 * changed files) and loads shared by concurrent get() calls.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DisposedError, outputsOf, type Tensor, TvmError, TvmValueError, type VirtualMachine } from '../../lib';
import { type CacheLimits, ModelRepository, type TensorSpec } from '../../lib/rpc/repository';
import { assertMatches, fixture, inputTensor } from '../fixtures';

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The files this process has mapped now, as /proc/self/maps names them. */
const mappedFiles = () =>
  new Set(
    fs
      .readFileSync('/proc/self/maps', 'utf8')
      .split('\n')
      .map((l) => l.split(/\s+/).slice(5).join(' '))
      .filter(Boolean),
  );

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
const getAll = (repo: ModelRepository, names: string[]) => names.map((n) => repo.getSync(n).vm);

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

  it('getSync() loads a model once, then serves it from the cache', async () => {
    const repo = openRepo({ mlp: 'mlp' });
    const first = repo.getSync('mlp');
    assert.deepEqual(repo.stats, { loads: 1, hits: 0, evictions: 0 });
    const second = repo.getSync('mlp');
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
      const c = repo.getSync('c').vm;
      assert.deepEqual(repo.loaded, ['a', 'c']);
      assert.deepEqual(repo.stats, { loads: 3, hits: 1, evictions: 1 });
      assert.equal(b.disposed, true);
      assert.equal(a.disposed, false);
      await assertRuns(a, 'mlp');
      await assertRuns(c, 'multi_out');

      // b comes back as a fresh load and pushes out c, now the least used
      const b2 = repo.getSync('b').vm;
      assert.notEqual(b2, b);
      assert.deepEqual(repo.loaded, ['a', 'b']);
      assert.deepEqual(repo.stats, { loads: 4, hits: 1, evictions: 2 });
      await assertRuns(b2, 'conv');
    });

    it('breaks ties by evicting the least recently used', () => {
      const repo = openRepo({ a: 'mlp', b: 'conv', c: 'multi_out' }, { maxModels: 2 });
      getAll(repo, ['a', 'b', 'a', 'b']); // two uses each, b last
      repo.getSync('c');
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
      repo.getSync('m8'); // all used once: the least recent goes
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

      repo.getSync('c'); // one eviction (a, the older of two single uses) makes room
      assert.deepEqual(repo.loaded, ['b', 'c']);
      assert.deepEqual(repo.stats, { loads: 3, hits: 0, evictions: 1 });

      repo.getSync('a');
      assert.deepEqual(repo.loaded, ['c', 'a']);
      assert.equal(repo.stats.evictions, 2);
      assert.ok(loadedBytes() <= maxBytes, `${loadedBytes()} bytes loaded, limit ${maxBytes}`);
    });
  });

  it('reloads a model whose file changed, as a new cache entry', async () => {
    const repo = openRepo({ mlp: 'mlp' });
    const old = repo.getSync('mlp');
    const file = old.info.file;
    const later = new Date(old.info.mtimeMs + 10_000);
    fs.utimesSync(file, later, later);

    const fresh = repo.getSync('mlp');
    assert.notEqual(fresh.vm, old.vm);
    // mtimeMs is derived from nanoseconds as a float: within a millisecond of what was set
    assert.ok(Math.abs(fresh.info.mtimeMs - later.getTime()) < 1, `mtime ${fresh.info.mtimeMs}, set ${later.getTime()}`);
    assert.deepEqual(repo.stats, { loads: 2, hits: 0, evictions: 1 });
    assert.deepEqual(repo.loaded, ['mlp']);
    assert.equal(old.vm.disposed, true);
    await assertRuns(fresh.vm, 'mlp');
    // the new version is the cached one from now on
    assert.equal(repo.getSync('mlp').vm, fresh.vm);
    assert.equal(repo.stats.hits, 1);
  });

  describe('get() (async)', () => {
    it('loads a model once for concurrent callers', async () => {
      const repo = openRepo({ mlp: 'mlp' }, { concurrency: 2 });
      const results = await Promise.all(Array.from({ length: 5 }, () => repo.get('mlp')));
      assert.deepEqual(repo.stats, { loads: 1, hits: 0, evictions: 0 });
      for (const r of results) assert.equal(r.vm, results[0].vm);
      await Promise.all(results.map((r) => assertRuns(r.vm, 'mlp')));

      // once loaded, it is a hit
      assert.equal((await repo.get('mlp')).vm, results[0].vm);
      assert.deepEqual(repo.stats, { loads: 1, hits: 1, evictions: 0 });
    });

    it('rejects an unknown model with TvmValueError', async () => {
      const repo = openRepo({ mlp: 'mlp' });
      await assert.rejects(repo.get('nope'), isValueError(/^no model 'nope'/));
      await assert.rejects(repo.get('../mlp'), isValueError(/^bad model name/));
      assert.deepEqual(repo.stats, { loads: 0, hits: 0, evictions: 0 });
    });

    it('does not keep a failed load: the next call tries again', async () => {
      const repo = openRepo({ mlp: 'mlp' });
      fs.writeFileSync(path.join(repo.dir, 'broken.so'), 'not an ELF file');
      const cannotLoad = (e: unknown) => e instanceof TvmError && /cannot load .*broken\.so/.test((e as Error).message);
      await assert.rejects(repo.get('broken'), cannotLoad);
      await assert.rejects(repo.get('broken'), cannotLoad);
      assert.deepEqual(repo.loaded, []);

      // repaired in place, it loads
      fs.copyFileSync(fixture('mlp').path, path.join(repo.dir, 'broken.so'));
      await assertRuns((await repo.get('broken')).vm, 'mlp');
      assert.deepEqual(repo.stats, { loads: 1, hits: 0, evictions: 0 });
    });
  });

  it('list() leaves out files whose names cannot be models, instead of failing', () => {
    const repo = openRepo({ mlp: 'mlp' });
    for (const odd of ['my model.so', '.x.so', '_x.so']) fs.copyFileSync(fixture('mlp').path, path.join(repo.dir, odd));
    assert.deepEqual(
      repo.list().map((m) => m.name),
      ['mlp'],
    );
  });

  it('a getSync() during a get() of the same model: one cached VM, the other load dropped', async () => {
    const repo = openRepo({ mlp: 'mlp' });
    const pending = repo.get('mlp');
    const sync = repo.getSync('mlp');
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
    repo.getSync('mlp');
    assert.throws(() => repo.getSync('conv'), isValueError(/unknown device 'tpu'/));
    assert.deepEqual(repo.loaded, ['mlp']);
    assert.equal(repo.stats.evictions, 0);
  });

  it('dispose() releases every loaded model, VMs and modules; it is idempotent and later gets are refused', async () => {
    const repo = openRepo({ a: 'mlp', b: 'conv' });
    // get()'s hit must be the same VM getSync() loaded, released with the rest
    const vms = [...getAll(repo, ['a', 'b']), (await repo.get('a')).vm];
    assert.equal(vms[2], vms[0]);
    assert.deepEqual(repo.loaded, ['a', 'b']);
    await repo.dispose();
    assert.deepEqual(repo.loaded, []);
    assert.equal(repo.disposed, true);
    assert.deepEqual(
      vms.map((vm) => vm.disposed),
      [true, true, true],
    );
    assert.deepEqual(
      vms.map((vm) => vm.module.disposed),
      [true, true, true],
    );
    await assert.rejects(vms[0].run('main', inputTensor(fixture('mlp').cases[0].inputs[0])), /disposed/);
    await repo.dispose();
    await assert.rejects(repo.get('a'), DisposedError);
    assert.throws(() => repo.getSync('a'), DisposedError);
  });

  it('dispose() during a load releases what that load brings', async () => {
    const repo = openRepo({ a: 'mlp' });
    const loading = repo.get('a');
    await repo.dispose();
    await assert.rejects(loading, DisposedError);
    assert.deepEqual(repo.loaded, []);
  });

  describe('a replaced artifact (hot reload)', () => {
    /** Ways of putting a new artifact in place of `NAME.so`. */
    const REPLACE: Record<string, (file: string, fx: string) => void> = {
      'written beside it and renamed over it': (file, fx) => {
        fs.copyFileSync(fixture(fx).path, `${file}.partial`);
        fs.renameSync(`${file}.partial`, file);
      },
      'deleted and put back': (file, fx) => {
        fs.rmSync(file);
        fs.copyFileSync(fixture(fx).path, file);
      },
      'copied over it in place (cp)': (file, fx) => {
        const ino = fs.statSync(file).ino;
        execFileSync('cp', [fixture(fx).path, file]);
        assert.equal(fs.statSync(file).ino, ino, 'cp must have written into the same inode');
      },
    };

    for (const [how, replace] of Object.entries(REPLACE)) {
      it(`${how}: the next getSync()/get() serves the new model; runs in flight finish on the old one`, async () => {
        const repo = openRepo({ model: 'mlp' }, { concurrency: 2 });
        const file = path.join(repo.dir, 'model.so');
        const old = repo.getSync('model');
        await assertRuns(old.vm, 'mlp');
        // The repository never maps the artifact itself, so nothing can write under a loaded model.
        assert.ok(!mappedFiles().has(file), `${file} is mapped`);

        const mlp = fixture('mlp');
        const inFlight = old.vm.run('main', ...mlp.cases[0].inputs.map(inputTensor));
        replace(file, 'conv');
        const fresh = repo.getSync('model');
        assert.notEqual(fresh.vm, old.vm);
        await assertRuns(fresh.vm, 'conv');
        // The old run completes on the old model, which is released after it.
        outputsOf<Tensor>(await inFlight).forEach((t, i) => assertMatches(t, mlp.cases[0].outputs[i], mlp.tolerance));
        assert.equal(old.vm.disposed, true);
        assert.deepEqual(repo.stats, { loads: 2, hits: 0, evictions: 1 });

        // Again, through the thread pool, with concurrent callers sharing one load.
        replace(file, 'multi_out');
        const [a, b] = await Promise.all([repo.get('model'), repo.get('model')]);
        assert.equal(a.vm, b.vm);
        await assertRuns(a.vm, 'multi_out');
        assert.equal(repo.stats.loads, 3);
        // And the cached new model is what later calls get.
        assert.equal(repo.getSync('model').vm, a.vm);
        await assertRuns(repo.getSync('model').vm, 'multi_out');
      });
    }

    it('a model replaced while another repository (another session) holds the old one: each serves its own view', async () => {
      const first = openRepo({ model: 'mlp' });
      const old = first.getSync('model');
      // A second repository over the same folder, as each full-mode session process has.
      const second = new ModelRepository(first.dir, { maxBytes: ROOMY });
      opened.push(second);
      REPLACE['written beside it and renamed over it'](path.join(first.dir, 'model.so'), 'conv');
      await assertRuns((await second.get('model')).vm, 'conv');
      await assertRuns(first.getSync('model').vm, 'conv');
      assert.equal(old.vm.disposed, true);
    });
  });

  describe('manifests', () => {
    it('a malformed manifest affects only its model: list() reports it, info()/get() name the file', async () => {
      const dir = repoFolder(
        { good: 'mlp', bad: 'conv', typed: 'multi_out', plain: 'fp16' },
        { good: { inputs: [{ name: 'x', shape: [4, 16], dtype: 'float32' }], function: 'main' }, typed: { inputs: 'x' } },
      );
      fs.writeFileSync(path.join(dir, 'bad.json'), '{"inputs": [');
      const repo = new ModelRepository(dir, { maxBytes: ROOMY });
      opened.push(repo);

      const listed = repo.list();
      assert.deepEqual(
        listed.map((m) => m.name),
        ['bad', 'good', 'plain', 'typed'],
      );
      const byName = Object.fromEntries(listed.map((m) => [m.name, m]));
      assert.match(byName.bad.error!, /^manifest bad\.json is not valid JSON: \S.*$/);
      assert.equal(byName.typed.error, 'manifest typed.json has "inputs" of a string: it must be an array of {"name"?, "shape", "dtype"}');
      for (const m of [byName.bad, byName.typed]) {
        assert.equal(m.inputs, undefined);
        assert.equal(m.bytes, fs.statSync(m.file).size);
      }
      assert.equal(byName.good.error, undefined);
      assert.deepEqual(byName.good.inputs, [{ name: 'x', shape: [4, 16], dtype: 'float32' }]);
      assert.equal(byName.plain.device, 'cpu');

      // The bad ones throw, naming the manifest and what is wrong with it...
      const badJson = isValueError(/^model 'bad': manifest bad\.json is not valid JSON: \S/);
      assert.throws(() => repo.info('bad'), badJson);
      assert.throws(() => repo.getSync('bad'), badJson);
      await assert.rejects(repo.get('bad'), badJson);
      assert.throws(() => repo.getSync('typed'), isValueError(/^model 'typed': manifest typed\.json has "inputs" of a string/));
      assert.equal(repo.stats.loads, 0);
      // ...while the others are served.
      await assertRuns(repo.getSync('good').vm, 'mlp');
      await assertRuns((await repo.get('plain')).vm, 'fp16');

      // Fixed, the model is served.
      fs.writeFileSync(path.join(dir, 'bad.json'), JSON.stringify({ inputs: [{ name: 'x', shape: [1, 3, 32, 32], dtype: 'float32' }] }));
      await assertRuns(repo.getSync('bad').vm, 'conv');
      assert.equal(repo.list().find((m) => m.name === 'bad')!.error, undefined);
    });

    it('an edited, added or deleted manifest is picked up like a changed artifact', async () => {
      const repo = openRepo({ mlp: 'mlp' });
      const manifest = path.join(repo.dir, 'mlp.json');
      const v1 = repo.getSync('mlp');
      assert.equal(v1.info.inputs, undefined);
      assert.equal(repo.getSync('mlp').vm, v1.vm); // unchanged: a hit

      const inputs: TensorSpec[] = [{ name: 'x', shape: [4, 16], dtype: 'float32' }];
      fs.writeFileSync(manifest, JSON.stringify({ inputs }));
      const v2 = repo.getSync('mlp');
      assert.deepEqual(v2.info.inputs, inputs);
      assert.notEqual(v2.vm, v1.vm);
      assert.deepEqual(repo.stats, { loads: 2, hits: 1, evictions: 1 });
      await assertRuns(v2.vm, 'mlp');

      // An edit in place (same inode), of another size.
      const outputs: TensorSpec[] = [{ name: 'y', shape: [4, 8], dtype: 'float32' }];
      fs.writeFileSync(manifest, JSON.stringify({ inputs, outputs }));
      const v3 = await repo.get('mlp');
      assert.deepEqual(v3.info.outputs, outputs);
      assert.notEqual(v3.vm, v2.vm);

      // A function the model lacks fails the load, naming what it has.
      fs.writeFileSync(manifest, JSON.stringify({ function: 'forward' }));
      assert.throws(() => repo.getSync('mlp'), isValueError(/^model 'mlp' has no function 'forward' \(it has 'main'\): fix "function" in mlp\.json$/));

      fs.rmSync(manifest);
      const v4 = repo.getSync('mlp');
      assert.equal(v4.info.outputs, undefined);
      assert.equal(v4.info.function, 'main');
      assert.notEqual(v4.vm, v3.vm);
      await assertRuns(v4.vm, 'mlp');
      assert.deepEqual(repo.loaded, ['mlp']);
    });

    it("getSync()/get() give the arity of the model's function", async () => {
      const repo = openRepo({ mlp: 'mlp', dyn: 'dynamic' });
      const sync = repo.getSync('mlp');
      assert.equal(sync.arity, 1);
      assert.equal(sync.arity, sync.vm.functions().find((f) => f.name === 'main')!.arity);
      assert.equal((await repo.get('dyn')).arity, 1);
      assert.equal((await repo.get('mlp')).arity, 1); // cached
    });
  });

  describe('check()', () => {
    it('passes a well-formed repository', () => {
      const dir = repoFolder(
        { a: 'mlp', b: 'dynamic', c: 'conv' },
        {
          a: { inputs: [{ name: 'x', shape: [4, 16], dtype: 'float32' }], outputs: [{ shape: [4, 8], dtype: 'float32' }], device: 'cpu:0', function: 'main' },
          b: { inputs: [{ shape: ['n', 4], dtype: 'float32' }], outputs: [{ shape: [null, null], dtype: 'int64' }], extra: 'ignored' },
        },
      );
      fs.writeFileSync(path.join(dir, 'orphan.json'), 'not a manifest of any model');
      new ModelRepository(dir).check();
      new ModelRepository(repoFolder({})).check(); // empty is fine
    });

    it('a missing folder, or a file, is one line naming the folder', () => {
      const missing = path.join(os.tmpdir(), `tvm-node-no-such-models-${process.pid}`);
      const exactly = (msg: string) => (e: unknown) => e instanceof TvmValueError && (e as Error).message === msg;
      assert.throws(() => new ModelRepository(missing).check(), exactly(`models folder ${missing} does not exist`));
      assert.throws(() => new ModelRepository(missing).list(), exactly(`models folder ${missing} does not exist`));
      const file = path.join(repoFolder({}), 'a-file');
      fs.writeFileSync(file, '');
      assert.throws(() => new ModelRepository(file).check(), exactly(`models folder ${file} is not a folder`));
      assert.throws(() => new ModelRepository(path.join(file, 'below')).check(), exactly(`models folder ${path.join(file, 'below')} is not a folder`));
    });

    const MALFORMED: Array<[string, string, RegExp]> = [
      ['invalid JSON', '{"inputs": [', /is not valid JSON: \S/],
      ['empty file', '', /is not valid JSON: \S/],
      ['an array', '[]', /must hold a JSON object, not an array$/],
      ['inputs not an array', '{"inputs": {}}', /has "inputs" of an object: it must be an array of \{"name"\?, "shape", "dtype"\}$/],
      ['an input not an object', '{"inputs": [3]}', /has "inputs"\[0\] of a number: it must be an object/],
      ['a name of the wrong type', '{"inputs": [{"name": 3, "shape": [1], "dtype": "float32"}]}', /has "inputs"\[0\]\.name of a number: it must be a string$/],
      ['a shape that is a string', '{"outputs": [{"shape": "n", "dtype": "float32"}]}', /has "outputs"\[0\]\.shape of a string: it must be an array of sizes$/],
      ['no shape', '{"outputs": [{"dtype": "float32"}]}', /has no "outputs"\[0\]\.shape: it must be an array of sizes$/],
      ['a boolean size', '{"inputs": [{"shape": [1, true], "dtype": "float32"}]}', /has "inputs"\[0\]\.shape\[1\] = true: sizes are non-negative integers/],
      ['a negative size', '{"inputs": [{"shape": [-1], "dtype": "float32"}]}', /has "inputs"\[0\]\.shape\[0\] = -1: sizes are/],
      ['no dtype', '{"inputs": [{"shape": [1]}]}', /has no "inputs"\[0\]\.dtype: it must be a string such as "float32"$/],
      ['a dtype of the wrong type', '{"inputs": [{"shape": [1], "dtype": 32}]}', /has "inputs"\[0\]\.dtype of a number/],
      ['a device of the wrong type', '{"device": 0}', /has "device" of a number: it must be a string such as "cpu" or "cuda:0"$/],
      ['an unknown device', '{"device": "tpu"}', /has "device" "tpu": unknown device 'tpu'/],
      ['a function of the wrong type', '{"function": ["main"]}', /has "function" of an array: it must be a string such as "main"$/],
    ];
    for (const [what, text, problem] of MALFORMED) {
      it(`names the manifest file: ${what}`, () => {
        const dir = repoFolder({ fine: 'mlp', model: 'conv' });
        fs.writeFileSync(path.join(dir, 'model.json'), text);
        const repo = new ModelRepository(dir);
        assert.throws(
          () => repo.check(),
          (e: unknown) => {
            assert.ok(e instanceof TvmValueError, String(e));
            const msg = (e as Error).message;
            assert.ok(msg.startsWith(`models folder ${dir}: manifest ${path.join(dir, 'model.json')} `), msg);
            assert.match(msg, problem);
            assert.ok(!msg.includes('\n'), `not one line: ${JSON.stringify(msg)}`);
            return true;
          },
        );
        // At run time the same problem affects that model only.
        assert.equal(
          repo
            .list()
            .find((m) => m.name === 'model')!
            .error?.startsWith('manifest model.json '),
          true,
        );
        assert.equal(repo.list().find((m) => m.name === 'fine')!.error, undefined);
      });
    }

    it('reports the first malformed manifest by model name', () => {
      const dir = repoFolder({ a: 'mlp', b: 'mlp', c: 'mlp' }, { a: {}, c: { device: 1 } });
      fs.writeFileSync(path.join(dir, 'b.json'), '{');
      assert.throws(() => new ModelRepository(dir).check(), isValueError(new RegExp(`: manifest ${escapeRe(path.join(dir, 'b.json'))} is not valid JSON`)));
    });
  });

  it('publicList() shows clients names, sizes, shapes, dtypes, device and function only', () => {
    const inputs: TensorSpec[] = [{ name: 'x', shape: [4, 16], dtype: 'float32' }];
    const outputs: TensorSpec[] = [{ shape: [4, 8], dtype: 'float32' }];
    const dir = repoFolder({ mlp: 'mlp', conv: 'conv', broken: 'multi_out' }, { mlp: { inputs, outputs, device: 'cpu', function: 'main' } });
    fs.writeFileSync(path.join(dir, 'broken.json'), '{"inputs": 1}');
    const repo = new ModelRepository(dir);
    const list = repo.publicList();
    assert.deepEqual(JSON.parse(JSON.stringify(list)), [
      {
        name: 'broken',
        bytes: sizeOf('multi_out'),
        error: 'manifest broken.json has "inputs" of a number: it must be an array of {"name"?, "shape", "dtype"}',
      },
      { name: 'conv', bytes: sizeOf('conv'), device: 'cpu', function: 'main' },
      { name: 'mlp', bytes: sizeOf('mlp'), inputs, outputs, device: 'cpu', function: 'main' },
    ]);
    const text = JSON.stringify(list);
    assert.ok(!text.includes('/'), `a path in ${text}`);
    assert.ok(!text.includes(dir) && !/mtime|file/.test(text), text);
  });
});
