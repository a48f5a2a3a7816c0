/**
 * A link-shaping TCP proxy for tests and benchmarks: it listens on loopback, forwards every
 * connection to a target, and delays the bytes the way a device <-> edge-server link would,
 * with a bandwidth (serialization delay) and an added one-way latency per direction. No root,
 * no `tc`, no extra process: the offloading example, tests and benchmark put one between a
 * client and a server on the same machine.
 *
 * ```ts
 * await using link = await ShapedLink.open({ target: { port: server.port }, profile: { bandwidth: parseRate('100mbit'), latencyMs: 10 } });
 * const session = await connect(link.host, link.port);   // every byte now crosses a 100 Mbit/s, 10 ms link
 * link.setProfile({ bandwidth: parseRate('20mbit'), latencyMs: 40 });  // degrade it at run time
 * link.cutConnections();                                   // or drop it
 * ```
 *
 * The model, per connection and direction: a serialization queue. Each piece of at most
 * 16 KiB departs at `max(now, previous departure) + bytes * 8 / bandwidth` and is written to
 * the other side `latencyMs` later. One timer per direction, set for the earliest piece due,
 * delivers everything due when it fires: setTimeout has ~1 ms granularity, and at 1 Gbit/s a
 * 16 KiB piece takes 131 µs, so pieces are timed by their own schedule, not by the timer's.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { TvmValueError } from '../errors';

/** One direction's (or both directions') shaping. */
export interface LinkProfile {
  /** Bits per second in each direction; Infinity (default) = unlimited. */
  bandwidth?: number;
  /** Added one-way delay in ms (default 0): a byte leaves the proxy latencyMs after it would otherwise. */
  latencyMs?: number;
}

/** Options of {@link ShapedLink.open}. */
export interface ShapedLinkOptions {
  /** Where to forward: the server (host default 127.0.0.1). */
  target: { host?: string; port: number };
  /**
   * Where to listen: loopback only (127.0.0.1 by default, ::1, localhost); anything else is
   * refused, as this is a test tool that must not expose the target. Port 0 (default): any free port.
   */
  listen?: { host?: string; port?: number };
  /** The shaping of both directions (default: unlimited, no added latency). */
  profile?: LinkProfile;
  /** client -> server shaping, in place of `profile`. */
  up?: LinkProfile;
  /** server -> client shaping, in place of `profile`. */
  down?: LinkProfile;
  /**
   * All connections share each direction's bandwidth, one FIFO queue as on a real link
   * (default false: each connection gets the full bandwidth on its own).
   */
  sharedBandwidth?: boolean;
}

/** A profile with its defaults filled in. */
type Shape = Required<LinkProfile>;

/** Counters of {@link ShapedLink.stats}. */
export interface ShapedLinkStats {
  /** Bytes delivered to the target (client -> server). */
  bytesUp: number;
  /** Bytes delivered to clients (server -> client). */
  bytesDown: number;
  /** Connections accepted and forwarded (refused ones not counted). */
  connections: number;
  /** Connections open now. */
  open: number;
}

/** The largest piece scheduled as one: a big write becomes a stream of pieces, not one delayed burst. */
const PIECE_BYTES = 16 * 1024;
/** Bytes waiting to depart (beyond those in flight) above which the reading side is paused. */
const HIGH_WATER = 4 * 2 ** 20;
/** ... and below which it is resumed. */
const LOW_WATER = HIGH_WATER / 2;
/** The most bytes held "on the wire" (departed, waiting out the latency) per direction: a memory bound. */
const MAX_IN_FLIGHT = 64 * 2 ** 20;
/** Socket buffers: large enough that write() does not report a full buffer after every piece. */
const SOCKET_BUFFER = 256 * 1024;
/** The longest delay setTimeout honours; longer waits are taken in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** The longest latency accepted (one hour): anything longer is a mistake in a test. */
const MAX_LATENCY_MS = 3_600_000;

/** The departure clock of one direction: per connection, or shared by all (`sharedBandwidth`). */
interface Clock {
  /** When the last scheduled byte departs (performance.now() ms). */
  last: number;
}

/** A piece of data and when it is due at the other side. */
interface Piece {
  data: Buffer;
  due: number;
}

/** Bytes the link may hold in flight without pausing the sender: the bandwidth-delay product, bounded. */
function inFlightAllowance(shape: Shape): number {
  if (shape.latencyMs === 0) return 0;
  return Math.min(MAX_IN_FLIGHT, (shape.bandwidth * shape.latencyMs) / 8000);
}

