/**
 * Keeps the benchmark suite (bench/run.ts) from rotting: runs it with tiny sizes and short
 * rounds and checks the shape of what it reports. No timing is asserted: the figures of a
 * quick run mean nothing, they only have to exist.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GROUPS, runBenchmarks, toMarkdown, writeReport, type BenchReport, type Stats } from '../bench/run';

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

  before(async () => {
    report = await runBenchmarks({ quick: true });
  });

  it('reports every group, with finite positive figures for every case', () => {
    assert.ok(report.quick);
    assert.deepEqual(report.settings.groups, [...GROUPS]);
    for (const g of GROUPS) assert.ok(report.cases.some((c) => c.group === g), `no ${g} case`);
    const rounds = report.settings.rounds;
    for (const c of report.cases) {
      const what = `${c.group}: ${c.name}`;
      assertStats(c.subject.stats, `${what} subject`, rounds);
      assertStats(c.peer.stats, `${what} peer`, rounds);
      assertStats(c.ratio, `${what} ratio`, rounds);
      for (const side of [c.subject, c.peer]) {
        assert.ok(side.name.length > 0, `${what}: unnamed side`);
        assert.ok(Number.isInteger(side.opsPerRound) && side.opsPerRound >= 1, `${what}: ops per round ${side.opsPerRound}`);
      }
      if (c.group === 'copy' || c.group === 'wrap') assert.ok(c.bytes! > 0, `${what}: bytes`);
      assert.equal(c.higherIsBetter, c.unit === 'GB/s');
    }
  });

  it('covers the cases the suite promises', () => {
    const names = report.cases.map((c) => c.name);
    const has = (re: RegExp) => assert.ok(names.some((n) => re.test(n)), `no case matching ${re}`);
    has(/^nop kernel/);
    has(/RuntimeEnabled/);
    for (const bytes of report.settings.copySizes) {
      const size = bytes >= 1024 * 1024 ? `${bytes / 1024 / 1024} MiB` : `${bytes / 1024} KiB`;
      has(new RegExp(`^host -> tensor ${size}`));
      has(new RegExp(`^tensor -> host ${size}`));
      has(new RegExp(`^Tensor\\.wrap ${size}`));
    }
    for (const model of ['mlp', 'conv']) {
      has(new RegExp(`^${model} .*sync invoke vs Python`));
      for (const k of [1, 2, 4]) has(new RegExp(`^${model} .*async run, ${k} in flight`));
    }
  });

  it('records the machine and versions, and writes JSON and markdown', () => {
    const m = report.machine;
    assert.ok(m.cpuModel.length > 0);
    assert.ok(m.cores >= 1);
    assert.ok(report.versions.tvm.length > 0 && report.versions.python.tvm.length > 0);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-bench-'));
    try {
      const file = writeReport(report, dir);
      assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), JSON.parse(JSON.stringify(report)));
      const md = fs.readFileSync(path.join(dir, 'latest.md'), 'utf8');
      assert.equal(md, toMarkdown(report));
      for (const c of report.cases) assert.ok(md.includes(`| ${c.name} |`), `markdown lacks ${c.name}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
