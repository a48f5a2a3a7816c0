/**
 * A concurrent TVM RPC server. Stock TVM clients (`tvm.rpc.connect`) and tvm-node's own
 * client speak to it unchanged.
 *
 * Two modes:
 * - full TVM mode (default): each session runs in a process of its own
 *   (lib/rpc/session-worker.ts) with its own work directory, where the runtime's
 *   `rpc.ServerLoop` serves everything TVM's protocol allows (uploads, any global function,
 *   remote memory). A client whose uploaded code crashes ends only its session. Cost: a Node
 *   process per session (~50 MB while it lives); `prestartSessions` processes are started
 *   ahead of need, so a client does not wait for one to start (about 0.1-0.3 s).
 * - inference-only (`inferenceOnly`): sessions are served in this process by a TypeScript
 *   implementation of the few requests needed to call the model-repository functions
 *   (lib/rpc/inference-session.ts); nothing else is reachable, sessions share one model
 *   cache, and a session costs no process start. For servers facing untrusted devices.
 * Unlike TVM's Python server, which serves one client at a time, sessions run side by side
 * up to `maxSessions`. Every packet a client sends is checked against `maxMessageBytes`
 * before the server keeps any of it.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { addon } from '../binding';
import { TvmValueError } from '../errors';
import { inferenceFunctions } from './infer';
import { serveInferenceSession } from './inference-session';
import { handshakeReply, readHandshake, RPC_CODE_MISMATCH, RPC_CODE_SUCCESS, type ClientHello } from './protocol';
import { type CacheLimits, ModelRepository } from './repository';
import type { SessionStart } from './session-worker';
import { randomMatchKey, TrackerCode, TrackerConnection } from './tracker';
import { encodeException } from './wire';

/** Options of {@link RPCServer}. */
export interface RPCServerOptions {
  /** Address to bind; default 127.0.0.1. */
  host?: string;
  /** Port; 0 picks a free one. Default 9090. */
  port?: number;
  /** Key clients must present (TVM's `--key`); default '' (matches `client:`). */
  key?: string;
  /**
   * A TVM RPC server runs whatever code its clients upload: binding anything but loopback
   * in full TVM mode needs this explicit trust flag.
   */
  trustRemoteClients?: boolean;
  /**
   * Serve only the model repository's functions (`tvm_node.infer`, `tvm_node.models`): no
   * upload, no other global function, no remote memory. Needs `modelsDir`; may bind any
   * address without `trustRemoteClients`.
   */
  inferenceOnly?: boolean;
  /** Largest RPC packet a client may send, in bytes. Default 512 MiB (a 256 MiB tensor copy fits). */
  maxMessageBytes?: number;
  /** Largest file a client may upload (full TVM mode), in bytes. Default 256 MiB. */
  maxUploadBytes?: number;
  /** A client that leaves a reply unread this long loses its session. Default 30000 ms. */
  stallTimeoutMs?: number;
  /** Full TVM mode: session processes kept started ahead of need. Default 2; 0 starts each on demand. */
  prestartSessions?: number;
  /** Most sessions at once; later clients get a "server busy" error. Default 16. */
  maxSessions?: number;
  /** Upper bound on a session's life in seconds (a client's own -timeout may be shorter). */
  sessionTimeout?: number;
  /** How long a client may take to send its handshake. Default 5000 ms. */
  handshakeTimeoutMs?: number;
  /** Where session work directories are made. Default: the OS temp dir. */
  workRoot?: string;
  /** A model repository folder served by name (see lib/rpc/repository.ts). */
  modelsDir?: string;
  /** Limits of each session's cache of loaded models. */
  cache?: CacheLimits;
  /** A TVM RPC tracker to register with, so clients find this server by key. */
  tracker?: { host: string; port: number };
  /** The address the tracker tells clients (default: what the tracker sees). */
  customAddr?: string;
}

/** A session being served: its connection, how to stop it, and when it is over. */
interface LiveSession {
  socket: net.Socket;
  done: Promise<SessionEnd>;
  /** Ends it now, without waiting for the client. */
  kill(): void;
}

/** How a session ended: a session process's exit code or signal, or 'closed' for an in-process one. */
export type SessionEnd = number | NodeJS.Signals | 'closed';

