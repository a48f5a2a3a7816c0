/**
 * The processes tvm-node is measured against: the Python peer (bench/peer.py or
 * bench/rpc_peer.py under the pinned TVM, a line of JSON per request), TVM's own RPC server
 * (`python -m tvm.exec.rpc_server`) in a process group of its own, killed with its workers on
 * early exit, and {@link withTimeout}, the bound on every wait for them.
 */
import { type ChildProcess, type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { python, repoRoot } from './fixtures';
import type { Contender } from './measure';

// ---------------------------------------------------------------------------------------
// The Python peer (bench/peer.py under the pinned TVM)

export class PythonPeer {
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly pending: Array<{ resolve: (v: any) => void; reject: (e: Error) => void }> = [];
  private stderr = '';
  private exited = false;

  /** `script`: bench/peer.py, or bench/rpc_peer.py (same protocol). */
  constructor(script = 'peer.py') {
    this.proc = spawn(python, [path.join(__dirname, script)], { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stderr.setEncoding('utf8').on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-4000);
    });
    readline.createInterface({ input: this.proc.stdout }).on('line', (line) => {
      const p = this.pending.shift();
      if (!p) return;
      const reply = JSON.parse(line);
      if (reply.error) p.reject(new Error(`Python peer: ${reply.error}`));
      else p.resolve(reply);
    });
    const fail = (why: string) => {
      this.exited = true;
      for (const p of this.pending.splice(0)) p.reject(new Error(`Python peer ${why}\n${this.stderr}`));
    };
    this.proc.on('exit', (code, signal) => fail(`exited (${signal ?? code})`));
    this.proc.on('error', (err) => fail(`failed to start: ${err.message}`));
  }

  /** Sends a request; with `timeoutMs`, a late answer kills the peer and rejects. */
  request(req: Record<string, unknown>, timeoutMs?: number): Promise<any> {
    if (this.exited) return Promise.reject(new Error(`Python peer is not running\n${this.stderr}`));
    const answer = new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.proc.stdin.write(JSON.stringify(req) + '\n');
    });
    if (timeoutMs === undefined) return answer;
    return withTimeout(answer, timeoutMs, `Python peer: ${String(req.op)}`).catch((err: Error) => {
      this.kill();
      throw new Error(`${err.message}\n${this.stderr}`);
    });
  }

  kill(): void {
    if (!this.exited) this.proc.kill('SIGKILL');
  }

  /** A contender timing `id` (set up before) in the peer. */
  contender(key: string, name: string, id: string): Contender {
    return { key, name, round: async (n) => (await this.request({ op: 'time', id, n })).ns as number };
  }

  /** Ends the peer (stdin closed); kills it if it has not exited after `graceMs`. */
  close(graceMs = 30000): Promise<void> {
    if (this.exited) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.kill(), graceMs);
      this.proc.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      this.proc.stdin.end();
    });
  }
}

/** Rejects with `what` if `p` does not settle within `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------
// TVM's Python RPC server (the peer of the rpc group)

export const RPC_HOST = '127.0.0.1';

/** Process groups of detached children (TVM's server and its workers), killed if we exit early. */
const detachedGroups = new Set<number>();
let exitHook = false;

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
  detachedGroups.delete(pid);
}

function trackGroup(pid: number): void {
  detachedGroups.add(pid);
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => [...detachedGroups].forEach(killGroup));
}

/**
 * TVM's Python RPC server (`python -m tvm.exec.rpc_server`), in a process group of its own:
 * it runs in a popen worker and forks a process per session, all killed together by stop().
 */
export class TvmRpcServer {
  private constructor(
    private readonly proc: ChildProcess,
    readonly port: number,
    private readonly logTail: () => string,
  ) {}

  static async start(timeoutMs = 60000): Promise<TvmRpcServer> {
    const base = 20000 + Math.floor(Math.random() * 19900);
    const args = ['-m', 'tvm.exec.rpc_server', '--host', RPC_HOST, '--port', String(base), '--port-end', String(base + 50)];
    const proc = spawn(python, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    if (proc.pid !== undefined) trackGroup(proc.pid);
    let log = '';
    const port = await withTimeout(
      new Promise<number>((resolve, reject) => {
        // Keep draining its logs (a line per session): a full pipe would stall the server.
        const onData = (chunk: Buffer) => {
          log = (log + chunk.toString()).slice(-8000);
          const m = /bind to 127\.0\.0\.1:(\d+)/.exec(log);
          if (m) resolve(Number(m[1]));
        };
        proc.stdout!.on('data', onData);
        proc.stderr!.on('data', onData);
        proc.once('exit', (code, signal) => reject(new Error(`TVM rpc_server exited (${signal ?? code}) before binding:\n${log}`)));
        proc.once('error', reject);
      }),
      timeoutMs,
      'TVM rpc_server to bind',
    ).catch((err) => {
      if (proc.pid !== undefined) killGroup(proc.pid);
      throw err;
    });
    return new TvmRpcServer(proc, port, () => log);
  }

  get log(): string {
    return this.logTail();
  }

  async stop(): Promise<void> {
    if (this.proc.pid === undefined) return;
    const exited = this.proc.exitCode !== null || this.proc.signalCode !== null ? Promise.resolve() : new Promise((r) => this.proc.once('exit', r));
    killGroup(this.proc.pid);
    await withTimeout(exited, 10000, 'TVM rpc_server to exit').catch(() => undefined);
  }
}
