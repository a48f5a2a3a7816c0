/**
 * The `threads` group: does runSync stay fast when sync and async runs mix in one process?
 * The CNN of the cnn group (quick mode: the tiny variant) runs in two child processes of this
 * file (forked with {@link THREADS_CHILD_FLAG}), alike but for TVM's thread settings:
 *
 *   tvm-node  the settings tvm-node chooses when nothing is set (lib/threads.ts: no pinning,
 *             no spinning, libuv pool threads sized to share the cores);
 *   TVM       TVM's own defaults for pinning (TVM_BIND_THREADS=1) and spinning
 *             (TVM_THREAD_POOL_SPIN_COUNT=300000), every pool TVM_NUM_THREADS workers — what
 *             tvm-node ran with before it chose settings — at the same TVM_NUM_THREADS.
 *
 * Each round asks each child in turn (rotating who goes first, with an idle gap before each so
 * that no spinning thread of the other is left) to time, on its own VM: runSync at rest; a
 * mixed burst (4 async runs kept in flight while the JS thread runs runSync between them);
 * runSync right after that burst; one async run in flight; 4 in flight; runSync while another
 * thread keeps one core busy. Figures are per run.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { outputsOf, readNpy, Tensor, type ThreadSettings, threadSettings, VirtualMachine } from '../../lib';
import type { Ctx } from '../context';
import { repoRoot } from '../fixtures';
import { makeCase, sleep, type Timed } from '../measure';
import { CNN_MODEL } from './cnn';

export const THREADS_CHILD_FLAG = '--threads-child';

/** Idle gap before each child's round: TVM's spinning workers (300000 yields) are asleep by then. */
export const THREADS_SETTLE_MS = 300;

/** What one child times in a round, ns per run. */
interface RoundTimes {
  rest: number;
  mixed: number;
  afterMixed: number;
  a1: number;
  a4: number;
  busy: number;
}
const PHASES = ['rest', 'mixed', 'afterMixed', 'a1', 'a4', 'busy'] as const;

type Request = { op: 'load'; library: string; fn: string; input: string } | { op: 'round'; runs: number; settleMs: number };
type Reply = { ok: unknown } | { error: string };

// ---------------------------------------------------------------------------------------
// The child

const drop = (out: unknown) => outputsOf<Tensor>(out).forEach((t) => t.disposeSync());

class Child {
  private vm?: VirtualMachine;
  private input?: Tensor;
  private fn = 'main';

  async load(r: Extract<Request, { op: 'load' }>): Promise<ThreadSettings> {
    const x = readNpy(r.input);
    this.input = Tensor.fromSync(x.data, { shape: x.shape, dtype: x.dtype });
    this.vm = await VirtualMachine.load(r.library, { concurrency: 4 });
    this.fn = r.fn;
    // Warm every instance and pool thread once.
    drop(this.vm.runSync(this.fn, this.input));
    await this.inFlight(4, 8);
    return threadSettings();
  }

  private sync(n: number): number {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) drop(this.vm!.runSync(this.fn, this.input!));
    return Number(process.hrtime.bigint() - t0) / n;
  }

  private async inFlight(k: number, n: number): Promise<number> {
    let started = 0;
    const lane = async () => {
      while (started < n) {
        started++;
        drop(await this.vm!.run(this.fn, this.input!));
      }
    };
    const t0 = process.hrtime.bigint();
    await Promise.all(Array.from({ length: k }, lane));
    return Number(process.hrtime.bigint() - t0) / n;
  }

  /** n async runs (4 in flight) and n runSyncs on the JS thread between their completions. */
  private async mixed(n: number): Promise<number> {
    let done = 0;
    const syncLane = async () => {
      while (done < n) {
        done++;
        drop(this.vm!.runSync(this.fn, this.input!));
        await new Promise((resolve) => setImmediate(resolve));
      }
    };
    const t0 = process.hrtime.bigint();
    await Promise.all([this.inFlight(4, n), syncLane()]);
    return Number(process.hrtime.bigint() - t0) / (2 * n);
  }

  async round(r: Extract<Request, { op: 'round' }>): Promise<RoundTimes> {
    await sleep(r.settleMs);
    const rest = this.sync(r.runs);
    await sleep(r.settleMs);
    const mixed = await this.mixed(r.runs);
    const afterMixed = this.sync(r.runs);
    await sleep(r.settleMs);
    const a1 = await this.inFlight(1, r.runs);
    await sleep(r.settleMs);
    const a4 = await this.inFlight(4, r.runs);
    await sleep(r.settleMs);
    const busy = await besideBusyThread(() => this.sync(r.runs));
    return { rest, mixed, afterMixed, a1, a4, busy };
  }
}

