/**
 * The `http` group: `tvm-node serve` (lib/serve/server.ts, {@link InferenceServer}) under
 * closed-loop load, one server in the bench process serving the `mlp` and `addone` fixtures
 * over all its front ends, the clients in a load-generator process of their own
 * (./http-client.ts). Per target and concurrency (1, 8, 32 requests in flight), each round
 * times every protocol once, in rotating order: KServe v2 HTTP with JSON tensors, the same with
 * Triton's binary-tensor extension, KServe v2 gRPC (`raw_input_contents`) and TVM RPC
 * (`session.infer`). Cases: throughput and latency p50/p99 of each KServe protocol against TVM
 * RPC, and of binary against JSON, in the same rounds; the group's settings also carry each
 * protocol's figures and the server's event-loop delay (perf_hooks.monitorEventLoopDelay)
 * while it served them.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { InferenceServer } from '../../lib/serve/server';
import { type Ctx, formatBytes, KiB } from '../context';
import { fixture, fixtureDir } from '../fixtures';
import { makeCase, stats, type Timed } from '../measure';
import { RPC_HOST, withTimeout } from '../peers';
import type { HttpLevel, HttpProtocol, HttpSettings } from '../types';
import { LoadGenerator, type Ports, PROTOCOLS, RPC_MAX_SESSIONS, type RunResult, type Target } from './http-client';

/** Bound on one request to the load generator (a setup, a verification, one round). */
const REQUEST_MS = 180000;

const NAMES: Record<HttpProtocol, string> = {
  json: 'HTTP JSON',
  binary: 'HTTP binary',
  grpc: 'gRPC',
  rpc: 'TVM RPC',
};

/** The large target's elements: 1 MiB of float32 each way (quick: 256 KiB), pseudo-random values (./http-client.ts randomInput). */
const bigElements = (quick: boolean) => (quick ? 64 * KiB : 256 * KiB);

function targetsOf(quick: boolean): { timed: Target[]; verifyOnly: Target[] } {
  const dir = fixtureDir();
  const mlp = fixture('mlp');
  const addone = fixture('addone');
  const n = bigElements(quick);
  const ref = (name: string, k = 0) => {
    const c = fixture(name).cases[k];
    return { input: { file: path.join(dir, c.inputs[0].file) }, expect: { file: path.join(dir, c.outputs[0].file), tolerance: fixture(name).tolerance } };
  };
  const n1000 = addone.cases.findIndex((c) => c.name === 'n1000');
  if (n1000 < 0) throw new Error('http: the addone fixture has no n1000 case');
  return {
    timed: [
      { key: 'mlp', model: 'mlp', inputName: 'x', outputName: 'output0', shape: mlp.cases[0].inputs[0].shape as number[], ...ref('mlp') },
      { key: `addone-${n}`, model: 'addone', inputName: 'x', outputName: 'y', shape: [n], input: { addone: n }, expect: { addone: true } },
    ],
    // The large addone input has no .npy reference (its answer, Math.fround(x + 1), is checked in full): the fixture's
    // n1000 case is checked too, against its .npy.
    verifyOnly: [{ key: 'addone-n1000', model: 'addone', inputName: 'x', outputName: 'y', shape: [1000], ...ref('addone', n1000) }],
  };
}

export function httpSettings(quick: boolean): Omit<HttpSettings, 'targets' | 'verified' | 'results'> {
  return {
    server:
      'one `new InferenceServer({ modelsDir, host: 127.0.0.1, http: 0, grpc: 0, rpc: 0, idleTimeoutMs: 120000 })` ' +
      '(lib/serve/server.ts; otherwise its defaults: maxInFlight 64, one VM per core per model) in the bench process, ' +
      'serving mlp.so and addone.so with their manifests; every client in one load-generator process (bench/groups/http-client.ts)',
    clients: {
      json: 'node:http POST /v2/models/M/infer, keep-alive agent (a socket per worker), JSON body built once, every answer JSON.parse-d',
      binary:
        'the same with `Inference-Header-Content-Length` and the raw input after the JSON (`binary_data_size`), the output asked for ' +
        'with `binary_data: true`; answer split at its header length',
      grpc:
        '@grpc/grpc-js ModelInfer with `raw_input_contents` (proto/grpc_predict_v2.proto through @grpc/proto-loader), one channel: ' +
        'the workers are streams on one HTTP/2 connection',
      rpc: `tvm-node connect() + session.infer on the server's TVM RPC port (inference channel), a session per worker up to ${RPC_MAX_SESSIONS}, then shared (pipelined)`,
    },
    concurrency: [1, 8, 32],
    roundMs: quick ? 100 : 500,
    minRequestsPerWorker: quick ? 1 : 2,
    rpcMaxSessions: RPC_MAX_SESSIONS,
    eventLoop:
      "perf_hooks.monitorEventLoopDelay({ resolution: 1 }) in the server's process, enabled for each timed round only; " +
      'p99 as the median over rounds, max as the largest of any round',
  };
}

