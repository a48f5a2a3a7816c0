/**
 * The `transfer` group: how fast tensors move between a tvm-node client and server, on
 * loopback, against a raw socket moving the same bytes in the same run. tvm-node's server is
 * the `rpc-server --inference-only` CLI in a child process; the raw socket's echo server is
 * a child process too (./transfer-procs.ts); every client runs in the bench process.
 *
 * - throughput, per size: `session.infer('addone', [x])` (the inference channel,
 *   lib/rpc/channel.ts) vs a raw socket request and reply of the same bytes; TVM's C++
 *   transport (`f.call` of tvm_node.infer, the path before the channel) vs the channel; the
 *   stock Python client (tvm_node.infer with pack/unpack) vs the raw socket.
 * - head-of-line: mlp latency on session B while session A (another process) moves a large
 *   addone request, vs with A idle.
 * - server memory: peak RSS growth of the server process serving one large addone request,
 *   vs the request's tensor bytes (input + output).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connect, type RemoteFunction, type RPCSession, readNpy } from '../../lib';
import { decodeTensors, encodeInputs, INFER_FUNCTION } from '../../lib/rpc/infer';
import { compare } from '../bench-models';
import { type Ctx, formatBytes, MiB } from '../context';
import { fixture, fixtureDir } from '../fixtures';
import { type Contender, makeCase, measure, sequential, sleep, stats, type Timed } from '../measure';
import { PythonPeer, RPC_HOST, withTimeout } from '../peers';
import { fmt } from '../report';
import type { BenchCase, TransferSettings } from '../types';
import { closeSession, hrNow, nsSince } from './rpc-client';
import { addoneInput, checkAddone, RawEchoClient, ServerProcess, TransferHelper, timedAddone } from './transfer-procs';

/** Bound on one request (a process start, a connect, one round of a case). */
const REQUEST_MS = 180000;
/** Idle time before each phase of the head-of-line and memory cases: the server frees the previous request's memory. */
const SETTLE_MS = 200;
/** The goal for the channel at 64 MiB, as a ratio of the raw socket's MB/s. */
const CHANNEL_GOAL = { bytes: 64 * MiB, goal: '>= 0.5 at 64 MiB (issue 10)' };
/** The goal for the server's peak RSS growth, as a multiple of the request's tensor bytes. */
const MEMORY_GOAL = 2.5;

/** The group's sizes and rounds: quick mode runs 1 and 16 MiB only (head-of-line and memory at 16 MiB). */
export function transferSettings(quick: boolean, rounds: number): TransferSettings {
  const large = quick ? 16 * MiB : 256 * MiB;
  return {
    sizes: quick ? [MiB, 16 * MiB] : [MiB, 16 * MiB, 64 * MiB, 256 * MiB],
    cppSizes: quick ? [MiB, 16 * MiB] : [MiB, 16 * MiB, 64 * MiB],
    pythonSizes: quick ? [16 * MiB] : [16 * MiB, 64 * MiB],
    bigRounds: Math.min(rounds, 5),
    bigBytes: 64 * MiB,
    headOfLineBytes: large,
    memoryBytes: large,
    checkedElements: 64,
    server:
      `\`tvm-node ${ServerProcess.ARGS.join(' ')} --models DIR\` (lib/cli.ts) in a child process, serving addone.so and mlp.so; ` +
      'every client (session.infer, f.call) in the bench process, the stock Python client in bench/rpc_peer.py',
    rawSocket:
      "Node's net on loopback, TCP_NODELAY: an echo server in a child process (bench/groups/transfer-procs.ts), its client in the bench " +
      "process; a request is an 8-byte length and N bytes written from the input's memory, copied once into a buffer by the server and " +
      "written back, copied once into the client's buffer: what session.infer's tensor streaming does with the same bytes",
  };
}

/** Everything the cases share: the server, the sessions and processes, what to undo. */
interface Rig {
  ctx: Ctx;
  s: TransferSettings;
  server: ServerProcess;
  helper: TransferHelper;
  raw: RawEchoClient;
  session: RPCSession;
  /** Undone in reverse order, each step bounded. */
  cleanup: Array<[string, () => Promise<unknown>]>;
}

