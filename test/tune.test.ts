/**
 * `tvm-node compile --tune` (scripts/compile_model.py, "Tuning"): a tiny ONNX model (Conv +
 * Relu + GlobalAveragePool + Gemm, built here with onnx.helper, reference output from
 * onnxruntime) tuned with a small trial budget runs from Node and matches onnxruntime, its
 * manifest records the tuning, and a second compile with the same tuning database measures
 * nothing (every kernel comes from the database).
 *
 * The tuned compile (the only part that measures candidates) is cached in .cache/tune-test/
 * by a sha256 over what makes it (the model script, the compile scripts and CLI code, the
 * pinned requirements, the budget, this CPU), with its tuning database, so a warm run only
 * compiles once from the database and checks.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Model, readNpy } from '../lib';
import { assertFailure, runCli } from './cli-run';
import { COMPILE_RECIPE_FILES, cpuKey, python, repoRoot } from './fixtures';

const TRIALS = 8;
const TOLERANCE = { rtol: 1e-4, atol: 1e-5 };

/** Writes tiny.onnx, tiny.input.npy and tiny.reference.npy (onnxruntime's output) into `dir`. */
const MODEL_SCRIPT = `
import sys, numpy as np, onnx, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
out = sys.argv[1]
rng = np.random.default_rng(13)
w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w")
b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b")
fw = numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32) * 0.5, "fw")
fb = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32) * 0.1, "fb")
nodes = [
    helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["c"], ["r"]),
    helper.make_node("GlobalAveragePool", ["r"], ["p"]),
    helper.make_node("Flatten", ["p"], ["f"]),
    helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1),
]
g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])], [w, b, fw, fb])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
m.ir_version = 8
onnx.checker.check_model(m)
onnx.save(m, f"{out}/tiny.onnx")
x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
np.save(f"{out}/tiny.input.npy", x)
s = ort.InferenceSession(f"{out}/tiny.onnx", providers=["CPUExecutionProvider"])
np.save(f"{out}/tiny.reference.npy", s.run(None, {"input": x})[0])
`;

const sha256 = (data: crypto.BinaryLike) => crypto.createHash('sha256').update(data).digest('hex');

const cli = (args: string[]) => runCli(args, { timeoutMs: 600_000 });
/** An .xz file's text (Node has no xz; the toolchain's Python has). */
const unxz = (file: string) =>
  execFileSync(python, ['-c', 'import lzma, sys; sys.stdout.write(lzma.open(sys.argv[1], "rt").read())', file], { encoding: 'utf8' });

interface Tuned {
  dir: string;
  so: string;
  db: string;
  /** The tuned compile's result (`--json`), from now or from the cache. */
  result: { schedule: string; tuning: Record<string, unknown> & { trials: number; tasks: number; records_added: number; tasks_tuned: number } };
  fresh: boolean;
  seconds: number;
}

/** The model and its tuned compile, cached in .cache/tune-test/<key>. */
function tuned(): Tuned {
  const h = crypto.createHash('sha256');
  h.update(`model:${sha256(MODEL_SCRIPT)}\ntrials:${TRIALS}\ncpu:${cpuKey()}\n`);
  for (const f of COMPILE_RECIPE_FILES) h.update(`${f}:${sha256(fs.readFileSync(path.join(repoRoot, f)))}\n`);
  const cacheRoot = path.join(repoRoot, '.cache', 'tune-test');
  const dir = path.join(cacheRoot, h.digest('hex').slice(0, 16));
  const done = path.join(dir, 'result.json');
  const at = (d: string) => ({ so: path.join(d, 'tiny.so'), db: path.join(d, 'db') });
  if (fs.existsSync(done)) return { dir, ...at(dir), result: JSON.parse(fs.readFileSync(done, 'utf8')), fresh: false, seconds: 0 };
  fs.mkdirSync(cacheRoot, { recursive: true });
  const staged = fs.mkdtempSync(path.join(cacheRoot, '.tmp-'));
  try {
    execFileSync(python, ['-c', MODEL_SCRIPT, staged], { stdio: ['ignore', 'ignore', 'inherit'] });
    const started = Date.now();
    const r = cli([
      'compile',
      path.join(staged, 'tiny.onnx'),
      '-o',
      at(staged).so,
      '--tune',
      '--trials',
      String(TRIALS),
      '--tuning-db',
      at(staged).db,
      '--json',
    ]);
    const seconds = (Date.now() - started) / 1000;
    assert.equal(r.status, 0, `tuned compile failed: ${r.stderr}`);
    assert.equal(r.stderr, '', 'no output on stderr when it is not a terminal');
    fs.writeFileSync(path.join(staged, 'result.json'), r.stdout);
    try {
      fs.renameSync(staged, dir);
    } catch {
      fs.rmSync(staged, { recursive: true, force: true }); // another run published it first
    }
    return { dir, ...at(dir), result: JSON.parse(r.stdout), fresh: true, seconds };
  } catch (err) {
    fs.rmSync(staged, { recursive: true, force: true });
    throw err;
  }
}