/** One contender's timed rounds: the generator's figures, and the server's while it served them. */
interface Round {
  r: RunResult;
  serverEldP99Ns: number;
  serverEldMaxNs: number;
  serverCpuNs: number;
}

/** One round of `protocol`: n requests, c in flight, with the server process's event-loop delay and CPU time around it. */
async function timedRound(gen: LoadGenerator, key: string, protocol: HttpProtocol, c: number, n: number): Promise<Round> {
  const eld = monitorEventLoopDelay({ resolution: 1 });
  const cpu0 = process.cpuUsage();
  eld.enable();
  const r = await gen.run(key, protocol, c, n, REQUEST_MS);
  eld.disable();
  const cpu = process.cpuUsage(cpu0);
  return { r, serverEldP99Ns: eld.percentile(99), serverEldMaxNs: eld.max, serverCpuNs: (cpu.user + cpu.system) * 1e3 };
}

/**
 * Calibrates each protocol once (a run of `minRequestsPerWorker x c` requests, also its warm-up)
 * to ~roundMs per round, then runs the rounds, every protocol once per round in an order that
 * rotates from round to round.
 */
async function measureLoad(ctx: Ctx, s: ReturnType<typeof httpSettings>, gen: LoadGenerator, key: string, c: number) {
  const minOps = c * s.minRequestsPerWorker;
  const ops: Record<string, number> = {};
  for (const p of PROTOCOLS) {
    const warm = await gen.run(key, p, c, 2 * minOps, REQUEST_MS);
    ops[p] = Math.max(minOps, Math.round((s.roundMs * 1e6 * warm.n) / warm.wallNs));
  }
  const rounds: Record<string, Round[]> = Object.fromEntries(PROTOCOLS.map((p) => [p, []]));
  for (let i = 0; i < ctx.rounds; i++) {
    for (let j = 0; j < PROTOCOLS.length; j++) {
      const p = PROTOCOLS[(i + j) % PROTOCOLS.length];
      rounds[p].push(await timedRound(gen, key, p, c, ops[p]));
    }
  }
  return { ops, rounds: rounds as Record<HttpProtocol, Round[]> };
}

const median = (xs: number[]) => stats(xs).median;