export async function benchTransfer(ctx: Ctx): Promise<void> {
  const s = transferSettings(ctx.quick, ctx.rounds);
  ctx.transferGroup = s;
  const modelsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-bench-transfer-'));
  for (const m of ['addone', 'mlp']) fs.copyFileSync(fixture(m).path, path.join(modelsDir, `${m}.so`));
  const cleanup: Rig['cleanup'] = [];
  try {
    const server = await ServerProcess.start(modelsDir, REQUEST_MS);
    cleanup.push(['tvm-node rpc-server: stop', () => server.stop()]);
    const helper = new TransferHelper();
    cleanup.push(['helper process: close', () => helper.close()]);
    const { port: echoPort } = await helper.request({ op: 'echo-server' }, REQUEST_MS);
    const raw = await withTimeout(RawEchoClient.connect(echoPort), REQUEST_MS, 'connect to the echo server');
    cleanup.push(['raw socket: close', async () => raw.close()]);
    const session = await withTimeout(connect(RPC_HOST, server.port), REQUEST_MS, 'connect to the tvm-node server');
    cleanup.push(['session: close', () => closeSession(session)]);
    const rig: Rig = { ctx, s, server, helper, raw, session, cleanup };
    // Memory first, while the server has served nothing large.
    await serverMemory(rig);
    await throughput(rig);
    await headOfLine(rig);
  } catch (err) {
    ctx.log(`transfer: failed, cleaning up: ${(err as Error).message}`);
    throw err;
  } finally {
    // Bounded: a stuck process must not keep the run from reporting why it failed.
    for (const [what, f] of cleanup.reverse()) {
      await withTimeout(f(), 30000, `transfer cleanup: ${what}`).catch((err: Error) => ctx.log(`transfer: ${err.message}`));
    }
    fs.rmSync(modelsDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------
// Server memory

const mib = (bytes: number) => `${fmt(bytes / MiB)} MiB`;

/**
 * Peak RSS of the server process serving one addone request of `memoryBytes`, over its RSS
 * when idle (model loaded, session and channel open, nothing large served yet). Every round
 * is counted, the first (cold) one too; the peak is reset before each (clear_refs), so a
 * round's figure includes what earlier requests left cached but not their peaks.
 */
async function serverMemory({ ctx, s, server, session }: Rig): Promise<void> {
  const n = s.memoryBytes / 4;
  const tensorBytes = 2 * s.memoryBytes;
  await timedAddone(session, addoneInput(1024), s.checkedElements, 'session.infer (warm-up)');
  await sleep(SETTLE_MS);
  const idle = server.memory().rss;
  const x = addoneInput(n);
  ctx.log(`transfer: server memory, ${formatBytes(s.memoryBytes)} addone`);
  const growth: number[] = [];
  let reset = true;
  for (let r = 0; r < s.bigRounds; r++) {
    await sleep(SETTLE_MS);
    reset = server.resetPeak() && reset;
    await withTimeout(timedAddone(session, x, s.checkedElements, 'session.infer'), REQUEST_MS, `addone ${formatBytes(s.memoryBytes)}`);
    growth.push(server.memory().peak - idle);
  }
  const after = server.memory().rss;
  const subject: Timed = { name: `tvm-node server process: peak VmRSS while serving it - idle VmRSS`, opsPerRound: 1, perOp: growth };
  const peer: Timed = { name: "the request's tensor bytes (input + output)", opsPerRound: 1, perOp: growth.map(() => tensorBytes) };
  ctx.cases.push(
    makeCase('transfer', `server peak RSS growth serving one ${formatBytes(s.memoryBytes)} addone request vs its tensor bytes`, 'MiB', subject, peer, {
      bytes: tensorBytes,
      goal: `growth <= ${MEMORY_GOAL}x the tensor bytes, i.e. ratio >= ${fmt(1 / MEMORY_GOAL)}`,
      note:
        `growth / tensor bytes: median ${fmt(stats(growth).median / tensorBytes)}x, max ${fmt(Math.max(...growth) / tensorBytes)}x; ` +
        `idle server ${mib(idle)} (model loaded, session open), ${mib(after)} after the last round; session.infer from the bench process, ` +
        `first (cold) request included; VmHWM ${reset ? 'reset before each round (clear_refs)' : 'could not be reset: later rounds repeat the highest peak'}`,
    }),
  );
}

// ---------------------------------------------------------------------------------------
// Throughput

/** A contender timing `id` of the Python peer. */
function pythonContender(peer: PythonPeer, name: string, id: string): Contender {
  return { key: 'py', name, round: async (n) => (await peer.request({ op: 'time', id, n }, REQUEST_MS)).ns as number };
}

/** What the throughput contenders of every size share. */
interface Movers {
  rig: Rig;
  peer: PythonPeer;
  /** tvm_node.infer, looked up once: TVM's C++ transport. */
  inferFn: RemoteFunction;
}

/** Per size: the channel, the raw socket, TVM's C++ transport and the stock Python client, in the same rounds. */
async function throughput(rig: Rig): Promise<void> {
  const { ctx, s, session, cleanup } = rig;
  const peer = new PythonPeer('rpc_peer.py');
  cleanup.push(['Python peer: close', () => peer.close(10000)]);
  await peer.request({ op: 'connect', sess: 'py', port: rig.server.port }, REQUEST_MS);
  const inferFn = await withTimeout(session.getFunction(INFER_FUNCTION), REQUEST_MS, `getFunction ${INFER_FUNCTION}`);
  cleanup.push(['tvm_node.infer handle: dispose', () => inferFn.dispose()]);
  for (const bytes of s.sizes) {
    const contenders = await contendersFor({ rig, peer, inferFn }, bytes);
    const rounds = bytes >= s.bigBytes ? s.bigRounds : ctx.rounds;
    ctx.log(`transfer: ${formatBytes(bytes)}, ${contenders.map((c) => c.key).join(', ')}`);
    ctx.cases.push(...throughputCases(bytes, await measure(contenders, rounds, ctx.roundMs)));
  }
  await peer.request({ op: 'close', sess: 'py' }, REQUEST_MS);
}

/** The contenders moving `bytes` each way: raw, channel, and cpp / py at the sizes they run. */
async function contendersFor({ rig, peer, inferFn }: Movers, bytes: number): Promise<Contender[]> {
  const { ctx, s, session, raw } = rig;
  const check = s.checkedElements;
  const n = bytes / 4;
  const x = addoneInput(n);
  const data = Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  const into = Buffer.allocUnsafe(bytes);
  const contenders: Contender[] = [
    { key: 'raw', name: 'raw socket: write N bytes, read N bytes back (bench/groups/transfer-procs.ts)', round: sequential(() => raw.roundTrip(data, into)) },
    { key: 'channel', name: "session.infer('addone', [x]): inference channel", round: sequential(() => timedAddone(session, x, check, 'session.infer')) },
  ];
  if (s.cppSizes.includes(bytes)) {
    const viaCpp = async () => {
      const [y] = decodeTensors((await inferFn.call('addone', encodeInputs([{ data: x, shape: [n] }]))) as Buffer);
      checkAddone(y.data as Float32Array, x, check, "TVM's C++ transport");
    };
    contenders.push({ key: 'cpp', name: "decodeTensors(await f.call('addone', encodeInputs([x]))): TVM's C++ transport", round: sequential(viaCpp) });
  }
  if (s.pythonSizes.includes(bytes)) {
    const id = `addone-${bytes}`;
    await peer.request({ op: 'addone', id, sess: 'py', n, check }, REQUEST_MS);
    contenders.push(pythonContender(peer, `${ctx.pyName} client: unpack(r.get_function("tvm_node.infer")("addone", pack([x])))`, id));
  }
  return contenders;
}

/** The cases of one size, from its contenders' rounds. */
function throughputCases(bytes: number, t: Record<string, Timed>): BenchCase[] {
  const size = formatBytes(bytes);
  // Both directions: the request's tensor and the reply's, as large.
  const moved = 2 * bytes;
  const goal = bytes === CHANNEL_GOAL.bytes ? { goal: CHANNEL_GOAL.goal } : {};
  const cases = [
    makeCase('transfer', `addone ${size}: session.infer (inference channel) vs raw socket`, 'MB/s', t.channel, t.raw, {
      bytes: moved,
      ...goal,
      note: `MB/s counting both directions (${size} each way); server in a child process, clients in the bench process; output checked every inference, disposed`,
    }),
  ];
  if (t.cpp) {
    cases.push(
      makeCase('transfer', `addone ${size}: session.infer (inference channel) vs TVM's C++ transport (f.call)`, 'MB/s', t.channel, t.cpp, {
        bytes: moved,
        note: 'ratio = channel MB/s / C++ transport MB/s: the same session and server, tvm_node.infer looked up once; encodeInputs copies x into a TNI1 blob',
      }),
    );
  }
  if (t.py) {
    cases.push(
      makeCase('transfer', `addone ${size}: stock Python client (tvm_node.infer, pack/unpack) vs raw socket`, 'MB/s', t.py, t.raw, {
        bytes: moved,
        note: "TVM's own client and transport, unchanged (bench/rpc_peer.py, timed in Python); pack and unpack copy the tensors",
      }),
    );
  }
  return cases;
}

// ---------------------------------------------------------------------------------------
// Head-of-line

/** ns of each mlp inference of one phase, and A's request's ns when it ran. */
interface Phase {
  lat: number[];
  aNs?: number;
}

/** The two phases of a head-of-line round. */
interface Phases {
  /** B's inferences back to back while A's request is in flight. */
  busy: () => Promise<Phase>;
  /** `count` inferences of B with A idle. */
  idle: (count: number) => Promise<Phase>;
}

/**
 * mlp latency on session B (the bench process) while session A (the helper process, a
 * session of its own) moves one addone request of `headOfLineBytes`, vs B with A idle.
 */
async function headOfLine({ ctx, s, server, helper, cleanup }: Rig): Promise<void> {
  const mlp = fixture('mlp');
  const spec = mlp.cases[0];
  const x = readNpy(path.join(fixtureDir(), spec.inputs[0].file));
  const expected = readNpy(path.join(fixtureDir(), spec.outputs[0].file)).data as Float32Array;
  const input = [{ data: x.data, shape: x.shape }];
  const sessionB = await withTimeout(connect(RPC_HOST, server.port), REQUEST_MS, 'connect session B');
  cleanup.push(['session B: close', () => closeSession(sessionB)]);
  await helper.request({ op: 'connect', port: server.port }, REQUEST_MS);
  cleanup.push(['session A: close', () => helper.request({ op: 'disconnect' }, 30000)]);
  const inferB = async (): Promise<number> => {
    const t0 = hrNow();
    const [y] = await withTimeout(sessionB.infer('mlp', input), REQUEST_MS, 'session B: mlp');
    const ns = nsSince(t0);
    const c = compare(y.hostView() as Float32Array, expected, mlp.tolerance);
    y.disposeSync();
    if (!c.ok) throw new Error(`session B: mlp output differs from the reference (max |diff| ${c.maxAbsDiff})`);
    return ns;
  };
  const busy = async (): Promise<Phase> => {
    let done = false;
    // Settled into a value at once, so that a failure of A is reported here, not as an unhandled rejection.
    const a = helper.request({ op: 'addone', n: s.headOfLineBytes / 4, check: s.checkedElements }, REQUEST_MS).then(
      (r: { ns: number }) => r,
      (err: Error) => err,
    );
    void a.then(() => {
      done = true;
    });
    const lat: number[] = [];
    while (!done) lat.push(await inferB());
    const r = await a;
    if (r instanceof Error) throw r;
    return { lat, aNs: r.ns };
  };
  const idle = async (count: number): Promise<Phase> => {
    const lat: number[] = [];
    for (let i = 0; i < count; i++) lat.push(await inferB());
    return { lat };
  };
  const size = formatBytes(s.headOfLineBytes);
  ctx.log(`transfer: head-of-line, ${size} on session A`);
  const runs = await headOfLineRounds({ busy, idle }, s.bigRounds);
  ctx.cases.push(...headOfLineCases(size, runs));
}

/**
 * One warm-up round, then `rounds` rounds of both phases, busy first on even rounds, idle
 * first on odd ones; an idle phase runs as many inferences as the latest busy phase did.
 */
async function headOfLineRounds(phases: Phases, rounds: number): Promise<{ busy: Phase[]; idle: Phase[] }> {
  const busy: Phase[] = [];
  const idle: Phase[] = [];
  for (let r = -1; r < rounds; r++) {
    const busyFirst = r < 0 || r % 2 === 0;
    const pair: Phase[] = [];
    for (const phase of busyFirst ? ['busy', 'idle'] : ['idle', 'busy']) {
      await sleep(SETTLE_MS);
      const count = (pair[0] ?? busy[busy.length - 1])?.lat.length ?? 1;
      pair.push(phase === 'busy' ? await phases.busy() : await phases.idle(count));
    }
    if (r < 0) continue; // warm-up
    busy.push(busyFirst ? pair[0] : pair[1]);
    idle.push(busyFirst ? pair[1] : pair[0]);
  }
  return { busy, idle };
}

/** The p50 and max cases: per round, the p50 (max) of B's latencies in each phase. */
function headOfLineCases(size: string, runs: { busy: Phase[]; idle: Phase[] }): BenchCase[] {
  const counts = runs.busy.map((p) => p.lat.length);
  const ops = Math.max(1, Math.round(stats(counts).median));
  const timed = (phases: Phase[], name: string, f: (lat: number[]) => number): Timed => ({ name, opsPerRound: ops, perOp: phases.map((p) => f(p.lat)) });
  const p50 = (lat: number[]) => stats(lat).median;
  const max = (lat: number[]) => Math.max(...lat);
  const aMs = stats(runs.busy.map((p) => p.aNs! / 1e6)).median;
  const busyName = `session B: session.infer('mlp') while session A (another process) moves ${size} through addone`;
  const idleName = "session B: session.infer('mlp') with session A connected, idle";
  const note =
    `ratio = idle / busy latency (1: no head-of-line blocking); per round: B's inferences back to back during A's request ` +
    `(median ${ops} of them, A's request median ${fmt(aMs)} ms), then as many with A idle (order alternating); ` +
    `three processes (server, A, bench) on ${os.availableParallelism()} cores`;
  const name = (what: string) => `mlp ${what} latency on session B while session A moves ${size} vs A idle`;
  return [
    makeCase('transfer', name('p50'), 'us/run', timed(runs.busy, busyName, p50), timed(runs.idle, idleName, p50), { note }),
    makeCase('transfer', name('max'), 'us/run', timed(runs.busy, busyName, max), timed(runs.idle, idleName, max), {
      note: "the slowest of the round's inferences on each side; as above",
    }),
  ];
}
