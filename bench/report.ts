/**
 * The report: markdown (machine, versions, settings, how to read it, a table per group, what
 * was skipped) and the files written to bench/results/ (REPORT.md, latest.json/latest.md and
 * timestamped copies); the chart itself is bench/chart.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ratioChart } from './chart';
import { formatBytes } from './context';
import { RPC_CLIENT_FLAG } from './groups/rpc-client';
import type { BenchCase, BenchReport, CnnVariantInfo, Stats } from './types';

export function fmt(x: number): string {
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
  MiB: 'MiB (2^20 bytes, lower is better)',
  us: 'µs (latency percentiles, lower is better)',
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
      (x) =>
        `| ${x.name} built with | onnx ${x.toolchain.onnx} (graph), tvm ${x.toolchain.tvm} (compiler), onnxruntime ${x.toolchain.onnxruntime} (reference output) |`,
    ),
    '',
    '## Settings',
    '',
    `- ${r.settings.rounds} rounds per case; in each round every contender runs for ~${r.settings.roundMs} ms ` +
      '(ops per round calibrated once, then fixed), in an order that rotates from round to round.',
    `- Threads: TVM_NUM_THREADS=${t.tvmNumThreads} for tvm-node and the Python peer (TVM reports ${t.tvmReported.node} ` +
      `on Node's main thread, ${t.tvmReported.python} in Python); onnxruntime-node intraOpNumThreads=${t.ortIntraOpNumThreads}, ` +
      `interOpNumThreads=${t.ortInterOpNumThreads}, executionMode sequential, graphOptimizationLevel all, CPU execution provider. ` +
      'Each thread that runs TVM kernels has its own pool: ' +
      `${t.tvmNode.numThreads} workers on a JS thread (runSync), ${t.tvmNode.poolThreadWorkers} on each libuv pool thread (vm.run, k in flight: k pool threads), ` +
      `TVM_BIND_THREADS=${t.tvmNode.bindThreads ? 1 : 0}, TVM_THREAD_POOL_SPIN_COUNT=${t.tvmNode.spinCount}` +
      (t.tvmNode.setByTvmNode.length ? ` (${t.tvmNode.setByTvmNode.join(', ')}: tvm-node's defaults, lib/threads.ts)` : '') +
      '; the Python peer inherits the same environment.',
    `- Runs with k in flight: at least ${r.settings.minRunsPerLane} x k runs per round.`,
    `- cnn: ${r.settings.cnnSettleMs} ms idle before each contender's round. onnxruntime's worker threads (and TVM's, under TVM's ` +
      'own settings: 300000 spins, pinned pools) spin for a while after each parallel job; without the gap a contender is timed ' +
      "against the previous one's spinning threads (on 2 cores, under TVM's settings, that made the tiny CNN's runSync ~10x slower; " +
      'the threads group measures that case).',
    `- Copy/wrap sizes: ${r.settings.copySizes.map(formatBytes).join(', ')}.`,
  ];
  const tg = r.settings.threadsGroup;
  if (tg) {
    const d = (s: typeof tg.tvm) =>
      `TVM_NUM_THREADS=${s.numThreads}, ${s.poolThreadWorkers} workers per libuv pool thread, TVM_BIND_THREADS=${s.bindThreads ? 1 : 0}, TVM_THREAD_POOL_SPIN_COUNT=${s.spinCount}`;
    lines.push(
      `- threads: two child processes on the same CNN, tvm-node's settings (${d(tg.tvmNode)}) and TVM's own (${d(tg.tvm)}); ` +
        `each round, each child in turn times ${tg.runsPerPhase} runs per phase: runSync at rest, a mixed burst (4 async runs in flight, ` +
        `runSync on the JS thread between them), runSync right after it, async runs 1 and 4 in flight, runSync while a worker_thread keeps one core busy; ` +
        `${tg.settleMs} ms idle before each phase.`,
    );
  }
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
  const tr = r.settings.transferGroup;
  if (tr) {
    const sizes = (xs: number[]) => xs.map(formatBytes).join(', ');
    lines.push(
      `- transfer, on loopback: tvm-node's server is ${tr.server}. Raw socket: ${tr.rawSocket}.`,
      `- transfer sizes (each way): ${sizes(tr.sizes)}; TVM's C++ transport at ${sizes(tr.cppSizes)}; the stock Python client at ` +
        `${sizes(tr.pythonSizes)}; ${tr.bigRounds} rounds (one request each) from ${formatBytes(tr.bigBytes)} up and for the ` +
        `head-of-line (${formatBytes(tr.headOfLineBytes)} on session A) and memory (${formatBytes(tr.memoryBytes)}) cases; ` +
        `${tr.checkedElements} elements of every addone output checked against Math.fround(x[i] + 1).`,
    );
  }
  const hg = r.settings.httpGroup;
  if (hg) {
    const client = (Object.keys(hg.clients) as Array<keyof typeof hg.clients>).map((k) => `${HTTP_NAMES[k]}: ${hg.clients[k]}`).join('; ');
    const targets = hg.targets
      .map(
        (t) =>
          `${t.model} [${t.shape.join(',')}] (tensors ${approxBytes(t.tensorBytes.input)} in, ${approxBytes(t.tensorBytes.output)} out; ` +
          `HTTP bodies, request / answer: JSON ${approxBytes(t.requestBytes.json)} / ${approxBytes(t.responseBytes.json)}, ` +
          `binary ${approxBytes(t.requestBytes.binary)} / ${approxBytes(t.responseBytes.binary)})`,
      )
      .join(', ');
    const worst = hg.verified.reduce((a, b) => (b.maxAbsDiff > a.maxAbsDiff ? b : a), hg.verified[0]);
    lines.push(
      `- http, on loopback: ${hg.server}. Clients: ${client}.`,
      `- http targets: ${targets}; ${hg.concurrency.join(', ')} requests in flight (closed loop), ~${hg.roundMs} ms per round, ` +
        `at least ${hg.minRequestsPerWorker} request(s) per worker and round. Before timing, every protocol's answer was checked in full against ` +
        `${[...new Set(hg.verified.map((v) => v.reference))].join(', ')} (largest |diff| ${worst ? worst.maxAbsDiff.toExponential(1) : '—'}); ` +
        'during timing, every answer is parsed and checked (whole up to 4096 elements, else 64 spread over it). Event-loop delay: ' +
        `${hg.eventLoop}.`,
    );
  }
  const off = r.settings.offloadGroup;
  if (off) {
    lines.push(`- offload: ${off.model}, ${off.frames} frames per mode and round, ${off.rounds} round(s) per link (${off.links.join('; ')}); ${off.setup}.`);
  }
  for (const x of r.models) {
    const diffs = [
      `tvm-node ${x.maxAbsDiff.tvmNode.toExponential(1)}`,
      ...(x.variants ?? []).filter((v) => v.variant !== 'portable').map((v) => `tvm-node ${v.variant} ${v.maxAbsDiff.toExponential(1)}`),
      ...(x.maxAbsDiff.tvmPython === null ? [] : [`Python tvm ${x.maxAbsDiff.tvmPython.toExponential(1)}`]),
      ...(x.maxAbsDiff.onnxruntimeNode === null ? [] : [`onnxruntime-node ${x.maxAbsDiff.onnxruntimeNode.toExponential(1)}`]),
    ];
    const others = (x.variants ?? [])
      .filter((v) => v.variant !== 'portable')
      .map(
        (v) =>
          `${v.variant}: target \`${v.target}\`, compiled in ${v.compileS.toFixed(1)} s, ${v.schedule === x.schedule ? 'the same schedule' : `schedule: ${v.schedule}`}`,
      );
    lines.push(
      `- cnn model \`${x.name}\`: ${x.notes} ${(x.macs / 1e6).toFixed(1)} M multiply-adds and ${(x.params / 1e6).toFixed(2)} M weights per run; ` +
        `ONNX opset ${x.opset}, compiled by TVM for target \`${x.target}\` (portable: no \`-mcpu\`, baseline ISA only) in ${x.compileS.toFixed(1)} s ` +
        `(${x.cached ? `cached in ${x.dir}` : `built in this run into ${x.dir}`}); schedule: ${x.schedule}. ` +
        (others.length ? `Also compiled ${others.join('; ')}. ` : '') +
        `Outputs checked before timing against ${x.reference} (rtol ${x.tolerance.rtol}, atol ${x.tolerance.atol}): max |diff| ${diffs.join(', ')}.`,
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
    "- `cnn` vs onnxruntime-node compares *compilers*, not bindings: TVM builds against onnxruntime's hand-written kernels " +
      '(AVX2/AVX-512 picked at run time), three ways per model: untuned portable (generic schedule, baseline ISA), untuned ' +
      "native (this machine's CPU) and tuned (MetaSchedule records from a committed database in bench/tuning/, 2 cores: target " +
      'x86-64-v4 (AVX-512) where the CPU has it, else x86-64-v3 (AVX2); each variant\'s target is listed). The "cnn: per model" ' +
      'table sums it up, with the kernels that take the most time in the tuned build.',
    ...(r.settings.groups.includes('rpc')
      ? [
          "- `rpc` compares a whole stack against a whole stack: tvm-node's server and client against TVM's Python server and the " +
            "stock Python client, both over TVM's RPC protocol. **upload**: MB/s of one upload on an open session. **infer vs Python " +
            "client on TVM's server**: µs per inference, host array in to host array out, on an open session with the model already " +
            "loaded; tvm-node sends inputs and gets outputs in one call of its server's `tvm_node.infer` (`session.infer`, which today " +
            'also looks that function up on every call: one more round trip, see the "looked up once" diagnostic), the stock client ' +
            'does what TVM\'s server allows: `tvm.runtime.tensor(x, r.cpu())`, `vm["main"]`, `.numpy()` (several round trips). **connect**: handshake to a session ready for requests. **connect to first result**: what a new ' +
            "client pays before its first answer (tvm-node's server loads the model from its repository; the stock client uploads and " +
            "loads the .so). **k concurrent clients**: inferences/s over the wall time of all clients' whole sessions, setup " +
            "included; TVM's server serves one session at a time, so its clients queue. `diagnostic` rows swap one part at a " +
            'time: "Python client: tvm-node server vs TVM\'s server" puts the same stock client on both servers (the server alone); ' +
            '"multi-round-trip" runs the same remote calls on both stacks; "infer vs multi-round-trip" is what one round trip saves.',
        ]
      : []),
    ...(r.settings.groups.includes('offload')
      ? [
          '- `offload` runs a split model between a device process and an edge server through a shaped link: frames per second of each ' +
            'fixed choice (remote-only, split, pipelined split) and of the auto policy against local-only, and of auto against the ' +
            "link's best fixed choice (1: as good). Notes give each mode's p50/p99 latency, bytes sent per frame and the plans used.",
        ]
      : []),
    ...(r.settings.groups.includes('http')
      ? [
          '- `http` puts load on one `tvm-node serve` and compares its protocols with each other, not tvm-node with a peer: each ' +
            'KServe protocol (HTTP JSON, HTTP binary, gRPC) against TVM RPC on the same server, and binary against JSON, in the same ' +
            "rounds. **requests/s**: requests / wall time of a round with c in flight; **latency p50/p99**: of the round's requests, " +
            'µs (the ratio is peer / subject as everywhere: > 1, the first-named protocol is faster). The "http: per protocol" table ' +
            "gives each protocol's own figures, CPU use of both processes and the server's event-loop delay while it served them.",
        ]
      : []),
    ...(r.settings.groups.includes('transfer')
      ? [
          '- `transfer` moves tensors between a tvm-node client and server processes on loopback. **vs raw socket**: MB/s of ' +
            '`session.infer` (input and output both counted) against plain Node sockets moving the same bytes each way in the same ' +
            "rounds: the share of wire speed tvm-node keeps. **vs TVM's C++ transport**: the inference channel against the path it " +
            'replaced, same session and server. **head-of-line**: idle / busy latency of small inferences on one session while another ' +
            'moves a large tensor (1: unaffected). **server peak RSS**: tensor bytes / peak RSS growth, so a ratio of 0.4 is a ' +
            'growth of 2.5x the tensors.',
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
    lines.push(
      '',
      `## ${g}`,
      '',
      `Unit: ${units}.`,
      '',
      '| case | unit | tvm-node | peer | ratio | min–max ratio | goal / note |',
      '|---|---|---|---|---|---|---|',
    );
    for (const c of cases) {
      lines.push(
        `| ${c.name} | ${c.unit} | ${cell(c.subject.stats)} ${c.subject.name} | ${cell(c.peer.stats)} ${c.peer.name} | ` +
          `**${fmt(c.ratio.median)}** [${fmt(c.ratio.p25)}–${fmt(c.ratio.p75)}] | ${fmt(c.ratio.min)}–${fmt(c.ratio.max)} | ${[c.goal, c.note].filter(Boolean).join('; ')} |`,
      );
    }
    if (g === 'cnn') lines.push(...cnnSummary(r));
    if (g === 'http') lines.push(...httpSummary(r));
  }
  if (r.skipped.length > 0) {
    lines.push('', '## Skipped', '', '| group | what | why |', '|---|---|---|');
    for (const s of r.skipped) lines.push(`| ${s.group} | ${s.name} | ${s.skipped} |`);
  }
  return lines.join('\n') + '\n';
}

/** A byte count in B, KiB or MiB, rounded. */
function approxBytes(n: number): string {
  if (n >= 2 ** 20) return `${fmt(n / 2 ** 20)} MiB`;
  if (n >= 1024) return `${fmt(n / 1024)} KiB`;
  return `${n} B`;
}