export async function benchHttp(ctx: Ctx): Promise<void> {
  const s = httpSettings(ctx.quick);
  const { timed, verifyOnly } = targetsOf(ctx.quick);
  const modelsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-bench-http-'));
  for (const m of ['mlp', 'addone']) {
    fs.copyFileSync(fixture(m).path, path.join(modelsDir, `${m}.so`));
    fs.copyFileSync(path.join(fixtureDir(), `${m}.json`), path.join(modelsDir, `${m}.json`));
  }
  const settings: HttpSettings = { ...s, targets: [], verified: [], results: [] };
  ctx.httpGroup = settings;
  /** Undone in reverse order, each step bounded. */
  const cleanup: Array<[string, () => Promise<unknown>]> = [];
  try {
    const server = new InferenceServer({ modelsDir, host: RPC_HOST, http: 0, grpc: 0, rpc: 0, idleTimeoutMs: 120_000 });
    const listening = await withTimeout(server.listen(), REQUEST_MS, 'InferenceServer.listen');
    cleanup.push(['InferenceServer: close()', () => server.close(5000)]);
    const ports = listening as Ports;
    for (const k of ['http', 'grpc', 'rpc'] as const) if (!ports[k]) throw new Error(`http: the server has no ${k} port (${JSON.stringify(listening)})`);
    let gen = new LoadGenerator();
    cleanup.push(['load generator: close', () => gen.close()]);
    const start = async () => {
      await gen.ready(REQUEST_MS);
      return gen.setup(ports, [...timed, ...verifyOnly], REQUEST_MS);
    };
    const infos = await start();
    for (const t of timed) {
      const info = infos.find((x) => x.key === t.key)!;
      settings.targets.push({
        key: t.key,
        model: t.model,
        shape: t.shape,
        requestBytes: info.requestBytes,
        responseBytes: info.responseBytes,
        tensorBytes: info.tensorBytes,
      });
    }
    // Every protocol's answer, checked in full against the reference before anything is timed.
    for (const t of [...timed, ...verifyOnly]) {
      for (const p of PROTOCOLS) {
        const v = await gen.verify(t.key, p, REQUEST_MS);
        const reference = 'file' in t.expect ? path.basename(t.expect.file) : 'Math.fround(x + 1)';
        settings.verified.push({ key: t.key, reference, protocol: p, elements: v.elements, maxAbsDiff: v.maxAbsDiff });
      }
    }
    await gen.reset(REQUEST_MS);

    for (const t of timed) {
      const what = `${t.key === 'mlp' ? 'mlp' : 'addone'} [${t.shape.join(',')}]${t.key === 'mlp' ? '' : ` (${formatBytes(t.shape[0] * 4)} each way)`}`;
      for (const c of s.concurrency) {
        ctx.log(`http: ${what}, ${c} in flight`);
        let m: Awaited<ReturnType<typeof measureLoad>>;
        try {
          m = await measureLoad(ctx, s, gen, t.key, c);
          await gen.reset(REQUEST_MS);
        } catch (err) {
          // A failed level is reported as skipped; the generator is started afresh for the next.
          const why = (err as Error).message.split('\n')[0].replace(/\|/g, '/');
          ctx.log(`http: ${what}, ${c} in flight failed: ${why}`);
          ctx.skipped.push({ group: 'http', name: `${what}, ${c} in flight`, skipped: `a round failed: ${why}` });
          await gen.close();
          gen = new LoadGenerator();
          await start();
          continue;
        }
        const timedOf = (p: HttpProtocol, f: (x: Round) => number, label: string): Timed => ({
          name: `${NAMES[p]} ${label}`,
          opsPerRound: m.ops[p],
          perOp: m.rounds[p].map(f),
        });
        const tput = (p: HttpProtocol) => timedOf(p, (x) => x.r.wallNs / x.r.n, `(${c} in flight)`);
        const p50 = (p: HttpProtocol) => timedOf(p, (x) => x.r.p50Ns, 'p50');
        const p99 = (p: HttpProtocol) => timedOf(p, (x) => x.r.p99Ns, 'p99');
        const at = `${what}, ${c} in flight`;
        const note = (p: HttpProtocol, q: HttpProtocol) =>
          `closed loop, one load-generator process; p50/p99 of each round's requests, median over rounds; ${NAMES[q]} measured in the same rounds as ${NAMES[p]}`;
        const pairs: Array<[HttpProtocol, HttpProtocol]> = [
          ['json', 'rpc'],
          ['binary', 'rpc'],
          ['grpc', 'rpc'],
          ['binary', 'json'],
        ];
        for (const [p, q] of pairs) {
          const vs = `${NAMES[p]} vs ${NAMES[q]}`;
          ctx.cases.push(
            makeCase('http', `${at}: ${vs}, requests/s`, 'infer/s', tput(p), tput(q), { note: note(p, q) }),
            makeCase('http', `${at}: ${vs}, latency p50`, 'us', p50(p), p50(q)),
            makeCase('http', `${at}: ${vs}, latency p99`, 'us', p99(p), p99(q)),
          );
        }
        for (const p of PROTOCOLS) {
          const rs = m.rounds[p];
          const level: HttpLevel = {
            target: t.key,
            protocol: p,
            concurrency: c,
            requestsPerRound: m.ops[p],
            p50Us: median(rs.map((x) => x.r.p50Ns)) / 1e3,
            p99Us: median(rs.map((x) => x.r.p99Ns)) / 1e3,
            requestsPerS: median(rs.map((x) => (x.r.n * 1e9) / x.r.wallNs)),
            serverEldP99Ms: median(rs.map((x) => x.serverEldP99Ns)) / 1e6,
            serverEldMaxMs: Math.max(...rs.map((x) => x.serverEldMaxNs)) / 1e6,
            serverCpuPct: median(rs.map((x) => (100 * x.serverCpuNs) / x.r.wallNs)),
            clientCpuPct: median(rs.map((x) => (100 * x.r.cpuNs) / x.r.wallNs)),
            clientEldP99Ms: median(rs.map((x) => x.r.eldP99Ns)) / 1e6,
          };
          settings.results.push(level);
        }
      }
    }
  } catch (err) {
    ctx.log(`http: failed, cleaning up: ${(err as Error).message}`);
    throw err;
  } finally {
    for (const [what, f] of cleanup.reverse()) {
      await withTimeout(f(), 30000, `http cleanup: ${what}`).catch((err: Error) => ctx.log(`http: ${err.message}`));
    }
    fs.rmSync(modelsDir, { recursive: true, force: true });
  }
}
