/**
 * TVM's thread-pool settings as tvm-node chooses them (lib/threads.ts): the policy itself, and
 * what a fresh process gets with and without the variables set. Speed is the bench's business
 * (group `threads`); nothing here is timed.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { type ThreadSettings, threadSettings } from '../lib';
import { chooseThreadDefaults, countCpuList, physicalCores, uvThreadpoolSize } from '../lib/threads';
import { repoRoot } from './fixtures';

const VARS = ['TVM_NUM_THREADS', 'OMP_NUM_THREADS', 'TVM_BIND_THREADS', 'TVM_THREAD_POOL_SPIN_COUNT', 'UV_THREADPOOL_SIZE'];

/** threadSettings() of a fresh Node process with `env` for the TVM variables (others unset), optionally from a worker_thread; `env`: those variables there (unset ones absent). */
function settingsIn(env: Record<string, string>, where: 'main' | 'worker' = 'main'): ThreadSettings & { env: Record<string, string | undefined> } {
  const base = { ...process.env };
  for (const k of VARS) delete base[k];
  const lib = path.join(repoRoot, 'lib');
  const report = `JSON.stringify({ ...require(${JSON.stringify(lib)}).threadSettings(), env: Object.fromEntries(${JSON.stringify(VARS)}.map((k) => [k, process.env[k]])) })`;
  const code =
    where === 'main'
      ? `process.stdout.write(${report})`
      : `const { Worker } = require('node:worker_threads');
         require(${JSON.stringify(lib)});
         const w = new Worker(${JSON.stringify(`require('tsx/cjs'); require('node:worker_threads').parentPort.postMessage(`)} + ${JSON.stringify(report)} + ')', { eval: true });
         w.once('message', (m) => { process.stdout.write(m); w.terminate(); });`;
  const out = execFileSync(process.execPath, ['--require', 'tsx/cjs', '-e', code], { cwd: repoRoot, env: { ...base, ...env }, encoding: 'utf8' });
  return JSON.parse(out);
}

describe('TVM thread settings', () => {
  describe('the policy (chooseThreadDefaults)', () => {
    it('with nothing set: all physical cores for a JS thread, no pinning, no spinning, pool threads share the cores', () => {
      assert.deepEqual(chooseThreadDefaults({ env: {}, cores: 2 }), {
        env: { TVM_NUM_THREADS: '2', TVM_BIND_THREADS: '0', TVM_THREAD_POOL_SPIN_COUNT: '0' },
        poolThreadWorkers: 1,
      });
      assert.equal(chooseThreadDefaults({ env: {}, cores: 16 }).poolThreadWorkers, 4);
      assert.equal(chooseThreadDefaults({ env: {}, cores: 7 }).poolThreadWorkers, 1);
      assert.equal(chooseThreadDefaults({ env: { UV_THREADPOOL_SIZE: '8' }, cores: 16 }).poolThreadWorkers, 2);
      assert.equal(chooseThreadDefaults({ env: { UV_THREADPOOL_SIZE: '1' }, cores: 16 }).poolThreadWorkers, 16);
    });

    it('never replaces what is set; a thread count the user set (TVM_NUM_THREADS or OMP_NUM_THREADS) holds for every pool', () => {
      assert.deepEqual(chooseThreadDefaults({ env: { TVM_NUM_THREADS: '3' }, cores: 16 }), {
        env: { TVM_BIND_THREADS: '0', TVM_THREAD_POOL_SPIN_COUNT: '0' },
        poolThreadWorkers: 0,
      });
      assert.deepEqual(chooseThreadDefaults({ env: { OMP_NUM_THREADS: '1' }, cores: 16 }).env, { TVM_BIND_THREADS: '0', TVM_THREAD_POOL_SPIN_COUNT: '0' });
      assert.deepEqual(chooseThreadDefaults({ env: { TVM_BIND_THREADS: '1', TVM_THREAD_POOL_SPIN_COUNT: '300000' }, cores: 4 }).env, { TVM_NUM_THREADS: '4' });
    });

    it('counts CPUs and libuv threads as Linux and libuv do', () => {
      assert.equal(countCpuList('0-3,8-11\n'), 8);
      assert.equal(countCpuList('0,64'), 2);
      assert.equal(countCpuList('5'), 1);
      assert.equal(uvThreadpoolSize({}), 4);
      assert.equal(uvThreadpoolSize({ UV_THREADPOOL_SIZE: '16' }), 16);
      assert.equal(uvThreadpoolSize({ UV_THREADPOOL_SIZE: 'x' }), 4);
      assert.equal(uvThreadpoolSize({ UV_THREADPOOL_SIZE: '4096' }), 1024);
      const cores = physicalCores();
      assert.ok(Number.isInteger(cores) && cores >= 1 && cores <= os.availableParallelism());
    });
  });

  describe('in a process', () => {
    it('threadSettings() reports what is in effect here', () => {
      const t = threadSettings();
      assert.ok(Number.isInteger(t.numThreads) && t.numThreads >= 1);
      assert.ok(Number.isInteger(t.poolThreadWorkers) && t.poolThreadWorkers >= 1);
      assert.equal(t.uvThreadpoolSize, uvThreadpoolSize());
      for (const name of t.setByTvmNode) assert.ok(process.env[name] !== undefined, `${name} is tvm-node's but unset`);
    });

    it("a fresh process with nothing set gets tvm-node's defaults, in its environment too (TVM and child processes read it)", () => {
      const t = settingsIn({});
      const cores = physicalCores();
      assert.equal(t.numThreads, cores);
      assert.equal(t.poolThreadWorkers, Math.max(1, Math.floor(cores / 4)));
      assert.equal(t.bindThreads, false);
      assert.equal(t.spinCount, 0);
      assert.deepEqual([...t.setByTvmNode].sort(), ['TVM_BIND_THREADS', 'TVM_NUM_THREADS', 'TVM_THREAD_POOL_SPIN_COUNT']);
      assert.deepEqual(t.env, { TVM_NUM_THREADS: String(cores), TVM_BIND_THREADS: '0', TVM_THREAD_POOL_SPIN_COUNT: '0' });
    });

    it('what the user set stays as set, and then every pool thread gets TVM_NUM_THREADS workers', () => {
      const t = settingsIn({ TVM_NUM_THREADS: '3', TVM_BIND_THREADS: '1', TVM_THREAD_POOL_SPIN_COUNT: '5', UV_THREADPOOL_SIZE: '2' });
      assert.equal(t.numThreads, 3);
      assert.equal(t.poolThreadWorkers, 3);
      assert.equal(t.bindThreads, true);
      assert.equal(t.spinCount, 5);
      assert.equal(t.uvThreadpoolSize, 2);
      assert.deepEqual(t.setByTvmNode, []);
      assert.deepEqual(t.env, { TVM_NUM_THREADS: '3', TVM_BIND_THREADS: '1', TVM_THREAD_POOL_SPIN_COUNT: '5', UV_THREADPOOL_SIZE: '2' });
    });

    it('a worker_thread sees the settings of its process, not defaults of its own over them', () => {
      const main = settingsIn({ TVM_BIND_THREADS: '1' });
      const worker = settingsIn({ TVM_BIND_THREADS: '1' }, 'worker');
      const { env: _m, ...m } = main;
      const { env: _w, ...w } = worker;
      assert.deepEqual(w, m);
      assert.equal(w.bindThreads, true);
      assert.deepEqual([...w.setByTvmNode].sort(), ['TVM_NUM_THREADS', 'TVM_THREAD_POOL_SPIN_COUNT']);
    });
  });
});
