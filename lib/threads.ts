/**
 * TVM's CPU thread pools, as tvm-node sets them up (applied once, when the addon loads,
 * before any kernel runs).
 *
 * How TVM 0.27 runs parallel kernels (src/runtime/thread_pool.cc, threading_backend.cc):
 * every thread that launches one gets a pool of its own (thread_local) of MaxConcurrency
 * workers, the calling thread being worker 0 — Node's JS thread for `runSync`, each libuv
 * pool thread that serves `run`, each worker_thread. MaxConcurrency is TVM_NUM_THREADS, else
 * OMP_NUM_THREADS, else std::thread::hardware_concurrency() (halved on x86), which counts
 * every CPU of the host, not those the process may use. After each job a worker spins
 * TVM_THREAD_POOL_SPIN_COUNT times (default 300000) on sched_yield before it sleeps, and
 * TVM_BIND_THREADS (default on) pins worker i of *every* pool to core i. In one Node process
 * that is up to 1 + UV_THREADPOOL_SIZE pools pinned onto the same cores, whose workers keep
 * spinning after a run: a runSync after async runs, or any run while another process uses a
 * core, waits for spinning workers that only give the core up a time slice at a time.
 * Measured on 2 cores (bench group `threads`; README, "Rules worth knowing"), runSync beside
 * one busy thread under TVM's settings vs these: MobileNetV2 680 vs 306 ms, its tiny variant
 * 148 vs 6 ms.
 *
 * So, unless the environment already says otherwise (each variable is left alone when set):
 * - TVM_NUM_THREADS = the physical cores this process may use (os.availableParallelism()
 *   over SMT siblings per core), when neither it nor OMP_NUM_THREADS is set: TVM's own
 *   default ignores CPU affinity and cgroup limits and halves every x86 machine.
 * - TVM_BIND_THREADS = 0: pools are not pinned, so the scheduler keeps them apart.
 * - TVM_THREAD_POOL_SPIN_COUNT = 0: a worker sleeps as soon as its job is done. A sched_yield
 *   spin only pays on an otherwise idle core; with anything else runnable on it, each yield
 *   hands the core away for a whole time slice, so even 100 spins made MobileNetV2's runSync
 *   1.8x slower beside one busy process. The cost is a futex wake per parallel kernel
 *   (~10-20 µs here), which only shows on models of a millisecond or less.
 * - TVM workers per libuv pool thread = max(1, floor(TVM_NUM_THREADS / UV_THREADPOOL_SIZE)),
 *   when the thread count is tvm-node's choice: `run`s exist to run several at once (a VM's
 *   default concurrency is the libuv pool size), and a full pool then fills the cores without
 *   oversubscribing them. With 1 (any machine with fewer cores than pool threads) a run on the
 *   pool runs its kernels inline, with no TVM pool at all. A lone `run` of a large model then
 *   uses fewer cores than `runSync`; set TVM_NUM_THREADS to give every pool that many workers.
 *   (A full-mode RPC session process, which serves one client, gives the pool thread its loop
 *   runs on a full pool: lib/rpc/session-worker.ts.)
 * @internal
 */
import fs from 'node:fs';
import os from 'node:os';
import type { Addon } from './binding';

/** The TVM thread settings in effect, as `tvm-node info` and {@link threadSettings} show them. */
export interface ThreadSettings {
  /** TVM workers of a pool on a JS thread (`runSync`, `callSync`): TVM's MaxConcurrency there. */
  numThreads: number;
  /** TVM workers of each libuv pool thread (`run`, `call`); 1 = kernels run inline. */
  poolThreadWorkers: number;
  /** Whether TVM pins pool workers to cores (TVM_BIND_THREADS). */
  bindThreads: boolean;
  /** Spins on sched_yield of an idle worker before it sleeps (TVM_THREAD_POOL_SPIN_COUNT). */
  spinCount: number;
  /** libuv's pool size (UV_THREADPOOL_SIZE, default 4). */
  uvThreadpoolSize: number;
  /** Physical cores this process may use, as tvm-node counts them. */
  cores: number;
  /** The environment variables tvm-node set (the others were set by the user, or left unset). */
  setByTvmNode: string[];
}

/** What the policy reads. */
export interface ThreadPolicyInput {
  /** The process environment (only the variables below are read). */
  env: Readonly<Record<string, string | undefined>>;
  /** Physical cores this process may use. */
  cores: number;
}

/** What the policy chooses: environment defaults and the libuv pool threads' TVM workers (0 = TVM's own). */
export interface ThreadPolicy {
  env: Record<string, string>;
  poolThreadWorkers: number;
}

