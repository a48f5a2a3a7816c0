/**
 * The `rpc` group: on loopback, tvm-node's RPC server + client (lib/rpc) vs TVM's Python
 * server + the stock Python client (bench/rpc_peer.py): upload throughput, per-inference
 * latency on an open session, connect and connect-to-first-result latency, and inferences/s
 * with concurrent clients, each a process of its own (see ./rpc-client.ts).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connect, outputsOf, RPCServer, readNpy, type Tensor, VirtualMachine } from '../../lib';
import { decodeTensors, encodeInputs, INFER_FUNCTION } from '../../lib/rpc/infer';
import { type Ctx, formatBytes, MiB } from '../context';
import { fixture, fixtureDir, repoRoot } from '../fixtures';
import { type Contender, makeCase, makeCases, measure, type RoundFn, sequential, sleep, stats, type Timed } from '../measure';
import { PythonPeer, RPC_HOST, TvmRpcServer, withTimeout } from '../peers';
import { fmt } from '../report';
import type { RpcSettings } from '../types';
import { type ClientJob, type ClientTimes, checkAgainst, closeSession, hrNow, NodeRpcClient, nsSince, RPC_CONNECT_ATTEMPTS, RPC_RETRY_MS } from './rpc-client';

/** Bound on one request to a peer or client process outside the concurrency rounds. */
const RPC_REQUEST_MS = 180000;

/** Waits until the server has no session left (their processes have exited). */
async function waitIdle(server: RPCServer, timeoutMs: number): Promise<void> {
  const t0 = Date.now();
  while (server.activeSessions > 0) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`tvm-node server still has ${server.activeSessions} session(s) after ${timeoutMs} ms`);
    await sleep(5);
  }
}

export function rpcSettings(quick: boolean): RpcSettings {
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
      "TVM's `python -m tvm.exec.rpc_server --host 127.0.0.1` (tvm/.venv): one session at a time, each in a forked process, " +
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

export async function benchRpc(ctx: Ctx): Promise<void> {
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
      const inferOnce = async () => (await session.infer(name, hostInput)).forEach((t) => t.disposeSync());
      const inferOnceInf = async () => (await infSession.infer(name, hostInput)).forEach((t) => t.disposeSync());
      const [yInf] = await withTimeout(infSession.infer(name, hostInput), T, `inference-only infer ${name}`);
      checkAgainst(yInf.toFloat32ArraySync(), expect, tolerance, `${name}: session.infer, inference-only server`);
      // Diagnostic: tvm_node.infer through a function handle looked up once (session.infer looks it up on every call).
      const inferFn = await withTimeout(session.getFunction(INFER_FUNCTION), T, 'getFunction');
      const cachedOnce = async () => decodeTensors((await inferFn.call(name, encodeInputs(hostInput))) as Buffer);
      checkAgainst((await withTimeout(cachedOnce(), T, 'cached infer'))[0].data as Float32Array, expect, tolerance, `${name}: cached tvm_node.infer`);
      const [y] = await withTimeout(session.infer(name, hostInput), T, `infer ${name}`);
      checkAgainst(y.toFloat32ArraySync(), expect, tolerance, `${name}: session.infer`);
      y.disposeSync();
      // The multi-round-trip path on tvm-node's server: the module uploaded and loaded once.
      await withTimeout(session.upload(fx.path), T, `upload ${fx.file}`);
      const mod = await withTimeout(session.loadModule(fx.file), T, `load ${fx.file}`);
      const vm = new VirtualMachine(mod, { devices: [session.cpu()], concurrency: 1 });
      const fn = fx.function ?? 'main';
      const multiOnce = async (): Promise<ArrayLike<number>> => {
        const xr = await session.tensor(x.data, { shape: x.shape, dtype: x.dtype });
        const outs = outputsOf<Tensor>(await vm.run(fn, xr));
        const host = await outs[0].toArray();
        outs.forEach((o) => o.disposeSync());
        xr.disposeSync();
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
          { key: 'multi', name: `${OURS}: session.tensor(x), vm.run over the remote module, toArray()`, round: sequential(multiOnce) },
          {
            key: 'cached',
            name: `${OURS}: decodeTensors(await f.call('${name}', encodeInputs([x]))), f = tvm_node.infer looked up once`,
            round: sequential(cachedOnce),
          },
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
            'open session, model already loaded on the server; µs per inference, host input to host output. session.infer ' +
              'sends inputs and gets outputs in one tvm_node.infer call, but looks the function up first: 2 round trips',
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
          [`${what}: tvm-node client + server, infer vs multi-round-trip`, t.node, t.multi, 'diagnostic: what one round trip saves, same client, same server'],
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
      mod.disposeSync();
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
          if (first) checkAgainst(outs[0].toFloat32ArraySync(), cio.expect, cio.tolerance, `${cm}: first session.infer`);
          outs.forEach((o) => o.disposeSync());
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
        [
          "connect: tvm-node server + client vs TVM's Python server + client",
          tc.node,
          tc.py,
          `handshake to a session ready for requests (tvm-node: a Node process start per session); ${settleMs} ms idle after each close, untimed`,
        ],
        ["connect, Python client: tvm-node server vs TVM's Python server", tc.pyOurs, tc.py, 'diagnostic: the same stock client on both, so the server alone'],
        [
          "connect: tvm-node inference-only server + client vs TVM's Python server + client",
          tc.inf,
          tc.py,
          'inference-only sessions are served in the server process: no process start',
        ],
        [
          "connect, Python client: tvm-node inference-only server vs TVM's Python server",
          tc.pyInf,
          tc.py,
          'diagnostic: the same stock client on both, so the server alone',
        ],
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