/** Ends a socket abruptly: a TCP reset when connected, so the peer sees a dropped link, not a clean end. */
function abort(socket: net.Socket): void {
  if (socket.destroyed) return;
  // A reset is refused (EINVAL, and the handle is never closed) once its side was shut down
  // (libuv: no uv_tcp_close_reset after uv_shutdown); its end is sent then anyway.
  if (socket.connecting || socket.writableEnded) socket.destroy();
  else socket.resetAndDestroy();
}

/**
 * One direction of one connection: reads `from`, holds the data for its scheduled time,
 * writes it to `to`, and forwards the end once everything before it is delivered.
 */
class Flow {
  private readonly pieces: (Piece | undefined)[] = [];
  /** Index of the next piece to deliver (the array is compacted now and then). */
  private head = 0;
  private queuedBytes = 0;
  private timer?: NodeJS.Timeout;
  /** `from` has ended its side (FIN): forward it after the queue. */
  private ending = false;
  /** Everything delivered and `to` ended, or stopped: nothing more to do. */
  private finished = false;
  /** `to` reported a full buffer: wait for 'drain'. */
  private blocked = false;
  /** `from` is paused by this flow (too much queued). */
  private paused = false;

  constructor(
    private readonly from: net.Socket,
    private readonly to: net.Socket,
    private readonly shape: () => Shape,
    private readonly clock: Clock,
    private readonly delivered: (bytes: number) => void,
  ) {
    from.on('data', (chunk: Buffer) => this.push(chunk));
    from.on('end', () => this.end());
    to.on('drain', () => {
      this.blocked = false;
      this.pump();
    });
  }

  /** Whether `from` ended its side cleanly (a FIN, not an error or a reset). */
  get ended(): boolean {
    return this.ending;
  }

  /** Schedules a chunk read from `from`. */
  private push(chunk: Buffer): void {
    if (this.finished) return;
    const shape = this.shape();
    for (let offset = 0; offset < chunk.length; offset += PIECE_BYTES) {
      const data = chunk.subarray(offset, offset + PIECE_BYTES);
      // Serialization: the piece departs once the link has sent everything before it, and
      // then itself. Unlimited bandwidth: at once, but never before the pieces ahead of it.
      const departs = Math.max(performance.now(), this.clock.last) + (data.length * 8000) / shape.bandwidth;
      this.clock.last = departs;
      this.pieces.push({ data, due: departs + shape.latencyMs });
    }
    this.queuedBytes += chunk.length;
    if (!this.paused && this.queuedBytes > inFlightAllowance(shape) + HIGH_WATER) {
      this.paused = true;
      this.from.pause();
    }
    this.pump();
  }

  private end(): void {
    this.ending = true;
    this.pump();
  }

  /** Delivers every piece that is due, then arms the timer for the next one. */
  private pump(): void {
    if (this.finished || this.blocked) return;
    this.deliverDue();
    this.maybeResume();
    if (this.head === this.pieces.length && this.ending && !this.blocked) {
      this.finished = true;
      this.to.end();
      return;
    }
    this.arm();
  }

  private deliverDue(): void {
    const now = performance.now();
    let corked = false;
    while (this.head < this.pieces.length && this.pieces[this.head]!.due <= now) {
      const piece = this.pieces[this.head]!;
      this.pieces[this.head++] = undefined;
      this.queuedBytes -= piece.data.length;
      this.delivered(piece.data.length);
      // Pieces due together leave in one write (writev), not one syscall each.
      if (!corked) {
        this.to.cork();
        corked = true;
      }
      if (!this.to.write(piece.data)) {
        this.blocked = true;
        break;
      }
    }
    if (corked) this.to.uncork();
    if (this.head === this.pieces.length) {
      this.pieces.length = 0;
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.pieces.length) {
      this.pieces.splice(0, this.head);
      this.head = 0;
    }
  }

  private maybeResume(): void {
    if (this.paused && this.queuedBytes <= inFlightAllowance(this.shape()) + LOW_WATER) {
      this.paused = false;
      this.from.resume();
    }
  }

  /** One timer per direction, for the next piece; it fires at most ~1 ms early or late, so the piece's own time decides. */
  private arm(): void {
    if (this.timer || this.blocked || this.head === this.pieces.length) return;
    const wait = Math.min(MAX_TIMER_MS, Math.max(1, Math.ceil(this.pieces[this.head]!.due - performance.now())));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.pump();
    }, wait);
  }

  /** Nothing queued or being written: closing now loses no data. */
  get idle(): boolean {
    return this.head === this.pieces.length && this.to.writableLength === 0;
  }

  /** Stops for good (a side closed): drops what is queued, clears the timer. */
  stop(): void {
    this.finished = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pieces.length = 0;
    this.head = 0;
    this.queuedBytes = 0;
  }
}

