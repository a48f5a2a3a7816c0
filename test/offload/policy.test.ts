/**
 * The offload policy's arithmetic (lib/offload/policy.ts) on a real split's graph (branchy:
 * four stages, two parallel), fed measurements directly: which plan it picks for which link,
 * encodings within the error bound, and the back-off after failures.
 */
import assert from 'node:assert/strict';
import { splitFixture } from '../../bench/split-fixtures';
import { SplitGraph } from '../../lib/offload/graph';
import { OffloadPolicy } from '../../lib/offload/policy';
import { sleep } from '../rpc/peers';

describe('offload: OffloadPolicy', function () {
  this.timeout(300_000);
  let graph: SplitGraph;
  before(async () => {
    graph = SplitGraph.read(await splitFixture('branchy'));
  });

  /** A policy that has measured the device (10 ms per stage) and a link. */
  function measured(opts: { rttMs: number; bytesPerMs: number; serverSpeedup?: number; maxError?: number }): OffloadPolicy {
    const p = new OffloadPolicy(graph, { serverSpeedup: opts.serverSpeedup ?? 10, maxError: opts.maxError, encodings: ['float32', 'float16', 'int8'] });
    for (const s of graph.stages) p.observeLocal(s.name, 10);
    p.observePing(opts.rttMs);
    p.observePing(opts.rttMs + 1_000_000 / opts.bytesPerMs, 1_000_000);
    return p;
  }

  it('keeps frames local until the device is measured, then weighs device, link and server', () => {
    const fresh = new OffloadPolicy(graph);
    assert.match(fresh.choose().reason, /measuring the device/);
    assert.equal(fresh.choose().plan.label, 'local');
    // A fast link to a server 10x faster: everything remote (the input is the smallest thing to send).
    const fast = measured({ rttMs: 1, bytesPerMs: 100_000 });
    const d = fast.choose();
    assert.equal(d.plan.label, 'remote', d.reason);
    assert.ok(Math.abs(d.predictedMs - (1 + (graph.crossingBytes(0, 'float32') + graph.outputBytes) / 100_000 + 4)) < 0.01, `${d.predictedMs}`);
    // 40 ms of latency each way costs more than the 40 ms the device takes: local.
    assert.equal(measured({ rttMs: 80, bytesPerMs: 100_000 }).choose().plan.label, 'local');
  });

  it('a stream is paced by the slower side: a balanced split wins over local-only when frames overlap', () => {
    const p = measured({ rttMs: 30, bytesPerMs: 10_000, serverSpeedup: 1 });
    assert.equal(p.choose('latency').plan.label, 'local');
    const stream = p.choose('throughput', 3);
    assert.notEqual(stream.plan.label, 'local', stream.reason);
    assert.ok(stream.predictedMs < p.predict(graph.splitPlan(graph.segments), 'throughput', 3));
  });

  it('uses an encoding only within the error bound the caller allows', () => {
    const slow = (maxError: number) => measured({ rttMs: 1, bytesPerMs: 50, maxError }).candidates();
    const labels = (maxError: number) => slow(maxError).map((p) => p.label);
    assert.ok(labels(1).includes('split@1/int8'));
    assert.ok(!labels(1e-4).some((l) => l.endsWith('/int8')), labels(1e-4).join(' '));
    assert.ok(labels(1e-4).includes('split@1/float16'));
    assert.ok(!labels(1e-6).some((l) => l.includes('/')));
  });

  it('after a failure the server is set aside, doubling the back-off, until a probe gets through', async () => {
    const p = new OffloadPolicy(graph, { backoffMs: 50, maxBackoffMs: 1000 });
    for (const s of graph.stages) p.observeLocal(s.name, 10);
    p.observePing(1);
    p.observeFailure();
    assert.equal(p.serverAvailable, false);
    assert.equal(p.needsProbe, false);
    assert.match(p.choose().reason, /set aside after 1 failure/);
    await sleep(60);
    assert.equal(p.needsProbe, true);
    p.observeFailure();
    const { backoffUntil } = p.estimates;
    assert.ok(backoffUntil - performance.now() > 60, 'the second back-off is longer (100 ms)');
    p.observePing(1);
    assert.equal(p.serverAvailable, true);
    assert.equal(p.estimates.failures, 0);
  });
});
