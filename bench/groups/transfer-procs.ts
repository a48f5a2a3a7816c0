/**
 * The processes of the transfer group (./transfer.ts), so that every transfer it times
 * crosses a process boundary, as it does for a real client:
 *
 * - {@link ServerProcess}: tvm-node's `rpc-server --inference-only` CLI (lib/cli.ts) in a
 *   child process, whose RSS and peak RSS are read from /proc.
 * - {@link TransferHelper}: this file, forked with {@link TRANSFER_HELPER_FLAG}: the raw
 *   socket baseline's echo server, and "session A" of the head-of-line cases (a tvm-node
 *   client moving a large addone request while the bench process times session B).
 * - {@link RawEchoClient}: the baseline's client, in the bench process like tvm-node's.
 *
 * Plus the addone input and its check, shared by both sides.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { connect, type RPCSession } from '../../lib';
import { repoRoot } from '../fixtures';
import { JobProcess, serveJobs } from '../job-process';
import { RPC_HOST, withTimeout } from '../peers';
import { closeSession, hrNow, nsSince } from './rpc-client';

/** argv flag that makes this file the transfer group's helper process. */
export const TRANSFER_HELPER_FLAG = '--transfer-helper';

// ---------------------------------------------------------------------------------------
// The addone input and its check

/** x of the addone cases, float32[n]: every x[i] and x[i] + 1 exact in float32, varied enough to catch misplaced bytes. */
export function addoneInput(n: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (i % 4093) * 0.5;
  return x;
}

/** Throws unless `y` is as long as `x` and y[i] === Math.fround(x[i] + 1) at `count` indices spread over it (first and last included). */
export function checkAddone(y: ArrayLike<number>, x: Float32Array, count: number, who: string): void {
  if (y.length !== x.length) throw new Error(`${who}: addone returned ${y.length} elements for ${x.length}`);
  for (let k = 0; k < count; k++) {
    const i = count === 1 ? 0 : Math.round((k * (x.length - 1)) / (count - 1));
    const want = Math.fround(x[i] + 1);
    if (y[i] !== want) throw new Error(`${who}: addone y[${i}] = ${y[i]}, expected ${want}`);
  }
}

/** One inference of addone on `session`, output checked and disposed; resolves with its ns. */
export async function timedAddone(session: RPCSession, x: Float32Array, check: number, who: string): Promise<number> {
  const t0 = hrNow();
  const [y] = await session.infer('addone', [{ data: x, shape: [x.length] }]);
  const ns = nsSince(t0);
  try {
    checkAddone(y.hostView() as Float32Array, x, check, who);
  } finally {
    y.disposeSync();
  }
  return ns;
}

// ---------------------------------------------------------------------------------------
// The raw socket baseline: a request of N bytes, echoed back

/** The echo protocol: a request is an 8-byte little-endian length, then that many bytes; the reply is as many bytes. */
const HEADER_BYTES = 8;

/**
 * Serves the echo protocol on loopback. Each request's bytes are copied once into a buffer
 * of their size (kept for the next request of that size), which is then written back: the
 * least any server must do to hold a request's bytes and return as many.
 */
function startEchoServer(): Promise<number> {
  const server = net.createServer({ noDelay: true }, (socket) => {
    let header = Buffer.alloc(0);
    let kept: Buffer | undefined;
    let into: Buffer | undefined;
    let at = 0;
    socket.on('data', (chunk: Buffer) => {
      while (chunk.length > 0) {
        if (!into) {
          const need = HEADER_BYTES - header.length;
          header = Buffer.concat([header, chunk.subarray(0, need)]);
          chunk = chunk.subarray(need);
          if (header.length < HEADER_BYTES) return;
          const n = Number(header.readBigUInt64LE(0));
          if (kept?.length !== n) kept = Buffer.allocUnsafe(n);
          into = kept;
          at = 0;
        }
        const take = Math.min(chunk.length, into.length - at);
        chunk.copy(into, at, 0, take);
        at += take;
        chunk = chunk.subarray(take);
        if (at === into.length) {
          // The client sends its next request only once this reply has arrived, so `kept` is free again by then.
          socket.write(into);
          into = undefined;
          header = Buffer.alloc(0);
        }
      }
    });
    socket.on('error', () => socket.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, RPC_HOST, () => resolve((server.address() as net.AddressInfo).port));
  });
}

