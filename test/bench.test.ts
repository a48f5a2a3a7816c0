/**
 * Keeps the benchmark suite (bench/run.ts) from rotting: runs it with tiny sizes and short
 * rounds and checks the shape of what it reports. No timing is asserted: the figures of a
 * quick run mean nothing, they only have to exist.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  type BenchReport,
  CNN_MODEL,
  CNN_MODELS,
  chartFileName,
  GROUPS,
  HIGHER_IS_BETTER,
  runBenchmarks,
  type Stats,
  toMarkdown,
  writeReport,
} from '../bench/run';

function assertStats(s: Stats, what: string, rounds: number): void {
  for (const k of ['median', 'p25', 'p75', 'min', 'max'] as const) {
    assert.ok(Number.isFinite(s[k]) && s[k] > 0, `${what}.${k} = ${s[k]}`);
  }
  assert.ok(s.min <= s.p25 && s.p25 <= s.median && s.median <= s.p75 && s.p75 <= s.max, `${what} is not ordered`);
  assert.equal(s.rounds, rounds, `${what}.rounds`);
}

describe('benchmarks (quick run of bench/run.ts)', function () {
  this.timeout(300000);
  let report: BenchReport;
  const envThreads = process.env.TVM_NUM_THREADS;

  before(async () => {
    report = await runBenchmarks({ quick: true });
  });

  it('reports every group, with finite positive figures for every case', () => {
    assert.ok(report.quick);
    assert.deepEqual(report.settings.groups, [...GROUPS]);
    for (const g of GROUPS)
      assert.ok(
        report.cases.some((c) => c.group === g),
        `no ${g} case`,
      );
    const rpc = report.settings.rpc;
    for (const c of report.cases) {
      const what = `${c.group}: ${c.name}`;
      // The concurrency cases have rounds of their own (each round: every client's whole session).
      const rounds = c.group === 'rpc' && c.unit === 'infer/s' ? rpc.concurrencyRounds : report.settings.rounds;
      assertStats(c.subject.stats, `${what} subject`, rounds);
      assertStats(c.peer.stats, `${what} peer`, rounds);
      assertStats(c.ratio, `${what} ratio`, rounds);
      for (const side of [c.subject, c.peer]) {
        assert.ok(side.name.length > 0, `${what}: unnamed side`);
        assert.ok(Number.isInteger(side.opsPerRound) && side.opsPerRound >= 1, `${what}: ops per round ${side.opsPerRound}`);
      }
      if (c.group === 'copy' || c.group === 'wrap' || c.unit === 'MB/s') assert.ok(c.bytes! > 0, `${what}: bytes`);
      assert.equal(c.higherIsBetter, HIGHER_IS_BETTER.has(c.unit));
    }
  });

  it('covers the cases the suite promises', () => {
    const names = report.cases.map((c) => c.name);
    const has = (re: RegExp) =>
      assert.ok(
        names.some((n) => re.test(n)),
        `no case matching ${re}`,
      );
    has(/^nop kernel/);
    has(/RuntimeEnabled/);
    for (const bytes of report.settings.copySizes) {
      const size = bytes >= 1024 * 1024 ? `${bytes / 1024 / 1024} MiB` : `${bytes / 1024} KiB`;
      has(new RegExp(`^host -> tensor ${size}`));
      has(new RegExp(`^tensor -> host ${size}`));
      has(new RegExp(`^Tensor\\.wrap ${size}`));
    }
    for (const model of ['mlp', 'conv']) {
      has(new RegExp(`^${model} .*runSync vs Python`));
      for (const k of [1, 2, 4]) has(new RegExp(`^${model} .*async run, ${k} in flight`));
      has(new RegExp(`^${model} .*async run, 1 in flight vs a bare libuv pool round trip`));
    }
    // The CNN: quick mode runs the tiny variant against both peers.
    const cnn = CNN_MODEL.quick;
    has(new RegExp(`^${cnn} \\[1,3,64,64\\]: runSync vs Python`));
    has(new RegExp(`^${cnn} .*runSync vs onnxruntime-node`));
    for (const k of [1, 2, 4]) {
      has(new RegExp(`^${cnn} .*async run, ${k} in flight vs Python`));
      has(new RegExp(`^${cnn} .*async run, ${k} in flight vs onnxruntime-node`));
    }
  });

  it("runs the rpc group: upload, latency, connect and concurrent clients against TVM's Python server", () => {
    const rpc = report.settings.rpc;
    assert.deepEqual(rpc.uploadSizes, [1024 * 1024]);
    assert.deepEqual(rpc.clients, [1, 2]);
    assert.ok(rpc.infersPerClient >= 1 && rpc.concurrencyRounds >= 1);
    const cases = report.cases.filter((c) => c.group === 'rpc');
    const find = (re: RegExp) => {
      const c = cases.find((x) => re.test(x.name));
      assert.ok(c, `no rpc case matching ${re}`);
      return c;
    };
    const up = find(/^upload 1 MiB: tvm-node server \+ client vs TVM's Python server \+ client$/);
    assert.equal(up.unit, 'MB/s');
    assert.equal(up.bytes, 1024 * 1024);
    for (const model of rpc.latencyModels) {
      const c = find(new RegExp(`^${model} .*: session\\.infer vs Python client on TVM's server`));
      assert.equal(c.unit, 'us/run');
      assert.match(c.subject.name, /session\.infer/);
      assert.match(c.peer.name, /TVM's Python server/);
      find(new RegExp(`^${model} .*: multi-round-trip, tvm-node client \\+ server vs Python client`));
    }
    assert.equal(find(/^connect: /).unit, 'ms/session');
    find(/^mlp: connect to first result/);
    for (const k of rpc.clients) {
      const c = find(new RegExp(`^mlp: ${k} concurrent clients? x ${rpc.infersPerClient} inferences`));
      assert.equal(c.unit, 'infer/s');
      assert.equal(c.subject.opsPerRound, k * rpc.infersPerClient);
      assert.equal(c.ratio.rounds, rpc.concurrencyRounds);
    }
  });

  it('runs the quick CNN variant, checked against the reference, and says why the full one is skipped', () => {
    assert.equal(report.models.length, 1);
    const [m] = report.models;
    assert.equal(m.name, CNN_MODEL.quick);
    assert.deepEqual(m.input.shape, [1, 3, 64, 64]);
    assert.ok(m.macs > 0 && m.params > 0 && m.compileS > 0);
    for (const d of [m.maxAbsDiff.tvmNode, m.maxAbsDiff.tvmPython, m.maxAbsDiff.onnxruntimeNode]) {
      assert.ok(d !== null && d <= m.tolerance.atol, `max |diff| ${d}`);
    }
    // Each compile of it (portable, native, tuned from the committed database) was checked and
    // timed; the tuned one is x86-64-v4 (AVX-512) or x86-64-v3 (AVX2) code, whichever this CPU
    // runs, skipped (with the reason) on CPUs with neither.
    const tunedSkip = report.skipped.find((s) => s.group === 'cnn' && s.name === `${m.name} [1,3,64,64]: tuned`);
    assert.deepEqual(
      m.variants?.map((v) => v.variant),
      tunedSkip ? ['portable', 'native'] : ['portable', 'native', 'tuned'],
    );
    for (const v of m.variants ?? []) {
      assert.ok(v.maxAbsDiff <= m.tolerance.atol, `${v.variant}: max |diff| ${v.maxAbsDiff}`);
      assert.ok(v.medianMs !== null && v.medianMs > 0 && v.ratioVsOnnxruntime !== null);
    }
    const tuned = m.variants?.find((v) => v.variant === 'tuned');
    if (tuned) assert.equal(tuned.tuning?.trials, 0, 'quick mode never tunes');
    assert.ok(m.profile && m.profile.kernels.length > 0 && m.profile.kernels[0].pct > 0);
    assert.match(toMarkdown(report), /### cnn: per model/);
    const skip = report.skipped.find((s) => s.group === 'cnn' && s.name.startsWith(`${CNN_MODELS.full.join(', ')} `));
    assert.ok(skip, 'no skipped entry for the full CNN');
    assert.match(skip.skipped, /quick mode/);
    // Nothing else was skipped: onnxruntime-node loads here.
    assert.deepEqual(report.skipped, tunedSkip ? [skip, tunedSkip] : [skip]);
    assert.match(report.versions.onnxruntimeNode ?? '', /^\d+\.\d+\.\d+/);
  });

  it('runs the http group: every protocol of tvm-node serve at 1, 8 and 32 in flight, answers checked, event-loop delay recorded', () => {
    assert.ok(report.settings.httpGroup, 'no http group settings');
    const hg = report.settings.httpGroup;
    assert.deepEqual(hg.concurrency, [1, 8, 32]);
    const protocols = ['json', 'binary', 'grpc', 'rpc'] as const;
    const names = { json: 'HTTP JSON', binary: 'HTTP binary', grpc: 'gRPC', rpc: 'TVM RPC' };
    assert.deepEqual(
      hg.targets.map((t) => t.model),
      ['mlp', 'addone'],
    );
    const cases = report.cases.filter((c) => c.group === 'http');
    for (const t of hg.targets) {
      // Binary bodies carry the tensor's bytes as they are; JSON ones as text, larger.
      assert.ok(t.requestBytes.binary >= t.tensorBytes.input && t.requestBytes.json > t.requestBytes.binary, `${t.key}: body sizes`);
      for (const p of protocols) {
        const v = hg.verified.find((x) => x.key === t.key && x.protocol === p);
        assert.ok(v && v.elements > 0 && v.maxAbsDiff >= 0, `${t.key}: ${p} not verified`);
      }
      for (const c of hg.concurrency) {
        for (const p of protocols) {
          const x = hg.results.find((y) => y.target === t.key && y.concurrency === c && y.protocol === p);
          assert.ok(x, `no ${p} result for ${t.key} at ${c}`);
          assert.ok(x.requestsPerRound >= c, `${t.key} ${p} ${c}: ${x.requestsPerRound} requests per round`);
          for (const k of ['p50Us', 'p99Us', 'requestsPerS', 'serverCpuPct', 'clientCpuPct'] as const) {
            assert.ok(Number.isFinite(x[k]) && x[k] > 0, `${t.key} ${p} ${c}: ${k} = ${x[k]}`);
          }
          assert.ok(x.p99Us >= x.p50Us);
          for (const k of ['serverEldP99Ms', 'serverEldMaxMs', 'clientEldP99Ms'] as const) {
            assert.ok(Number.isFinite(x[k]) && x[k] >= 0, `${t.key} ${p} ${c}: ${k} = ${x[k]}`);
          }
        }
        const at = `${t.model} [${t.shape.join(',')}]`;
        for (const [p, q] of [
          ['json', 'rpc'],
          ['binary', 'rpc'],
          ['grpc', 'rpc'],
          ['binary', 'json'],
        ] as const) {
          for (const [what, unit] of [
            ['requests/s', 'infer/s'],
            ['latency p50', 'us'],
            ['latency p99', 'us'],
          ] as const) {
            const name = `: ${names[p]} vs ${names[q]}, ${what}`;
            const found = cases.find((x) => x.name.startsWith(at) && x.name.includes(`, ${c} in flight:`) && x.name.endsWith(name));
            assert.ok(found, `no http case ${at} ${c}${name}`);
            assert.equal(found.unit, unit);
          }
        }
      }
    }
    assert.match(toMarkdown(report), /### http: per protocol/);
  });

  it('sets and reports the thread counts of both runtimes', () => {
    const t = report.settings.threads;
    assert.ok(Number.isInteger(t.tvmNumThreads) && t.tvmNumThreads >= 1);
    assert.equal(t.ortIntraOpNumThreads, t.tvmNumThreads);
    assert.equal(t.ortInterOpNumThreads, 1);
    assert.equal(t.tvmReported.python, t.tvmNumThreads);
    assert.ok(t.tvmReported.node >= 1);
    assert.equal(process.env.TVM_NUM_THREADS, envThreads, 'TVM_NUM_THREADS is restored after the run');
  });

  it("runs the threads group: the CNN mixing runSync and run under tvm-node's thread settings and TVM's own", () => {
    const tg = report.settings.threadsGroup;
    assert.ok(tg, 'no threads group settings');
    // The child left to tvm-node: no pinning, no spinning, all three variables tvm-node's.
    assert.equal(tg.tvmNode.bindThreads, false);
    assert.equal(tg.tvmNode.spinCount, 0);
    assert.deepEqual([...tg.tvmNode.setByTvmNode].sort(), ['TVM_BIND_THREADS', 'TVM_NUM_THREADS', 'TVM_THREAD_POOL_SPIN_COUNT']);
    // TVM's own, at the same thread count: every pool that size, pinned, spinning.
    assert.equal(tg.tvm.bindThreads, true);
    assert.equal(tg.tvm.spinCount, 300000);
    assert.equal(tg.tvm.numThreads, tg.tvmNode.numThreads);
    assert.equal(tg.tvm.poolThreadWorkers, tg.tvm.numThreads);
    assert.deepEqual(tg.tvm.setByTvmNode, []);
    const names = report.cases.filter((c) => c.group === 'threads').map((c) => c.name);
    for (const re of [
      /: runSync after mixed runs vs at rest, tvm-node settings$/,
      /: runSync after mixed runs vs at rest, TVM settings$/,
      /: runSync after mixed runs, tvm-node vs TVM settings$/,
      /: mixed runSync \+ run \(4 in flight\), tvm-node vs TVM settings$/,
      /: runSync at rest, tvm-node vs TVM settings$/,
      /: runSync beside a busy thread, tvm-node vs TVM settings$/,
      /: async run, [14] in flight, tvm-node vs TVM settings$/,
    ]) {
      assert.ok(
        names.some((n) => re.test(n)),
        `no threads case matching ${re}`,
      );
    }
    assert.ok(report.settings.threads.tvmNode.numThreads >= 1);
  });

  it('records the machine and versions, and writes JSON, markdown and the chart', () => {
    const m = report.machine;
    assert.ok(m.cpuModel.length > 0);
    assert.ok(m.cores >= 1);
    assert.equal(m.loadAverage.start.length, 3);
    assert.equal(m.loadAverage.end.length, 3);
    assert.ok(report.versions.tvm.length > 0 && report.versions.python.tvm.length > 0);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-bench-'));
    try {
      const file = writeReport(report, dir);
      assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), JSON.parse(JSON.stringify(report)));
      assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'latest.json'), 'utf8')), JSON.parse(JSON.stringify(report)));
      const md = fs.readFileSync(path.join(dir, 'latest.md'), 'utf8');
      assert.equal(md, toMarkdown(report));
      assert.equal(fs.readFileSync(path.join(dir, 'REPORT.quick.md'), 'utf8'), md, 'quick runs leave REPORT.md alone');
      assert.ok(!fs.existsSync(path.join(dir, 'REPORT.md')));
      for (const c of report.cases) assert.ok(md.includes(`| ${c.name} |`), `markdown lacks ${c.name}`);
      for (const s of report.skipped) assert.ok(md.includes(`| ${s.name} | ${s.skipped} |`), `markdown lacks skipped ${s.name}`);
      for (const text of ['## Machine', '## Versions', '## Settings', '## How to read this', `onnxruntime-node | ${report.versions.onnxruntimeNode}`]) {
        assert.ok(md.includes(text), `markdown lacks ${text}`);
      }
      assert.ok(md.includes(`](${chartFileName(report)})`), 'markdown does not embed the chart');
      const svg = fs.readFileSync(path.join(dir, chartFileName(report)), 'utf8');
      assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
      assert.match(svg, /<\/svg>\n$/);
      assert.equal(svg.match(/<circle /g)?.length, report.cases.length, 'one median dot per case');
      assert.ok(!/NaN|undefined|Infinity/.test(svg), 'chart has non-finite coordinates');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
