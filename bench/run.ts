/**
 * tvm-node benchmarks (`npm run bench`, or `npx tsx bench/run.ts [--quick] [--rounds N]
 * [--round-ms MS] [--threads N] [--only call,copy,wrap,model,cnn,rpc]`).
 *
 * Every figure is tvm-node against a peer measured in the same run, round by round: each
 * round times every contender of a case once (in rotating order), so drift on the machine
 * hits both sides alike. A case reports the median, p25/p75 and min/max over the rounds of
 * each side, and of the per-round ratio `peer time / tvm-node time` (> 1: tvm-node faster;
 * for throughputs that is `tvm-node GB/s / peer GB/s`).
 *
 *   call   one call of the `nop` TIR kernel, and of a cheap global function, from Node vs
 *          from Python through the pinned TVM (bench/peer.py, in a child process)
 *   copy   host copies into / out of a CPU tensor vs TypedArray.set and Buffer.copy
 *   wrap   Tensor.wrap of aligned memory (zero-copy) vs making a TypedArray view, per size
 *   model  the `mlp` and `conv` fixtures: Node sync invoke and async run with 1/2/4 in
 *          flight vs Python's relax.VirtualMachine on the same .so
 *   cnn    a MobileNetV2 (random weights, 1x3x224x224; quick mode: a 3-stage 0.35-width
 *          variant at 64x64) built as ONNX and compiled by TVM
 *          (scripts/compile_bench_models.py, cached in .cache/bench-models): Node sync invoke
 *          and async run with 1/2/4 in flight vs Python's relax.VirtualMachine on the same
 *          .so, and vs onnxruntime-node on the same .onnx. Thread counts are set explicitly
 *          (TVM_NUM_THREADS, onnxruntime intraOpNumThreads; default: the available cores).
 *   rpc    on loopback, tvm-node's RPC server + client (lib/rpc) vs TVM's Python server
 *          (`python -m tvm.exec.rpc_server`) + the stock Python client (bench/rpc_peer.py),
 *          on the mlp and conv fixtures: upload throughput, per-inference latency on an open
 *          session (tvm-node's one-round-trip `session.infer` vs what the stock client must
 *          do: tensor to the remote, `vm["main"]`, `.numpy()`), connect and
 *          connect-to-first-result latency, and inferences/s with 1..16 concurrent clients,
 *          each a process of its own with its own session (TVM's server serves one at a time).
 *
 * Results go to bench/results/ (git-ignored): REPORT.md with its chart ratios.svg (quick
 * runs: REPORT.quick.md, ratios.quick.svg), latest.json/latest.md, and a timestamped copy of
 * each. Benchmarks assert nothing about time; test/bench.test.ts runs {@link runBenchmarks} in
 * quick mode to keep it working.
 */
import { execFileSync, fork, spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomFill } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type * as Ort from 'onnxruntime-node';
import {
  connect,
  loadModule,
  outputsOf,
  readNpy,
  RPCServer,
  Tensor,
  VirtualMachine,
  requireGlobalFunc,
  versions,
  type PackedFunc,
  type RPCSession,
} from '../lib';
import { decodeTensors, encodeInputs, INFER_FUNCTION } from '../lib/rpc/infer';
import { fixture, fixtureDir, inputTensor, python, repoRoot } from '../test/fixtures';
import { ratioChart } from './chart';

export type Group = 'call' | 'copy' | 'wrap' | 'model' | 'cnn' | 'rpc';
export const GROUPS: readonly Group[] = ['call', 'copy', 'wrap', 'model', 'cnn', 'rpc'];

/** The CNN of the `cnn` group, per mode (scripts/compile_bench_models.py builds both). */
export const CNN_MODEL = { full: 'mobilenet_v2', quick: 'mobilenet_v2_tiny' } as const;

/** Order statistics over the rounds. */
export interface Stats {
  median: number;
  p25: number;
  p75: number;
  min: number;
  max: number;
  rounds: number;
}

export interface Side {
  /** What was timed, e.g. `PackedFunc.call` or `Python tvm 0.27.0.post1`. */
  name: string;
  /** Operations per round. */
  opsPerRound: number;
  /** In the case's unit. */
  stats: Stats;
}

export interface BenchCase {
  group: Group;
  name: string;
  /** Bytes moved or wrapped per operation, for copy/wrap cases. */
  bytes?: number;
  /** Unit of `subject.stats` and `peer.stats`. */
  unit: 'ns/call' | 'GB/s' | 'ns/wrap' | 'us/run' | 'MB/s' | 'infer/s' | 'ms/session';
  higherIsBetter: boolean;
  /** tvm-node. */
  subject: Side;
  peer: Side;
  /** Per round, peer time / subject time: > 1 means tvm-node is faster. */
  ratio: Stats;
  /** What the ratio should be, when there is a goal. */
  goal?: string;
  note?: string;
}

export interface Machine {
  cpuModel: string;
  cores: number;
  availableParallelism: number;
  memoryGiB: number;
  platform: string;
  arch: string;
  release: string;
  node: string;
  uvThreadpoolSize: string | null;
  /** TVM_NUM_THREADS as found in the environment when the run started (see settings.threads). */
  tvmNumThreads: string | null;
  /** os.loadavg() (1, 5, 15 min) at the start and at the end of the run: other load skews figures. */
  loadAverage: { start: number[]; end: number[] };
}

/** Thread counts the compute runtimes were given (the same for both, to compare fairly). */
export interface ThreadSettings {
  /** TVM_NUM_THREADS set for this process (each calling thread's TVM pool) and the Python peer. */
  tvmNumThreads: number;
  /** What TVM reports (runtime.NumThreads) on Node's main thread and in the Python peer. */
  tvmReported: { node: number; python: number };
  /** onnxruntime-node session options of the cnn group. */
  ortIntraOpNumThreads: number;
  ortInterOpNumThreads: number;
}

/** A CNN of the cnn group, as built by scripts/compile_bench_models.py. */
export interface CnnModelInfo {
  name: string;
  notes: string;
  input: { name: string; shape: number[]; dtype: string };
  output: { name: string; shape: number[]; dtype: string };
  macs: number;
  params: number;
  opset: number;
  /** from_onnx + tvm.compile + export, when the model was (last) built. */
  compileS: number;
  /** Wall time of the build script in this run (small on a cache hit). */
  buildScriptS: number;
  cached: boolean;
  target: string;
  schedule: string;
  reference: string;
  tolerance: { rtol: number; atol: number };
  /** max |output - reference| of each runtime, checked before timing. */
  maxAbsDiff: { tvmPython: number; tvmNode: number; onnxruntimeNode: number | null };
  toolchain: { onnx: string; onnxruntime: string; tvm: string };
  dir: string;
}

/** How the rpc group was run. */
export interface RpcSettings {
  /** Upload sizes, bytes. */
  uploadSizes: number[];
  /** Fixtures of the latency cases. */
  latencyModels: string[];
  /** The model every concurrent client runs. */
  concurrencyModel: string;
  /** Concurrent clients per case. */
  clients: number[];
  /** Inferences each client runs in its session. */
  infersPerClient: number;
  /** Rounds of each concurrency case (each round: every client connects, runs, closes). */
  concurrencyRounds: number;
  /** Idle time after each timed connect (untimed), so a server's teardown is not charged to the next connect. */
  connectSettleMs: number;
  /** Bound on one round of a concurrency case (all its clients), s. */
  roundTimeoutS: number;
  /** A concurrent client's connect attempts (a failed one is retried after retryMs). */
  connectAttempts: number;
  retryMs: number;
  /** What serves tvm-node's side. */
  tvmNodeServer: string;
  /** What serves the Python side. */
  pythonServer: string;
}

/** Something the run did not measure, and why. */
export interface SkippedEntry {
  group: Group;
  name: string;
  skipped: string;
}

export interface BenchReport {
  startedAt: string;
  durationS: number;
  quick: boolean;
  settings: {
    rounds: number;
    roundMs: number;
    copySizes: number[];
    groups: Group[];
    threads: ThreadSettings;
    /** Ops per round of a contender that keeps k runs in flight: at least this many times k. */
    minRunsPerLane: number;
    /** Idle gap before each contender's round in the cnn group, ms. */
    cnnSettleMs: number;
    /** The rpc group's own settings. */
    rpc: RpcSettings;
  };
  machine: Machine;
  versions: {
    tvmNode: string;
    tvm: string;
    tvmFfi: string;
    python: Record<string, string>;
    /** null when it could not be loaded (see skipped). */
    onnxruntimeNode: string | null;
  };
  /** The CNN(s) of the cnn group. */
  models: CnnModelInfo[];
  cases: BenchCase[];
  skipped: SkippedEntry[];
}

export interface BenchOptions {
  /** Tiny sizes and few, short rounds: checks the suite works, says nothing about speed. */
  quick?: boolean;
  /** Rounds per case (default 15, quick 3). */
  rounds?: number;
  /** Target duration of one contender's round in ms (default 100, quick 2). */
  roundMs?: number;
  /**
   * Threads for TVM (TVM_NUM_THREADS) and onnxruntime (intraOpNumThreads). Default:
   * TVM_NUM_THREADS if set, else os.availableParallelism().
   */
  threads?: number;
  /** Groups to run (default all). */
  groups?: Group[];
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

// ---------------------------------------------------------------------------------------
// Statistics and timing

function quantile(sorted: number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function stats(values: number[]): Stats {
  const s = [...values].sort((a, b) => a - b);
  return { median: quantile(s, 0.5), p25: quantile(s, 0.25), p75: quantile(s, 0.75), min: s[0], max: s[s.length - 1], rounds: s.length };
}

/** Times `n` operations; resolves with the total in ns. */
type RoundFn = (n: number) => number | Promise<number>;

interface Contender {
  key: string;
  name: string;
  round: RoundFn;
  /** Lower bound on the calibrated ops per round (e.g. to keep k runs in flight). */
  minOps?: number;
}

/** Awaits `once()` n times in a row (one operation in flight). */
function sequential(once: () => Promise<unknown>): RoundFn {
  return async (n) => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await once();
    return Number(process.hrtime.bigint() - t0);
  };
}

function hrtimeLoop(fn: () => void): RoundFn {
  return (n) => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    return Number(process.hrtime.bigint() - t0);
  };
}

/** Ops per round so that a round takes about `roundNs`. */
async function calibrate(round: RoundFn, roundNs: number): Promise<number> {
  let n = 1;
  for (;;) {
    const t = Math.max(1, await round(n));
    if (t >= roundNs / 8 || n >= 1 << 26) return Math.max(1, Math.round((n * roundNs) / t));
    n *= t < roundNs / 1000 ? 64 : 4;
  }
}

