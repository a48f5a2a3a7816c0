/**
 * tvm-node benchmarks (`npm run bench`, or `npx tsx bench/run.ts [--quick] [--rounds N]
 * [--round-ms MS] [--threads N] [--only call,copy,wrap,model,cnn,threads,rpc,transfer,offload,http] [--help]`).
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
 *   model  the `mlp` and `conv` fixtures: Node runSync (sync) and run (async) with 1/2/4 in
 *          flight vs Python's relax.VirtualMachine on the same .so
 *   cnn    MobileNetV2, ResNet-18 and SqueezeNet 1.1 (random weights, 1x3x224x224; quick
 *          mode: a 3-stage 0.35-width MobileNetV2 at 64x64) built as ONNX and compiled by TVM
 *          three ways (scripts/compile_bench_models.py, cached in .cache/bench-models):
 *          portable (`llvm`), native (preset `host`) and tuned (a MetaSchedule database
 *          committed in bench/tuning/: x86-64-v4 or x86-64-v3, whichever this CPU runs; the
 *          widest). Each compile's runSync vs onnxruntime-node
 *          on the same .onnx; for MobileNetV2 also runSync and async run with 1/2/4 in
 *          flight vs Python's relax.VirtualMachine on the same .so; and TVM's per-kernel
 *          profile of each model's fastest compile. Thread counts are set explicitly
 *          (TVM_NUM_THREADS, onnxruntime intraOpNumThreads; default: the available cores).
 *   threads  the cnn group's CNN in two child processes, one under the TVM thread settings
 *          tvm-node chooses, one under TVM's own (pinned pools, 300000 spins, every pool
 *          TVM_NUM_THREADS workers): runSync at rest and right after sync and async runs
 *          mixed, the mixed burst itself, and async runs with 1 and 4 in flight.
 *   rpc    on loopback, tvm-node's RPC server + client (lib/rpc) vs TVM's Python server
 *          (`python -m tvm.exec.rpc_server`) + the stock Python client (bench/rpc_peer.py),
 *          on the mlp and conv fixtures: upload throughput, per-inference latency on an open
 *          session (tvm-node's one-round-trip `session.infer` vs what the stock client must
 *          do: tensor to the remote, `vm["main"]`, `.numpy()`), connect and
 *          connect-to-first-result latency, and inferences/s with 1..16 concurrent clients,
 *          each a process of its own with its own session (TVM's server serves one at a time).
 *   transfer  on loopback, tvm-node's `rpc-server --inference-only` in a child process: MB/s of
 *          `session.infer('addone', [x])` (the inference channel) for 1 to 256 MiB vs a raw
 *          socket moving the same bytes (an echo server in a child process), TVM's C++
 *          transport (`f.call` of tvm_node.infer) and the stock Python client at some sizes;
 *          mlp latency on one session while another moves 256 MiB; the server's peak RSS
 *          growth serving one 256 MiB request vs its tensor bytes (bench/groups/transfer.ts).
 *   offload  a MobileNetV2 split by `tvm-node split` (quick: the small one), a "device" process
 *          on one core and one TVM thread, an edge server on the other core, a link shaped
 *          to 1 Gbit/s + 1 ms, 100 Mbit/s + 10 ms and 20 Mbit/s + 40 ms (lib/net/shaped-link.ts):
 *          FPS of remote-only, split, pipelined split and the auto policy vs local-only, and
 *          of auto vs the link's best fixed choice (examples/offload/offload.ts).
 *   http   `tvm-node serve` (lib/serve, InferenceServer in the bench process) on loopback under
 *          closed-loop load from a load-generator process, 1, 8 and 32 requests in flight, on
 *          mlp [4,16] and addone with 1 MiB each way (quick: 256 KiB): KServe v2 HTTP with
 *          JSON tensors, with the binary-tensor extension, KServe v2 gRPC and TVM RPC
 *          (session.infer) on the same server, every protocol once per round: requests/s and
 *          latency p50/p99 of each against TVM RPC and of binary against JSON, and the
 *          server's event-loop delay while serving (bench/groups/http.ts).
 *
 * Results go to bench/results/ (git-ignored): REPORT.md with its chart ratios.svg (quick
 * runs: REPORT.quick.md, ratios.quick.svg), latest.json/latest.md, and a timestamped copy of
 * each. Benchmarks assert nothing about time; test/bench.test.ts runs {@link runBenchmarks} in
 * quick mode to keep it working.
 */
import os from 'node:os';
import path from 'node:path';
import { requireGlobalFunc, threadSettings, versions } from '../lib';
import { addon } from '../lib/binding';
import { type BuiltModels, buildBenchModels, loadOrt } from './bench-models';
import { type Ctx, KiB, MiB } from './context';
import { fixtureDir, repoRoot } from './fixtures';
import { benchCalls } from './groups/call';
import { benchCnn, CNN_MODEL, CNN_MODELS, CNN_SETTLE_MS } from './groups/cnn';
import { benchCopies } from './groups/copy';
import { benchHttp } from './groups/http';
import { benchModels, MIN_RUNS_PER_LANE } from './groups/model';
import { benchOffload } from './groups/offload';
import { benchRpc, rpcSettings } from './groups/rpc';
import { benchThreads } from './groups/threads';
import { benchTransfer } from './groups/transfer';
import { benchWrap } from './groups/wrap';
import { PythonPeer } from './peers';
import { chartFileName, toMarkdown, writeReport } from './report';
import { type BenchOptions, type BenchReport, type CnnModelInfo, GROUPS, type Group, type Machine, type SkippedEntry } from './types';