/**
 * Runs `job` while a worker_thread of this process keeps one core busy (a plain JS loop, as
 * another process or a busy worker would), then stops it.
 */
async function besideBusyThread<T>(job: () => T): Promise<T> {
  const stop = new Int32Array(new SharedArrayBuffer(4));
  const busy = new Worker(
    "const { parentPort, workerData } = require('node:worker_threads'); parentPort.postMessage('spinning'); while (Atomics.load(workerData, 0) === 0);",
    { eval: true, workerData: stop },
  );
  try {
    await once(busy, 'message');
    return job();
  } finally {
    Atomics.store(stop, 0, 1);
    await once(busy, 'exit');
  }
}

function childProcess(): void {
  const child = new Child();
  process.on('message', (r: Request) => {
    (r.op === 'load' ? child.load(r) : child.round(r)).then(
      (ok) => process.send!({ ok }),
      (err: Error) => process.send!({ error: String(err?.stack ?? err) }),
    );
  });
  process.once('disconnect', () => process.exit(0));
}

// ---------------------------------------------------------------------------------------
// The parent

/** A child of this file under `env`, answering one request at a time. */
class ChildHandle {
  private readonly proc: ChildProcess;
  private pending?: { resolve: (v: unknown) => void; reject: (e: Error) => void };

  constructor(
    readonly label: string,
    env: NodeJS.ProcessEnv,
  ) {
    const ts = !__filename.endsWith('.js');
    this.proc = fork(__filename, [THREADS_CHILD_FLAG], {
      cwd: repoRoot,
      env,
      execArgv: ts ? ['--require', 'tsx/cjs'] : [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.proc.on('message', (m: Reply) => {
      const p = this.pending;
      this.pending = undefined;
      if ('error' in m) p?.reject(new Error(`threads child (${label}): ${m.error}`));
      else p?.resolve(m.ok);
    });
    this.proc.once('exit', (code, signal) => {
      this.pending?.reject(new Error(`threads child (${label}) exited (${signal ?? code})`));
      this.pending = undefined;
    });
  }

  request<T>(r: Request): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending = { resolve: resolve as (v: unknown) => void, reject };
      this.proc.send(r);
    });
  }

  async close(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((resolve) => this.proc.once('exit', resolve));
    if (this.proc.connected) this.proc.disconnect();
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10000);
    await exited;
    clearTimeout(timer);
  }
}

/** The environment without any TVM thread setting, so that tvm-node chooses. */
function envWithoutThreadSettings(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of ['TVM_NUM_THREADS', 'OMP_NUM_THREADS', 'TVM_BIND_THREADS', 'TVM_THREAD_POOL_SPIN_COUNT']) delete env[k];
  return env;
}