interface Timed {
  name: string;
  opsPerRound: number;
  /** ns per op, one entry per round. */
  perOp: number[];
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Calibrates and warms each contender, then runs `rounds` rounds; each round times every
 * contender once, in an order that rotates from round to round. `settleMs` is an idle gap
 * before each contender's round, so that thread pools still spinning after the previous
 * contender (TVM's, onnxruntime's) have gone to sleep before the next one is timed.
 */
async function measure(contenders: Contender[], rounds: number, roundMs: number, settleMs = 0): Promise<Record<string, Timed>> {
  const roundNs = roundMs * 1e6;
  const ops: number[] = [];
  for (const c of contenders) {
    if (settleMs > 0) await sleep(settleMs);
    ops.push(Math.max(c.minOps ?? 1, await calibrate(c.round, roundNs)));
    await c.round(ops[ops.length - 1]); // warm-up round, not counted
  }
  const perOp: number[][] = contenders.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (let j = 0; j < contenders.length; j++) {
      const k = (j + r) % contenders.length;
      if (settleMs > 0) await sleep(settleMs);
      perOp[k].push((await contenders[k].round(ops[k])) / ops[k]);
    }
  }
  return Object.fromEntries(contenders.map((c, i) => [c.key, { name: c.name, opsPerRound: ops[i], perOp: perOp[i] }]));
}

type Unit = BenchCase['unit'];

/** Units of throughput (higher is better); the others are times per operation. */
export const HIGHER_IS_BETTER: ReadonlySet<Unit> = new Set<Unit>(['GB/s', 'MB/s', 'infer/s']);

/** Several cases of one group and unit, each `[name, subject, peer, note]`. */
function makeCases(group: Group, unit: Unit, rows: Array<[string, Timed, Timed, string]>): BenchCase[] {
  return rows.map(([name, subject, peer, note]) => makeCase(group, name, unit, subject, peer, { note }));
}

/** Builds a case from per-op ns of subject and peer (same rounds, paired). */
function makeCase(
  group: Group,
  name: string,
  unit: Unit,
  subject: Timed,
  peer: Timed,
  extra: { bytes?: number; goal?: string; note?: string } = {},
): BenchCase {
  const convert = (ns: number): number => {
    switch (unit) {
      case 'GB/s':
        return extra.bytes! / ns; // bytes per ns = GB/s
      case 'MB/s':
        return (extra.bytes! / ns) * 1e3;
      case 'infer/s':
        return 1e9 / ns;
      case 'us/run':
        return ns / 1e3;
      case 'ms/session':
        return ns / 1e6;
      default:
        return ns;
    }
  };
  const side = (t: Timed): Side => ({ name: t.name, opsPerRound: t.opsPerRound, stats: stats(t.perOp.map(convert)) });
  return {
    group,
    name,
    ...(extra.bytes !== undefined ? { bytes: extra.bytes } : {}),
    unit,
    higherIsBetter: HIGHER_IS_BETTER.has(unit),
    subject: side(subject),
    peer: side(peer),
    ratio: stats(subject.perOp.map((s, i) => peer.perOp[i] / s)),
    ...(extra.goal ? { goal: extra.goal } : {}),
    ...(extra.note ? { note: extra.note } : {}),
  };
}

// ---------------------------------------------------------------------------------------
// The Python peer (bench/peer.py under the pinned TVM)

class PythonPeer {
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly pending: Array<{ resolve: (v: any) => void; reject: (e: Error) => void }> = [];
  private stderr = '';
  private exited = false;

  /** `script`: bench/peer.py, or bench/rpc_peer.py (same protocol). */
  constructor(script = 'peer.py') {
    this.proc = spawn(python, [path.join(__dirname, script)], { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stderr.setEncoding('utf8').on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-4000);
    });
    readline.createInterface({ input: this.proc.stdout }).on('line', (line) => {
      const p = this.pending.shift();
      if (!p) return;
      const reply = JSON.parse(line);
      if (reply.error) p.reject(new Error(`Python peer: ${reply.error}`));
      else p.resolve(reply);
    });
    const fail = (why: string) => {
      this.exited = true;
      for (const p of this.pending.splice(0)) p.reject(new Error(`Python peer ${why}\n${this.stderr}`));
    };
    this.proc.on('exit', (code, signal) => fail(`exited (${signal ?? code})`));
    this.proc.on('error', (err) => fail(`failed to start: ${err.message}`));
  }

  /** Sends a request; with `timeoutMs`, a late answer kills the peer and rejects. */
  request(req: Record<string, unknown>, timeoutMs?: number): Promise<any> {
    if (this.exited) return Promise.reject(new Error(`Python peer is not running\n${this.stderr}`));
    const answer = new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.proc.stdin.write(JSON.stringify(req) + '\n');
    });
    if (timeoutMs === undefined) return answer;
    return withTimeout(answer, timeoutMs, `Python peer: ${String(req.op)}`).catch((err: Error) => {
      this.kill();
      throw new Error(`${err.message}\n${this.stderr}`);
    });
  }

  kill(): void {
    if (!this.exited) this.proc.kill('SIGKILL');
  }

  /** A contender timing `id` (set up before) in the peer. */
  contender(key: string, name: string, id: string): Contender {
    return { key, name, round: async (n) => (await this.request({ op: 'time', id, n })).ns as number };
  }

  /** Ends the peer (stdin closed); kills it if it has not exited after `graceMs`. */
  close(graceMs = 30000): Promise<void> {
    if (this.exited) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.kill(), graceMs);
      this.proc.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      this.proc.stdin.end();
    });
  }
}

/** Rejects with `what` if `p` does not settle within `ms`. */
function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------
// The groups

interface Ctx {
  quick: boolean;
  rounds: number;
  roundMs: number;
  copySizes: number[];
  threads: number;
  peer: PythonPeer;
  pyName: string;
  log: (line: string) => void;
  cases: BenchCase[];
  skipped: SkippedEntry[];
  models: CnnModelInfo[];
  /** Built before anything is timed (cnn group only). */
  cnn?: BuiltModels;
  ort?: { module: typeof Ort; version: string } | null;
  rpc: RpcSettings;
}

/** Ops per round of a pump keeping k runs in flight: at least this many times k. */
const MIN_RUNS_PER_LANE = 2;
/** Idle gap before each contender's round in the cnn group (see {@link measure}). */
const CNN_SETTLE_MS = 25;

const KiB = 1024;
const MiB = 1024 * KiB;

export function formatBytes(n: number): string {
  if (n >= MiB && n % MiB === 0) return `${n / MiB} MiB`;
  if (n >= KiB && n % KiB === 0) return `${n / KiB} KiB`;
  return `${n} B`;
}

async function benchCalls(ctx: Ctx): Promise<void> {
  const fx = fixture('kernels');
  const mod = loadModule(fx.path);
  const nop = mod.requireFunction('nop');
  const arg = Tensor.from(new Float32Array(1));
  nop.call(arg);
  await ctx.peer.request({ op: 'kernel', id: 'nop', path: fx.path, func: 'nop' });
  ctx.log('call: nop kernel');
  const t1 = await measure(
    [
      { key: 'node', name: 'PackedFunc.call', round: hrtimeLoop(() => nop.call(arg)) },
      ctx.peer.contender('py', `${ctx.pyName}: f(tensor)`, 'nop'),
      // Diagnostic: the addon's own call with the native tensor, bypassing lib/'s wrappers.
      { key: 'raw', name: 'nop.handle.call(tensor.handle)', round: hrtimeLoop(() => nop.handle.call(arg.handle)) },
    ],
    ctx.rounds,
    ctx.roundMs,
  );
  ctx.cases.push(makeCase('call', 'nop kernel, float32[1] arg', 'ns/call', t1.node, t1.py, { goal: '>= 1' }));
  ctx.cases.push(
    makeCase('call', 'nop kernel: PackedFunc.call(Tensor) vs native handle.call(NativeTensor)', 'ns/call', t1.node, t1.raw, {
      note: "diagnostic: the share of lib/'s Tensor/PackedFunc wrappers in a call",
    }),
  );
  ctx.cases.push(
    makeCase('call', 'nop kernel: native handle.call(NativeTensor) vs Python', 'ns/call', t1.raw, t1.py, {
      note: 'diagnostic: the addon alone against Python',
    }),
  );

  // The async form: one call in flight, against a bare round trip through the libuv pool.
  ctx.log('call: nop kernel, callAsync');
  const small = Buffer.alloc(16);
  const ta = await measure(
    [
      { key: 'node', name: 'await PackedFunc.callAsync', round: sequential(() => nop.callAsync(arg)) },
      {
        key: 'uv',
        name: 'await crypto.randomFill(16 B)',
        round: sequential(() => new Promise((resolve, reject) => randomFill(small, (err) => (err ? reject(err) : resolve(null))))),
      },
    ],
    ctx.rounds,
    ctx.roundMs,
  );
  ctx.cases.push(
    makeCase('call', 'nop kernel, callAsync (1 in flight) vs a bare libuv pool round trip', 'ns/call', ta.node, ta.uv, {
      note: 'diagnostic: how much of an async call is the thread hop itself',
    }),
  );

  // A cheap global function of the runtime, with a string argument on both sides.
  const enabled: PackedFunc = requireGlobalFunc('runtime.RuntimeEnabled');
  await ctx.peer.request({ op: 'global', id: 'enabled', name: 'runtime.RuntimeEnabled', args: ['cpu'] });
  ctx.log('call: runtime.RuntimeEnabled');
  const t2 = await measure(
    [
      { key: 'node', name: 'PackedFunc.call', round: hrtimeLoop(() => enabled.call('cpu')) },
      ctx.peer.contender('py', `${ctx.pyName}: f("cpu")`, 'enabled'),
    ],
    ctx.rounds,
    ctx.roundMs,
  );
  ctx.cases.push(makeCase('call', 'global runtime.RuntimeEnabled("cpu")', 'ns/call', t2.node, t2.py, { goal: '>= 1' }));
  enabled.dispose();
  nop.dispose();
  arg.dispose();
  mod.dispose();
}

function filled(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = i % 251;
  return a;
}