/** libuv's thread pool size as libuv reads it (default 4, at most 1024). */
export function uvThreadpoolSize(env: Readonly<Record<string, string | undefined>> = process.env): number {
  const n = Number.parseInt(env.UV_THREADPOOL_SIZE ?? '', 10);
  return Number.isFinite(n) && n > 0 ? Math.min(n, 1024) : 4;
}

/** tvm-node's defaults for `input` (see the module comment for why). */
export function chooseThreadDefaults(input: ThreadPolicyInput): ThreadPolicy {
  const { env } = input;
  const cores = Math.max(1, Math.floor(input.cores));
  const userThreads = env.TVM_NUM_THREADS !== undefined || env.OMP_NUM_THREADS !== undefined;
  const out: Record<string, string> = {};
  if (!userThreads) out.TVM_NUM_THREADS = String(cores);
  if (env.TVM_BIND_THREADS === undefined) out.TVM_BIND_THREADS = '0';
  if (env.TVM_THREAD_POOL_SPIN_COUNT === undefined) out.TVM_THREAD_POOL_SPIN_COUNT = '0';
  return { env: out, poolThreadWorkers: userThreads ? 0 : Math.max(1, Math.floor(cores / uvThreadpoolSize(env))) };
}

/** Hardware threads per core (SMT siblings), from Linux's sysfs; 1 when it cannot tell. */
export function smtWidth(): number {
  try {
    if (fs.readFileSync('/sys/devices/system/cpu/smt/active', 'utf8').trim() !== '1') return 1;
    return Math.max(1, countCpuList(fs.readFileSync('/sys/devices/system/cpu/cpu0/topology/thread_siblings_list', 'utf8')));
  } catch {
    return 1;
  }
}

/** The number of CPUs in a Linux CPU list such as `0-3,8-11` or `0,64`. */
export function countCpuList(list: string): number {
  let n = 0;
  for (const part of list.trim().split(',')) {
    if (!part) continue;
    const [a, b] = part.split('-').map(Number);
    n += b === undefined ? 1 : b - a + 1;
  }
  return n;
}

/** Physical cores this process may use: the CPUs it may run on over SMT siblings per core. */
export function physicalCores(): number {
  return Math.max(1, Math.floor(os.availableParallelism() / smtWidth()));
}

const CHOSEN = ['TVM_NUM_THREADS', 'TVM_BIND_THREADS', 'TVM_THREAD_POOL_SPIN_COUNT'] as const;

/**
 * Applies {@link chooseThreadDefaults} to the process (its real environment, which TVM reads,
 * and the libuv pool threads' TVM workers). Idempotent: every environment of the process
 * (main thread, worker_threads) calls it when it loads the addon, and a variable another one
 * set counts as tvm-node's, not the user's.
 */
export function applyThreadDefaults(addon: Pick<Addon, 'processEnv' | 'threadSettings'>): void {
  const env: Record<string, string | undefined> = {};
  for (const name of [...CHOSEN, 'OMP_NUM_THREADS', 'UV_THREADPOOL_SIZE']) {
    const v = addon.processEnv(name);
    if (v.value !== null && !v.setByTvmNode) env[name] = v.value;
  }
  const policy = chooseThreadDefaults({ env, cores: physicalCores() });
  for (const [name, value] of Object.entries(policy.env)) addon.processEnv(name, value);
  addon.threadSettings(policy.poolThreadWorkers);
}

/** The TVM thread settings in effect (see the module comment for how tvm-node chooses them). */
export function readThreadSettings(addon: Pick<Addon, 'processEnv' | 'threadSettings'>): ThreadSettings {
  const native = addon.threadSettings();
  const value = (name: string) => addon.processEnv(name).value;
  const bind = value('TVM_BIND_THREADS');
  const spin = value('TVM_THREAD_POOL_SPIN_COUNT');
  return {
    numThreads: native.maxConcurrency,
    poolThreadWorkers: native.poolThreadConcurrency || native.maxConcurrency,
    // TVM binds unless the variable is set to something other than 1.
    bindThreads: bind === null || Number.parseInt(bind, 10) === 1,
    spinCount: spin === null ? 300000 : Number.parseInt(spin, 10) || 0,
    uvThreadpoolSize: uvThreadpoolSize({ UV_THREADPOOL_SIZE: value('UV_THREADPOOL_SIZE') ?? undefined }),
    cores: physicalCores(),
    setByTvmNode: CHOSEN.filter((name) => addon.processEnv(name).setByTvmNode),
  };
}
