import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type NpyArray, readNpy, TvmRuntimeError, TvmValueError } from '../lib';
import { inFlight } from '../lib/cli/bench';
import { describeFailure, UsageError, withHint } from '../lib/cli/errors';
import { bindInputs, parseDevice, parseDTypeSpec, parseInputSpec, parseShape, parseShapeSpec, randomArray, seededRandom } from '../lib/cli/inputs';
import { formatNumber, latencyStats, percentile, valueStats } from '../lib/cli/stats';
import { connect } from '../lib/rpc/client';
import { assertFailure, runCli } from './cli-run';
import { fixture, fixtureDir, fixtureFile, repoRoot } from './fixtures';

/** Runs the CLI from source as a child process, the way `tvm-node` runs. */
const cli = (...args: string[]) => runCli(args, { timeoutMs: 90_000 });

/** Asserts two arrays match: exactly for integers, within atol + rtol*|ref| for floats. */
function assertClose(got: NpyArray, want: NpyArray, tol: { rtol: number; atol: number }, what: string): void {
  assert.deepEqual(got.shape, want.shape, `shape of ${what}`);
  assert.equal(got.dtype, want.dtype, `dtype of ${what}`);
  const g = Array.from(got.data as ArrayLike<number | bigint>, Number);
  const w = Array.from(want.data as ArrayLike<number | bigint>, Number);
  assert.equal(g.length, w.length);
  for (let i = 0; i < w.length; i++) {
    const bound = /int|bool/.test(want.dtype) ? 0 : tol.atol + tol.rtol * Math.abs(w[i]);
    assert.ok(Math.abs(g[i] - w[i]) <= bound, `${what}[${i}]: got ${g[i]}, want ${w[i]}`);
  }
}