async function benchCopies(ctx: Ctx): Promise<void> {
  for (const bytes of ctx.copySizes) {
    const n = bytes / 4;
    const size = formatBytes(bytes);
    const src = filled(n);
    const dst = new Float32Array(n);
    const srcBuf = Buffer.from(src.buffer, src.byteOffset, src.byteLength);
    const dstBuf = Buffer.from(dst.buffer, dst.byteOffset, dst.byteLength);
    const t = Tensor.empty([n], 'float32');

    ctx.log(`copy: into a tensor, ${size}`);
    const into = await measure(
      [
        { key: 'node', name: 'tensor.copyFrom(Float32Array)', round: hrtimeLoop(() => t.copyFrom(src)) },
        { key: 'set', name: 'Float32Array.set', round: hrtimeLoop(() => dst.set(src)) },
        { key: 'buf', name: 'Buffer.copy', round: hrtimeLoop(() => srcBuf.copy(dstBuf)) },
        { key: 'raw', name: 'tensor.handle.copyFromBytes(Float32Array)', round: hrtimeLoop(() => t.handle.copyFromBytes(src)) },
      ],
      ctx.rounds,
      ctx.roundMs,
    );
    ctx.cases.push(makeCase('copy', `host -> tensor ${size}, vs TypedArray.set`, 'GB/s', into.node, into.set, { bytes, goal: '>= 0.8' }));
    ctx.cases.push(makeCase('copy', `host -> tensor ${size}, vs Buffer.copy`, 'GB/s', into.node, into.buf, { bytes, goal: '>= 0.8' }));
    ctx.cases.push(
      makeCase('copy', `host -> tensor ${size}, copyFrom vs native handle.copyFromBytes`, 'GB/s', into.node, into.raw, {
        bytes,
        note: "diagnostic: the share of lib/'s Tensor.copyFrom in a copy",
      }),
    );

    ctx.log(`copy: out of a tensor, ${size}`);
    const out = await measure(
      [
        { key: 'node', name: 'tensor.handle.copyToBytes(Float32Array)', round: hrtimeLoop(() => t.handle.copyToBytes(dst)) },
        { key: 'set', name: 'Float32Array.set', round: hrtimeLoop(() => dst.set(src)) },
        { key: 'buf', name: 'Buffer.copy', round: hrtimeLoop(() => srcBuf.copy(dstBuf)) },
      ],
      ctx.rounds,
      ctx.roundMs,
    );
    ctx.cases.push(makeCase('copy', `tensor -> host ${size} (preallocated), vs TypedArray.set`, 'GB/s', out.node, out.set, { bytes, goal: '>= 0.8' }));
    ctx.cases.push(makeCase('copy', `tensor -> host ${size} (preallocated), vs Buffer.copy`, 'GB/s', out.node, out.buf, { bytes, goal: '>= 0.8' }));

    ctx.log(`copy: tensor.toArray(), ${size}`);
    let sink = 0;
    const alloc = await measure(
      [
        { key: 'node', name: 'tensor.toArray()', round: hrtimeLoop(() => (sink += t.toArray().length)) },
        { key: 'slice', name: 'Float32Array.slice()', round: hrtimeLoop(() => (sink += src.slice().length)) },
      ],
      ctx.rounds,
      ctx.roundMs,
    );
    if (sink === 0) throw new Error('unreachable');
    ctx.cases.push(
      makeCase('copy', `tensor -> new array ${size}, toArray() vs slice()`, 'GB/s', alloc.node, alloc.slice, {
        bytes,
        goal: '>= 0.8',
        note: 'both allocate the result',
      }),
    );
    t.dispose();
  }
}

async function benchWrap(ctx: Ctx): Promise<void> {
  // Tensor memory is 64-byte aligned; its hostView is aligned memory JS owns a view of.
  const backing = ctx.copySizes.map((bytes) => ({ bytes, tensor: Tensor.empty([bytes / 4], 'float32') }));
  const views = backing.map((b) => b.tensor.hostView() as Float32Array);
  views.forEach((v) => {
    const w = Tensor.wrap(v);
    if (!w.sharesMemory) throw new Error(`Tensor.wrap copied ${formatBytes(v.byteLength)} of aligned memory`);
    w.dispose();
  });
  const wrapOf = (v: Float32Array): RoundFn => hrtimeLoop(() => Tensor.wrap(v).dispose());
  let sink = 0;
  const viewOf = (v: Float32Array): RoundFn => hrtimeLoop(() => (sink += new Float32Array(v.buffer, v.byteOffset, v.length).length));
  const smallest = views[0];
  for (let i = 0; i < views.length; i++) {
    const v = views[i];
    const size = formatBytes(v.byteLength);
    ctx.log(`wrap: ${size}`);
    const contenders: Contender[] = [
      { key: 'node', name: 'Tensor.wrap(view).dispose()', round: wrapOf(v) },
      { key: 'view', name: 'new Float32Array(buffer, offset, length)', round: viewOf(v) },
    ];
    if (i > 0) contenders.push({ key: 'small', name: `Tensor.wrap(${formatBytes(smallest.byteLength)} view).dispose()`, round: wrapOf(smallest) });
    const t = await measure(contenders, ctx.rounds, ctx.roundMs);
    ctx.cases.push(
      makeCase('wrap', `Tensor.wrap ${size}, vs a TypedArray view`, 'ns/wrap', t.node, t.view, {
        bytes: v.byteLength,
        note: 'zero-copy both; the ratio is the cost of a TVM tensor over a JS view',
      }),
    );
    if (t.small) {
      ctx.cases.push(
        makeCase('wrap', `Tensor.wrap ${size}, vs Tensor.wrap ${formatBytes(smallest.byteLength)}`, 'ns/wrap', t.node, t.small, {
          bytes: v.byteLength,
          goal: '~1 (size-independent)',
        }),
      );
    }
  }
  if (sink === 0) throw new Error('unreachable');
  for (const b of backing) b.tensor.dispose();
}

const dropAll = (out: unknown) => outputsOf<Tensor>(out).forEach((t) => t.dispose());

/** Keeps `inFlight` vm.run calls going until n have been started; resolves with the wall ns. */
function pumpRuns(vm: VirtualMachine, fn: string, inputs: Tensor[], inFlight: number): RoundFn {
  return async (n) => {
    let started = 0;
    const lane = async () => {
      while (started < n) {
        started++;
        dropAll(await vm.run(fn, ...inputs));
      }
    };
    const t0 = process.hrtime.bigint();
    await Promise.all(Array.from({ length: Math.min(inFlight, n) }, lane));
    return Number(process.hrtime.bigint() - t0);
  };
}

const IN_FLIGHT = [1, 2, 4] as const;

function pumpContenders(pump: (k: number) => RoundFn): Contender[] {
  return IN_FLIGHT.map((k) => ({ key: `a${k}`, name: `vm.run, ${k} in flight`, round: pump(k), minOps: MIN_RUNS_PER_LANE * k }));
}

async function benchModels(ctx: Ctx): Promise<void> {
  for (const name of ['mlp', 'conv']) {
    const fx = fixture(name);
    const c = fx.cases[0];
    const inputs = c.inputs.map(inputTensor);
    const vm = await VirtualMachine.load(fx.path, { concurrency: 4 });
    const fn = fx.function ?? 'main';
    dropAll(vm.invoke(fn, ...inputs));
    await ctx.peer.request({
      op: 'vm',
      id: name,
      path: fx.path,
      func: fn,
      inputs: c.inputs.map((s) => path.join(fixtureDir(), s.file)),
    });
    const pump = (k: number) => pumpRuns(vm, fn, inputs, k);
    ctx.log(`model: ${name}`);
    const shape = c.inputs.map((s) => `[${s.shape.join(',')}]`).join(', ');
    const t = await measure(
      [
        { key: 'sync', name: 'vm.invoke (sync)', round: hrtimeLoop(() => dropAll(vm.invoke(fn, ...inputs))) },
        ...pumpContenders(pump),
        ctx.peer.contender('py', `${ctx.pyName}: relax.VirtualMachine["${fn}"](x)`, name),
      ],
      ctx.rounds,
      ctx.roundMs,
    );
    const what = `${name} ${shape}`;
    ctx.cases.push(makeCase('model', `${what}: sync invoke vs Python`, 'us/run', t.sync, t.py, { goal: '>= 1' }));
    for (const k of IN_FLIGHT) {
      ctx.cases.push(
        makeCase('model', `${what}: async run, ${k} in flight vs Python (sync)`, 'us/run', t[`a${k}`], t.py, {
          note: 'tvm-node figure is wall time / runs (inverse throughput)',
        }),
      );
    }
    await vm.dispose();
    inputs.forEach((x) => x.dispose());
  }
}

// ---------------------------------------------------------------------------------------
// The cnn group: a MobileNetV2 as ONNX, compiled by TVM; peers Python TVM and onnxruntime-node

interface ModelArray {
  name: string;
  shape: number[];
  dtype: string;
  file: string;
}

/** One entry of .cache/bench-models/<key>/index.json (see scripts/compile_bench_models.py). */
interface BenchModelEntry {
  onnx: string;
  library: string;
  function: string;
  opset: number;
  input: ModelArray;
  output: ModelArray;
  reference: string;
  tolerance: { rtol: number; atol: number };
  max_abs_diff: number;
  macs: number;
  params: number;
  compile_s: number;
  notes: string;
}

interface BuiltModels {
  dir: string;
  index: {
    tvm_version: string;
    onnx_version: string;
    onnxruntime_version: string;
    target: string;
    schedule: string;
    models: Record<string, BenchModelEntry>;
  };
  scriptS: number;
}