/** One proxied connection: the client's socket, the socket to the target, a flow each way. */
class Connection {
  readonly closed: Promise<void>;
  private readonly server: net.Socket;
  private readonly flows: [Flow, Flow];

  constructor(
    readonly client: net.Socket,
    target: { host: string; port: number },
    link: { up: () => Shape; down: () => Shape; clocks: () => { up: Clock; down: Clock }; count: (dir: 'up' | 'down', n: number) => void },
  ) {
    // Node passes highWaterMark on to the socket's stream; @types/node does not list it.
    const options: net.TcpNetConnectOpts & { highWaterMark: number } = {
      host: target.host,
      port: target.port,
      allowHalfOpen: true,
      noDelay: true,
      highWaterMark: SOCKET_BUFFER,
    };
    const server = net.connect(options);
    this.server = server;
    const clocks = link.clocks();
    const up = new Flow(client, server, link.up, clocks.up, (n) => link.count('up', n));
    const down = new Flow(server, client, link.down, clocks.down, (n) => link.count('down', n));
    this.flows = [up, down];
    // An error on either side (a reset, a failed connect to the target) drops the other abruptly too.
    const drop = () => this.cut();
    client.on('error', drop);
    server.on('error', drop);
    // A side that closed takes its flows with it; if it closed without a clean end of its
    // data, the other side is dropped. After a clean end, the data still queued for the
    // other side is delivered first, then the end is forwarded.
    client.on('close', () => {
      down.stop();
      if (!up.ended) this.cut();
    });
    server.on('close', () => {
      up.stop();
      if (!down.ended) this.cut();
    });
    this.closed = Promise.all([closedPromise(client), closedPromise(server)]).then(() => {});
  }

  /** Drops both sides abruptly. */
  cut(): void {
    abort(this.client);
    abort(this.server);
  }

  /**
   * Closes both sides for a proxy shutdown: cleanly when no data is in transit, so peers
   * see an ordinary close; with a reset when queued data is dropped, so they do not take
   * a truncated stream for a complete one.
   */
  close(): void {
    if (this.flows.every((f) => f.idle)) {
      this.client.destroy();
      this.server.destroy();
    } else {
      this.cut();
    }
  }
}

function closedPromise(socket: net.Socket): Promise<void> {
  if (socket.closed) return Promise.resolve();
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function checkPort(what: string, port: unknown, min: number): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < min || port > 65535) {
    throw new TvmValueError('ValueError', `ShapedLink: ${what} must be a whole number from ${min} to 65535, got ${String(port)}`);
  }
  return port;
}

const PROFILE_KEYS = new Set(['bandwidth', 'latencyMs']);

/** A profile checked and with its defaults filled in. */
function normalizeProfile(profile: LinkProfile | undefined, what: string): Shape {
  const p = profile ?? {};
  if (typeof p !== 'object' || p === null) throw new TvmValueError('ValueError', `ShapedLink: ${what} must be an object { bandwidth?, latencyMs? }`);
  // A misspelt key (`latency: 30`) would otherwise be a link with no latency, silently.
  for (const key of Object.keys(p)) {
    if (!PROFILE_KEYS.has(key)) throw new TvmValueError('ValueError', `ShapedLink: unknown ${what} key '${key}' (expected bandwidth, latencyMs)`);
  }
  const bandwidth = p.bandwidth ?? Number.POSITIVE_INFINITY;
  const latencyMs = p.latencyMs ?? 0;
  if (typeof bandwidth !== 'number' || Number.isNaN(bandwidth) || bandwidth <= 0) {
    throw new TvmValueError('ValueError', `ShapedLink: ${what}.bandwidth must be a positive number of bits per second (or Infinity), got ${String(bandwidth)}`);
  }
  if (typeof latencyMs !== 'number' || !Number.isFinite(latencyMs) || latencyMs < 0 || latencyMs > MAX_LATENCY_MS) {
    throw new TvmValueError('ValueError', `ShapedLink: ${what}.latencyMs must be from 0 to ${MAX_LATENCY_MS} ms, got ${String(latencyMs)}`);
  }
  return { bandwidth, latencyMs };
}