/** Runs the artifact from Node on the model's input; max |TVM - onnxruntime| and whether within TOLERANCE. */
async function check(so: string, dir: string): Promise<{ maxAbsDiff: number; ok: boolean }> {
  const x = readNpy(path.join(dir, 'tiny.input.npy'));
  const ref = readNpy(path.join(dir, 'tiny.reference.npy'));
  await using m = await Model.load(so);
  const { logits } = await m.run({ input: { data: x.data, shape: x.shape } });
  try {
    assert.deepEqual(logits.shape, ref.shape);
    const got = (await logits.toArray()) as Float32Array;
    let maxAbsDiff = 0;
    let ok = true;
    for (let i = 0; i < ref.data.length; i++) {
      const want = Number(ref.data[i]);
      const d = Math.abs(got[i] - want);
      maxAbsDiff = Math.max(maxAbsDiff, d);
      if (!(d <= TOLERANCE.atol + TOLERANCE.rtol * Math.abs(want))) ok = false;
    }
    return { maxAbsDiff, ok };
  } finally {
    await logits.dispose();
  }
}

/** Starts `command`; resolves with the child and the first match of `ready` in its output. */
function start(command: string, args: string[], ready: RegExp, what: string): Promise<{ child: ChildProcess; match: RegExpMatchArray }> {
  // A group of its own: TVM's tracker runs in a worker process of its own, which must go too.
  const child = spawn(command, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${out}`)), 60_000);
    const look = (chunk: Buffer) => {
      out += chunk.toString();
      const match = out.match(ready);
      if (match) {
        clearTimeout(timer);
        resolve({ child, match });
      }
    };
    child.stdout!.on('data', look);
    child.stderr!.on('data', look);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code}): ${out}`));
    });
  });
}

/** The number of records in a MetaSchedule JSON database (one line each). */
const records = (db: string) =>
  fs
    .readFileSync(path.join(db, 'database_tuning_record.json'), 'utf8')
    .split('\n')
    .filter((l) => l.trim()).length;

/** Per workload (its structural hash), the mean run time of its fastest record, from a database's two JSON-lines texts. */
function fastestByWorkload(workloadsText: string, recordsText: string): Map<string, number> {
  const lines = (text: string) =>
    text
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l));
  const hashes = lines(workloadsText).map((w) => w[0] as string);
  const best = new Map<string, number>();
  for (const [index, record] of lines(recordsText)) {
    const secs = record[1] as number[];
    const mean = secs.reduce((a, b) => a + b, 0) / secs.length;
    if (Math.max(...secs) < 1e9 && mean < (best.get(hashes[index]) ?? Infinity)) best.set(hashes[index], mean);
  }
  return best;
}