/**
 * Events: `session` (id, remote address, pid of its process or undefined in inference-only
 * mode), `sessionEnd` (id, {@link SessionEnd}), `refused` (reason), `trackerError` (reason).
 */
export class RPCServer extends EventEmitter {
  private readonly server = net.createServer((s) => void this.onConnection(s));
  private readonly sessions = new Map<number, LiveSession>();
  private nextId = 1;
  private closing = false;
  readonly options: Required<Omit<RPCServerOptions, 'sessionTimeout' | 'tracker' | 'customAddr' | 'modelsDir' | 'cache'>> &
    Pick<RPCServerOptions, 'sessionTimeout' | 'tracker' | 'customAddr' | 'modelsDir' | 'cache'>;
  /** The model cache all inference-only sessions share (full TVM mode: one per session process). */
  readonly repository?: ModelRepository;
  private registration?: TrackerRegistration;
  private readonly processes: SessionProcessPool;

  constructor(opts: RPCServerOptions = {}) {
    super();
    this.options = {
      host: opts.host ?? '127.0.0.1',
      port: opts.port ?? 9090,
      key: opts.key ?? '',
      trustRemoteClients: opts.trustRemoteClients ?? false,
      inferenceOnly: opts.inferenceOnly ?? false,
      maxMessageBytes: opts.maxMessageBytes ?? 512 * 2 ** 20,
      maxUploadBytes: opts.maxUploadBytes ?? 256 * 2 ** 20,
      stallTimeoutMs: opts.stallTimeoutMs ?? 30_000,
      prestartSessions: opts.prestartSessions ?? 2,
      maxSessions: opts.maxSessions ?? 16,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 5000,
      workRoot: opts.workRoot ?? os.tmpdir(),
      sessionTimeout: opts.sessionTimeout,
      tracker: opts.tracker,
      customAddr: opts.customAddr,
      modelsDir: opts.modelsDir && path.resolve(opts.modelsDir),
      cache: opts.cache,
    };
    this.processes = new SessionProcessPool(this.options.inferenceOnly ? 0 : this.options.prestartSessions);
    if (this.options.inferenceOnly) {
      if (!this.options.modelsDir) throw new TvmValueError('ValueError', 'inference-only mode serves a model repository: give modelsDir (CLI: --models DIR)');
      this.repository = new ModelRepository(this.options.modelsDir, { concurrency: os.availableParallelism(), ...this.options.cache });
    } else if (!isLoopback(this.options.host) && !this.options.trustRemoteClients) {
      throw new TvmValueError(
        'ValueError',
        `refusing to bind ${this.options.host}: a TVM RPC server executes code its clients upload; ` +
          'pass trustRemoteClients (CLI: --trust-remote-clients) to serve other machines, or serve only models (inferenceOnly, CLI: --inference-only)',
      );
    }
  }

  /** Starts listening (and registers with the tracker, if any); resolves with the bound address. */
  async listen(): Promise<AddressInfo> {
    this.processes.fill();
    const address = await new Promise<AddressInfo>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
    if (this.options.tracker) {
      const { host, port } = this.options.tracker;
      this.registration = await TrackerRegistration.open(host, port, this.options.key, address.port, this.options.customAddr);
      this.offerToTracker();
    }
    return address;
  }

  /** Keeps one match key on offer at the tracker while sessions are free. */
  private offerToTracker(): void {
    if (this.closing || this.sessions.size >= this.options.maxSessions) return;
    this.registration?.offer().catch((err: Error) => this.emit('trackerError', err.message));
  }

  /** Sessions being served now. */
  get activeSessions(): number {
    return this.sessions.size;
  }

  private async onConnection(socket: net.Socket): Promise<void> {
    socket.on('error', () => undefined);
    let hello: ClientHello;
    try {
      hello = await readHandshake(socket, this.options.handshakeTimeoutMs);
    } catch (err) {
      this.emit('refused', (err as Error).message);
      socket.destroy();
      return;
    }
    const viaTracker = this.registration?.consume(hello.key) ?? false;
    if (!viaTracker && hello.key !== this.options.key) {
      this.emit('refused', `key mismatch from ${socket.remoteAddress}`);
      socket.end(handshakeReply(RPC_CODE_MISMATCH));
      return;
    }
    if (this.closing || this.sessions.size >= this.options.maxSessions) {
      const why = this.closing ? 'the server is shutting down' : `all ${this.options.maxSessions} sessions are in use`;
      this.emit('refused', why);
      socket.write(handshakeReply(RPC_CODE_SUCCESS, this.options.key));
      await this.endWithError(socket, `RPCServerBusy: ${why}; try again later`);
      return;
    }
    this.startSession(socket, hello);
    if (viaTracker) this.offerToTracker();
  }