/** The baseline's client: one request in flight, its reply copied into a buffer of the caller's. */
export class RawEchoClient {
  private into?: { buffer: Buffer; at: number; resolve: () => void; reject: (e: Error) => void };
  private failure?: Error;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      const r = this.into;
      if (!r || r.at + chunk.length > r.buffer.length) return void socket.destroy(new Error('raw echo: more bytes than were sent'));
      chunk.copy(r.buffer, r.at);
      r.at += chunk.length;
      if (r.at === r.buffer.length) {
        this.into = undefined;
        r.resolve();
      }
    });
    const fail = (err: Error) => {
      this.failure ??= err;
      this.into?.reject(this.failure);
      this.into = undefined;
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('raw echo: the server closed the connection')));
  }

  static async connect(port: number): Promise<RawEchoClient> {
    const socket = net.connect({ host: RPC_HOST, port, noDelay: true });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawEchoClient(socket);
  }

  /** Sends `data` (no copy) and resolves once as many bytes are back in `into`. */
  roundTrip(data: Buffer, into: Buffer): Promise<void> {
    if (into.length !== data.length) throw new Error('raw echo: the reply buffer must be as long as the request');
    if (this.failure) return Promise.reject(this.failure);
    const header = Buffer.alloc(HEADER_BYTES);
    header.writeBigUInt64LE(BigInt(data.length));
    const done = new Promise<void>((resolve, reject) => {
      this.into = { buffer: into, at: 0, resolve, reject };
    });
    this.socket.write(header);
    this.socket.write(data);
    return done;
  }

  close(): void {
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------------------------------
// The helper process: echo server and session A

/** A request to the helper process; each gets one reply. */
export type HelperRequest = { op: 'echo-server' } | { op: 'connect'; port: number } | { op: 'addone'; n: number; check: number } | { op: 'disconnect' };

/** Entry of the helper process (`transfer-procs.ts --transfer-helper`, forked by {@link TransferHelper}). */
function helperProcess(): void {
  let session: RPCSession | undefined;
  let x: Float32Array | undefined;
  const handle = async (req: HelperRequest): Promise<Record<string, unknown>> => {
    switch (req.op) {
      case 'echo-server':
        return { port: await startEchoServer() };
      case 'connect':
        session = await connect(RPC_HOST, req.port);
        await timedAddone(session, addoneInput(1024), 1024, 'session A'); // opens its channel, loads the model
        return {};
      case 'addone':
        if (!session) throw new Error('session A is not connected');
        if (x?.length !== req.n) x = addoneInput(req.n);
        return { ns: await timedAddone(session, x, req.check, 'session A') };
      case 'disconnect':
        if (session) await closeSession(session);
        session = undefined;
        return {};
    }
  };
  serveJobs(handle);
}

/** The helper process (this file, forked), one request at a time. */
export class TransferHelper {
  private readonly proc = new JobProcess<HelperRequest, any>(__filename, TRANSFER_HELPER_FLAG, 'transfer helper process');

  /** Sends a request once the process is up; a late reply kills it and rejects. */
  request(req: HelperRequest, timeoutMs: number): Promise<any> {
    return this.proc.request(req, timeoutMs, req.op);
  }

  close(): Promise<void> {
    return this.proc.close();
  }
}

// ---------------------------------------------------------------------------------------
// tvm-node's server, as a user starts it

/** Resident and peak resident memory of a process (/proc/<pid>/status VmRSS and VmHWM), bytes. */
export interface Rss {
  rss: number;
  peak: number;
}

/** `tvm-node rpc-server --inference-only` (lib/cli.ts) in a child process, on a free loopback port. */
export class ServerProcess {
  private constructor(
    private readonly proc: ChildProcess,
    readonly port: number,
    private readonly logTail: () => string,
  ) {}

  /** The command line it runs, for the report. */
  static readonly ARGS = ['rpc-server', '--inference-only', '--host', RPC_HOST, '--port', '0', '--idle-timeout', '600', '--shutdown-deadline', '2'];

  /**
   * Starts the CLI serving `modelsDir`; resolves once it listens. `opts.prefix` runs it under
   * another command (e.g. `taskset -c 1`), `opts.env` adds to its environment.
   */
  static async start(modelsDir: string, timeoutMs: number, opts: { prefix?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<ServerProcess> {
    // Node itself with tsx's hook (not the tsx command, which runs a second process): the child's pid is the server's.
    const ts = !__filename.endsWith('.js');
    const cli = path.join(__dirname, '..', '..', 'lib', ts ? 'cli.ts' : 'cli.js');
    const args = [...(ts ? ['--require', 'tsx/cjs'] : []), cli, ...ServerProcess.ARGS, '--models', modelsDir];
    const [cmd, ...rest] = [...(opts.prefix ?? []), process.execPath, ...args];
    const proc = spawn(cmd, rest, { cwd: repoRoot, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    const port = await withTimeout(
      new Promise<number>((resolve, reject) => {
        // Keep draining its log (a line per session): a full pipe would stall the server.
        const onData = (chunk: Buffer) => {
          log = (log + chunk.toString()).slice(-8000);
          const m = /listening on [^\s]+:(\d+)/.exec(log);
          if (m) resolve(Number(m[1]));
        };
        proc.stdout!.on('data', onData);
        proc.stderr!.on('data', onData);
        proc.once('exit', (code, signal) => reject(new Error(`tvm-node rpc-server exited (${signal ?? code}) before listening:\n${log}`)));
        proc.once('error', reject);
      }),
      timeoutMs,
      'tvm-node rpc-server to listen',
    ).catch((err) => {
      proc.kill('SIGKILL');
      throw err;
    });
    // Not left behind if the bench exits without its cleanup (the server would outlive it, serving).
    const kill = () => proc.kill('SIGKILL');
    process.once('exit', kill);
    proc.once('exit', () => process.off('exit', kill));
    return new ServerProcess(proc, port, () => log);
  }

  get pid(): number {
    return this.proc.pid!;
  }

  get log(): string {
    return this.logTail();
  }

  /** Its VmRSS and VmHWM now. */
  memory(): Rss {
    const status = fs.readFileSync(`/proc/${this.pid}/status`, 'utf8');
    const kib = (field: string) => {
      const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
      if (!m) throw new Error(`no ${field} in /proc/${this.pid}/status`);
      return Number(m[1]) * 1024;
    };
    return { rss: kib('VmRSS'), peak: kib('VmHWM') };
  }

  /** Resets its VmHWM to its VmRSS (Linux clear_refs 5); false where the kernel refuses. */
  resetPeak(): boolean {
    try {
      fs.writeFileSync(`/proc/${this.pid}/clear_refs`, '5');
      return true;
    } catch {
      return false;
    }
  }

  /** SIGTERM (the CLI closes gracefully), SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs = 10000): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGTERM');
    await withTimeout(exited, graceMs, 'tvm-node rpc-server to exit').catch(() => this.proc.kill('SIGKILL'));
  }
}

if (require.main === module && process.argv.includes(TRANSFER_HELPER_FLAG)) {
  helperProcess();
}