export { formatBytes } from './context';
export { HIGHER_IS_BETTER, stats } from './measure';
// What other files import from here (test/bench.test.ts): the report's types, and the pieces
// of the suite that now live in their own modules.
export * from './types';
export { buildBenchModels, CNN_MODEL, CNN_MODELS, chartFileName, toMarkdown, writeReport };

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
  const userThreads = !threadSettings().setByTvmNode.includes('TVM_NUM_THREADS');
  const threads = threadCount(opts);
  // TVM sizes each calling thread's pool from TVM_NUM_THREADS when that thread first runs a
  // parallel kernel (Node's main thread for runSync), and the Python peer inherits it: set it
  // before anything runs. Without --threads this is tvm-node's own choice (lib/threads.ts),
  // which also gives each libuv pool thread (run) its share of the cores; --threads is the
  // user's, as if TVM_NUM_THREADS had been set before start: every pool gets that many.
  process.env.TVM_NUM_THREADS = String(threads);
  const poolThreadWorkers = addon.threadSettings().poolThreadConcurrency;
  if (opts.threads !== undefined) addon.threadSettings(0);
  const skipped: SkippedEntry[] = [];
  const models: CnnModelInfo[] = [];
  const peer = new PythonPeer();
  try {
    // Compile (or find) everything before anything is timed.
    fixtureDir();
    let cnn: BuiltModels | undefined;
    let ort: Ctx['ort'];
    if (groups.includes('cnn') || groups.includes('threads')) {
      // The full run tunes kernels the committed database lacks (none, with the pinned TVM);
      // quick mode never tunes: such kernels get the untuned schedule.
      cnn = buildBenchModels([...(quick ? CNN_MODELS.quick : CNN_MODELS.full)], { tuneMissing: !quick });
      if (quick) {
        skipped.push({
          group: 'cnn',
          name: `${CNN_MODELS.full.join(', ')} [1,3,224,224]`,
          skipped:
            `quick mode runs ${CNN_MODEL.quick} (MobileNetV2's ops at a fraction of the cost) instead; ` +
            'the full models (each compiled portable, native and tuned; ~10-40 ms a run tuned) are measured by `npm run bench`',
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
    const nodeThreads = Number(requireGlobalFunc('runtime.NumThreads').callSync());
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
    const run: Record<Group, (c: Ctx) => Promise<void>> = {
      call: benchCalls,
      copy: benchCopies,
      wrap: benchWrap,
      model: benchModels,
      cnn: benchCnn,
      threads: benchThreads,
      rpc: benchRpc,
      transfer: benchTransfer,
      offload: benchOffload,
      http: benchHttp,
    };
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
          tvmNode: threadSettings(),
        },
        minRunsPerLane: MIN_RUNS_PER_LANE,
        cnnSettleMs: CNN_SETTLE_MS,
        rpc: ctx.rpc,
        ...(ctx.threadsGroup ? { threadsGroup: ctx.threadsGroup } : {}),
        ...(ctx.transferGroup ? { transferGroup: ctx.transferGroup } : {}),
        ...(ctx.offloadGroup ? { offloadGroup: ctx.offloadGroup } : {}),
        ...(ctx.httpGroup ? { httpGroup: ctx.httpGroup } : {}),
      },
      // TVM_NUM_THREADS as the user set it (not tvm-node's default).
      machine: { ...machine(loadStart), tvmNumThreads: (userThreads && envThreads) || null },
      versions: { tvmNode: v.tvmNode, tvm: v.tvm, tvmFfi: v.tvmFfi, python: pyVersions, onnxruntimeNode: ort ? ort.version : null },
      models,
      cases: ctx.cases,
      skipped,
    };
  } finally {
    await peer.close();
    addon.threadSettings(poolThreadWorkers);
    if (envThreads === undefined) delete process.env.TVM_NUM_THREADS;
    else process.env.TVM_NUM_THREADS = envThreads;
  }
}

const USAGE =
  'usage: npm run bench -- [--quick] [--rounds N] [--round-ms MS] [--threads N] [--only GROUP,...] [--help]\n' +
  `groups: ${GROUPS.join(', ')} (default: all; bench/run.ts says what each measures)\n`;

/** The options on the command line; undefined for --help (the usage was printed). */
function parseArgs(argv: string[]): BenchOptions | undefined {
  const opts: BenchOptions = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--help' || a === '-h') {
      process.stdout.write(USAGE);
      return undefined;
    }
    if (a === '--quick') opts.quick = true;
    else if (a === '--rounds') opts.rounds = Number(value());
    else if (a === '--round-ms') opts.roundMs = Number(value());
    else if (a === '--threads') opts.threads = Number(value());
    else if (a === '--only') {
      opts.groups = value().split(',') as Group[];
      for (const g of opts.groups) if (!GROUPS.includes(g)) throw new Error(`unknown group ${g} (${GROUPS.join(', ')})`);
    } else throw new Error(`unknown argument ${a} (--quick, --rounds N, --round-ms MS, --threads N, --only ${GROUPS.join(',')}, --help)`);
  }
  return opts;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  if (!opts) return;
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
  main().catch((err) => {
    process.stderr.write(`${err.stack ?? err}\n`);
    process.exit(1);
  });
}
