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
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { addon } from '../binding';
import { TvmRuntimeError, TvmValueError } from '../errors';
import { checkBoolean, checkNumber, checkOptions, checkString, requireNumber, requireString } from '../options';
import { CHANNEL_KEY_PREFIX, OPEN_CHANNEL_FUNCTION, SESSION_ACTIVE } from './channel';
import { inferenceFunctions, type ServerTiming } from './infer';
import { type InferenceSession, serveInferenceSession } from './inference-session';
import { type ClientHello, closeWithError, handshakeReply, RPC_CODE_MISMATCH, RPC_CODE_SUCCESS, readHandshake, startReading } from './protocol';
import { type CacheLimits, checkCacheLimits, ModelRepository } from './repository';
import type { SessionStart } from './session-worker';
import { longTimeout, type Timer } from './timers';
import { randomMatchKey, TrackerCode, TrackerConnection } from './tracker';
import { ByteBudget, type WireValue } from './wire';

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
  /** Most bytes a session may upload (full TVM mode), all files together. Default 256 MiB. */
  maxUploadBytes?: number;
  /**
   * Inference-only: bytes of requests that have not fully arrived, all sessions together;
   * a session that would take more is ended with `RPCServerBusy`. Default 1 GiB.
   */
  maxPendingBytes?: number;
  /** A client that leaves a reply unread this long loses its session. Default 30000 ms. */
  stallTimeoutMs?: number;
  /** A session that sends no request this long is ended; its next call raises why. Default 120000 ms. */
  idleTimeoutMs?: number;
  /** A request whose bytes stop arriving for this long ends its session. Default 30000 ms. */
  readTimeoutMs?: number;
  /** Full TVM mode: session processes kept started ahead of need. Default 2; 0 starts each on demand. */
  prestartSessions?: number;
  /** Most sessions at once; later clients get a "server busy" error. Default 16. */
  maxSessions?: number;
  /**
   * Most sessions one client address may hold at once. Default: half of `maxSessions`, for
   * remote addresses only (loopback clients are this machine's own processes); given
   * explicitly, it applies to every address.
   */
  maxSessionsPerAddress?: number;
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
  /**
   * Inference-only: a model repository to serve, shared with other front ends (`tvm-node
   * serve` serves one cache over TVM RPC, HTTP and gRPC). It stays the caller's: closing the
   * server does not dispose it. Implies `modelsDir` (its folder).
   */
  repository?: ModelRepository;
  /** A TVM RPC tracker to register with, so clients find this server by key. */
  tracker?: { host: string; port: number };
  /** The address the tracker tells clients (default: what the tracker sees). */
  customAddr?: string;
}

type OptionalKeys = 'sessionTimeout' | 'tracker' | 'customAddr' | 'modelsDir' | 'cache' | 'repository';

/** A session being served: its connection, how to stop it, and when it is over. */
interface LiveSession {
  id: number;
  socket: net.Socket;
  /** The token its inference channel presents (lib/rpc/channel.ts). */
  channelToken: string;
  /** Its inference channel while one is open. */
  channel?: InferenceSession;
  /** The client's address, for the per-address limit. */
  address: string;
  /** Settles once the session may start its clock (the handshake is answered). */
  ready: Promise<void>;
  done: Promise<SessionEnd>;
  /** Ends it now with an error the client raises. */
  closeWithError(message: string): Promise<void>;
  /** Its inference channel served a request: its idle time starts again. */
  touch(): void;
}

/** How a session ended: a session process's exit code or signal, or 'closed' for an in-process one. */
export type SessionEnd = number | NodeJS.Signals | 'closed';

/** Longest timer in seconds a user may ask for: beyond it, Date arithmetic loses meaning. */
const MAX_SECONDS = 1e9;

/** Every option of {@link RPCServerOptions}, for the unknown-option check. */
const SERVER_OPTIONS = [
  'host',
  'port',
  'key',
  'trustRemoteClients',
  'inferenceOnly',
  'maxMessageBytes',
  'maxUploadBytes',
  'maxPendingBytes',
  'stallTimeoutMs',
  'idleTimeoutMs',
  'readTimeoutMs',
  'prestartSessions',
  'maxSessions',
  'maxSessionsPerAddress',
  'sessionTimeout',
  'handshakeTimeoutMs',
  'workRoot',
  'modelsDir',
  'cache',
  'repository',
  'tracker',
  'customAddr',
] as const satisfies readonly (keyof RPCServerOptions)[];