  private startSession(socket: net.Socket, hello: ClientHello): void {
    const id = this.nextId++;
    const limits = [hello.timeout, this.options.sessionTimeout].filter((t): t is number => t !== undefined && t > 0);
    const timeout = limits.length ? Math.min(...limits) : undefined;
    const { session, pid } = this.options.inferenceOnly ? this.serveInProcess(socket) : this.serveInProcessOfItsOwn(id, socket);
    const timer =
      timeout &&
      setTimeout(() => {
        void this.endWithError(socket, `RPCSessionTimeoutError: Your ${timeout}s session has expired, try to increase the "session_timeout" value.`).then(() => session.kill());
      }, timeout * 1000);
    this.sessions.set(id, session);
    session.done.then((end) => {
      clearTimeout(timer || undefined);
      socket.destroy();
      this.sessions.delete(id);
      this.emit('sessionEnd', id, end);
      this.offerToTracker();
    });
    this.emit('session', id, socket.remoteAddress, pid);
  }

  /** Inference-only: served here, on the shared model cache. */
  private serveInProcess(socket: net.Socket): { session: LiveSession; pid?: number } {
    const { maxMessageBytes, stallTimeoutMs } = this.options;
    const done = serveInferenceSession(socket, { functions: inferenceFunctions(this.repository!), maxMessageBytes, stallTimeoutMs }).then((): SessionEnd => 'closed');
    socket.write(handshakeReply(RPC_CODE_SUCCESS, this.options.key));
    return { session: { socket, done, kill: () => socket.destroy() } };
  }

  /** Full TVM mode: a session process with its own work directory. */
  private serveInProcessOfItsOwn(id: number, socket: net.Socket): { session: LiveSession; pid?: number } {
    const workDir = fs.mkdtempSync(path.join(this.options.workRoot, `tvm-node-rpc-${id}-`));
    const child = this.processes.take();
    const { modelsDir, cache, maxMessageBytes, maxUploadBytes, stallTimeoutMs } = this.options;
    const start: SessionStart = { workDir, modelsDir, cache, maxMessageBytes, maxUploadBytes, stallTimeoutMs };
    // keepOpen: the server keeps its copy of the socket (paused) to report a timeout.
    child.send(start, socket, { keepOpen: true });
    // The client sends its first RPC bytes as soon as it sees the reply; they must reach the
    // session process, so reply only once it is ready.
    child.once('message', () => socket.write(handshakeReply(RPC_CODE_SUCCESS, this.options.key)));
    const done = new Promise<SessionEnd>((resolve) => {
      child.once('exit', (code, signal) => {
        fs.rmSync(workDir, { recursive: true, force: true });
        resolve(code ?? signal ?? 'closed');
      });
    });
    return { session: { socket, done, kill: () => child.kill('SIGKILL') }, pid: child.pid };
  }

  /** Sends TVM's exception frame (the client raises it) and closes the connection. */
  private async endWithError(socket: net.Socket, message: string): Promise<void> {
    await new Promise<void>((resolve) => socket.write(encodeException(message), () => resolve()));
    // Closing at once, with the client's first request unread, would reset the connection
    // and lose the error frame: half-close, drain what the client sends, then let go.
    socket.on('data', () => undefined).resume();
    socket.end();
    setTimeout(() => socket.destroy(), 2000).unref();
  }

  /**
   * Stops accepting, lets sessions finish for up to `deadlineMs`, then ends the rest and
   * removes their work directories.
   */
  async close(deadlineMs = 5000): Promise<void> {
    this.closing = true;
    // Closing the tracker connection withdraws this server's offers.
    this.registration?.close();
    // Stop listening now. Not waiting for net.Server's own 'close': it tracks sockets handed
    // to session processes by asking those processes, which may have exited already.
    this.server.close();
    this.processes.close();
    const all = Promise.all([...this.sessions.values()].map((s) => s.done));
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), deadlineMs)));
    if ((await Promise.race([all, deadline])) === 'late') {
      for (const s of this.sessions.values()) s.kill();
      await all;
    }
    clearTimeout(timer);
    await this.repository?.dispose();
  }
}