/** Builds (or finds cached) benchmark models; progress goes to stderr. */
export function buildBenchModels(names: string[]): BuiltModels {
  const t0 = process.hrtime.bigint();
  const script = path.join(repoRoot, 'scripts', 'compile_bench_models.py');
  const out = execFileSync(python, [script, '--only', names.join(',')], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const dir = out.trim().split('\n').pop()!;
  const index = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8'));
  return { dir, index, scriptS: Number(process.hrtime.bigint() - t0) / 1e9 };
}

/** onnxruntime-node, or the reason it cannot be used here. */
function loadOrt(): { module: typeof Ort; version: string } | { error: string } {
  try {
    const module = require('onnxruntime-node') as typeof Ort;
    const version = (require('onnxruntime-node/package.json') as { version: string }).version;
    return { module, version };
  } catch (err) {
    return { error: `onnxruntime-node cannot be loaded: ${(err as Error).message.split('\n')[0]}` };
  }
}

/** max |a - b|, and whether every element is within atol + rtol * |b|. */
function compare(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: { rtol: number; atol: number }): { maxAbsDiff: number; ok: boolean } {
  let maxAbsDiff = 0;
  let ok = actual.length === expected.length;
  for (let i = 0; i < expected.length && ok; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    maxAbsDiff = Math.max(maxAbsDiff, d);
    if (!(d <= tol.atol + tol.rtol * Math.abs(expected[i]))) ok = false;
  }
  return { maxAbsDiff, ok };
}

async function benchCnn(ctx: Ctx): Promise<void> {
  const built = ctx.cnn!;
  const name = ctx.quick ? CNN_MODEL.quick : CNN_MODEL.full;
  const m = built.index.models[name];
  const file = (f: string) => path.join(built.dir, f);
  const shape = `[${m.input.shape.join(',')}]`;
  const what = `${name} ${shape}`;

  // The same input for everyone, and the onnxruntime (Python) reference output.
  const x = readNpy(file(m.input.file));
  const reference = readNpy(file(m.output.file)).data as Float32Array;
  const input = Tensor.from(x.data, { shape: x.shape, dtype: x.dtype });
  const vm = await VirtualMachine.load(file(m.library), { concurrency: 4 });
  const fn = m.function;

  const check = (who: string, out: ArrayLike<number>): number => {
    const c = compare(out, reference, m.tolerance);
    if (!c.ok) throw new Error(`${name}: ${who} output differs from the reference (max |diff| ${c.maxAbsDiff})`);
    return c.maxAbsDiff;
  };
  const [y] = outputsOf<Tensor>(vm.invoke(fn, input));
  const tvmNode = check('tvm-node', y.toFloat32Array());
  y.dispose();
  const py = await ctx.peer.request({
    op: 'vm',
    id: name,
    path: file(m.library),
    func: fn,
    inputs: [file(m.input.file)],
    expect: file(m.output.file),
    tolerance: m.tolerance,
  });

  // onnxruntime-node on the same .onnx, with the same number of threads as TVM.
  let session: Ort.InferenceSession | undefined;
  let feeds: Record<string, Ort.Tensor> = {};
  let ortDiff: number | null = null;
  if (ctx.ort) {
    const ort = ctx.ort.module;
    session = await ort.InferenceSession.create(file(m.onnx), {
      executionProviders: ['cpu'],
      intraOpNumThreads: ctx.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    });
    feeds = { [m.input.name]: new ort.Tensor('float32', x.data as Float32Array, x.shape) };
    const out = await session.run(feeds);
    ortDiff = check('onnxruntime-node', out[m.output.name].data as Float32Array);
  }

  ctx.models.push({
    name,
    notes: m.notes,
    input: { name: m.input.name, shape: m.input.shape, dtype: m.input.dtype },
    output: { name: m.output.name, shape: m.output.shape, dtype: m.output.dtype },
    macs: m.macs,
    params: m.params,
    opset: m.opset,
    compileS: m.compile_s,
    buildScriptS: Math.round(built.scriptS * 100) / 100,
    cached: built.scriptS < m.compile_s,
    target: built.index.target,
    schedule: built.index.schedule,
    reference: m.reference,
    tolerance: m.tolerance,
    maxAbsDiff: { tvmPython: py.maxAbsDiff, tvmNode, onnxruntimeNode: ortDiff },
    toolchain: { onnx: built.index.onnx_version, onnxruntime: built.index.onnxruntime_version, tvm: built.index.tvm_version },
    dir: path.relative(repoRoot, built.dir),
  });

  ctx.log(`cnn: ${what}`);
  const contenders: Contender[] = [
    { key: 'sync', name: 'vm.invoke (sync)', round: hrtimeLoop(() => dropAll(vm.invoke(fn, input))) },
    ...pumpContenders((k) => pumpRuns(vm, fn, [input], k)),
    ctx.peer.contender('py', `${ctx.pyName}: relax.VirtualMachine["${fn}"](x)`, name),
  ];
  const ortName = ctx.ort ? `onnxruntime-node ${ctx.ort.version}: await session.run(feeds)` : '';
  if (session) contenders.push({ key: 'ort', name: ortName, round: sequential(() => session!.run(feeds)) });
  const t = await measure(contenders, ctx.rounds, ctx.roundMs, CNN_SETTLE_MS);

  ctx.cases.push(makeCase('cnn', `${what}: sync invoke vs Python`, 'us/run', t.sync, t.py, { goal: '~1 (same kernels)' }));
  for (const k of IN_FLIGHT) {
    ctx.cases.push(
      makeCase('cnn', `${what}: async run, ${k} in flight vs Python (sync)`, 'us/run', t[`a${k}`], t.py, {
        note: 'tvm-node figure is wall time / runs (inverse throughput)',
      }),
    );
  }
  if (t.ort) {
    ctx.cases.push(
      makeCase('cnn', `${what}: sync invoke vs onnxruntime-node`, 'us/run', t.sync, t.ort, {
        note: "kernel quality: untuned portable TVM build vs onnxruntime's own kernels",
      }),
    );
    for (const k of IN_FLIGHT) {
      ctx.cases.push(
        makeCase('cnn', `${what}: async run, ${k} in flight vs onnxruntime-node`, 'us/run', t[`a${k}`], t.ort, {
          note: 'onnxruntime-node runs on the JS thread (one at a time); tvm-node figure is wall time / runs',
        }),
      );
    }
  } else {
    ctx.skipped.push({ group: 'cnn', name: `${what}: vs onnxruntime-node`, skipped: 'onnxruntime-node is not available (see the other skipped entry)' });
  }
  await session?.release();
  await vm.dispose();
  input.dispose();
}

// ---------------------------------------------------------------------------------------
// The rpc group: tvm-node's RPC server + client vs TVM's Python server + the stock client

const RPC_HOST = '127.0.0.1';
/** Bound on one request to a peer or client process outside the concurrency rounds. */
const RPC_REQUEST_MS = 180000;
/** argv flag that makes this file a client process of the concurrency cases. */
const RPC_CLIENT_FLAG = '--rpc-client';

const hrNow = () => process.hrtime.bigint();
const nsSince = (t0: bigint) => Number(process.hrtime.bigint() - t0);

let gcFn: (() => void) | undefined;

/**
 * Closes a tvm-node RPC session so that it really ends. `session.call()` (and so `infer()`)
 * looks the remote function up anew on every call and never disposes that handle, and each
 * handle keeps the runtime's session alive: after `close()` the server's session lives on
 * until the garbage collector finalizes them. A forced collection (V8's gc, exposed at run
 * time) ends it now, so that sessions do not pile up on the server between rounds.
 */
async function closeSession(session: RPCSession): Promise<void> {
  await session.close();
  if (!gcFn) {
    setFlagsFromString('--expose-gc');
    gcFn = runInNewContext('gc') as () => void;
  }
  gcFn();
  await new Promise((resolve) => setImmediate(resolve)); // finalizers deferred by N-API
  gcFn();
}

/** Process groups of detached children (TVM's server and its workers), killed if we exit early. */
const detachedGroups = new Set<number>();
let exitHook = false;

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
  detachedGroups.delete(pid);
}

function trackGroup(pid: number): void {
  detachedGroups.add(pid);
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => [...detachedGroups].forEach(killGroup));
}

/**
 * TVM's Python RPC server (`python -m tvm.exec.rpc_server`), in a process group of its own:
 * it runs in a popen worker and forks a process per session, all killed together by stop().
 */
class TvmRpcServer {
  private constructor(
    private readonly proc: ChildProcess,
    readonly port: number,
    private readonly logTail: () => string,
  ) {}

  static async start(timeoutMs = 60000): Promise<TvmRpcServer> {
    const base = 20000 + Math.floor(Math.random() * 19900);
    const args = ['-m', 'tvm.exec.rpc_server', '--host', RPC_HOST, '--port', String(base), '--port-end', String(base + 50)];
    const proc = spawn(python, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    if (proc.pid !== undefined) trackGroup(proc.pid);
    let log = '';
    const port = await withTimeout(
      new Promise<number>((resolve, reject) => {
        // Keep draining its logs (a line per session): a full pipe would stall the server.
        const onData = (chunk: Buffer) => {
          log = (log + chunk.toString()).slice(-8000);
          const m = /bind to 127\.0\.0\.1:(\d+)/.exec(log);
          if (m) resolve(Number(m[1]));
        };
        proc.stdout!.on('data', onData);
        proc.stderr!.on('data', onData);
        proc.once('exit', (code, signal) => reject(new Error(`TVM rpc_server exited (${signal ?? code}) before binding:\n${log}`)));
        proc.once('error', reject);
      }),
      timeoutMs,
      'TVM rpc_server to bind',
    ).catch((err) => {
      if (proc.pid !== undefined) killGroup(proc.pid);
      throw err;
    });
    return new TvmRpcServer(proc, port, () => log);
  }

  get log(): string {
    return this.logTail();
  }

  async stop(): Promise<void> {
    if (this.proc.pid === undefined) return;
    const exited = this.proc.exitCode !== null || this.proc.signalCode !== null ? Promise.resolve() : new Promise((r) => this.proc.once('exit', r));
    killGroup(this.proc.pid);
    await withTimeout(exited, 10000, 'TVM rpc_server to exit').catch(() => undefined);
  }
}

/** One client of a concurrency case: connect, k inferences of `model`, close. */
interface ClientJob {
  port: number;
  model: string;
  input: string;
  expect: string;
  tolerance: { rtol: number; atol: number };
  k: number;
}

/** ns from the start of a client's job: connected, ready to infer, first result, session closed. */
interface ClientTimes {
  connectNs: number;
  readyNs: number;
  firstNs: number;
  doneNs: number;
  /** Failed connects retried (see RPC_CONNECT_ATTEMPTS). */
  retries: number;
}

/**
 * A client of a concurrency case retries a failed connect (TVM's server, listen backlog 1,
 * resets some of many simultaneous connects) after RPC_RETRY_MS, up to this many attempts in
 * all, as a user would; bench/rpc_peer.py does the same.
 */
const RPC_CONNECT_ATTEMPTS = 10;
const RPC_RETRY_MS = 50;

/** Throws unless `actual` matches the reference in `expectFile` within `tol`. */
function checkAgainst(actual: ArrayLike<number>, expectFile: string, tol: { rtol: number; atol: number }, who: string): number {
  const c = compare(actual, readNpy(expectFile).data as Float32Array, tol);
  if (!c.ok) throw new Error(`${who}: output differs from ${path.basename(expectFile)} (max |diff| ${c.maxAbsDiff})`);
  return c.maxAbsDiff;
}

/** A tvm-node client's job (in a client process): one round trip per inference. */
async function runClientJob(job: ClientJob): Promise<ClientTimes> {
  const x = readNpy(job.input);
  const input = [{ data: x.data, shape: x.shape }];
  const t0 = hrNow();
  let retries = 0;
  let session: RPCSession;
  for (;;) {
    try {
      session = await connect(RPC_HOST, job.port);
      break;
    } catch (err) {
      if (++retries >= RPC_CONNECT_ATTEMPTS) throw err;
      await sleep(RPC_RETRY_MS);
    }
  }
  const connectNs = nsSince(t0);
  let firstNs = 0;
  try {
    for (let i = 0; i < job.k; i++) {
      const outs = await session.infer(job.model, input);
      if (i === 0) {
        firstNs = nsSince(t0);
        checkAgainst(outs[0].toFloat32Array(), job.expect, job.tolerance, 'tvm-node client');
      }
      outs.forEach((t) => t.dispose());
    }
  } finally {
    await closeSession(session);
  }
  return { connectNs, readyNs: connectNs, firstNs, doneNs: nsSince(t0), retries };
}

/** Entry of a client process (`bench/run.ts --rpc-client`, forked by {@link NodeRpcClient}). */
function rpcClientProcess(): void {
  process.on('message', (job: ClientJob) => {
    runClientJob(job).then(
      (ok) => process.send!({ ok }),
      (err: Error) => process.send!({ error: String(err?.stack ?? err) }),
    );
  });
  process.once('disconnect', () => process.exit(0));
  process.send!('ready');
}

/** A tvm-node client in a process of its own (this file, forked), running one job at a time. */
class NodeRpcClient {
  private readonly proc: ChildProcess;
  private readonly started: Promise<void>;
  private pending?: { resolve: (t: ClientTimes) => void; reject: (e: Error) => void };
  private exited = false;

