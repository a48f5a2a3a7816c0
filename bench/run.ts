/**
 * tvm-node benchmarks (`npm run bench`, or `npx tsx bench/run.ts [--quick] [--rounds N]
 * [--round-ms MS] [--only call,copy,wrap,model]`).
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
 *
 * Results go to bench/results/ (JSON + markdown, git-ignored). Benchmarks assert nothing
 * about time; test/bench.test.ts runs {@link runBenchmarks} in quick mode to keep it working.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomFill } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { loadModule, outputsOf, Tensor, VirtualMachine, requireGlobalFunc, versions, type PackedFunc } from '../lib';
import { fixture, fixtureDir, inputTensor, python, repoRoot } from '../test/fixtures';

export type Group = 'call' | 'copy' | 'wrap' | 'model';
export const GROUPS: readonly Group[] = ['call', 'copy', 'wrap', 'model'];

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
  unit: 'ns/call' | 'GB/s' | 'ns/wrap' | 'us/run';
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
  tvmNumThreads: string | null;
}

export interface BenchReport {
  startedAt: string;
  durationS: number;
  quick: boolean;
  settings: { rounds: number; roundMs: number; copySizes: number[]; groups: Group[] };
  machine: Machine;
  versions: { tvmNode: string; tvm: string; tvmFfi: string; python: Record<string, string> };
  cases: BenchCase[];
}

export interface BenchOptions {
  /** Tiny sizes and few, short rounds: checks the suite works, says nothing about speed. */
  quick?: boolean;
  /** Rounds per case (default 15, quick 3). */
  rounds?: number;
  /** Target duration of one contender's round in ms (default 100, quick 2). */
  roundMs?: number;
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

/**
 * Calibrates and warms each contender, then runs `rounds` rounds; each round times every
 * contender once, in an order that rotates from round to round.
 */
async function measure(contenders: Contender[], rounds: number, roundMs: number): Promise<Record<string, Timed>> {
  const roundNs = roundMs * 1e6;
  const ops: number[] = [];
  for (const c of contenders) {
    ops.push(await calibrate(c.round, roundNs));
    await c.round(ops[ops.length - 1]); // warm-up round, not counted
  }
  const perOp: number[][] = contenders.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (let j = 0; j < contenders.length; j++) {
      const k = (j + r) % contenders.length;
      perOp[k].push((await contenders[k].round(ops[k])) / ops[k]);
    }
  }
  return Object.fromEntries(contenders.map((c, i) => [c.key, { name: c.name, opsPerRound: ops[i], perOp: perOp[i] }]));
}

type Unit = BenchCase['unit'];

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
      case 'us/run':
        return ns / 1e3;
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
    higherIsBetter: unit === 'GB/s',
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

  constructor() {
    this.proc = spawn(python, [path.join(__dirname, 'peer.py')], { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'] });
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

  request(req: Record<string, unknown>): Promise<any> {
    if (this.exited) return Promise.reject(new Error(`Python peer is not running\n${this.stderr}`));
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.proc.stdin.write(JSON.stringify(req) + '\n');
    });
  }

  /** A contender timing `id` (set up before) in the peer. */
  contender(key: string, name: string, id: string): Contender {
    return { key, name, round: async (n) => (await this.request({ op: 'time', id, n })).ns as number };
  }

  close(): Promise<void> {
    if (this.exited) return Promise.resolve();
    return new Promise((resolve) => {
      this.proc.once('exit', () => resolve());
      this.proc.stdin.end();
    });
  }
}

// ---------------------------------------------------------------------------------------
// The groups

interface Ctx {
  rounds: number;
  roundMs: number;
  copySizes: number[];
  peer: PythonPeer;
  pyName: string;
  log: (line: string) => void;
  cases: BenchCase[];
}

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
  const sequential =
    (once: () => Promise<unknown>): RoundFn =>
    async (n) => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) await once();
      return Number(process.hrtime.bigint() - t0);
    };
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

