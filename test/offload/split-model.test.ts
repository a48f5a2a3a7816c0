/**
 * The offload runtime (lib/offload) on real splits (test/split-fixtures.ts: models cut and
 * compiled by `tvm-node split` with the pinned TVM), a real tvm-node server serving the
 * split's repository over loopback, and the link shaped by lib/net/shaped-link.ts. Every
 * output is compared with onnxruntime's output of the unsplit model (the split's reference).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { splitFixture } from '../../bench/split-fixtures';
import { readNpy, type Tensor } from '../../lib';
import { ShapedLink } from '../../lib/net/shaped-link';
import { SplitGraph } from '../../lib/offload/graph';
import { type FrameResult, SplitModel } from '../../lib/offload/split-model';
import { RPCServer } from '../../lib/rpc/server';
import { closedPort, HOST, sleep, withTimeout } from '../rpc/peers';

/** The split's reference input and onnxruntime's output of the unsplit model. */
function reference(graph: SplitGraph) {
  const ref = graph.manifest.reference!;
  const inputs = Object.fromEntries(graph.manifest.inputs.map((t, i) => [t.name, readNpy(graph.file(ref.inputs[i]))]));
  const outputs = graph.manifest.outputs.map((t, i) => ({ name: t.name, array: readNpy(graph.file(ref.outputs[i])) }));
  return {
    frame: () => Object.fromEntries(Object.entries(inputs).map(([n, a]) => [n, { data: a.data as Float32Array, shape: a.shape }])),
    outputs,
  };
}

/** Largest |a - b| between a frame's outputs and the reference. */
function maxError(result: FrameResult, ref: ReturnType<typeof reference>): number {
  let worst = 0;
  for (const { name, array } of ref.outputs) {
    const got = result.outputs[name];
    assert.ok(got, `output ${name}`);
    assert.deepEqual(got.shape, array.shape, `shape of ${name}`);
    const a = got.toFloat32ArraySync();
    const b = array.data as Float32Array;
    for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  }
  return worst;
}

function dispose(result: FrameResult): void {
  for (const t of Object.values(result.outputs) as Tensor[]) t.disposeSync();
}

async function serve(dir: string): Promise<{ server: RPCServer; port: number }> {
  const server = new RPCServer({ host: HOST, port: 0, inferenceOnly: true, modelsDir: dir });
  const { port } = await withTimeout(server.listen(), 10000, 'listen');
  return { server, port };
}

const TOLERANCE = 1e-4;