  constructor() {
    const ts = !__filename.endsWith('.js');
    this.proc = fork(__filename, [RPC_CLIENT_FLAG], { cwd: repoRoot, execArgv: ts ? ['--require', 'tsx/cjs'] : [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.started = new Promise<void>((resolve, reject) => {
      this.proc.on('message', (m: 'ready' | { ok: ClientTimes } | { error: string }) => {
        if (m === 'ready') return resolve();
        const p = this.pending;
        this.pending = undefined;
        if ('error' in m) p?.reject(new Error(`tvm-node client process: ${m.error}`));
        else p?.resolve(m.ok);
      });
      this.proc.once('exit', (code, signal) => {
        this.exited = true;
        const err = new Error(`tvm-node client process exited (${signal ?? code})`);
        reject(err);
        this.pending?.reject(err);
        this.pending = undefined;
      });
    });
    this.started.catch(() => undefined);
  }

  ready(timeoutMs: number): Promise<void> {
    return withTimeout(this.started, timeoutMs, 'tvm-node client process to start');
  }

  run(job: ClientJob, timeoutMs: number): Promise<ClientTimes> {
    if (this.exited) return Promise.reject(new Error('tvm-node client process is not running'));
    const answer = new Promise<ClientTimes>((resolve, reject) => {
      this.pending = { resolve, reject };
      this.proc.send(job);
    });
    return withTimeout(answer, timeoutMs, 'tvm-node client job').catch((err: Error) => {
      this.proc.kill('SIGKILL');
      throw err;
    });
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    if (this.proc.connected) this.proc.disconnect();
    await withTimeout(exited, 10000, 'tvm-node client process to exit').catch(() => this.proc.kill('SIGKILL'));
  }
}

/** Waits until the server has no session left (their processes have exited). */
async function waitIdle(server: RPCServer, timeoutMs: number): Promise<void> {
  const t0 = Date.now();
  while (server.activeSessions > 0) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`tvm-node server still has ${server.activeSessions} session(s) after ${timeoutMs} ms`);
    await sleep(5);
  }
}

function rpcSettings(quick: boolean): RpcSettings {
  const workerJs = fs.existsSync(path.join(repoRoot, 'lib', 'rpc', 'session-worker.js'));
  return {
    uploadSizes: quick ? [MiB] : [MiB, 64 * MiB],
    latencyModels: ['mlp', 'conv'],
    concurrencyModel: 'mlp',
    clients: quick ? [1, 2] : [1, 2, 4, 8, 16],
    infersPerClient: quick ? 3 : 50,
    concurrencyRounds: quick ? 3 : 5,
    connectSettleMs: quick ? 10 : 50,
    roundTimeoutS: quick ? 120 : 300,
    connectAttempts: RPC_CONNECT_ATTEMPTS,
    retryMs: RPC_RETRY_MS,
    tvmNodeServer:
      `tvm-node RPCServer({ port: 0, modelsDir, maxSessions: 64 }) in the benchmark process, serving mlp.so and conv.so as a model ` +
      `repository; every session is a forked Node process (lib/rpc/session-worker${workerJs ? '.js' : '.ts, run under tsx since lib/ is not compiled'})`,
    pythonServer:
      'TVM\'s `python -m tvm.exec.rpc_server --host 127.0.0.1` (tvm/.venv): one session at a time, each in a forked process, ' +
      'listen backlog 1; a client that connects while another is served waits in the kernel (or TCP retries its SYN) until it is accepted',
  };
}

/** A contender timing case `id` of the rpc peer, with a bound on each round. */
function rpcPeerContender(peer: PythonPeer, key: string, name: string, id: string): Contender {
  return { key, name, round: async (n) => (await peer.request({ op: 'time', id, n }, RPC_REQUEST_MS)).ns as number };
}

function medianOf(xs: number[]): number {
  return stats(xs).median;
}

async function benchRpc(ctx: Ctx): Promise<void> {
  const s = ctx.rpc;
  const T = RPC_REQUEST_MS;
  const models = [...new Set([...s.latencyModels, s.concurrencyModel])];
  const modelsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-bench-models-'));
  for (const m of models) fs.copyFileSync(fixture(m).path, path.join(modelsDir, `${m}.so`));
  const io = (name: string) => {
    const c = fixture(name).cases[0];
    return { input: path.join(fixtureDir(), c.inputs[0].file), expect: path.join(fixtureDir(), c.outputs[0].file), tolerance: fixture(name).tolerance };
  };
  /** Undone in reverse order, each step bounded. */
  const cleanup: Array<[string, () => Promise<unknown>]> = [];
  try {
    const server = new RPCServer({ port: 0, modelsDir, maxSessions: 64 });
    const { port } = await server.listen();
    cleanup.push(['tvm-node server: close()', () => server.close(5000)]);
    // The same repository served inference-only: sessions in the server process, one model cache.
    const infServer = new RPCServer({ port: 0, modelsDir, maxSessions: 64, inferenceOnly: true });
    const { port: infPort } = await infServer.listen();
    cleanup.push(['tvm-node inference-only server: close()', () => infServer.close(5000)]);
    const tvm = await TvmRpcServer.start();
    cleanup.push(["TVM's Python server: stop", () => tvm.stop()]);
    const peer = new PythonPeer('rpc_peer.py');
    cleanup.push(['Python peer: close', () => peer.close(10000)]);
    await peer.request({ op: 'info' }, T);
    const py = ctx.pyName;
    const OURS = 'tvm-node client → tvm-node server';
    const PY_TVM = `${py} client → TVM's Python server`;
    const PY_OURS = `${py} client → tvm-node server`;
    const INF = 'tvm-node client → tvm-node inference-only server';
    const PY_INF = `${py} client → tvm-node inference-only server`;

    // 1. Upload throughput, on sessions that stay open.
    const session = await withTimeout(connect(RPC_HOST, port), T, 'connect to the tvm-node server');
    cleanup.push(['tvm-node session: close', () => closeSession(session)]);
    await peer.request({ op: 'connect', sess: 'tvm', port: tvm.port }, T);
    await peer.request({ op: 'connect', sess: 'ours', port }, T);
    const infSession = await withTimeout(connect(RPC_HOST, infPort), T, 'connect to the inference-only server');
    cleanup.push(['tvm-node inference-only session: close', () => closeSession(infSession)]);
    await peer.request({ op: 'connect', sess: 'inf', port: infPort }, T);
    for (const bytes of s.uploadSizes) {
      const size = formatBytes(bytes);
      const blob = Buffer.alloc(bytes);
      await withTimeout(session.upload(blob, 'blob.bin'), T, `upload ${size}`); // warm
      await peer.request({ op: 'upload', id: `up-tvm-${bytes}`, sess: 'tvm', bytes }, T);
      await peer.request({ op: 'upload', id: `up-ours-${bytes}`, sess: 'ours', bytes }, T);
      ctx.log(`rpc: upload ${size}`);
      const t = await measure(
        [
          { key: 'node', name: `${OURS}: session.upload(Buffer)`, round: sequential(() => session.upload(blob, 'blob.bin')) },
          rpcPeerContender(peer, 'py', `${PY_TVM}: r.upload(bytearray)`, `up-tvm-${bytes}`),
          rpcPeerContender(peer, 'pyOurs', `${PY_OURS}: r.upload(bytearray)`, `up-ours-${bytes}`),
        ],
        ctx.rounds,
        ctx.roundMs,
      );
      ctx.cases.push(
        makeCase('rpc', `upload ${size}: tvm-node server + client vs TVM's Python server + client`, 'MB/s', t.node, t.py, {
          bytes,
          note: 'MB = 10^6 bytes; one session each, kept open',
        }),
      );
      ctx.cases.push(
        makeCase('rpc', `upload ${size}, Python client: tvm-node server vs TVM's Python server`, 'MB/s', t.pyOurs, t.py, {
          bytes,
          note: 'diagnostic: the same stock client on both, so the server alone',
        }),
      );
    }

    // 2. Latency of one inference on an open session.
    // One function per model: its frame (and the remote handles its closures hold) is gone
    // once it returns, so that closing the session really ends it (see closeSession).
    const latency = async (name: string): Promise<void> => {
      const fx = fixture(name);
      const { input, expect, tolerance } = io(name);
      const x = readNpy(input);
      const hostInput = [{ data: x.data, shape: x.shape }];
      const shape = `[${x.shape.join(',')}]`;
      const inferOnce = async () => (await session.infer(name, hostInput)).forEach((t) => t.dispose());
      const inferOnceInf = async () => (await infSession.infer(name, hostInput)).forEach((t) => t.dispose());
      const [yInf] = await withTimeout(infSession.infer(name, hostInput), T, `inference-only infer ${name}`);
      checkAgainst(yInf.toFloat32Array(), expect, tolerance, `${name}: session.infer, inference-only server`);
      // Diagnostic: tvm_node.infer through a function handle looked up once (session.infer looks it up on every call).
      const inferFn = await withTimeout(session.getFunction(INFER_FUNCTION), T, 'getFunction');
      const cachedOnce = async () => decodeTensors((await inferFn.call(name, encodeInputs(hostInput))) as Buffer);
      checkAgainst((await withTimeout(cachedOnce(), T, 'cached infer'))[0].data as Float32Array, expect, tolerance, `${name}: cached tvm_node.infer`);
      const [y] = await withTimeout(session.infer(name, hostInput), T, `infer ${name}`);
      checkAgainst(y.toFloat32Array(), expect, tolerance, `${name}: session.infer`);
      y.dispose();
      // The multi-round-trip path on tvm-node's server: the module uploaded and loaded once.
      await withTimeout(session.upload(fx.path), T, `upload ${fx.file}`);
      const mod = await withTimeout(session.loadModule(fx.file), T, `load ${fx.file}`);
      const vm = new VirtualMachine(mod, { devices: [session.cpu()], concurrency: 1 });
      const fn = fx.function ?? 'main';
      const multiOnce = async (): Promise<ArrayLike<number>> => {
        const xr = await session.tensor(x.data, { shape: x.shape, dtype: x.dtype });
        const outs = outputsOf<Tensor>(await vm.run(fn, xr));
        const host = await outs[0].toArrayAsync();
        outs.forEach((o) => o.dispose());
        xr.dispose();
        return host as ArrayLike<number>;
      };
      checkAgainst(await withTimeout(multiOnce(), T, `${name}: remote vm.run`), expect, tolerance, `${name}: remote vm.run`);
      const common = { input, expect, tolerance };
      await peer.request({ op: 'remote_vm', id: `vm-tvm-${name}`, sess: 'tvm', lib: fx.path, ...common }, T);
      await peer.request({ op: 'remote_vm', id: `vm-ours-${name}`, sess: 'ours', lib: fx.path, ...common }, T);
      await peer.request({ op: 'infer', id: `infer-ours-${name}`, sess: 'ours', model: name, ...common }, T);
      await peer.request({ op: 'infer', id: `infer-inf-${name}`, sess: 'inf', model: name, ...common }, T);
      ctx.log(`rpc: ${name} latency`);
      const t = await measure(
        [
          { key: 'node', name: `${OURS}: await session.infer('${name}', [x])`, round: sequential(inferOnce) },
          rpcPeerContender(peer, 'py', `${PY_TVM}: vm["main"](tvm.runtime.tensor(x, r.cpu())).numpy()`, `vm-tvm-${name}`),
          { key: 'multi', name: `${OURS}: session.tensor(x), vm.run over the remote module, toArrayAsync()`, round: sequential(multiOnce) },
          { key: 'cached', name: `${OURS}: decodeTensors(await f.call('${name}', encodeInputs([x]))), f = tvm_node.infer looked up once`, round: sequential(cachedOnce) },
          rpcPeerContender(peer, 'pyOurs', `${PY_OURS}: vm["main"](tvm.runtime.tensor(x, r.cpu())).numpy()`, `vm-ours-${name}`),
          rpcPeerContender(peer, 'pyInfer', `${PY_OURS}: unpack(r.get_function("tvm_node.infer")("${name}", pack([x])))`, `infer-ours-${name}`),
          { key: 'inf', name: `${INF}: await session.infer('${name}', [x])`, round: sequential(inferOnceInf) },
          rpcPeerContender(peer, 'pyInf', `${PY_INF}: unpack(r.get_function("tvm_node.infer")("${name}", pack([x])))`, `infer-inf-${name}`),
        ],
        ctx.rounds,
        ctx.roundMs,
      );
      const what = `${name} ${shape}`;
      ctx.cases.push(
        ...makeCases('rpc', 'us/run', [
          [
            `${what}: session.infer vs Python client on TVM's server (tensor, main, numpy)`,
            t.node,
            t.py,
            'open session, model already loaded on the server; µs per inference, host input to host output. session.infer ' + 'sends inputs and gets outputs in one tvm_node.infer call, but looks the function up first: 2 round trips',
          ],
          [
            `${what}: inference-only server: session.infer vs Python client on TVM's server (tensor, main, numpy)`,
            t.inf,
            t.py,
            'the same client call as above, served in the server process by the TypeScript protocol subset (lib/rpc/inference-session.ts)',
          ],
          [
            `${what}: Python client, tvm_node.infer on the inference-only server vs multi-round-trip on TVM's`,
            t.pyInf,
            t.py,
            'diagnostic: one round trip from the stock client to the in-process inference-only server',
          ],
          [
            `${what}: session.infer vs tvm_node.infer through a function looked up once`,
            t.node,
            t.cached,
            'diagnostic: session.infer looks tvm_node.infer up on every call (one more round trip)',
          ],
          [
            `${what}: multi-round-trip, tvm-node client + server vs Python client + TVM's server`,
            t.multi,
            t.py,
            'diagnostic: the same remote calls on both sides',
          ],
          [
            `${what}: tvm-node client + server, infer vs multi-round-trip`,
            t.node,
            t.multi,
            'diagnostic: what one round trip saves, same client, same server',
          ],
          [
            `${what}: Python client, multi-round-trip: tvm-node server vs TVM's server`,
            t.pyOurs,
            t.py,
            'diagnostic: the same stock client on both, so the server alone',
          ],
          [
            `${what}: Python client, tvm_node.infer on tvm-node server vs multi-round-trip on TVM's`,
            t.pyInfer,
            t.py,
            'diagnostic: one round trip from the stock client (README: pack/unpack)',
          ],
        ]),
      );
      await vm.dispose();
      mod.dispose();
    };
    for (const name of s.latencyModels) await latency(name);
    // TVM's server serves one client at a time: free it for the connect cases.
    await peer.request({ op: 'close', sess: 'tvm' }, T);
    await peer.request({ op: 'close', sess: 'ours' }, T);
    await peer.request({ op: 'close', sess: 'inf' }, T);
    await closeSession(session);
    await closeSession(infSession);
    await waitIdle(server, 30000);
    await waitIdle(infServer, 30000);

    // 3. Session setup: connect alone, and connect to first result (what a new user pays).
    const cm = s.concurrencyModel;
    const cio = io(cm);
    const cx = readNpy(cio.input);
    const cInput = [{ data: cx.data, shape: cx.shape }];
    const settle = async (srv: RPCServer) => {
      await waitIdle(srv, 30000);
      await sleep(s.connectSettleMs);
    };
    /** Sessions on `srv`, each timed from connect to ready (or, with `first`, to its first result). */
    const nodeSessions =
      (srv: RPCServer, p: number, first: boolean): RoundFn =>
      async (n) => {
        let total = 0;
        for (let i = 0; i < n; i++) {
          const t0 = hrNow();
          const sess = await withTimeout(connect(RPC_HOST, p), T, 'connect');
          const outs = first ? await withTimeout(sess.infer(cm, cInput), T, `first infer ${cm}`) : [];
          total += nsSince(t0);
          if (first) checkAgainst(outs[0].toFloat32Array(), cio.expect, cio.tolerance, `${cm}: first session.infer`);
          outs.forEach((o) => o.dispose());
          await closeSession(sess);
          await settle(srv);
        }
        return total;
      };
    const settleMs = s.connectSettleMs;
    await peer.request({ op: 'connect_timer', id: 'conn-tvm', port: tvm.port, settle_ms: settleMs }, T);
    await peer.request({ op: 'connect_timer', id: 'conn-ours', port, settle_ms: settleMs }, T);
    await peer.request({ op: 'connect_timer', id: 'conn-inf', port: infPort, settle_ms: settleMs }, T);
    const firstVm = { mode: 'vm', lib: fixture(cm).path, ...cio };
    await peer.request({ op: 'connect_timer', id: 'first-tvm', port: tvm.port, settle_ms: settleMs, first: firstVm }, T);
    ctx.log('rpc: connect');
    const tc = await measure(
      [
        { key: 'node', name: `${OURS}: await connect()`, round: nodeSessions(server, port, false) },
        rpcPeerContender(peer, 'py', `${PY_TVM}: rpc.connect()`, 'conn-tvm'),
        rpcPeerContender(peer, 'pyOurs', `${PY_OURS}: rpc.connect()`, 'conn-ours'),
        { key: 'inf', name: `${INF}: await connect()`, round: nodeSessions(infServer, infPort, false) },
        rpcPeerContender(peer, 'pyInf', `${PY_INF}: rpc.connect()`, 'conn-inf'),
      ],
      ctx.rounds,
      ctx.roundMs,
    );
    ctx.cases.push(
      ...makeCases('rpc', 'ms/session', [
        ["connect: tvm-node server + client vs TVM's Python server + client", tc.node, tc.py, `handshake to a session ready for requests (tvm-node: a Node process start per session); ${settleMs} ms idle after each close, untimed`],
        ["connect, Python client: tvm-node server vs TVM's Python server", tc.pyOurs, tc.py, 'diagnostic: the same stock client on both, so the server alone'],
        ["connect: tvm-node inference-only server + client vs TVM's Python server + client", tc.inf, tc.py, 'inference-only sessions are served in the server process: no process start'],
        ["connect, Python client: tvm-node inference-only server vs TVM's Python server", tc.pyInf, tc.py, 'diagnostic: the same stock client on both, so the server alone'],
      ]),
    );
    ctx.log('rpc: connect to first result');
    const tf = await measure(
      [
        { key: 'node', name: `${OURS}: connect(), session.infer('${cm}', [x])`, round: nodeSessions(server, port, true) },
        rpcPeerContender(peer, 'py', `${PY_TVM}: rpc.connect(), r.upload, r.load_module, VirtualMachine, first inference`, 'first-tvm'),
        { key: 'inf', name: `${INF}: connect(), session.infer('${cm}', [x])`, round: nodeSessions(infServer, infPort, true) },
      ],
      ctx.rounds,
      ctx.roundMs,
    );
    ctx.cases.push(
      makeCase('rpc', `${cm}: connect to first result, tvm-node server + client vs TVM's Python server + client`, 'ms/session', tf.node, tf.py, {
        note: "tvm-node's server loads the model from its repository in the new session; the stock client uploads and loads it",
      }),
    );
    ctx.cases.push(
      makeCase('rpc', `${cm}: connect to first result, tvm-node inference-only server + client vs TVM's Python server + client`, 'ms/session', tf.inf, tf.py, {
        note: 'inference-only: no process start, and the model is already in the shared cache after the first session',
      }),
    );

    // 4. Throughput with c concurrent clients, each a process of its own with its own session.
    const K = s.infersPerClient;
    const roundMs = s.roundTimeoutS * 1000;
    const nodeClients: NodeRpcClient[] = [];
    const pyClients: PythonPeer[] = [];
    cleanup.push(['client processes: close', () => Promise.all([...nodeClients.map((c) => c.close()), ...pyClients.map((p) => p.close(10000))])]);
    const nodeJob: ClientJob = { port, model: cm, ...cio, k: K };
    const infJob: ClientJob = { ...nodeJob, port: infPort };
    const pyJob = { op: 'client', port: tvm.port, mode: 'vm', lib: fixture(cm).path, ...cio, k: K };
    type Level = { ns: number; clients: ClientTimes[] };
    for (const c of s.clients) {
      while (nodeClients.length < c) nodeClients.push(new NodeRpcClient());
      while (pyClients.length < c) pyClients.push(new PythonPeer('rpc_peer.py'));
      await Promise.all([...nodeClients.map((w) => w.ready(T)), ...pyClients.map((p) => p.request({ op: 'info' }, T))]);
      const nodeSide = (srv: RPCServer, job: ClientJob) => async (): Promise<Level> => {
        await waitIdle(srv, 30000);
        const t0 = hrNow();
        const clients = await Promise.all(nodeClients.slice(0, c).map((w) => w.run(job, roundMs)));
        return { ns: nsSince(t0), clients };
      };
      const sides: Record<'node' | 'inf' | 'py', () => Promise<Level>> = {
        node: nodeSide(server, nodeJob),
        inf: nodeSide(infServer, infJob),
        py: async () => {
          const t0 = hrNow();
          const clients = (await Promise.all(pyClients.slice(0, c).map((p) => p.request(pyJob, roundMs)))) as ClientTimes[];
          return { ns: nsSince(t0), clients };
        },
      };
      ctx.log(`rpc: ${c} concurrent client(s) x ${K} inferences`);
      const runs: Record<'node' | 'inf' | 'py', Level[]> = { node: [], inf: [], py: [] };
      try {
        await sides.node(); // warm-up, not counted
        await sides.inf();
        await sides.py();
        for (let r = 0; r < s.concurrencyRounds; r++) {
          const order: Array<'node' | 'inf' | 'py'> = r % 2 === 0 ? ['node', 'inf', 'py'] : ['py', 'inf', 'node'];
          for (const k of order) runs[k].push(await sides[k]());
        }
      } catch (err) {
        // A client that still fails (or a round past its bound) ends this case and the larger
        // ones, not the whole run: what was measured so far is still reported.
        const why = (err as Error).message.split('\n')[0].replace(/\|/g, '/');
        ctx.log(`rpc: ${c} concurrent clients failed: ${why}`);
        const rest = s.clients.filter((n) => n >= c);
        ctx.skipped.push({ group: 'rpc', name: `${cm}: ${rest.join(', ')} concurrent clients`, skipped: `a round failed: ${why}` });
        break;
      }
      const timed = (k: 'node' | 'inf' | 'py', name: string): Timed => ({ name, opsPerRound: c * K, perOp: runs[k].map((l) => l.ns / (c * K)) });
      // Per client, from the go: connected (for TVM's server: accepted, after the clients before it), first result.
      const waits = (k: 'node' | 'inf' | 'py') => {
        const per = (f: (x: ClientTimes) => number) => runs[k].flatMap((l) => l.clients.map((x) => f(x) / 1e6));
        const conn = per((x) => x.connectNs);
        const retries = runs[k].reduce((n, l) => n + l.clients.reduce((m, x) => m + x.retries, 0), 0);
        return (
          `connected after median ${fmt(medianOf(conn))} ms (max ${fmt(Math.max(...conn))}), first result after median ` +
          `${fmt(medianOf(per((x) => x.firstNs)))} ms, ${retries} failed connect(s) retried`
        );
      };
      ctx.cases.push(
        makeCase(
          'rpc',
          `${cm}: ${c} concurrent client${c > 1 ? 's' : ''} x ${K} inferences: tvm-node server + client vs TVM's Python stack`,
          'infer/s',
          timed('node', `${c} tvm-node client process(es): connect(), ${K} x session.infer, close()`),
          timed('py', `${c} ${py} client process(es): rpc.connect(), upload, load_module, ${K} x (tensor, main, numpy), close`),
          { note: `wall time from go to the last client's close, setup included; tvm-node clients ${waits('node')}; TVM's server's clients ${waits('py')}` },
        ),
      );
      ctx.cases.push(
        makeCase(
          'rpc',
          `${cm}: ${c} concurrent client${c > 1 ? 's' : ''} x ${K} inferences: tvm-node inference-only server + client vs TVM's Python stack`,
          'infer/s',
          timed('inf', `${c} tvm-node client process(es) → inference-only server: connect(), ${K} x session.infer, close()`),
          timed('py', `${c} ${py} client process(es): rpc.connect(), upload, load_module, ${K} x (tensor, main, numpy), close`),
          { note: `as above, sessions served in the server process on one model cache; tvm-node clients ${waits('inf')}` },
        ),
      );
    }
  } catch (err) {
    ctx.log(`rpc: failed, cleaning up: ${(err as Error).message}`);
    throw err;
  } finally {
    // Bounded: a stuck peer must not keep the run from reporting why it failed.
    for (const [what, f] of cleanup.reverse()) {
      await withTimeout(f(), 30000, `rpc cleanup: ${what}`).catch((err: Error) => ctx.log(`rpc: ${err.message}`));
    }
    fs.rmSync(modelsDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------
// Entry points

function machine(loadStart: number[]): Machine {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    availableParallelism: os.availableParallelism(),
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    platform: os.platform(),
    arch: os.arch(),
    release: os.release(),
    node: process.version,
    uvThreadpoolSize: process.env.UV_THREADPOOL_SIZE ?? null,
    tvmNumThreads: null,
    loadAverage: { start: loadStart, end: os.loadavg().map((x) => Math.round(x * 100) / 100) },
  };
}

function threadCount(opts: BenchOptions): number {
  const n = opts.threads ?? (process.env.TVM_NUM_THREADS ? Number(process.env.TVM_NUM_THREADS) : os.availableParallelism());
  if (!Number.isInteger(n) || n < 1) throw new Error(`thread count must be a positive integer, got ${opts.threads ?? process.env.TVM_NUM_THREADS}`);
  return n;
}

/** Runs the suite and returns its figures (writes nothing; see {@link writeReport}). */
export async function runBenchmarks(opts: BenchOptions = {}): Promise<BenchReport> {
  const quick = opts.quick ?? false;
  const rounds = opts.rounds ?? (quick ? 3 : 15);
  const roundMs = opts.roundMs ?? (quick ? 2 : 100);
  const copySizes = quick ? [4 * KiB, 64 * KiB] : [4 * KiB, MiB, 64 * MiB];
  const groups = opts.groups ?? [...GROUPS];
  const log = opts.log ?? (() => {});
  const started = Date.now();
  const loadStart = os.loadavg().map((x) => Math.round(x * 100) / 100);
  const envThreads = process.env.TVM_NUM_THREADS;
  const threads = threadCount(opts);
  // TVM sizes each calling thread's pool from TVM_NUM_THREADS when that thread first runs a
  // parallel kernel (Node's main thread for invoke, each libuv worker for run), and the
  // Python peer inherits it: set it before anything runs.
  process.env.TVM_NUM_THREADS = String(threads);
  const skipped: SkippedEntry[] = [];
  const models: CnnModelInfo[] = [];
  const peer = new PythonPeer();
  try {
    // Compile (or find) everything before anything is timed.
    fixtureDir();
    let cnn: BuiltModels | undefined;
    let ort: Ctx['ort'];
    if (groups.includes('cnn')) {
      cnn = buildBenchModels([quick ? CNN_MODEL.quick : CNN_MODEL.full]);
      if (quick) {
        skipped.push({
          group: 'cnn',
          name: `${CNN_MODEL.full} [1,3,224,224]`,
          skipped:
            `quick mode runs ${CNN_MODEL.quick} (same ops, a fraction of the cost) instead; ` +
            `the full MobileNetV2 (compile ~10 s, ~0.1 s a run) is measured by \`npm run bench\``,
        });
      }
      const loaded = loadOrt();
      if ('error' in loaded) {
        ort = null;
        skipped.push({ group: 'cnn', name: 'onnxruntime-node peer', skipped: loaded.error });
      } else {
        ort = loaded;
      }
    }
    const py = await peer.request({ op: 'info' });
    const nodeThreads = Number(requireGlobalFunc('runtime.NumThreads').call());
    const ctx: Ctx = {
      quick,
      rounds,
      roundMs,
      copySizes,
      threads,
      peer,
      pyName: `Python tvm ${py.tvm}`,
      log,
      cases: [],
      skipped,
      models,
      cnn,
      ort,
      rpc: rpcSettings(quick),
    };
    const run: Record<Group, (c: Ctx) => Promise<void>> = { call: benchCalls, copy: benchCopies, wrap: benchWrap, model: benchModels, cnn: benchCnn, rpc: benchRpc };
    for (const g of groups) await run[g](ctx);
    const v = versions();
    const { numThreads: pyThreads, ...pyVersions } = py;
    return {
      startedAt: new Date(started).toISOString(),
      durationS: (Date.now() - started) / 1000,
      quick,
      settings: {
        rounds,
        roundMs,
        copySizes,
        groups,
        threads: {
          tvmNumThreads: threads,
          tvmReported: { node: nodeThreads, python: Number(pyThreads) },
          ortIntraOpNumThreads: threads,
          ortInterOpNumThreads: 1,
        },
        minRunsPerLane: MIN_RUNS_PER_LANE,
        cnnSettleMs: CNN_SETTLE_MS,
        rpc: ctx.rpc,
      },
      machine: { ...machine(loadStart), tvmNumThreads: envThreads ?? null },
      versions: { tvmNode: v.tvmNode, tvm: v.tvm, tvmFfi: v.tvmFfi, python: pyVersions, onnxruntimeNode: ort ? ort.version : null },
      models,
      cases: ctx.cases,
      skipped,
    };
  } finally {
    await peer.close();
    if (envThreads === undefined) delete process.env.TVM_NUM_THREADS;
    else process.env.TVM_NUM_THREADS = envThreads;
  }
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 1000) return x.toFixed(0);
  if (a >= 100) return x.toFixed(1);
  if (a >= 10) return x.toFixed(2);
  return x.toFixed(3);
}

const cell = (s: Stats) => `${fmt(s.median)} [${fmt(s.p25)}–${fmt(s.p75)}]`;

/** File name of a report's chart, next to its markdown. */
export function chartFileName(r: BenchReport): string {
  return r.quick ? 'ratios.quick.svg' : 'ratios.svg';
}

const UNIT_NOTE: Record<BenchCase['unit'], string> = {
  'ns/call': 'ns per call',
  'GB/s': 'GB/s (higher is better)',
  'ns/wrap': 'ns per wrap',
  'us/run': 'µs per run',
  'MB/s': 'MB/s (10^6 bytes/s, higher is better)',
  'infer/s': 'inferences/s (higher is better)',
  'ms/session': 'ms per session',
};

/**
 * The report as markdown: machine, versions, settings, how to read it, the chart (linked as
 * `chart`, default {@link chartFileName}), one table per group, and what was skipped.
 */
export function toMarkdown(r: BenchReport, chart = chartFileName(r)): string {
  const m = r.machine;
  const t = r.settings.threads;
  const v = r.versions;
  const load = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(' / ');
  const lines = [
    `# tvm-node benchmarks${r.quick ? ' (quick: checks the suite runs; the figures mean nothing)' : ''}`,
    '',
    `Run ${r.startedAt} (${r.durationS.toFixed(0)} s) by \`${r.quick ? 'npx tsx bench/run.ts --quick' : 'npm run bench'}\`. ` +
      'Every figure is tvm-node against a peer measured in the same run, round by round.',
    '',
    '## Machine',
    '',
    '| | |',
    '|---|---|',
    `| CPU | ${m.cpuModel}, ${m.cores} cores (${m.availableParallelism} available to Node) |`,
    `| Memory | ${m.memoryGiB} GiB |`,
    `| OS | ${m.platform}-${m.arch} ${m.release} |`,
    `| Node | ${m.node}, UV_THREADPOOL_SIZE=${m.uvThreadpoolSize ?? 'unset (4)'} |`,
    `| Load average (1 / 5 / 15 min) | start ${load(m.loadAverage.start)}, end ${load(m.loadAverage.end)} |`,
    '',
    '## Versions',
    '',
    '| | |',
    '|---|---|',
    `| tvm-node | ${v.tvmNode} |`,
    `| TVM runtime linked by tvm-node | ${v.tvm}, tvm-ffi ${v.tvmFfi} |`,
    `| Python peer (bench/peer.py) | Python ${v.python.python}, tvm ${v.python.tvm}, tvm-ffi ${v.python.tvmFfi}, numpy ${v.python.numpy} |`,
    `| onnxruntime-node | ${v.onnxruntimeNode ?? 'not loaded'} |`,
    ...r.models.map(
      (x) => `| ${x.name} built with | onnx ${x.toolchain.onnx} (graph), tvm ${x.toolchain.tvm} (compiler), onnxruntime ${x.toolchain.onnxruntime} (reference output) |`,
    ),
    '',
    '## Settings',
    '',
    `- ${r.settings.rounds} rounds per case; in each round every contender runs for ~${r.settings.roundMs} ms ` +
      '(ops per round calibrated once, then fixed), in an order that rotates from round to round.',
    `- Threads: TVM_NUM_THREADS=${t.tvmNumThreads} for tvm-node and the Python peer (TVM reports ${t.tvmReported.node} ` +
      `on Node's main thread, ${t.tvmReported.python} in Python); onnxruntime-node intraOpNumThreads=${t.ortIntraOpNumThreads}, ` +
      `interOpNumThreads=${t.ortInterOpNumThreads}, executionMode sequential, graphOptimizationLevel all, CPU execution provider. ` +
      'Each thread that runs TVM kernels has its own pool of that size: `vm.run` with k in flight uses k libuv threads, ' +
      `so up to k x ${t.tvmNumThreads} TVM threads share the ${m.cores} cores.`,
    `- Runs with k in flight: at least ${r.settings.minRunsPerLane} x k runs per round.`,
    `- cnn: ${r.settings.cnnSettleMs} ms idle before each contender's round. TVM's and onnxruntime's worker threads spin for a ` +
      "while after each parallel job, and TVM pins each pool's workers to cores; without the gap a contender is timed against " +
      "the previous one's spinning threads (on 2 cores that made the tiny CNN's sync invoke ~10x slower).",
    `- Copy/wrap sizes: ${r.settings.copySizes.map(formatBytes).join(', ')}.`,
  ];
  const rpc = r.settings.rpc;
  if (r.settings.groups.includes('rpc')) {
    lines.push(
      `- rpc, all on loopback (127.0.0.1), same run, same fixtures: tvm-node side: ${rpc.tvmNodeServer}; ` +
        `its client is tvm-node's \`connect()\` (lib/rpc/client.ts). Python side: ${rpc.pythonServer}; its client is the stock ` +
        '`from tvm import rpc, relax` (bench/rpc_peer.py). Both servers run the same TVM runtime build and TVM_NUM_THREADS as above.',
      `- rpc upload sizes: ${rpc.uploadSizes.map(formatBytes).join(', ')}; latency models: ${rpc.latencyModels.join(', ')}; ` +
        `connect cases: ${rpc.connectSettleMs} ms idle (untimed) after each close.`,
      `- rpc concurrency: ${rpc.clients.join(', ')} clients, each a process of its own (tvm-node: this script forked with ` +
        `${RPC_CLIENT_FLAG}; Python: bench/rpc_peer.py) with its own session, each running ${rpc.infersPerClient} inferences of ` +
        `\`${rpc.concurrencyModel}\`; processes are started before timing, the clock runs from telling them all to go until the last ` +
        `has closed its session; ${rpc.concurrencyRounds} rounds after one warm-up, ${rpc.roundTimeoutS} s bound per round. ` +
        `A client whose connect fails retries after ${rpc.retryMs} ms (${rpc.connectAttempts} attempts in all); the notes count retries.`,
    );
  }
  for (const x of r.models) {
    lines.push(
      `- cnn model \`${x.name}\`: ${x.notes} ${(x.macs / 1e6).toFixed(1)} M multiply-adds and ${(x.params / 1e6).toFixed(2)} M weights per run; ` +
        `ONNX opset ${x.opset}, compiled by TVM for target \`${x.target}\` (portable: no \`-mcpu\`, baseline ISA only) in ${x.compileS.toFixed(1)} s ` +
        `(${x.cached ? `cached in ${x.dir}` : `built in this run into ${x.dir}`}); schedule: ${x.schedule}. ` +
        `Outputs checked before timing against ${x.reference} (rtol ${x.tolerance.rtol}, atol ${x.tolerance.atol}): max |diff| ` +
        `tvm-node ${x.maxAbsDiff.tvmNode.toExponential(1)}, Python tvm ${x.maxAbsDiff.tvmPython.toExponential(1)}` +
        `${x.maxAbsDiff.onnxruntimeNode === null ? '' : `, onnxruntime-node ${x.maxAbsDiff.onnxruntimeNode.toExponential(1)}`}.`,
    );
  }
  lines.push(
    '',
    '## How to read this',
    '',
    '- **Ratio** = peer time / tvm-node time, computed per round (both measured in that round) and summarized over the rounds: ' +
      '**> 1 means tvm-node is faster**, < 1 the peer is faster. For throughputs (GB/s, MB/s, inferences/s) it is tvm-node / peer (same meaning).',
    '- Cells show the median with [p25–p75] over rounds; "min–max ratio" is the full spread. A wide spread, or a high load ' +
      'average above, means the machine was busy: trust medians, compare runs only on the same machine.',
    '- `call`, `copy`, `wrap` and `model` measure what tvm-node adds (bindings, copies, the thread hop) against Python on the ' +
      'same TVM runtime or against plain JS; `diagnostic` rows split that cost further.',
    '- `cnn` vs Python runs the *same* compiled kernels, so a ratio near 1 says the binding adds nothing measurable to a ' +
      'real model; "k in flight" shows the throughput of `vm.run` (wall time / runs) when k runs overlap.',
    '- `cnn` vs onnxruntime-node compares *compilers*, not bindings: an untuned, portable TVM build (generic schedule, ' +
      'baseline ISA) against onnxruntime\'s hand-written kernels (AVX2/AVX-512 picked at run time). It says how far an untuned ' +
      'TVM artifact is from a tuned library; tuning (MetaSchedule) and `-mcpu=native` are what close it.',
    ...(r.settings.groups.includes('rpc')
      ? [
          '- `rpc` compares a whole stack against a whole stack: tvm-node\'s server and client against TVM\'s Python server and the ' +
            'stock Python client, both over TVM\'s RPC protocol. **upload**: MB/s of one upload on an open session. **infer vs Python ' +
            'client on TVM\'s server**: µs per inference, host array in to host array out, on an open session with the model already ' +
            'loaded; tvm-node sends inputs and gets outputs in one call of its server\'s `tvm_node.infer` (`session.infer`, which today ' +
            'also looks that function up on every call: one more round trip, see the "looked up once" diagnostic), the stock client ' +
            'does what TVM\'s server allows: `tvm.runtime.tensor(x, r.cpu())`, `vm["main"]`, `.numpy()` (several round trips). **connect**: handshake to a session ready for requests. **connect to first result**: what a new ' +
            'client pays before its first answer (tvm-node\'s server loads the model from its repository; the stock client uploads and ' +
            'loads the .so). **k concurrent clients**: inferences/s over the wall time of all clients\' whole sessions, setup ' +
            'included; TVM\'s server serves one session at a time, so its clients queue. `diagnostic` rows swap one part at a ' +
            'time: "Python client: tvm-node server vs TVM\'s server" puts the same stock client on both servers (the server alone); ' +
            '"multi-round-trip" runs the same remote calls on both stacks; "infer vs multi-round-trip" is what one round trip saves.',
        ]
      : []),
    '',
    `![ratios: median, p25–p75 and min–max per case](${chart})`,
    '',
    `Chart: [${chart}](${chart}) — one row per case; dot: median ratio, box: p25–p75, whisker: min–max, log scale, dashed line: parity.`,
  );
  for (const g of r.settings.groups) {
    const cases = r.cases.filter((c) => c.group === g);
    if (cases.length === 0) continue;
    const units = [...new Set(cases.map((c) => UNIT_NOTE[c.unit]))].join(', ');
    lines.push('', `## ${g}`, '', `Unit: ${units}.`, '', '| case | unit | tvm-node | peer | ratio | min–max ratio | goal / note |', '|---|---|---|---|---|---|---|');
    for (const c of cases) {
      lines.push(
        `| ${c.name} | ${c.unit} | ${cell(c.subject.stats)} ${c.subject.name} | ${cell(c.peer.stats)} ${c.peer.name} | ` +
          `**${fmt(c.ratio.median)}** [${fmt(c.ratio.p25)}–${fmt(c.ratio.p75)}] | ${fmt(c.ratio.min)}–${fmt(c.ratio.max)} | ${[c.goal, c.note].filter(Boolean).join('; ')} |`,
      );
    }
  }
  if (r.skipped.length > 0) {
    lines.push('', '## Skipped', '', '| group | what | why |', '|---|---|---|');
    for (const s of r.skipped) lines.push(`| ${s.group} | ${s.name} | ${s.skipped} |`);
  }
  return lines.join('\n') + '\n';
}

/**
 * Writes into `dir` (default bench/results): REPORT.md + ratios.svg (quick runs:
 * REPORT.quick.md + ratios.quick.svg), latest.json + latest.md (the same markdown), and a
 * timestamped copy bench-<time>[-quick].{json,md,svg}. Returns the timestamped JSON path.
 */
export function writeReport(r: BenchReport, dir = path.join(__dirname, 'results')): string {
  fs.mkdirSync(dir, { recursive: true });
  const stamp = r.startedAt.replace(/[:.]/g, '-');
  const json = JSON.stringify(r, null, 2) + '\n';
  const svg = ratioChart(r);
  const base = path.join(dir, `bench-${stamp}${r.quick ? '-quick' : ''}`);
  fs.writeFileSync(`${base}.json`, json);
  fs.writeFileSync(`${base}.svg`, svg);
  fs.writeFileSync(`${base}.md`, toMarkdown(r, path.basename(`${base}.svg`)));
  const md = toMarkdown(r);
  fs.writeFileSync(path.join(dir, chartFileName(r)), svg);
  fs.writeFileSync(path.join(dir, r.quick ? 'REPORT.quick.md' : 'REPORT.md'), md);
  fs.writeFileSync(path.join(dir, 'latest.json'), json);
  fs.writeFileSync(path.join(dir, 'latest.md'), md);
  return `${base}.json`;
}

function parseArgs(argv: string[]): BenchOptions {
  const opts: BenchOptions = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') opts.quick = true;
    else if (a === '--rounds') opts.rounds = Number(value());
    else if (a === '--round-ms') opts.roundMs = Number(value());
    else if (a === '--threads') opts.threads = Number(value());
    else if (a === '--only') {
      opts.groups = value().split(',') as Group[];
      for (const g of opts.groups) if (!GROUPS.includes(g)) throw new Error(`unknown group ${g} (${GROUPS.join(', ')})`);
    } else throw new Error(`unknown argument ${a} (--quick, --rounds N, --round-ms MS, --threads N, --only ${GROUPS.join(',')})`);
  }
  return opts;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const report = await runBenchmarks({ ...opts, log: (l) => process.stderr.write(`[bench] ${l}\n`) });
  const file = writeReport(report);
  const dir = path.relative(repoRoot, path.dirname(file));
  process.stdout.write(toMarkdown(report));
  process.stdout.write(
    `\nwritten: ${path.join(dir, report.quick ? 'REPORT.quick.md' : 'REPORT.md')} + ${path.join(dir, chartFileName(report))}, ` +
      `${path.join(dir, 'latest.json')} (+ latest.md), ${path.relative(repoRoot, file)} (+ .md, .svg)\n`,
  );
}

if (require.main === module) {
  if (process.argv.includes(RPC_CLIENT_FLAG)) {
    rpcClientProcess();
  } else {
    main().catch((err) => {
      process.stderr.write(`${err.stack ?? err}\n`);
      process.exit(1);
    });
  }
}