const HTTP_NAMES = { json: 'HTTP JSON', binary: 'HTTP binary', grpc: 'gRPC', rpc: 'TVM RPC' } as const;

/** The http group per target, concurrency and protocol: latency, throughput, CPU, event-loop delay. */
export function httpSummary(r: BenchReport): string[] {
  const hg = r.settings.httpGroup;
  if (!hg || hg.results.length === 0) return [];
  const lines = [
    '',
    '### http: per protocol',
    '',
    "Medians over the rounds. CPU: CPU time / wall time of the server's process (all threads) and of the load generator " +
      '(100% = one core). Event-loop delay of the server process while serving (monitorEventLoopDelay, ms): p99 (median over ' +
      "rounds) and max (of all rounds); the load generator's own p99 says whether the client, not the server, was saturated.",
    '',
    '| target | in flight | protocol | p50 µs | p99 µs | requests/s | server CPU % | client CPU % | server loop delay p99 / max ms | client loop delay p99 ms |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const x of hg.results) {
    const t = hg.targets.find((y) => y.key === x.target);
    const name = t ? `${t.model} [${t.shape.join(',')}]` : x.target;
    lines.push(
      `| ${name} | ${x.concurrency} | ${HTTP_NAMES[x.protocol]} | ${fmt(x.p50Us)} | ${fmt(x.p99Us)} | ${fmt(x.requestsPerS)} | ` +
        `${x.serverCpuPct.toFixed(0)} | ${x.clientCpuPct.toFixed(0)} | ${fmt(x.serverEldP99Ms)} / ${fmt(x.serverEldMaxMs)} | ${fmt(x.clientEldP99Ms)} |`,
    );
  }
  return lines;
}