/** The options with defaults filled in and every value checked (a bad one throws, naming it). */
function resolveOptions(opts: RPCServerOptions | undefined): Required<Omit<RPCServerOptions, OptionalKeys>> & Pick<RPCServerOptions, OptionalKeys> {
  const o = checkOptions('RPCServer', opts, SERVER_OPTIONS);
  const at = (name: string) => `RPCServer: ${name}`;
  const ms = { min: 1, max: MAX_SECONDS * 1000 };
  const bytes = { min: 1, integer: true };
  const maxSessions = checkNumber(at('maxSessions'), o.maxSessions, { min: 1, integer: true }, 16);
  const maxMessageBytes = checkNumber(at('maxMessageBytes'), o.maxMessageBytes, bytes, 512 * 2 ** 20);
  if (o.repository !== undefined && !(o.repository instanceof ModelRepository))
    throw new TvmValueError('ValueError', `${at('repository')} must be a ModelRepository`);
  const modelsDir = checkString(at('modelsDir'), o.modelsDir ?? o.repository?.dir, { nonEmpty: true });
  if (o.cache !== undefined) checkCacheLimits('RPCServer', o.cache, 'cache');
  let tracker: RPCServerOptions['tracker'];
  if (o.tracker !== undefined) {
    const t = checkOptions('RPCServer', o.tracker, ['host', 'port'], 'tracker');
    tracker = { host: requireString(at('tracker.host'), t.host), port: requireNumber(at('tracker.port'), t.port, { min: 1, max: 65535, integer: true }) };
  }
  return {
    host: checkString(at('host'), o.host, { nonEmpty: true }, '127.0.0.1'),
    port: checkNumber(at('port'), o.port, { min: 0, max: 65535, integer: true }, 9090),
    key: checkString(at('key'), o.key, {}, ''),
    trustRemoteClients: checkBoolean(at('trustRemoteClients'), o.trustRemoteClients, false),
    inferenceOnly: checkBoolean(at('inferenceOnly'), o.inferenceOnly, false),
    maxMessageBytes,
    maxUploadBytes: checkNumber(at('maxUploadBytes'), o.maxUploadBytes, bytes, 256 * 2 ** 20),
    maxPendingBytes: checkNumber(at('maxPendingBytes'), o.maxPendingBytes, bytes, 2 ** 30),
    stallTimeoutMs: checkNumber(at('stallTimeoutMs'), o.stallTimeoutMs, ms, 30_000),
    idleTimeoutMs: checkNumber(at('idleTimeoutMs'), o.idleTimeoutMs, ms, 120_000),
    readTimeoutMs: checkNumber(at('readTimeoutMs'), o.readTimeoutMs, ms, 30_000),
    prestartSessions: checkNumber(at('prestartSessions'), o.prestartSessions, { min: 0, max: 64, integer: true }, 2),
    maxSessions,
    maxSessionsPerAddress: checkNumber(
      at('maxSessionsPerAddress'),
      o.maxSessionsPerAddress,
      { min: 1, integer: true },
      Math.max(1, Math.floor(maxSessions / 2)),
    ),
    handshakeTimeoutMs: checkNumber(at('handshakeTimeoutMs'), o.handshakeTimeoutMs, ms, 5000),
    workRoot: checkString(at('workRoot'), o.workRoot, { nonEmpty: true }, os.tmpdir()),
    sessionTimeout: checkNumber(at('sessionTimeout'), o.sessionTimeout, { min: 0.001, max: MAX_SECONDS }),
    tracker,
    customAddr: checkString(at('customAddr'), o.customAddr, { nonEmpty: true }),
    modelsDir: modelsDir && path.resolve(modelsDir),
    cache: o.cache,
    repository: o.repository,
  };
}

/** The events an {@link RPCServer} emits, with the arguments its listeners get. */
export interface RPCServerEvents {
  /** A session started: its id, the client's address, the pid of its process (undefined in inference-only mode). */
  session: [id: number, address: string | undefined, pid: number | undefined];
  /** A session opened its inference channel (lib/rpc/channel.ts): the session's id. */
  channel: [id: number];
  /** Inference-only: a `tvm_node.infer` request was answered (model, server timing) or failed (model, error). */
  inference: [model: string, timing: ServerTiming | undefined, error: Error | undefined];
  /** A session ended: its id and how ({@link SessionEnd}). */
  sessionEnd: [id: number, end: SessionEnd];
  /** A connection was turned away (bad handshake, key mismatch, server busy): why. */
  refused: [reason: string];
  /** Registering with the tracker failed: why (the server goes on serving). */
  trackerError: [reason: string];
}

/**
 * Events ({@link RPCServerEvents}): `session` (id, remote address, pid of its process or
 * undefined in inference-only mode), `sessionEnd` (id, {@link SessionEnd}), `refused`
 * (reason), `trackerError` (reason).
 */