describe('offload: SplitModel on real splits', function () {
  this.timeout(600_000);
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => undefined);
  });

  describe('mobilenet_v2_tiny (one cut: two stages)', () => {
    let graph: SplitGraph;
    let port: number;
    let server: RPCServer;
    before(async () => {
      graph = SplitGraph.read(await splitFixture('mobilenet_v2_tiny'));
      ({ server, port } = await serve(graph.file(graph.manifest.repository)));
      cleanup.push(() => server.close(1000));
    });

    it('every split point (all remote, the cut, all local) equals the unsplit model; local frames send no bytes', async () => {
      const ref = reference(graph);
      await using model = await SplitModel.load(graph.dir, { server: `${HOST}:${port}` });
      for (let k = 0; k <= graph.segments; k++) {
        const r = await model.run(ref.frame(), { plan: k });
        assert.ok(maxError(r, ref) <= TOLERANCE, `split point ${k}: max error ${maxError(r, ref)}`);
        assert.equal(r.fallback, undefined);
        assert.equal(r.plan.split, k);
        if (k === graph.segments) assert.equal(r.bytesSent + r.bytesReceived, 0, 'all local: nothing crosses the network');
        else assert.ok(r.bytesSent > 0 && r.bytesReceived > 0, `split point ${k} sent ${r.bytesSent}`);
        assert.deepEqual(
          r.stages.map((s) => [s.stage, s.where]),
          graph.stages.map((s) => [s.name, s.segment < k ? 'local' : 'remote']),
        );
        dispose(r);
      }
      // Tensors cross once: the cut's bytes up, the outputs' bytes down.
      const r = await model.run(ref.frame(), { plan: 1 });
      assert.equal(r.bytesSent, graph.manifest.cuts[0].bytes);
      assert.equal(r.bytesReceived, graph.outputBytes);
      dispose(r);
    });

    it('the cut crosses as float16 and int8: fewer bytes, error within what the split measured', async () => {
      const ref = reference(graph);
      await using model = await SplitModel.load(graph.dir, { server: `${HOST}:${port}` });
      const cut = graph.manifest.cuts[0];
      for (const encoding of ['float16', 'int8'] as const) {
        const r = await model.run(ref.frame(), { plan: { split: 1, encoding } });
        const measured = cut.encodings[encoding]!;
        assert.equal(r.bytesSent, measured.bytes, `${encoding} bytes`);
        assert.ok(r.bytesSent < cut.bytes);
        const err = maxError(r, ref);
        assert.ok(err <= measured.max_abs_error * 1.5 + TOLERANCE, `${encoding}: error ${err}, split measured ${measured.max_abs_error}`);
        dispose(r);
      }
    });

    it('a stream is answered in order, pipelined; with the server gone mid-stream every frame is still right', async () => {
      const ref = reference(graph);
      const { server: doomed, port: doomedPort } = await serve(graph.file(graph.manifest.repository));
      cleanup.push(() => doomed.close(100));
      await using model = await SplitModel.load(graph.dir, { server: `${HOST}:${doomedPort}`, deadlineMs: 3000 });
      const fallbacks: string[] = [];
      model.on('fallback', (e) => fallbacks.push(e.error.message));
      async function* frames() {
        for (let i = 0; i < 24; i++) {
          if (i === 8) await doomed.close(0);
          yield ref.frame();
        }
      }
      let n = 0;
      for await (const r of model.stream(frames(), { plan: 1, maxInFlight: 3 })) {
        assert.equal(r.frame, n++, 'in order');
        assert.ok(maxError(r, ref) <= TOLERANCE, `frame ${r.frame}: error ${maxError(r, ref)} (${r.fallback ?? 'no fallback'})`);
        dispose(r);
      }
      assert.equal(n, 24);
      assert.ok(model.stats.fallbacks >= 1, `fallbacks: ${model.stats.fallbacks}`);
      assert.ok(fallbacks.length >= 1);
    });

    it('a server past the deadline: answered locally, the server set aside, taken back after a probe once the link is fast again', async () => {
      const ref = reference(graph);
      await using link = await ShapedLink.open({ target: { host: HOST, port } });
      await using model = await SplitModel.load(graph.dir, { server: `${HOST}:${link.port}`, deadlineMs: 300, policy: { backoffMs: 300 } });
      link.setProfile({ latencyMs: 1000 });
      const slow = await model.run(ref.frame(), { plan: 1 });
      assert.match(slow.fallback ?? '', /ran locally: the server did not answer within 300 ms/);
      assert.ok(maxError(slow, ref) <= TOLERANCE);
      assert.deepEqual(
        slow.stages.map((s) => s.where),
        ['local', 'local'],
      );
      dispose(slow);
      assert.equal(model.policy.serverAvailable, false);
      const aside = await model.run(ref.frame());
      assert.equal(aside.plan.label, 'local');
      assert.match(aside.reason, /set aside after 1 failure/);
      dispose(aside);
      link.setProfile({});
      await sleep(2500); // the late answer drains; the back-off is over
      const probed = once(model, 'probe');
      dispose(await model.run(ref.frame()));
      const [probe] = await withTimeout(probed, 10000, 'probe');
      assert.equal(probe.ok, true, String(probe.error));
      assert.equal(model.policy.serverAvailable, true);
    });

    it('no server listening: frames run locally and right, whatever the plan', async () => {
      const ref = reference(graph);
      await using model = await SplitModel.load(graph.dir, { server: `${HOST}:${await closedPort()}` });
      const auto = await model.run(ref.frame());
      assert.equal(auto.plan.label, 'local');
      assert.ok(maxError(auto, ref) <= TOLERANCE);
      dispose(auto);
      const forced = await model.run(ref.frame(), { plan: 'remote' });
      assert.match(forced.fallback ?? '', /ran locally/);
      assert.ok(maxError(forced, ref) <= TOLERANCE);
      assert.equal(forced.bytesSent, 0);
      dispose(forced);
    });

    it("a device without the server stage's weights: that stage runs only remotely, and says so when it cannot", async () => {
      const ref = reference(graph);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-device-split-'));
      cleanup.push(async () => fs.rmSync(dir, { recursive: true, force: true }));
      fs.cpSync(graph.dir, dir, { recursive: true });
      const last = graph.stages[graph.stages.length - 1];
      fs.rmSync(path.join(dir, last.device.library));
      fs.rmSync(path.join(dir, graph.manifest.repository), { recursive: true });
      await assert.rejects(SplitModel.load(dir), new RegExp(`stage ${last.name} has no device build \\(${last.device.library}\\) and no server was given`));
      const { server: own, port: ownPort } = await serve(graph.file(graph.manifest.repository));
      cleanup.push(() => own.close(100));
      await using model = await SplitModel.load(dir, { server: `${HOST}:${ownPort}` });
      const auto = await model.run(ref.frame());
      assert.equal(auto.stages.find((s) => s.stage === last.name)?.where, 'remote', auto.plan.label);
      assert.ok(maxError(auto, ref) <= TOLERANCE);
      dispose(auto);
      await assert.rejects(model.run(ref.frame(), { plan: 'local' }), new RegExp(`stage ${last.name} has no device build here`));
      await own.close(0);
      await assert.rejects(model.run(ref.frame(), { plan: 1 }), new RegExp(`${last.name} failed on the server and has no device build to fall back to`));
    });

    it('bad frames are clear errors, and the model goes on', async () => {
      const ref = reference(graph);
      await using model = await SplitModel.load(graph.dir, { server: `${HOST}:${port}` });
      const [spec] = graph.manifest.inputs;
      const good = ref.frame()[spec.name];
      await assert.rejects(model.run({}), /input 'input' is missing/);
      await assert.rejects(model.run({ ...ref.frame(), extra: good }), /no input extra/);
      await assert.rejects(model.run({ [spec.name]: { data: good.data, shape: [1, 2, 3] } }), /has shape \[1, 2, 3\]; the model takes/);
      await assert.rejects(model.run({ [spec.name]: { data: new Int32Array(good.data.length), shape: good.shape } }), /must be float32; got int32/);
      await assert.rejects(model.run(ref.frame(), { plan: 7 }), /split point 7 is out of range/);
      const r = await model.run(ref.frame(), { plan: 1 });
      assert.ok(maxError(r, ref) <= TOLERANCE);
      dispose(r);
    });
  });

  describe('branchy (two parallel branches between two cuts)', () => {
    let graph: SplitGraph;
    let port: number;
    before(async () => {
      graph = SplitGraph.read(await splitFixture('branchy'));
      const s = await serve(graph.file(graph.manifest.repository));
      port = s.port;
      cleanup.push(() => s.server.close(1000));
    });

    it('has two stages in its middle segment', () => {
      assert.equal(graph.stages.filter((s) => s.segment === 1).length, 2);
    });

    it('each branch on another side, and every split point, equal the unsplit model; the remote branch crosses once', async () => {
      const ref = reference(graph);
      await using model = await SplitModel.load(graph.dir, { server: `${HOST}:${port}` });
      const [a, b] = graph.stages.filter((s) => s.segment === 1);
      for (const placements of [{ [a.name]: 'remote' }, { [b.name]: 'remote' }, { [a.name]: 'remote', [b.name]: 'remote' }] as const) {
        const r = await model.run(ref.frame(), { plan: { placements } });
        assert.ok(maxError(r, ref) <= TOLERANCE, `${JSON.stringify(placements)}: ${maxError(r, ref)}`);
        const remote = graph.stages.filter((s) => placements[s.name as keyof typeof placements] === 'remote');
        // The stem's output goes up once, each remote branch's output comes down once.
        const up = graph.manifest.cuts[0].bytes;
        const down = remote.reduce((n, s) => n + s.outputs.reduce((m, t) => m + t.shape.reduce((x, y) => x * y, 4), 0), 0);
        assert.equal(r.bytesSent, up, `bytes up for ${JSON.stringify(placements)}`);
        assert.equal(r.bytesReceived, down, `bytes down for ${JSON.stringify(placements)}`);
        dispose(r);
      }
      for (let k = 0; k <= graph.segments; k++) {
        const r = await model.run(ref.frame(), { plan: k });
        assert.ok(maxError(r, ref) <= TOLERANCE, `split point ${k}: ${maxError(r, ref)}`);
        dispose(r);
      }
    });

    it('the local branch computes while the remote one is in flight; events report each stage', async () => {
      const ref = reference(graph);
      await using link = await ShapedLink.open({ target: { host: HOST, port }, profile: { latencyMs: 100 } });
      await using model = await SplitModel.load(graph.dir, { server: `${HOST}:${link.port}`, deadlineMs: 5000 });
      const [a, b] = graph.stages.filter((s) => s.segment === 1);
      const events: string[] = [];
      model.on('decision', (e) => events.push(`decision ${e.frame} ${e.plan.label}`));
      model.on('stage', (e) => events.push(`stage ${e.frame} ${e.stage} ${e.where}`));
      model.on('frame', (e) => events.push(`frame ${e.frame}`));
      const r = await model.run(ref.frame(), { plan: { placements: { [a.name]: 'remote' } } });
      assert.ok(maxError(r, ref) <= TOLERANCE);
      const remote = r.stages.find((s) => s.stage === a.name)!;
      const local = r.stages.find((s) => s.stage === b.name)!;
      assert.equal(remote.where, 'remote');
      assert.ok(remote.ms >= 200, `the remote branch's round trip crosses the 100 ms link twice: ${remote.ms} ms`);
      assert.ok(
        local.startMs < remote.startMs + remote.ms && local.startMs + local.ms < remote.startMs + remote.ms,
        `local ${b.name} ran ${local.startMs}+${local.ms} ms, within remote ${a.name} ${remote.startMs}+${remote.ms} ms`,
      );
      dispose(r);
      assert.equal(events[0], 'decision 0 custom');
      assert.equal(events[events.length - 1], 'frame 0');
      assert.deepEqual(
        events.filter((e) => e.startsWith('stage')).sort(),
        graph.stages.map((s) => `stage 0 ${s.name} ${s.name === a.name ? 'remote' : 'local'}`).sort(),
      );
    });
  });

  describe('auto policy over a shaped link', () => {
    it('offloads on a fast link, keeps frames local on a slow one, and offloads again when the link recovers', async () => {
      const graph = SplitGraph.read(await splitFixture('mobilenet_v2'));
      const ref = reference(graph);
      const { server, port } = await serve(graph.file(graph.manifest.repository));
      cleanup.push(() => server.close(1000));
      await using link = await ShapedLink.open({ target: { host: HOST, port } });
      await using model = await SplitModel.load(graph.dir, { server: `${HOST}:${link.port}`, probeIntervalMs: 200 });
      const run = async (frames: number) => {
        const plans: string[] = [];
        async function* inputs() {
          for (let i = 0; i < frames; i++) yield ref.frame();
        }
        for await (const r of model.stream(inputs(), { maxInFlight: 2 })) {
          const allowed = graph.encodingError(r.plan.split ?? graph.segments, r.plan.encoding) * 1.5 + TOLERANCE;
          assert.ok(maxError(r, ref) <= allowed, `frame ${r.frame} (${r.plan.label}): error ${maxError(r, ref)}`);
          plans.push(r.plan.label);
          dispose(r);
        }
        return plans;
      };
      const fast = await run(12);
      assert.ok(
        fast.slice(-4).every((p) => p !== 'local'),
        `fast link: ${fast.join(' ')} (${JSON.stringify(model.policy.estimates)})`,
      );
      link.setProfile({ bandwidth: 1e6, latencyMs: 40 });
      const slow = await run(16);
      assert.ok(
        slow.slice(-4).every((p) => p === 'local'),
        `slow link: ${slow.join(' ')} (${JSON.stringify(model.policy.estimates)})`,
      );
      link.setProfile({ bandwidth: Number.POSITIVE_INFINITY, latencyMs: 0 });
      const recovered = await run(30);
      assert.ok(
        recovered.slice(-4).every((p) => p !== 'local'),
        `recovered link: ${recovered.join(' ')} (${JSON.stringify(model.policy.estimates)})`,
      );
    });
  });
});