async function benchModels(ctx: Ctx): Promise<void> {
  for (const name of ['mlp', 'conv']) {
    const fx = fixture(name);
    const c = fx.cases[0];
    const inputs = c.inputs.map(inputTensor);
    const vm = await VirtualMachine.load(fx.path, { concurrency: 4 });
    const fn = fx.function ?? 'main';
    const dropAll = (out: unknown) => outputsOf<Tensor>(out).forEach((t) => t.dispose());
    dropAll(vm.invoke(fn, ...inputs));
    await ctx.peer.request({
      op: 'vm',
      id: name,
      path: fx.path,
      func: fn,
      inputs: c.inputs.map((s) => path.join(fixtureDir(), s.file)),
    });
    const pump =
      (inFlight: number): RoundFn =>
      async (n) => {
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
    ctx.log(`model: ${name}`);
    const shape = c.inputs.map((s) => `[${s.shape.join(',')}]`).join(', ');
    const t = await measure(
      [
        { key: 'sync', name: 'vm.invoke (sync)', round: hrtimeLoop(() => dropAll(vm.invoke(fn, ...inputs))) },
        { key: 'a1', name: 'vm.run, 1 in flight', round: pump(1) },
        { key: 'a2', name: 'vm.run, 2 in flight', round: pump(2) },
        { key: 'a4', name: 'vm.run, 4 in flight', round: pump(4) },
        ctx.peer.contender('py', `${ctx.pyName}: relax.VirtualMachine["${fn}"](x)`, name),
      ],
      ctx.rounds,
      ctx.roundMs,
    );
    const what = `${name} ${shape}`;
    ctx.cases.push(makeCase('model', `${what}: sync invoke vs Python`, 'us/run', t.sync, t.py, { goal: '>= 1' }));
    for (const k of [1, 2, 4]) {
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
// Entry points

function machine(): Machine {
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
    tvmNumThreads: process.env.TVM_NUM_THREADS ?? null,
  };
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
  fixtureDir(); // compile (or find) the fixtures before anything is timed

  const peer = new PythonPeer();
  try {
    const py = await peer.request({ op: 'info' });
    const ctx: Ctx = { rounds, roundMs, copySizes, peer, pyName: `Python tvm ${py.tvm}`, log, cases: [] };
    const run: Record<Group, (c: Ctx) => Promise<void>> = { call: benchCalls, copy: benchCopies, wrap: benchWrap, model: benchModels };
    for (const g of groups) await run[g](ctx);
    const v = versions();
    return {
      startedAt: new Date(started).toISOString(),
      durationS: (Date.now() - started) / 1000,
      quick,
      settings: { rounds, roundMs, copySizes, groups },
      machine: machine(),
      versions: { tvmNode: v.tvmNode, tvm: v.tvm, tvmFfi: v.tvmFfi, python: py },
      cases: ctx.cases,
    };
  } finally {
    await peer.close();
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

/** The report as markdown: one table per group, medians with [p25–p75]. */
export function toMarkdown(r: BenchReport): string {
  const m = r.machine;
  const lines = [
    `# tvm-node benchmarks${r.quick ? ' (quick)' : ''}`,
    '',
    `${r.startedAt}, ${r.durationS.toFixed(0)} s. Machine: ${m.cpuModel}, ${m.cores} cores ` +
      `(${m.availableParallelism} available), ${m.memoryGiB} GiB, ${m.platform}-${m.arch} ${m.release}; ` +
      `Node ${m.node}, UV_THREADPOOL_SIZE=${m.uvThreadpoolSize ?? 'default'}, TVM_NUM_THREADS=${m.tvmNumThreads ?? 'default'}.`,
    `tvm-node ${r.versions.tvmNode}, TVM runtime ${r.versions.tvm}, tvm-ffi ${r.versions.tvmFfi}; ` +
      `Python peer ${r.versions.python.python} with tvm ${r.versions.python.tvm}, tvm-ffi ${r.versions.python.tvmFfi}.`,
    '',
    `${r.settings.rounds} rounds per case of ~${r.settings.roundMs} ms per contender, interleaved. ` +
      'Cells: median [p25–p75] over rounds. Ratio: peer time / tvm-node time per round (> 1: tvm-node faster).',
  ];
  for (const g of r.settings.groups) {
    const cases = r.cases.filter((c) => c.group === g);
    if (cases.length === 0) continue;
    lines.push('', `## ${g}`, '', '| case | unit | tvm-node | peer | ratio | min–max ratio | goal / note |', '|---|---|---|---|---|---|---|');
    for (const c of cases) {
      lines.push(
        `| ${c.name} | ${c.unit} | ${cell(c.subject.stats)} ${c.subject.name} | ${cell(c.peer.stats)} ${c.peer.name} | ` +
          `**${fmt(c.ratio.median)}** [${fmt(c.ratio.p25)}–${fmt(c.ratio.p75)}] | ${fmt(c.ratio.min)}–${fmt(c.ratio.max)} | ${[c.goal, c.note].filter(Boolean).join('; ')} |`,
      );
    }
  }
  return lines.join('\n') + '\n';
}

/** Writes bench/results/bench-<time>.{json,md} and latest.{json,md}; returns the JSON path. */
export function writeReport(r: BenchReport, dir = path.join(__dirname, 'results')): string {
  fs.mkdirSync(dir, { recursive: true });
  const stamp = r.startedAt.replace(/[:.]/g, '-');
  const json = JSON.stringify(r, null, 2) + '\n';
  const md = toMarkdown(r);
  const base = path.join(dir, `bench-${stamp}${r.quick ? '-quick' : ''}`);
  fs.writeFileSync(`${base}.json`, json);
  fs.writeFileSync(`${base}.md`, md);
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
    else if (a === '--only') {
      opts.groups = value().split(',') as Group[];
      for (const g of opts.groups) if (!GROUPS.includes(g)) throw new Error(`unknown group ${g} (${GROUPS.join(', ')})`);
    } else throw new Error(`unknown argument ${a} (--quick, --rounds N, --round-ms MS, --only ${GROUPS.join(',')})`);
  }
  return opts;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const report = await runBenchmarks({ ...opts, log: (l) => process.stderr.write(`[bench] ${l}\n`) });
  const file = writeReport(report);
  process.stdout.write(toMarkdown(report));
  process.stdout.write(`\nwritten: ${path.relative(repoRoot, file)} (+ .md, latest.json, latest.md)\n`);
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`${err.stack ?? err}\n`);
    process.exit(1);
  });
}