export class RPCServer extends EventEmitter<RPCServerEvents> {
  private readonly server = net.createServer((s) => void this.onConnection(s));
  private readonly sessions = new Map<number, LiveSession>();
  private nextId = 1;
  private closing = false;
  readonly options: ReturnType<typeof resolveOptions>;
  /** The model cache all inference-only sessions share (full TVM mode: one per session process). */
  readonly repository?: ModelRepository;
  /** Bytes of incomplete requests held by inference-only sessions, all together. */
  private readonly pending: ByteBudget;
  /** Inference channels open now (lib/rpc/channel.ts). */
  private readonly channels = new Set<InferenceSession>();
  /** Full TVM mode: the model cache of the sessions' inference channels, made on first use. */
  private channelRepository?: ModelRepository;
  private registration?: TrackerRegistration;
  private readonly processes: SessionProcessPool;
  /** Whether the per-address limit covers loopback clients too (only when given explicitly). */
  private readonly perAddressLimitOnLoopback: boolean;

  constructor(opts: RPCServerOptions = {}) {
    super();
    this.options = resolveOptions(opts);
    this.perAddressLimitOnLoopback = opts.maxSessionsPerAddress !== undefined;
    this.pending = new ByteBudget(this.options.maxPendingBytes);
    this.processes = new SessionProcessPool(this.options.inferenceOnly ? 0 : this.options.prestartSessions);
    if (this.options.inferenceOnly) {
      if (!this.options.modelsDir) throw new TvmValueError('ValueError', 'inference-only mode serves a model repository: give modelsDir (CLI: --models DIR)');
      this.repository =
        this.options.repository ?? new ModelRepository(this.options.modelsDir, { concurrency: os.availableParallelism(), ...this.options.cache });
    } else if (!isLoopback(this.options.host) && !this.options.trustRemoteClients) {
      throw new TvmValueError(
        'ValueError',
        `refusing to bind ${this.options.host}: a TVM RPC server executes code its clients upload; ` +
          'pass trustRemoteClients (CLI: --trust-remote-clients) to serve other machines, or serve only models (inferenceOnly, CLI: --inference-only)',
      );
    }
  }

  /**
   * Checks the model repository, starts listening and registers with the tracker, if any;
   * resolves with the bound address. A failure (bad repository, address in use, tracker
   * unreachable) leaves nothing running and rejects with an error naming what failed.
   */
  async listen(): Promise<AddressInfo> {
    try {
      if (this.options.modelsDir) (this.repository ?? new ModelRepository(this.options.modelsDir)).check();
      const address = await this.bind();
      if (this.options.tracker) await this.register(address.port);
      this.processes.fill();
      return address;
    } catch (err) {
      await this.close(0);
      throw err;
    }
  }

  private bind(): Promise<AddressInfo> {
    const { host, port } = this.options;
    return new Promise<AddressInfo>((resolve, reject) => {
      this.server.once('error', (err: NodeJS.ErrnoException) => {
        const why =
          err.code === 'EADDRINUSE'
            ? 'the address is in use'
            : err.code === 'EADDRNOTAVAIL'
              ? 'no such local address'
              : err.code === 'EACCES'
                ? 'permission denied'
                : err.message;
        reject(new TvmRuntimeError('RuntimeError', `cannot listen on ${host}:${port}: ${why}`, '', { cause: err }));
      });
      this.server.listen(port, host, () => resolve(this.server.address() as AddressInfo));
    });
  }