describe('CLI helpers', () => {
  describe('percentile', () => {
    it('interpolates linearly between ranks, as numpy does', () => {
      const ten = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
      // numpy.percentile(range(1, 11), [0, 50, 90, 99, 100]) = [1, 5.5, 9.1, 9.91, 10]
      assert.equal(percentile(ten, 0), 1);
      assert.equal(percentile(ten, 50), 5.5);
      assert.ok(Math.abs(percentile(ten, 90) - 9.1) < 1e-12);
      assert.ok(Math.abs(percentile(ten, 99) - 9.91) < 1e-12);
      assert.equal(percentile(ten, 100), 10);
      const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
      assert.ok(Math.abs(percentile(hundred, 99) - 99.01) < 1e-9);
      assert.equal(percentile([1, 2, 3, 4], 50), 2.5);
      assert.equal(percentile([7], 99), 7);
    });

    it('refuses no values and percentiles outside 0..100', () => {
      assert.throws(() => percentile([], 50), TvmValueError);
      assert.throws(() => percentile([1], -1), TvmValueError);
      assert.throws(() => percentile([1], 101), TvmValueError);
      assert.throws(() => percentile([1], NaN), TvmValueError);
    });

    it('summarizes unsorted samples without changing them', () => {
      const samples = [9, 2, 5, 4, 4, 7, 4, 5];
      const s = latencyStats(samples);
      assert.deepEqual(samples, [9, 2, 5, 4, 4, 7, 4, 5]);
      assert.equal(s.count, 8);
      assert.equal(s.min, 2);
      assert.equal(s.max, 9);
      assert.equal(s.mean, 5);
      assert.equal(s.stddev, 2);
      assert.equal(s.p50, 4.5);
      assert.ok(Math.abs(s.p90 - 7.6) < 1e-12);
      assert.ok(Math.abs(s.p99 - 8.86) < 1e-12);
      assert.throws(() => latencyStats([]), TvmValueError);
    });
  });

  it('summarizes values: NaNs counted apart, bigints and bools as numbers', () => {
    assert.deepEqual(valueStats(new Float32Array([1, NaN, -3, 5])), { count: 4, nan: 1, min: -3, max: 5, mean: 1 });
    assert.deepEqual(valueStats(new BigInt64Array([2n, 4n])), { count: 2, nan: 0, min: 2, max: 4, mean: 3 });
    assert.equal(valueStats(new Float32Array(0)), null);
    assert.ok(Number.isNaN(valueStats([NaN])!.mean));
    assert.equal(formatNumber(0.1234567891), '0.123457');
    assert.equal(formatNumber(42), '42');
    assert.equal(formatNumber(1.5e-7), '1.5e-7');
  });

  it('parses --input, --shape, --dtype and --device, with usage errors for bad ones', () => {
    assert.deepEqual(parseInputSpec('x=in.npy'), { name: 'x', file: 'in.npy' });
    assert.deepEqual(parseInputSpec('in.npy'), { file: 'in.npy' });
    assert.deepEqual(parseInputSpec('./a=b.npy'), { file: './a=b.npy' });
    assert.deepEqual(parseInputSpec('data/a=b.npy'), { name: 'data/a', file: 'b.npy' }); // names may contain '/'
    for (const bad of ['', '=in.npy', 'x=']) assert.throws(() => parseInputSpec(bad), UsageError, bad);
    assert.deepEqual(parseShape('1x3x224x224'), [1, 3, 224, 224]);
    assert.deepEqual(parseShape('[4, 16]'), [4, 16]);
    assert.deepEqual(parseShape('8'), [8]);
    assert.deepEqual(parseShape('scalar'), []);
    for (const bad of ['', '4xa', '4x-1', '1.5x2', '4xx2']) assert.throws(() => parseShape(bad), UsageError, bad);
    assert.deepEqual(parseShapeSpec('x=4x16'), { name: 'x', shape: [4, 16] });
    assert.deepEqual(parseDTypeSpec('ids=int64'), { name: 'ids', dtype: 'int64' });
    assert.deepEqual(parseDTypeSpec('float16'), { dtype: 'float16' });
    assert.throws(() => parseDTypeSpec('float8'), UsageError);
    const d = parseDevice('cuda:1');
    assert.deepEqual([d.deviceType, d.deviceId], [2, 1]);
    assert.equal(parseDevice('cpu').deviceId, 0);
    assert.throws(() => parseDevice('bogus:0'), UsageError);
    assert.throws(() => parseDevice('cuda:x'), UsageError);
  });

  it('binds inputs to parameters by name, then in order', () => {
    const fn = { name: 'main', params: ['a', 'b', 'c'] };
    const files = (b: ReturnType<typeof bindInputs>) => b.map((x) => (x.source.kind === 'file' ? x.source.file : x.source.shape.join('x')));
    assert.deepEqual(files(bindInputs(fn, [{ file: '1' }, { file: '2' }, { file: '3' }])), ['1', '2', '3']);
    assert.deepEqual(files(bindInputs(fn, [{ name: 'b', file: 'B' }, { file: '1' }, { file: '2' }])), ['1', 'B', '2']);
    const mixed = bindInputs(fn, [{ name: 'c', file: 'C' }], {
      shapes: [{ shape: [2, 3] }, { name: 'a', shape: [4] }],
      dtypes: [{ dtype: 'int32' }, { name: 'a', dtype: 'float16' }],
    });
    assert.deepEqual(files(mixed), ['4', '2x3', 'C']);
    assert.deepEqual(
      mixed.map((x) => (x.source.kind === 'random' ? x.source.dtype : 'file')),
      ['float16', 'int32', 'file'],
    );
    assert.throws(
      () => bindInputs(fn, [{ file: '1' }, { file: '2' }]),
      (e: UsageError) => e instanceof UsageError && /no input for parameter 'c'/.test(e.message),
    );
    assert.throws(() => bindInputs(fn, [{ file: '1' }, { file: '2' }, { file: '3' }, { file: '4' }]), /takes 3 input\(s\), but 4 were given/);
    assert.throws(() => bindInputs(fn, [{ name: 'z', file: 'Z' }]), /'z', which is not a parameter of main\(a, b, c\)/);
    assert.throws(
      () =>
        bindInputs(fn, [
          { name: 'a', file: '1' },
          { name: 'a', file: '2' },
        ]),
      /given twice/,
    );
    assert.throws(
      () => bindInputs(fn, [{ name: 'a', file: '1' }], { shapes: [{ shape: [1] }, { shape: [1] }], dtypes: [{ name: 'a', dtype: 'int8' }] }),
      /read from a file/,
    );
  });

  it('makes deterministic random inputs in the documented ranges', () => {
    const f = randomArray([1000], 'float32', seededRandom(1)) as Float32Array;
    assert.deepEqual(Array.from(f), Array.from(randomArray([1000], 'float32', seededRandom(1)) as Float32Array));
    assert.ok(f.every((v) => v >= -1 && v < 1));
    const st = valueStats(f)!;
    assert.ok(st.min < -0.9 && st.max > 0.9 && Math.abs(st.mean) < 0.1, JSON.stringify(st));
    const ints = randomArray([2, 500], 'int64', seededRandom(2)) as BigInt64Array;
    assert.equal(ints.length, 1000);
    assert.ok(ints.every((v) => v >= 0n && v < 8n));
    assert.equal(new Set(ints).size, 8);
    assert.ok((randomArray([100], 'bool') as Uint8Array).every((v) => v === 0 || v === 1));
    assert.equal(randomArray([3, 4], 'float16').length, 12);
  });

  it('stops issuing calls after the first failure and reports it', async () => {
    let started = 0;
    let inFlightNow = 0;
    let most = 0;
    await inFlight(50, 3, async () => {
      started++;
      most = Math.max(most, ++inFlightNow);
      await new Promise((r) => setTimeout(r, 1));
      inFlightNow--;
    });
    assert.equal(started, 50);
    assert.equal(most, 3);
    started = 0;
    await assert.rejects(
      inFlight(50, 2, async (i) => {
        started++;
        if (i === 5) throw new Error('boom');
        await new Promise((r) => setTimeout(r, 1));
      }),
      /boom/,
    );
    assert.ok(started <= 8, `${started} calls started`);
  });

  it('reports failures as one message line and one hint line with the right exit status', () => {
    const usage = describeFailure(new UsageError('bad thing', 'do this'));
    assert.deepEqual(usage, { lines: ['tvm-node: bad thing [usage]', 'hint: do this'], exitCode: 2 });
    const tvm = describeFailure(new TvmValueError('ValueError', 'first line\n  backtrace frame\n'), 'run');
    assert.deepEqual(tvm.lines, ['tvm-node: first line [ValueError]', 'hint: run `tvm-node run --help` for usage']);
    assert.equal(tvm.exitCode, 1);
    const hinted = describeFailure(withHint(new TvmRuntimeError('RuntimeError', 'kernel failed'), 'check inputs'));
    assert.deepEqual(hinted.lines, ['tvm-node: kernel failed [RuntimeError]', 'hint: check inputs']);
    const io = describeFailure(Object.assign(new Error("ENOENT: no such file or directory, open 'x'"), { code: 'ENOENT' }));
    assert.deepEqual(io.lines, ["tvm-node: ENOENT: no such file or directory, open 'x' [ENOENT]", 'hint: check the path']);
  });
});