export async function benchThreads(ctx: Ctx): Promise<void> {
  const built = ctx.cnn!;
  const name = ctx.quick ? CNN_MODEL.quick : CNN_MODEL.full;
  const m = built.index.models[name];
  const load: Request = { op: 'load', library: path.join(built.dir, m.library), fn: m.function, input: path.join(built.dir, m.input.file) };
  // Runs per phase: ~20-50 ms of the model each (a full MobileNetV2 run is ~0.1 s).
  const runs = ctx.quick ? 8 : 4;
  const what = `${name} [${m.input.shape.join(',')}]`;

  const ours = new ChildHandle('tvm-node settings', envWithoutThreadSettings());
  let stock: ChildHandle | undefined;
  try {
    const chosen = await ours.request<ThreadSettings>(load);
    // TVM's defaults for pinning and spinning, at the thread count tvm-node chose.
    stock = new ChildHandle("TVM's settings", {
      ...envWithoutThreadSettings(),
      TVM_NUM_THREADS: String(chosen.numThreads),
      TVM_BIND_THREADS: '1',
      TVM_THREAD_POOL_SPIN_COUNT: '300000',
    });
    const theirs = await stock.request<ThreadSettings>(load);
    ctx.threadsGroup = { runsPerPhase: runs, settleMs: THREADS_SETTLE_MS, tvmNode: chosen, tvm: theirs };
    ctx.log(`threads: ${what}, mixing runSync and run (tvm-node vs TVM thread settings)`);

    const describe = (s: ThreadSettings) =>
      `TVM_NUM_THREADS=${s.numThreads}, ${s.poolThreadWorkers} per pool thread, bind ${s.bindThreads ? 1 : 0}, spin ${s.spinCount}`;
    const sides = [
      { child: ours, label: `tvm-node settings (${describe(chosen)})`, perOp: Object.fromEntries(PHASES.map((p) => [p, [] as number[]])) },
      { child: stock, label: `TVM settings (${describe(theirs)})`, perOp: Object.fromEntries(PHASES.map((p) => [p, [] as number[]])) },
    ];
    for (let r = 0; r < ctx.rounds; r++) {
      for (let j = 0; j < sides.length; j++) {
        const side = sides[(j + r) % sides.length];
        const t = await side.child.request<RoundTimes>({ op: 'round', runs, settleMs: THREADS_SETTLE_MS });
        for (const p of PHASES) side.perOp[p].push(t[p]);
      }
    }
    const timed = (s: (typeof sides)[number], phase: (typeof PHASES)[number], what: string): Timed => ({
      name: `${what}, ${s.label}`,
      opsPerRound: phase === 'mixed' ? 2 * runs : runs,
      perOp: s.perOp[phase],
    });
    const [o, t] = sides;
    ctx.cases.push(
      makeCase(
        'threads',
        `${what}: runSync after mixed runs vs at rest, tvm-node settings`,
        'us/run',
        timed(o, 'afterMixed', 'runSync after a mixed burst'),
        timed(o, 'rest', 'runSync at rest'),
        {
          goal: '~1 (no collapse)',
          note: 'the same process and VM: how much slower runSync is right after sync and async runs mixed',
        },
      ),
      makeCase(
        'threads',
        `${what}: runSync after mixed runs vs at rest, TVM settings`,
        'us/run',
        timed(t, 'afterMixed', 'runSync after a mixed burst'),
        timed(t, 'rest', 'runSync at rest'),
        {
          note: 'what tvm-node ran with before it chose thread settings',
        },
      ),
      // The same phase under both settings: ratio > 1 when tvm-node's settings are faster.
      ...(
        [
          ['afterMixed', 'runSync after mixed runs', 'runSync after a mixed burst', { goal: '>= 1' }],
          [
            'mixed',
            'mixed runSync + run (4 in flight)',
            'mixed burst',
            { goal: '>= 1', note: 'wall time / runs of a burst of runSyncs on the JS thread between async runs kept 4 in flight' },
          ],
          [
            'busy',
            'runSync beside a busy thread',
            'runSync, one core busy',
            { goal: '>= 1', note: 'a worker_thread of the same process keeps one core busy (as any other process or busy worker would)' },
          ],
          ['rest', 'runSync at rest', 'runSync at rest', { note: 'no spinning: workers sleep between kernels and are woken for each parallel one' }],
          ['a4', 'async run, 4 in flight', 'run, 4 in flight', { goal: '>= 1' }],
          [
            'a1',
            'async run, 1 in flight',
            'run, 1 in flight',
            { note: 'the trade-off: a lone run on a pool thread has the TVM workers per pool thread, a share of the cores' },
          ],
        ] as const
      ).map(([phase, title, label, extra]) =>
        makeCase('threads', `${what}: ${title}, tvm-node vs TVM settings`, 'us/run', timed(o, phase, label), timed(t, phase, label), extra),
      ),
    );
  } finally {
    await ours.close();
    await stock?.close();
  }
}

if (require.main === module && process.argv.includes(THREADS_CHILD_FLAG)) {
  childProcess();
}