  private async register(serverPort: number): Promise<void> {
    const { host, port } = this.options.tracker!;
    try {
      this.registration = await TrackerRegistration.open(host, port, this.options.key, serverPort, this.options.customAddr);
    } catch (err) {
      throw new TvmRuntimeError('RuntimeError', `cannot register with the tracker at ${host}:${port}: ${(err as Error).message}`, '', { cause: err });
    }
    this.offerToTracker();
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

  /** Bytes inference-only sessions hold now for requests that have not fully arrived. */
  get pendingBytes(): number {
    return this.pending.held;
  }

  /** Why a new session from `address` cannot start now, or undefined when it can. */
  private refusal(address: string): string | undefined {
    if (this.closing) return 'the server is shutting down';
    if (this.sessions.size >= this.options.maxSessions) return `all ${this.options.maxSessions} sessions are in use`;
    const limited = this.perAddressLimitOnLoopback || !isLoopback(address);
    const mine = [...this.sessions.values()].filter((s) => s.address === address).length;
    if (limited && mine >= this.options.maxSessionsPerAddress) return `${address} already holds ${mine} sessions, the most one address may hold`;
    return undefined;
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
    if (hello.key.startsWith(CHANNEL_KEY_PREFIX)) return this.startChannel(socket, hello.key.slice(CHANNEL_KEY_PREFIX.length));
    const viaTracker = this.registration?.consume(hello.key) ?? false;
    if (!viaTracker && hello.key !== this.options.key) return this.refuseKey(socket, `key mismatch from ${socket.remoteAddress}`);
    const address = socket.remoteAddress ?? '?';
    const why = this.refusal(address);
    if (why) {
      this.emit('refused', why);
      socket.write(handshakeReply(RPC_CODE_SUCCESS, this.options.key));
      await closeWithError(socket, `RPCServerBusy: ${why}; try again later`);
      return;
    }
    this.startSession(socket, address, hello);
    if (viaTracker) this.offerToTracker();
  }

  /**
   * An inference channel of a live session: served in this process on the model cache of
   * the inference-only sessions (full TVM mode: a cache of its own), counted against no
   * session limit, one per session, ended with its session. A token of no live session, or
   * of one whose channel is open, is refused like a key mismatch.
   */
  private startChannel(socket: net.Socket, token: string): void {
    const owner = [...this.sessions.values()].find((s) => s.channelToken === token);
    if (!owner || owner.channel || !this.options.modelsDir) {
      this.refuseKey(socket, `inference channel with ${owner ? 'a token already in use' : 'an unknown token'} from ${socket.remoteAddress}`);
      return;
    }
    const repo = this.repository ?? this.channelModels(this.options.modelsDir);
    const channel = serveInferenceSession(socket, { functions: this.inferenceFunctions(repo), ...this.sessionLimits(), onRequest: () => owner.touch() });
    socket.write(handshakeReply(RPC_CODE_SUCCESS, this.options.key));
    owner.channel = channel;
    this.channels.add(channel);
    this.emit('channel', owner.id);
    void channel.done.then(() => {
      this.channels.delete(channel);
      if (owner.channel === channel) owner.channel = undefined;
    });
    void owner.done.then(() => channel.close('RPCSessionClosed: the session this inference channel belongs to has ended'));
  }

  /** The repository's functions, each inference reported as an `inference` event. */
  private inferenceFunctions(repo: ModelRepository, extra?: Parameters<typeof inferenceFunctions>[1]) {
    return inferenceFunctions(repo, extra, (model, timing, error) => this.emit('inference', model, timing, error));
  }

  /** Full TVM mode: the channels' model cache, made on first use. */
  private channelModels(modelsDir: string): ModelRepository {
    this.channelRepository ??= new ModelRepository(modelsDir, { concurrency: os.availableParallelism(), ...this.options.cache });
    return this.channelRepository;
  }

  /** What each in-process session is held to. */
  private sessionLimits() {
    const { maxMessageBytes, stallTimeoutMs, idleTimeoutMs, readTimeoutMs } = this.options;
    return { maxMessageBytes, stallTimeoutMs, idleTimeoutMs, readTimeoutMs, pending: this.pending };
  }

  /** Answers a handshake whose key does not match (TVM's mismatch code) and lets the connection go. */
  private refuseKey(socket: net.Socket, why: string): void {
    this.emit('refused', why);
    socket.end(handshakeReply(RPC_CODE_MISMATCH));
    // The handshake left the socket unread: read to the client's end so that it closes, and
    // drop it if the client lingers, or it would hold its descriptor while the server runs.
    startReading(socket.on('data', () => undefined));
    setTimeout(() => socket.destroy(), 2000).unref();
  }

  private startSession(socket: net.Socket, address: string, hello: ClientHello): void {
    const id = this.nextId++;
    const limits = [hello.timeout, this.options.sessionTimeout].filter((t): t is number => t !== undefined && t > 0);
    const timeout = limits.length ? Math.min(...limits) : undefined;
    const channelToken = randomBytes(16).toString('hex');
    const session = this.options.inferenceOnly
      ? this.serveInProcess(id, socket, address, channelToken)
      : this.serveInProcessOfItsOwn(id, socket, address, channelToken);
    // The clock starts once the client has its handshake answer: an error frame before it
    // would read as a broken handshake.
    let timer: Timer | undefined;
    if (timeout) {
      void session.ready.then(() => {
        timer = longTimeout(() => {
          void session.closeWithError(`RPCSessionTimeoutError: Your ${timeout}s session has expired, try to increase the "session_timeout" value.`);
        }, timeout * 1000);
      });
    }
    this.sessions.set(id, session);
    session.done.then((end) => {
      timer?.cancel();
      socket.destroy();
      this.sessions.delete(id);
      this.emit('sessionEnd', id, end);
      this.offerToTracker();
    });
    this.emit('session', id, socket.remoteAddress, session.pid);
  }

  /** Inference-only: served here, on the shared model cache. */
  private serveInProcess(id: number, socket: net.Socket, address: string, channelToken: string): LiveSession & { pid?: number } {
    const openChannel = (): WireValue => ({ kind: 'str', value: channelToken });
    const functions = this.inferenceFunctions(this.repository!, new Map([[OPEN_CHANNEL_FUNCTION, openChannel]]));
    const served = serveInferenceSession(socket, { functions, ...this.sessionLimits() });
    socket.write(handshakeReply(RPC_CODE_SUCCESS, this.options.key));
    return {
      id,
      socket,
      address,
      channelToken,
      ready: Promise.resolve(),
      done: served.done.then((): SessionEnd => 'closed'),
      closeWithError: async (message) => {
        served.close(message);
        await served.done;
      },
      touch: () => served.touch(),
    };
  }

  /** Full TVM mode: a session process with its own work directory. */
  private serveInProcessOfItsOwn(id: number, socket: net.Socket, address: string, channelToken: string): LiveSession & { pid?: number } {
    const workDir = fs.mkdtempSync(path.join(this.options.workRoot, `tvm-node-rpc-${id}-`));
    const child = this.processes.take();
    const { modelsDir, cache, maxMessageBytes, maxUploadBytes, stallTimeoutMs, idleTimeoutMs, readTimeoutMs } = this.options;
    const start: SessionStart = { workDir, modelsDir, cache, maxMessageBytes, maxUploadBytes, stallTimeoutMs, idleTimeoutMs, readTimeoutMs, channelToken };
    // keepOpen: the server keeps its copy of the socket (paused) to report a timeout.
    child.send(start, socket, { keepOpen: true });
    // The client sends its first RPC bytes as soon as it sees the reply; they must reach the
    // session process, so reply only once it is ready.
    const ready = new Promise<void>((resolve) =>
      child.once('message', () => socket.write(handshakeReply(RPC_CODE_SUCCESS, this.options.key), () => resolve())),
    );
    /** Set by closeWithError: what the client is told once the session process is gone. */
    let farewell: string | undefined;
    /** When the session process was last told its channel is in use. */
    let lastTouch = 0;
    const done = new Promise<SessionEnd>((resolve) => {
      child.once('exit', (code, signal) => {
        fs.rmSync(workDir, { recursive: true, force: true });
        const told = farewell === undefined ? Promise.resolve() : closeWithError(socket, farewell, 200);
        void told.then(() => resolve(code ?? signal ?? 'closed'));
      });
    });
    return {
      id,
      socket,
      address,
      channelToken,
      ready,
      done,
      pid: child.pid,
      // The session process may be writing to the client: stop it first, then answer for it.
      closeWithError: async (message) => {
        farewell = message;
        child.kill('SIGKILL');
        await done;
      },
      // At most once a second: a channel may serve thousands of requests a second.
      touch: () => {
        if (!child.connected || Date.now() - lastTouch < 1000) return;
        lastTouch = Date.now();
        child.send(SESSION_ACTIVE);
      },
    };
  }

  /**
   * Stops accepting, lets sessions finish for up to `deadlineMs`, then ends the rest (their
   * clients raise `RPCServerShutdown`) and removes their work directories.
   */
  async close(deadlineMs = 5000): Promise<void> {
    this.closing = true;
    // Closing the tracker connection withdraws this server's offers.
    this.registration?.close();
    // Stop listening now. Not waiting for net.Server's own 'close': it tracks sockets handed
    // to session processes by asking those processes, which may have exited already.
    if (this.server.listening) this.server.close();
    this.processes.close();
    const all = Promise.all([...this.sessions.values()].map((s) => s.done));
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), deadlineMs)));
    if ((await Promise.race([all, deadline])) === 'late') {
      const message = `RPCServerShutdown: the server is shutting down and ended this session after ${deadlineMs / 1000} s`;
      await Promise.all([...this.sessions.values()].map((s) => s.closeWithError(message)));
      await all;
    }
    clearTimeout(timer);
    await Promise.all([...this.channels].map((c) => c.done));
    if (this.repository !== this.options.repository) await this.repository?.dispose();
    await this.channelRepository?.dispose();
  }

  /** {@link RPCServer.close} with its default deadline, for `await using`. */
  dispose(): Promise<void> {
    return this.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
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
  return host === 'localhost' || host === '::1' || /^(::ffff:)?127\./.test(host);
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