describe('tvm-node compile --tune', function () {
  this.timeout(900_000);
  let t: Tuned;
  let tmp: string;

  before(() => {
    t = tuned();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-tune-test-'));
    if (t.fresh) console.log(`      tuned compile (${TRIALS} trials): ${t.seconds.toFixed(1)} s, tuning ${t.result.tuning.seconds} s`);
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('tunes the kernels within the trial budget and records it in the manifest', () => {
    const tuning = t.result.tuning;
    assert.ok(tuning.tasks >= 3, `kernels: ${tuning.tasks}`);
    assert.equal(tuning.tasks_tuned, tuning.tasks, 'a new database: every kernel tuned');
    assert.ok(tuning.trials > 0 && tuning.trials <= TRIALS, `trials: ${tuning.trials}`);
    assert.equal(tuning.records_added, tuning.trials);
    assert.equal(tuning.failed_trials, 0);
    assert.equal(records(t.db), tuning.trials);
    // tvm/requirements.txt pins xgboost(-cpu): MetaSchedule's learned cost model is used.
    assert.equal(tuning.cost_model, 'xgb');
    const manifest = JSON.parse(fs.readFileSync(t.so.replace(/\.so$/, '.json'), 'utf8'));
    assert.deepEqual(manifest.tuning, tuning);
    assert.match(manifest.tuning.database_sha256, /^[0-9a-f]{64}$/);
    assert.equal(manifest.target['num-cores'] > 0, true, 'the target names its cores (MetaSchedule sizes parallel loops by them)');
    assert.match(t.result.schedule, /MetaSchedule-tuned/);
  });

  it('the tuned artifact runs from Node and matches onnxruntime', async () => {
    const { maxAbsDiff, ok } = await check(t.so, t.dir);
    assert.ok(ok, `outside rtol ${TOLERANCE.rtol} / atol ${TOLERANCE.atol}: max |diff| ${maxAbsDiff}`);
    console.log(`      max |tuned TVM - onnxruntime| = ${maxAbsDiff.toExponential(2)}`);
  });

  it('a second compile with the same --tuning-db measures nothing and builds the same kernels', async () => {
    // A copy, so the cached database stays as the tuned compile left it.
    const db = path.join(tmp, 'db');
    fs.cpSync(t.db, db, { recursive: true });
    const before = records(db);
    const so = path.join(tmp, 'again.so');
    const r = cli(['compile', path.join(t.dir, 'tiny.onnx'), '-o', so, '--tune', '--trials', String(TRIALS), '--tuning-db', db, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const { tuning } = JSON.parse(r.stdout);
    assert.equal(tuning.trials, 0, 'no trials');
    assert.equal(tuning.records_added, 0);
    assert.equal(tuning.tasks_tuned, 0);
    assert.equal(tuning.tasks_from_database, tuning.tasks);
    assert.equal(records(db), before, 'no new database records');
    assert.equal(tuning.database_sha256, t.result.tuning.database_sha256, 'the database is unchanged');
    const { ok, maxAbsDiff } = await check(so, t.dir);
    assert.ok(ok, `max |diff| ${maxAbsDiff}`);
  });

  it('--conv-layout NCHWc: the convolution is tuned over the blocked template, matches onnxruntime, and a second compile measures nothing', async () => {
    const db = path.join(tmp, 'nchwc-db');
    // More kernels than in NCHW (the layout transforms at both ends): a budget that gives each one a trial.
    const trials = 3 * TRIALS;
    const compile = (so: string) =>
      cli(['compile', path.join(t.dir, 'tiny.onnx'), '-o', so, '--conv-layout', 'NCHWc', '--tune', '--trials', String(trials), '--tuning-db', db, '--json']);
    const first = compile(path.join(tmp, 'nchwc.so'));
    assert.equal(first.status, 0, first.stderr);
    const { tuning, schedule } = JSON.parse(first.stdout);
    assert.equal(tuning.tasks_conv_template, 1, 'the Conv (3 -> 8 channels, blocked as NCHW3c -> NCHW8c)');
    assert.ok(tuning.trials > 0 && tuning.trials <= trials, `trials: ${tuning.trials}`);
    assert.equal(tuning.failed_trials, 0);
    assert.equal(tuning.tasks_scheduled_from_database, tuning.tasks, 'every kernel got a record');
    assert.match(schedule, /^convolutions in blocked NCHW\[x\]c layout, MetaSchedule-tuned over the x86 register-blocked template/);
    let r = await check(path.join(tmp, 'nchwc.so'), t.dir);
    assert.ok(r.ok, `max |diff| ${r.maxAbsDiff}`);
    const again = compile(path.join(tmp, 'nchwc-again.so'));
    assert.equal(again.status, 0, again.stderr);
    const second = JSON.parse(again.stdout).tuning;
    assert.equal(second.trials, 0, 'no trials');
    assert.equal(second.tasks_from_database, second.tasks);
    r = await check(path.join(tmp, 'nchwc-again.so'), t.dir);
    assert.ok(r.ok, `max |diff| ${r.maxAbsDiff}`);
  });

  it('scripts/tune_slowest.py ranks the kernels by calls x latency in the database and tunes the costliest into a second one', async () => {
    const db2 = path.join(tmp, 'slowest-db');
    const r = spawnSync(
      python,
      [
        path.join(repoRoot, 'scripts', 'tune_slowest.py'),
        path.join(t.dir, 'tiny.onnx'),
        '--target',
        'host',
        '--tuning-db',
        t.db,
        '--out',
        db2,
        '--top',
        '2',
        '--trials',
        '4',
      ],
      { cwd: repoRoot, encoding: 'utf8', timeout: 600_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    const summary = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    assert.equal(summary.kernels.length, 2);
    const [first, second] = summary.kernels;
    for (const k of summary.kernels) assert.ok(k.before_ms > 0 && k.calls >= 1, JSON.stringify(k));
    assert.ok(first.before_ms * first.calls >= second.before_ms * second.calls, 'costliest first');
    assert.ok(summary.trials > 0 && summary.trials <= 4, `trials: ${summary.trials}`);
    assert.equal(records(db2), summary.trials, 'every measured candidate recorded in the second database');
    // A compile from the second database alone takes those two kernels from it, and is right.
    const so = path.join(tmp, 'slowest.so');
    const c = cli(['compile', path.join(t.dir, 'tiny.onnx'), '-o', so, '--tune', '--trials', '0', '--tuning-db', db2, '--json']);
    assert.equal(c.status, 0, c.stderr);
    assert.equal(
      JSON.parse(c.stdout).tuning.tasks_scheduled_from_database,
      summary.kernels.filter((k: { after_ms: number | null }) => k.after_ms !== null).length,
    );
    const { ok, maxAbsDiff } = await check(so, t.dir);
    assert.ok(ok, `max |diff| ${maxAbsDiff}`);
    // Both databases exported as bench/tuning/<target>/ is made: the fastest record per kernel,
    // and tuning.json with both runs (the tuned compile's result, this summary) summed.
    const summaryFile = path.join(tmp, 'slowest.json');
    fs.writeFileSync(summaryFile, r.stdout.trim().split('\n').at(-1)!);
    const exported = path.join(tmp, 'exported');
    const e = spawnSync(
      python,
      [
        path.join(repoRoot, 'scripts', 'export_tuning_db.py'),
        t.db,
        db2,
        exported,
        '--result',
        `tiny=${path.join(t.dir, 'result.json')}`,
        '--result',
        `tiny=${summaryFile}`,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(e.status, 0, e.stderr);
    const info = JSON.parse(fs.readFileSync(path.join(exported, 'tuning.json'), 'utf8'));
    const tiny = info.models.tiny;
    assert.deepEqual(
      tiny.runs.map((run: { trials: number }) => run.trials),
      [t.result.tuning.trials, summary.trials],
    );
    assert.equal(tiny.trials, t.result.tuning.trials + summary.trials);
    assert.equal(tiny.tasks, t.result.tuning.tasks);
    const kept = unxz(path.join(exported, 'database_tuning_record.json.xz'))
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    assert.equal(kept.length, info.pruned.kept);
    assert.ok(kept.length <= t.result.tuning.tasks, 'at most one record per kernel');
    assert.ok(kept.length >= summary.kernels.filter((k: { after_ms: number | null }) => k.after_ms !== null).length);
    for (const [, record] of kept) assert.ok(Math.max(...record[1]) < 1, `a measured run, not a failed trial: ${record[1]}`);
    // --override db2: its kernels keep db2's fastest record, even where the first database's was faster.
    const overridden = path.join(tmp, 'overridden');
    const o = spawnSync(python, [path.join(repoRoot, 'scripts', 'export_tuning_db.py'), t.db, overridden, '--override', db2], { encoding: 'utf8' });
    assert.equal(o.status, 0, o.stderr);
    const fromDb2 = fastestByWorkload(
      fs.readFileSync(path.join(db2, 'database_workload.json'), 'utf8'),
      fs.readFileSync(path.join(db2, 'database_tuning_record.json'), 'utf8'),
    );
    const got = fastestByWorkload(unxz(path.join(overridden, 'database_workload.json.xz')), unxz(path.join(overridden, 'database_tuning_record.json.xz')));
    assert.equal(JSON.parse(fs.readFileSync(path.join(overridden, 'tuning.json'), 'utf8')).pruned.overridden, fromDb2.size);
    assert.ok(fromDb2.size > 0);
    for (const [hash, secs] of fromDb2) assert.equal(got.get(hash), secs, `kernel ${hash}: db2's record`);
    // --extend: a later pass added to the exported database keeps its records, runs and note.
    const x = spawnSync(
      python,
      [path.join(repoRoot, 'scripts', 'export_tuning_db.py'), db2, exported, '--extend', '--result', `tiny=${summaryFile}`, '--note', 'pass 2'],
      { encoding: 'utf8' },
    );
    assert.equal(x.status, 0, x.stderr);
    const extended = JSON.parse(fs.readFileSync(path.join(exported, 'tuning.json'), 'utf8'));
    assert.equal(extended.models.tiny.runs.length, 3);
    assert.equal(extended.models.tiny.trials, tiny.trials + summary.trials);
    assert.equal(extended.note, 'pass 2');
    assert.equal(extended.pruned.kept, info.pruned.kept, 'the same kernels: the first export had every one of them');
    const missing = spawnSync(
      python,
      [path.join(repoRoot, 'scripts', 'tune_slowest.py'), path.join(t.dir, 'tiny.onnx'), '--target', 'host', '--tuning-db', tmp, '--out', db2],
      {
        encoding: 'utf8',
      },
    );
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /no MetaSchedule database there/);
  });

  it('--rpc-tracker/--rpc-key: candidates measured on a device of a TVM tracker (tvm-node rpc-server)', async () => {
    const children: ChildProcess[] = [];
    try {
      const base = 20000 + Math.floor(Math.random() * 19900);
      const tracker = await start(
        python,
        ['-m', 'tvm.exec.rpc_tracker', '--host', '127.0.0.1', '--port', String(base), '--port-end', String(base + 50)],
        /bind to 127\.0\.0\.1:(\d+)/,
        'the TVM tracker',
      );
      children.push(tracker.child);
      const address = `127.0.0.1:${tracker.match[1]}`;
      const server = await start(
        process.execPath,
        ['--require', 'tsx/cjs', path.join(repoRoot, 'lib', 'cli.ts'), 'rpc-server', '--port', '0', '--tracker', address, '--key', 'tune-test'],
        /registered with tracker/,
        'tvm-node rpc-server',
      );
      children.push(server.child);
      const so = path.join(tmp, 'rpc.so');
      const args = ['compile', path.join(t.dir, 'tiny.onnx'), '-o', so, '--tune', '--trials', '4', '--tuning-db', path.join(tmp, 'rpc-db')];
      const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
        const c = spawn(
          process.execPath,
          ['--require', 'tsx/cjs', path.join(repoRoot, 'lib', 'cli.ts'), ...args, '--rpc-tracker', address, '--rpc-key', 'tune-test', '--json'],
          {
            cwd: repoRoot,
          },
        );
        let stdout = '';
        let stderr = '';
        c.stdout.on('data', (d) => (stdout += d));
        c.stderr.on('data', (d) => (stderr += d));
        c.once('close', (status) => resolve({ status, stdout, stderr }));
      });
      assert.equal(r.status, 0, r.stderr);
      const { tuning, target } = JSON.parse(r.stdout);
      assert.equal(tuning.runner, `rpc ${address} key tune-test`);
      assert.ok(tuning.trials > 0, `trials: ${tuning.trials}`);
      assert.equal(tuning.failed_trials, 0, 'every candidate ran on the device');
      assert.ok(target['num-cores'] > 0, "num-cores asked of the device's runtime");
      const { ok, maxAbsDiff } = await check(so, t.dir);
      assert.ok(ok, `max |diff| ${maxAbsDiff}`);
    } finally {
      for (const c of children.reverse()) {
        const exited = c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((resolve) => c.once('exit', resolve));
        try {
          process.kill(-c.pid!, 'SIGTERM');
        } catch {
          c.kill('SIGTERM');
        }
        await exited;
        c.stdout?.destroy();
        c.stderr?.destroy();
      }
    }
  });

  it('--trials, --tuning-db and --tune-time need --tune; a foreign target cannot be tuned here', () => {
    const onnx = path.join(t.dir, 'tiny.onnx');
    const out = path.join(tmp, 'x.so');
    assertFailure(cli(['compile', onnx, '-o', out, '--trials', '4']), 2, /usage/, /--trials needs --tune/);
    assertFailure(cli(['compile', onnx, '-o', out, '--tune', '--trials', 'many']), 2, /usage/, /--trials 'many'/);
    if (os.arch() === 'x64') {
      const r = cli(['compile', onnx, '-o', out, '--tune', '--target', 'aarch64', '--cc', 'true']);
      assertFailure(r, 2, /usage/, /--tune: candidates for aarch64-linux-gnu must be measured on such a device/);
    }
  });
});