/** Session processes started ahead of need, so a client does not wait for a Node start. */
class SessionProcessPool {
  private readonly idle = new Set<ChildProcess>();
  private closed = false;

  constructor(private readonly size: number) {}

  /** Starts processes until `size` are waiting. */
  fill(): void {
    while (!this.closed && this.idle.size < this.size) {
      const child = startSessionProcess();
      this.idle.add(child);
      child.once('exit', () => this.idle.delete(child));
    }
  }

  /** A started process (or a new one), replaced in the background. */
  take(): ChildProcess {
    const [ready] = this.idle;
    this.idle.delete(ready);
    // Refill once the session has had its turn at the CPU: a Node start is not free.
    setTimeout(() => this.fill(), 50).unref();
    return ready ?? startSessionProcess();
  }

  close(): void {
    this.closed = true;
    for (const child of this.idle) child.kill('SIGKILL');
    this.idle.clear();
  }
}

function startSessionProcess(): ChildProcess {
  // TVM's own sockets lack FD_CLOEXEC: without this a session process would inherit them.
  addon.markCloexec();
  return fork(sessionWorkerPath(), [], { execArgv: workerExecArgv(), stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** The session worker's entry: compiled JS next to this file, or the TS source under tsx. */
function sessionWorkerPath(): string {
  const js = path.join(__dirname, 'session-worker.js');
  return fs.existsSync(js) ? js : path.join(__dirname, 'session-worker.ts');
}

function workerExecArgv(): string[] {
  return sessionWorkerPath().endsWith('.ts') ? ['--require', 'tsx/cjs'] : [];
}

/**
 * This server's presence at a tracker: its info, and the match keys it offers. A key a
 * client acquired (REQUEST) but never used is replaced after a grace period, as TVM's
 * server does, so a vanished client cannot make the server unreachable.
 */
class TrackerRegistration {
  private readonly offered = new Set<string>();
  private unusedSince?: number;
  private readonly timer: NodeJS.Timeout;

  private constructor(
    private readonly conn: TrackerConnection,
    private readonly key: string,
    private readonly port: number,
    private readonly customAddr?: string,
  ) {
    this.timer = setInterval(() => void this.checkPending().catch(() => undefined), 2000);
    this.timer.unref();
  }

  static async open(host: string, port: number, key: string, serverPort: number, customAddr?: string): Promise<TrackerRegistration> {
    const conn = await TrackerConnection.open(host, port);
    const ok = await conn.send([TrackerCode.UPDATE_INFO, { key: `server:${key}`, addr: [customAddr ?? null, serverPort] }]);
    if (ok !== TrackerCode.SUCCESS) throw new TvmValueError('ValueError', `tracker refused the server's info: ${JSON.stringify(ok)}`);
    return new TrackerRegistration(conn, key, serverPort, customAddr);
  }

  /** Offers a fresh match key unless one is already on offer. */
  async offer(): Promise<void> {
    if (this.offered.size > 0) return;
    const matchKey = randomMatchKey(this.key);
    this.offered.add(matchKey);
    const ok = await this.conn.send([TrackerCode.PUT, this.key, [this.port, matchKey], this.customAddr ?? null]);
    if (ok !== TrackerCode.SUCCESS) throw new TvmValueError('ValueError', `tracker refused PUT: ${JSON.stringify(ok)}`);
  }

  /** Whether `clientKey` is one of our match keys (it is used up). */
  consume(clientKey: string): boolean {
    return this.offered.delete(clientKey);
  }

  private async checkPending(): Promise<void> {
    if (this.offered.size === 0) return;
    const pending = new Set((await this.conn.send([TrackerCode.GET_PENDING_MATCHKEYS])) as string[]);
    const acquired = [...this.offered].filter((k) => !pending.has(k));
    if (acquired.length === 0) {
      this.unusedSince = undefined;
      return;
    }
    this.unusedSince ??= Date.now();
    if (Date.now() - this.unusedSince < 6000) return;
    for (const k of acquired) this.offered.delete(k);
    this.unusedSince = undefined;
    await this.offer();
  }

  close(): void {
    clearInterval(this.timer);
    this.conn.close();
  }
}