describe('tvm-node CLI', function () {
  this.timeout(180_000);
  let tmp: string;

  before(() => {
    fixtureDir(); // compile (or find) the fixtures once, before timing-sensitive child runs
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-cli-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('run: writes the mlp output, equal to the numpy reference, and summarizes it', () => {
    const fx = fixture('mlp');
    const c = fx.cases[0];
    const out = path.join(tmp, 'mlp-out');
    const r = cli('run', fx.path, '--input', `x=${fixtureFile(c.inputs[0])}`, '-o', out);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.deepEqual(fs.readdirSync(out), ['output0.npy']);
    const got = readNpy(path.join(out, 'output0.npy'));
    const want = readNpy(fixtureFile(c.outputs[0]));
    assertClose(got, want, fx.tolerance, 'output0');
    // The printed summary is of the same values.
    const line = r.stdout.split('\n').find((l) => l.startsWith('output0'))!;
    assert.match(line, /\[4, 8\] float32/);
    const st = valueStats(want.data as Float32Array)!;
    const num = (label: string) => Number(new RegExp(`${label} (\\S+)`).exec(line)![1]);
    assert.ok(Math.abs(num('min') - st.min) < 1e-4, line);
    assert.ok(Math.abs(num('max') - st.max) < 1e-4, line);
    assert.ok(Math.abs(num('mean') - st.mean) < 1e-4, line);
    assert.match(r.stdout, /^input x\s+\[4, 16\] float32/m);
  });

  it('run: writes the three multi_out outputs under their manifest names, with their dtypes (positional --input)', () => {
    const fx = fixture('multi_out');
    const c = fx.cases[0];
    const out = path.join(tmp, 'multi-out');
    const r = cli('run', fx.path, '--input', fixtureFile(c.inputs[0]), '--out', out, '--device', 'cpu:0');
    assert.equal(r.status, 0, r.stderr);
    const names = ['doubled', 'row_sum', 'row_argmax'];
    assert.deepEqual(fs.readdirSync(out).sort(), names.map((n) => `${n}.npy`).sort());
    const dtypes = c.outputs.map((spec, i) => {
      const got = readNpy(path.join(out, `${names[i]}.npy`));
      assertClose(got, readNpy(fixtureFile(spec)), fx.tolerance, names[i]);
      return got.dtype;
    });
    assert.deepEqual(dtypes, ['float32', 'float32', 'int64']);
    assert.match(r.stdout, /^row_argmax\s+\[2\] int64\s+min \d+\s+max \d+/m);
  });

  it('run --json: prints the summary as JSON', () => {
    const fx = fixture('multi_out');
    const r = cli('run', fx.path, '-i', fixtureFile(fx.cases[0].inputs[0]), '--json');
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.signature, 'main(x)');
    assert.equal(j.device, 'cpu(0)');
    assert.deepEqual(
      j.outputs.map((o: { name: string; dtype: string; shape: number[] }) => [o.name, o.dtype, o.shape]),
      [
        ['doubled', 'float32', [2, 5]],
        ['row_sum', 'float32', [2]],
        ['row_argmax', 'int64', [2]],
      ],
    );
    const ref = readNpy(fixtureFile(fx.cases[0].outputs[1])).data as Float32Array;
    assert.ok(Math.abs(j.outputs[1].stats.max - Math.max(...ref)) < 1e-4);
    assert.ok(Number.isFinite(j.timeMs) && j.timeMs > 0);
  });

  it('bench --json: latency percentiles and throughput as numbers', () => {
    const fx = fixture('mlp');
    const r = cli('bench', fx.path, '--input', `x=${fixtureFile(fx.cases[0].inputs[0])}`, '--runs', '20', '--concurrency', '2', '--json');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '', 'no progress bar when stderr is not a terminal');
    const j = JSON.parse(r.stdout);
    assert.deepEqual([j.runs, j.warmup, j.concurrency, j.latencyMs.count], [20, 10, 2, 20]);
    const l = j.latencyMs;
    for (const k of ['min', 'p50', 'p90', 'p99', 'max', 'mean', 'stddev']) assert.ok(Number.isFinite(l[k]) && l[k] >= 0, `${k} = ${l[k]}`);
    assert.ok(l.min > 0 && l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max, JSON.stringify(l));
    assert.ok(l.min <= l.mean && l.mean <= l.max);
    assert.ok(Number.isFinite(j.throughput) && j.throughput > 0);
    assert.ok(Number.isFinite(j.wallSeconds) && j.wallSeconds > 0);
    // 20 runs, at most 2 at a time: the wall time covers at least 10 back-to-back runs.
    assert.ok(Math.abs(j.throughput * j.wallSeconds - 20) < 1e-6);
    assert.ok(j.wallSeconds * 1000 >= (l.min * 20) / 2 - 1e-6);
    assert.deepEqual(j.inputs, [{ name: 'x', shape: [4, 16], dtype: 'float32', source: 'file', file: fixtureFile(fx.cases[0].inputs[0]) }]);
  });

  it('bench: random inputs from --shape, with a text report', () => {
    const fx = fixture('mlp');
    const r = cli('bench', fx.path, '--shape', 'x=4x16', '--dtype', 'float32', '-n', '30', '-w', '0');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^input x\s+\[4, 16\] float32\s+random$/m);
    assert.match(r.stdout, /^runs\s+30 timed after 0 warmup, 1 in flight$/m);
    const lat = /p50 (\S+) ms\s+p90 (\S+) ms\s+p99 (\S+) ms/.exec(r.stdout);
    assert.ok(lat, r.stdout);
    const [p50, p90, p99] = lat.slice(1).map(Number);
    assert.ok(p50 > 0 && p50 <= p90 && p90 <= p99, lat[0]);
    assert.ok(Number(/throughput\s+(\S+) runs\/s/.exec(r.stdout)![1]) > 0);
  });

  it('bench: a wrong --shape for the model fails with exit status 1 and names the inputs', () => {
    const r = cli('bench', fixture('mlp').path, '--shape', 'x=4x15', '-n', '5');
    assertFailure(r, 1, /Error$/, /./);
    assert.match(r.stderr, /hint: main\(x\) was called with x \[4, 15\] float32/);
  });

  describe('exit status 2 for usage errors', () => {
    const cases: Array<[string, () => string[], RegExp]> = [
      ['an unknown flag', () => ['run', fixture('mlp').path, '--bogus'], /unknown option '--bogus'/],
      ['an unknown device', () => ['run', fixture('mlp').path, '--device', 'bogus:0'], /--device 'bogus:0': unknown device/],
      ['bad --input syntax', () => ['run', fixture('mlp').path, '--input', '=x.npy'], /--input '=x.npy': empty name/],
      ['an --input name the model lacks', () => ['run', fixture('mlp').path, '--input', 'y=y.npy'], /'y', which is not a parameter of main\(x\)/],
      ['a missing input', () => ['run', fixture('mlp').path], /no input for parameter 'x'/],
      ['an unknown function', () => ['run', fixture('mlp').path, '-i', 'x.npy', '--function', 'nope'], /no function 'nope'/],
      ['a bad --runs', () => ['bench', fixture('mlp').path, '--runs', '0'], /--runs '0'/],
      ['bench without inputs or shapes', () => ['bench', fixture('mlp').path], /no input for parameter 'x'/],
      ['a missing model argument', () => ['bench'], /missing required argument 'model'/],
      ['an unknown command', () => ['frobnicate'], /unknown command 'frobnicate'/],
      ['rpc-server --inference-only without models', () => ['rpc-server', '--inference-only', '--port', '0'], /--inference-only serves a model repository/],
      ['a bad --max-message-mib', () => ['rpc-server', '--max-message-mib', '0'], /--max-message-mib '0'/],
    ];
    for (const [what, args, message] of cases) {
      it(what, () => assertFailure(cli(...args()), 2, /^usage$/, message));
    }
  });

  describe('exit status 1 for runtime failures', () => {
    it('a missing model file', () => {
      const r = cli('run', path.join(tmp, 'no-such-model.so'), '--input', 'x.npy');
      assertFailure(r, 1, /RuntimeError/, /no-such-model\.so: no such file/);
      assert.match(r.stderr, /hint: check the path/);
    });

    it('a corrupt .so', () => {
      const bad = path.join(tmp, 'corrupt.so');
      fs.writeFileSync(bad, 'this is not a shared library');
      assertFailure(cli('run', bad, '--input', 'x.npy'), 1, /Error$/, /cannot load .*corrupt\.so/);
      assertFailure(cli('bench', bad, '--shape', '4x16'), 1, /Error$/, /cannot load .*corrupt\.so/);
    });

    it('a missing or unreadable input file', () => {
      const mlp = fixture('mlp').path;
      assertFailure(cli('run', mlp, '--input', `x=${path.join(tmp, 'none.npy')}`), 1, /^ENOENT$/, /cannot read input 'x' from .*none\.npy/);
      const junk = path.join(tmp, 'junk.npy');
      fs.writeFileSync(junk, 'not numpy');
      assertFailure(cli('run', mlp, '--input', `x=${junk}`), 1, /./, /cannot read input 'x' from .*junk\.npy/);
    });

    it('a device this runtime lacks', () => {
      const r = cli('run', fixture('mlp').path, '--device', 'metal:0', '--input', 'x.npy');
      assertFailure(r, 1, /^DeviceError$/, /metal\(0\)/);
      assert.match(r.stderr, /hint: `tvm-node info`/);
    });
  });

  describe('--help', () => {
    const wants: Record<string, string[]> = {
      '': ['run', 'bench', 'info', 'demo', 'Exit status'],
      run: ['--input', '--device', '--function', '--out', '--json', '<model>', 'Exit status'],
      bench: ['--runs', '--warmup', '--concurrency', '--device', '--function', '--input', '--shape', '--dtype', '--json', '--no-progress', '(default: 100)'],
      info: ['--help'],
      demo: ['--help'],
    };
    for (const [command, words] of Object.entries(wants)) {
      it(`tvm-node ${command || '(no command)'} --help`, () => {
        const r = cli(...(command ? [command] : []), '--help');
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout, new RegExp(`^Usage: tvm-node ${command}`));
        for (const w of words) assert.ok(r.stdout.includes(w), `${command} --help mentions ${w}`);
      });
    }
  });

  it('rpc-server --inference-only: binds 0.0.0.0 without the trust flag, serves inference, stops on SIGTERM', async () => {
    const models = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-cli-models-'));
    fs.copyFileSync(fixture('mlp').path, path.join(models, 'mlp.so'));
    const server = spawn(
      process.execPath,
      ['--require', 'tsx/cjs', 'lib/cli.ts', 'rpc-server', '--inference-only', '--models', models, '--host', '0.0.0.0', '--port', '0'],
      {
        cwd: repoRoot,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    server.stdout.on('data', (c) => (stdout += c));
    const exited = new Promise<number | null>((resolve) => server.once('exit', (code) => resolve(code)));
    try {
      const port = await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no listening line in 60 s:\n${stdout}`)), 60000);
        server.stdout.on('data', () => {
          const m = /listening on 0\.0\.0\.0:(\d+) \[inference-only/.exec(stdout);
          if (!m) return;
          clearTimeout(timer);
          resolve(Number(m[1]));
        });
      });
      const session = await connect('127.0.0.1', port);
      const c = fixture('mlp').cases[0];
      const x = readNpy(fixtureFile(c.inputs[0]));
      const [y] = await session.infer('mlp', [{ data: x.data as Float32Array, shape: x.shape }]);
      await session.dispose();
      const want = readNpy(fixtureFile(c.outputs[0]));
      assertClose(
        { data: y.toArraySync(), shape: y.shape, dtype: y.dtype } as NpyArray,
        want,
        fixture('mlp').tolerance,
        'mlp over rpc-server --inference-only',
      );
      server.kill('SIGTERM');
      assert.equal(await exited, 0);
      assert.match(stdout, /SIGTERM: stopping/);
    } finally {
      server.kill('SIGKILL');
      fs.rmSync(models, { recursive: true, force: true });
    }
  });

  it('info still works', () => {
    const r = cli('info');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^tvm-node\s+\d+\.\d+\.\d+/);
    assert.match(r.stdout, /^device\s+cpu\(0\)\s+present/m);
    // TVM's thread settings in effect, and who chose them.
    assert.match(r.stdout, /^threads\s+TVM_NUM_THREADS=\d+ \(.+\), TVM_BIND_THREADS=[01] \(.+\), TVM_THREAD_POOL_SPIN_COUNT=\d+ \(.+\)$/m);
    assert.match(r.stdout, /^threads\s+runSync\/callSync: \d+ TVM workers? per JS thread; run\/call: \d+ per libuv pool thread/m);
  });

  it('demo still works', () => {
    const r = cli('demo');
    assert.equal(r.status, 0, r.stderr);
    const err = Number(/max \|output - numpy reference\| = (\S+)/.exec(r.stdout)![1]);
    assert.ok(err < 1e-4, r.stdout);
  });
});