/**
 * A link-shaping TCP proxy on loopback: clients connect to {@link ShapedLink.host}:{@link ShapedLink.port}
 * and reach the target through an emulated link (bandwidth and added latency per direction).
 * Order and content of the bytes are preserved exactly; a half-close (FIN) is forwarded after
 * the bytes before it; an error or abrupt close of one side drops the other. Reading pauses
 * when more than ~4 MiB (beyond the bandwidth-delay product) waits in a direction.
 */
export class ShapedLink implements AsyncDisposable {
  /** The address clients connect to. */
  readonly host: string;
  /** The port clients connect to. */
  readonly port: number;
  private shapes: { up: Shape; down: Shape };
  private readonly connections = new Set<Connection>();
  /** Sockets refused while down, until they are gone (close() awaits them). */
  private readonly refused = new Set<net.Socket>();
  private readonly counters = { bytesUp: 0, bytesDown: 0, connections: 0 };
  private readonly sharedClocks?: { up: Clock; down: Clock };
  private down = false;
  private closing?: Promise<void>;

  private constructor(
    private readonly server: net.Server,
    private readonly target: { host: string; port: number },
    shapes: { up: Shape; down: Shape },
    shared: boolean,
  ) {
    const address = server.address() as net.AddressInfo;
    this.host = address.address;
    this.port = address.port;
    this.shapes = shapes;
    if (shared) this.sharedClocks = { up: { last: 0 }, down: { last: 0 } };
    server.on('connection', (socket) => this.accept(socket));
    // Accept errors (EMFILE, ...) concern one connection attempt, not the proxy.
    server.on('error', () => {});
  }

  /** Starts listening; resolves once clients can connect. */
  static async open(opts: ShapedLinkOptions): Promise<ShapedLink> {
    if (typeof opts !== 'object' || opts === null || typeof opts.target !== 'object' || opts.target === null) {
      throw new TvmValueError('ValueError', 'ShapedLink.open: give { target: { host?, port } }');
    }
    const target = { host: opts.target.host ?? '127.0.0.1', port: checkPort('target.port', opts.target.port, 1) };
    const host = opts.listen?.host ?? '127.0.0.1';
    if (!isLoopback(host)) {
      throw new TvmValueError('ValueError', `ShapedLink listens on loopback only (127.0.0.1, ::1, localhost), not '${host}': it is a test tool, not a gateway`);
    }
    const port = checkPort('listen.port', opts.listen?.port ?? 0, 0);
    const shapes = { up: normalizeProfile(opts.up ?? opts.profile, 'up'), down: normalizeProfile(opts.down ?? opts.profile, 'down') };
    const server = net.createServer({ allowHalfOpen: true, noDelay: true, highWaterMark: SOCKET_BUFFER });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return new ShapedLink(server, target, shapes, opts.sharedBandwidth ?? false);
  }

  /**
   * Changes the shaping at run time: a profile for both directions, or `{ up?, down? }` for
   * either. A profile replaces the old one whole (missing fields take their defaults). It
   * applies to bytes not yet scheduled: those already queued keep their times.
   */
  setProfile(profile: LinkProfile | { up?: LinkProfile; down?: LinkProfile }): void {
    if (typeof profile !== 'object' || profile === null) throw new TvmValueError('ValueError', 'ShapedLink.setProfile: give a profile or { up?, down? }');
    if ('up' in profile || 'down' in profile) {
      const { up, down, ...rest } = profile as { up?: LinkProfile; down?: LinkProfile };
      if (Object.keys(rest).length > 0) {
        throw new TvmValueError(
          'ValueError',
          `ShapedLink.setProfile: give either { up?, down? } or one profile, not both (extra: ${Object.keys(rest).join(', ')})`,
        );
      }
      this.shapes = { up: up ? normalizeProfile(up, 'up') : this.shapes.up, down: down ? normalizeProfile(down, 'down') : this.shapes.down };
    } else {
      const shape = normalizeProfile(profile as LinkProfile, 'profile');
      this.shapes = { up: shape, down: shape };
    }
  }

  /** The shaping now, each direction. */
  get profile(): { up: Shape; down: Shape } {
    return { up: { ...this.shapes.up }, down: { ...this.shapes.down } };
  }

  /** Counters since open. */
  get stats(): ShapedLinkStats {
    return { ...this.counters, open: this.connections.size };
  }

  /**
   * Cuts every open connection abruptly, as a dropped link: both sides get a TCP reset.
   * New connections still work (unless the link is down: {@link setDown}).
   */
  cutConnections(): void {
    for (const c of this.connections) c.cut();
  }

  /** Takes the link down (true): new connections are closed at once (reset) and open ones cut. Up again with false. */
  setDown(down: boolean): void {
    this.down = down;
    if (down) this.cutConnections();
  }