/** A kernel's tensor arguments in short: the first two (data, weight) and the last (output). */
function shapesOf(args: number[][]): string {
  const dims = (a: number[]) => a.join('x');
  return args.length <= 3 ? args.map(dims).join(', ') : `${dims(args[0])}, ${dims(args[1])} → ${dims(args[args.length - 1])}`;
}

/** The cnn group per model: ms per run of each compile and onnxruntime-node, ratios, tuning, top kernels. */
export function cnnSummary(r: BenchReport): string[] {
  const models = r.models.filter((x) => x.variants?.length);
  if (models.length === 0) return [];
  const ms = (v: number | null | undefined) => (v === null || v === undefined ? '—' : fmt(v));
  const lines = [
    '',
    '### cnn: per model',
    '',
    'ms per run (runSync median; onnxruntime-node: `await session.run`), and onnxruntime-node time / tvm-node time ' +
      '(median of the per-round ratios; **> 1: tvm-node faster**). Tuning: how the committed database was made ' +
      '(trials, seconds, cost model), and what this compile measured (0 trials: every kernel came from the database).',
    '',
    '| model | portable `llvm` | native `host` | tuned | onnxruntime-node | ratio portable | ratio native | ratio tuned | tuning | top kernels (% of the build time) |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const x of models) {
    const v = (name: string) => x.variants!.find((y) => y.variant === name);
    const [p, n, t] = [v('portable'), v('native'), v('tuned')];
    const tn = t?.tuning;
    const tuning = tn
      ? `${tn.provenance ? `database: ${tn.provenance.trials} trials, ${Math.round(tn.provenance.seconds)} s, ${tn.provenance.cost_model}; ` : ''}` +
        `this compile: ${tn.trials} trials, ${tn.tasksFromDatabase}/${tn.tasks} kernels from the database, ${fmt(t!.compileS)} s`
      : '—';
    const ratio = (y: CnnVariantInfo | undefined) => (y?.ratioVsOnnxruntime == null ? '—' : `**${fmt(y.ratioVsOnnxruntime)}**`);
    const prof = x.profile
      ? `${x.profile.variant}: ` +
        x.profile.kernels
          .map((k) => `${k.name} ${k.pct.toFixed(1)}% (${fmt(k.ms)} ms${k.calls > 1 ? `, ${k.calls} calls` : ''}; ${shapesOf(k.args)})`)
          .join('; ')
      : '—';
    lines.push(
      `| ${x.name} | ${ms(p?.medianMs)} | ${ms(n?.medianMs)} | ${ms(t?.medianMs)} | ${ms(x.onnxruntimeNodeMs)} | ${ratio(p)} | ${ratio(n)} | ${ratio(t)} | ${tuning} | ${prof} |`,
    );
  }
  // Where tvm-node's tuned build (else its last) is still slower than onnxruntime-node: by how much, and where.
  const behind: string[] = [];
  for (const x of models) {
    const v = x.variants!.find((y) => y.variant === 'tuned') ?? x.variants![x.variants!.length - 1];
    if (v.ratioVsOnnxruntime === null || v.ratioVsOnnxruntime >= 1) continue;
    const top = x.profile?.variant === v.variant ? x.profile.kernels.slice(0, 3).map((k) => `${k.name} (${k.pct.toFixed(0)}%)`) : [];
    behind.push(
      `- ${x.name}: ${v.variant} tvm-node takes ${fmt(1 / v.ratioVsOnnxruntime)}x onnxruntime-node's time ` +
        `(${ms(v.medianMs)} vs ${ms(x.onnxruntimeNodeMs)} ms)${top.length ? `; the top kernels: ${top.join(', ')}` : ''}.`,
    );
  }
  if (behind.length) lines.push('', ...behind);
  return lines;
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
