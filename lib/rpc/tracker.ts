/**
 * The TVM RPC tracker protocol (python/tvm/rpc/tracker.py, base.py): int32
 * RPC_TRACKER_MAGIC both ways, then int32-length-prefixed JSON messages `[code, ...args]`.
 * Servers report `(port, matchkey)` under a key; clients `request(key)` and are told which
 * server to connect to with which match key. Works with `python -m tvm.exec.rpc_tracker`.
 */
import net from 'node:net';
import { TvmRuntimeError } from '../errors';
import { checkNumber, checkOptions, requireNumber, requireString } from '../options';
import { connect, type RPCSession } from './client';
import { RPC_TRACKER_MAGIC } from './protocol';

/** TrackerCode (python/tvm/rpc/base.py). */
export const TrackerCode = {
  FAIL: -1,
  SUCCESS: 0,
  PING: 1,
  STOP: 2,
  PUT: 3,
  REQUEST: 4,
  UPDATE_INFO: 5,
  SUMMARY: 6,
  GET_PENDING_MATCHKEYS: 7,
} as const;

/** Largest tracker message accepted (summaries of big pools stay far below it). */
const MAX_MESSAGE = 16 << 20;

/** One connection to a tracker: request/response JSON messages, in order. */
export class TrackerConnection {
  private buf = Buffer.alloc(0);
  private waiters: Array<{ resolve: (v: unknown) => void; reject: (e: Error) => void }> = [];
  private failure?: Error;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (d) => this.onData(d));
    socket.on('close', () => this.fail(new TvmRuntimeError('RuntimeError', 'the tracker closed the connection')));
    socket.on('error', (e) => this.fail(new TvmRuntimeError('RuntimeError', `tracker connection: ${e.message}`, '', { cause: e })));
  }

  /** Connects and checks the tracker's magic. */
  static open(host: string, port: number, timeoutMs = 10000): Promise<TrackerConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, host);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new TvmRuntimeError('RuntimeError', `tracker ${host}:${port} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('error', (e) => {
        clearTimeout(timer);
        reject(new TvmRuntimeError('RuntimeError', `cannot reach tracker ${host}:${port}: ${e.message}`, '', { cause: e }));
      });
      socket.once('connect', () => {
        const magic = Buffer.alloc(4);
        magic.writeInt32LE(RPC_TRACKER_MAGIC, 0);
        socket.write(magic);
        socket.once('data', (d) => {
          clearTimeout(timer);
          if (d.length < 4 || d.readInt32LE(0) !== RPC_TRACKER_MAGIC) {
            socket.destroy();
            reject(new TvmRuntimeError('RuntimeError', `${host}:${port} is not a TVM RPC tracker`));
            return;
          }
          const conn = new TrackerConnection(socket);
          if (d.length > 4) conn.onData(d.subarray(4));
          resolve(conn);
        });
      });
    });
  }

  /** Sends `[code, ...args]` and resolves with the tracker's answer. */
  send(message: unknown[]): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    const body = Buffer.from(JSON.stringify(message), 'utf8');
    const len = Buffer.alloc(4);
    len.writeInt32LE(body.length, 0);
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.socket.write(Buffer.concat([len, body]));
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buf = Buffer.concat([this.buf, chunk]);
    while (this.buf.length >= 4) {
      const size = this.buf.readInt32LE(0);
      if (size < 0 || size > MAX_MESSAGE) {
        this.fail(new TvmRuntimeError('RuntimeError', `bad tracker message size ${size}`));
        return;
      }
      if (this.buf.length < 4 + size) return;
      const text = this.buf.subarray(4, 4 + size).toString('utf8');
      this.buf = this.buf.subarray(4 + size);
      const waiter = this.waiters.shift();
      try {
        waiter?.resolve(JSON.parse(text));
      } catch {
        waiter?.reject(new TvmRuntimeError('RuntimeError', 'malformed tracker message'));
      }
    }
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiters.splice(0)) w.reject(err);
    this.socket.destroy();
  }
}

/** A client of a tracker: finds a free server for a key and connects to it. */
export class TrackerClient implements Disposable, AsyncDisposable {
  private closed = false;

  /** @internal */
  constructor(private readonly conn: TrackerConnection) {}

  /**
   * Asks the tracker for a server registered under `key` (waiting until one is free) and
   * opens a session with it; the session is the caller's to dispose.
   */
  async request(key: string, opts: { priority?: number; sessionTimeout?: number } = {}): Promise<RPCSession> {
    requireString('TrackerClient.request: key', key);
    const o = checkOptions('TrackerClient.request', opts, ['priority', 'sessionTimeout']);
    const priority = checkNumber('TrackerClient.request: priority', o.priority, { integer: true }, 1);
    checkNumber('TrackerClient.request: sessionTimeout', o.sessionTimeout, { min: 0 });
    const reply = (await this.conn.send([TrackerCode.REQUEST, key, '', priority])) as [number, [string, number, string]];
    if (reply[0] !== TrackerCode.SUCCESS) throw new TvmRuntimeError('RuntimeError', `tracker refused the request: ${JSON.stringify(reply)}`);
    const [host, port, matchKey] = reply[1];
    return connect(host, port, { key: matchKey, sessionTimeout: opts.sessionTimeout });
  }

  /** The tracker's summary of servers and queues. */
  summary(): Promise<unknown> {
    return this.conn.send([TrackerCode.SUMMARY]).then((r) => (r as [number, unknown])[1]);
  }

  /** Whether the connection was closed ({@link TrackerClient.dispose}). */
  get disposed(): boolean {
    return this.closed;
  }

  /** Closes the connection to the tracker (idempotent); sessions it opened stay open. */
  dispose(): Promise<void> {
    this.disposeSync();
    return Promise.resolve();
  }

  /** {@link TrackerClient.dispose}, which completes at once. */
  disposeSync(): void {
    if (this.closed) return;
    this.closed = true;
    this.conn.close();
  }

  [Symbol.dispose](): void {
    this.disposeSync();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

/** Connects to a TVM RPC tracker (`python -m tvm.exec.rpc_tracker`). */
export async function connectTracker(host: string, port: number): Promise<TrackerClient> {
  requireString('connectTracker: host', host);
  requireNumber('connectTracker: port', port, { min: 1, max: 65535, integer: true });
  return new TrackerClient(await TrackerConnection.open(host, port));
}

/** A fresh match key, as TVM's servers make them: `<key>:<random>`. */
export function randomMatchKey(key: string): string {
  return `${key}:${Math.random()}`;
}