  /**
   * Stops listening, closes every connection (with a TCP reset where queued data is dropped)
   * and resolves once all are gone.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private async shutdown(): Promise<void> {
    const listening = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const pending = [...this.connections].map((c) => {
      c.close();
      return c.closed;
    });
    for (const s of this.refused) s.destroy();
    await Promise.all([listening, ...pending, ...[...this.refused].map(closedPromise)]);
  }

  private accept(client: net.Socket): void {
    client.on('error', () => {});
    if (this.down || this.closing) {
      this.refused.add(client);
      client.once('close', () => this.refused.delete(client));
      abort(client);
      return;
    }
    this.counters.connections++;
    const connection = new Connection(client, this.target, {
      up: () => this.shapes.up,
      down: () => this.shapes.down,
      clocks: () => this.sharedClocks ?? { up: { last: 0 }, down: { last: 0 } },
      count: (dir, n) => {
        if (dir === 'up') this.counters.bytesUp += n;
        else this.counters.bytesDown += n;
      },
    });
    this.connections.add(connection);
    connection.closed.then(() => this.connections.delete(connection));
  }
}

/**
 * Parses a rate into bits per second: `1gbit`, `100mbit`, `512kbit`, `100 Mbit/s`, `20Mb/s`
 * (bits: `bit` or a lowercase `b`), `10MB/s`, `10MiB/s` (bytes: an uppercase `B`),
 * `unlimited` (Infinity). Prefixes k, M, G, T are powers of 1000, Ki, Mi, Gi, Ti of 1024.
 * `bps` spellings are refused: tc reads `mbps` as megabytes, most people as megabits.
 */
export function parseRate(text: string): number {
  const t = String(text).trim();
  if (/^(unlimited|inf|infinity)$/i.test(t)) return Number.POSITIVE_INFINITY;
  const hint = "expected a rate such as 100mbit, 1gbit, 512kbit, 10MB/s or 'unlimited'";
  const m = /^(\d+(?:\.\d+)?|\.\d+)\s*(\S*)$/.exec(t);
  if (!m) throw new TvmValueError('ValueError', `bad rate '${text}': ${hint}`);
  const unit = m[2];
  if (unit === '') throw new TvmValueError('ValueError', `bad rate '${text}': give a unit (bits: 100mbit; bytes: 12.5MB/s)`);
  if (/ps$/i.test(unit)) throw new TvmValueError('ValueError', `bad rate '${text}': 'bps' is ambiguous (bits or bytes?); write 100mbit or 12.5MB/s`);
  const u = /^([kmgt]?)(i?)(bits?|b)(\/s)?$/i.exec(unit);
  if (!u || (u[2] && !u[1])) throw new TvmValueError('ValueError', `bad rate '${text}': unknown unit '${unit}'; ${hint}`);
  const power = u[1] ? 'kmgt'.indexOf(u[1].toLowerCase()) + 1 : 0;
  const value = Number(m[1]) * (u[2] ? 1024 : 1000) ** power * (u[3] === 'B' ? 8 : 1);
  if (!(value > 0)) throw new TvmValueError('ValueError', `bad rate '${text}': must be more than 0 (use 'unlimited' for no limit)`);
  return value;
}

/** Parses a delay into milliseconds: `10ms`, `1.5s`, `250us`, `40` (ms). */
export function parseDelay(text: string): number {
  const m = /^(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|us|µs)?$/.exec(String(text).trim().toLowerCase());
  if (!m) throw new TvmValueError('ValueError', `bad delay '${text}': expected a delay such as 10ms, 1s or 40 (ms)`);
  const scale = m[2] === 's' ? 1000 : m[2] === 'us' || m[2] === 'µs' ? 1e-3 : 1;
  const ms = Number(m[1]) * scale;
  if (ms > MAX_LATENCY_MS) throw new TvmValueError('ValueError', `bad delay '${text}': at most ${MAX_LATENCY_MS / 1000} s`);
  return ms;
}

/** A rate for people: `100 Mbit/s`, `1.5 Gbit/s`, `unlimited`. */
export function formatRate(bitsPerSecond: number): string {
  if (!Number.isFinite(bitsPerSecond)) return 'unlimited';
  const [scale, prefix] = bitsPerSecond >= 1e9 ? [1e9, 'G'] : bitsPerSecond >= 1e6 ? [1e6, 'M'] : bitsPerSecond >= 1e3 ? [1e3, 'k'] : [1, ''];
  return `${Number((bitsPerSecond / scale).toPrecision(4))} ${prefix}bit/s`;
}
