/**
 * The per-request offload decision: which split point (and which encoding of the tensors that
 * cross) a frame should use, from online estimates of what each part costs.
 *
 * Estimates are exponentially weighted moving averages (EWMA) of:
 * - each stage's compute time on the device (from local runs);
 * - each stage's compute time on the server (the server reports how long a request's models
 *   ran; a chain's time is shared among its stages as their device times are);
 * - the server's queue (its reported time outside the runs: loads, waiting for a VM);
 * - the link: round-trip time (from pings, which carry no data) and bandwidth (bytes over the
 *   time a request spent on the wire: its wall time less the server's time and the RTT);
 * - the time to encode a crossing tensor on the device, per encoding.
 *
 * A plan's predicted frame time is its device part, plus, when anything runs remotely, the
 * encoding, one round trip, the bytes over the bandwidth, the server's compute and its queue.
 * Streams (frames pipelined) are paced by the slower of the device part and the remote part,
 * so for them the policy minimizes that instead ({@link Objective}).
 *
 * When a remote request fails (error, deadline, dropped connection) the server is set aside
 * for a back-off time that doubles with each failure (1 s to 30 s by default); after it, the
 * runner probes the server (a ping) before the policy offloads again. While the policy keeps
 * frames local, the runner still pings now and then, so a link that recovers is noticed.
 */
import type { Encoding, Plan, SplitGraph } from './graph';

/** What to minimize: one frame's latency, or the period of a pipelined stream. */
export type Objective = 'latency' | 'throughput';

/** Options of {@link OffloadPolicy}. */
export interface PolicyOptions {
  /** Weight of a new measurement in each EWMA. Default 0.3. */
  alpha?: number;
  /** Encodings the policy may use. Default: float32 and float16. */
  encodings?: readonly Encoding[];
  /** The largest output error an encoding may add (as the split measured it). Default 0.05. */
  maxError?: number;
  /** First back-off after a remote failure, ms (doubles per failure). Default 1000. */
  backoffMs?: number;
  /** Longest back-off, ms. Default 30000. */
  maxBackoffMs?: number;
  /**
   * How much faster than the device the server is assumed to run a stage before it has been
   * measured. Default 1 (as fast): the first remote frame measures it.
   */
  serverSpeedup?: number;
  /** The stages the device has a build of (default: all); the others run only on the server. */
  local?: ReadonlySet<string>;
}

/** Why a plan was chosen. */
export interface Decision {
  plan: Plan;
  /** Predicted ms per frame (latency, or period for throughput). */
  predictedMs: number;
  reason: string;
}

/** What one remote request measured. */
export interface RemoteSample {
  /** Stages the request ran. */
  stages: readonly string[];
  /** Wall time from sending to the last byte of the answer, ms. */
  wallMs: number;
  /** The server's account: total and run time, µs (undefined from servers that do not say). */
  server?: { totalUs: number; runUs: number };
  bytesSent: number;
  bytesReceived: number;
}

/**
 * A moving average that knows whether it has seen anything. With `jump`, a sample that many
 * times above or below the average replaces it: a link that changes (a fast link turning slow)
 * is followed at once instead of over dozens of samples.
 */
class Ewma {
  value: number | undefined;
  constructor(
    private readonly alpha: number,
    initial?: number,
    private readonly jump = Number.POSITIVE_INFINITY,
  ) {
    this.value = initial;
  }
  add(x: number): void {
    if (!Number.isFinite(x)) return;
    const v = this.value;
    this.value = v === undefined || x > v * this.jump || x * this.jump < v ? x : v + this.alpha * (x - v);
  }
}

/** A link estimate's sample this many times off its average replaces it. */
const LINK_JUMP = 4;

/** The estimates, as {@link OffloadPolicy.estimates} shows them. */
export interface Estimates {
  /** Stage -> device ms. */
  local: Record<string, number | undefined>;
  /** Stage -> server ms. */
  remote: Record<string, number | undefined>;
  rttMs?: number;
  /** Bytes per ms (= kB/s). */
  bandwidth?: number;
  queueMs?: number;
  /** Encoding -> device ms per crossing. */
  encodeMs: Partial<Record<Encoding, number>>;
  /** When the server may be used again (performance.now() ms), after failures. */
  backoffUntil: number;
  failures: number;
}

export class OffloadPolicy {
  private readonly alpha: number;
  private readonly encodings: readonly Encoding[];
  private readonly maxError: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly serverSpeedup: number;
  private readonly local = new Map<string, Ewma>();
  private readonly remote = new Map<string, Ewma>();
  private readonly rtt: Ewma;
  /** ms per byte on the wire (averaging costs, not rates: a slow sample weighs as it should). */
  private readonly msPerByte: Ewma;
  private readonly queue: Ewma;
  private readonly encode = new Map<Encoding, Ewma>();
  private backoffUntil = 0;
  private failures = 0;
  private readonly localStages: ReadonlySet<string>;

  constructor(
    private readonly graph: SplitGraph,
    opts: PolicyOptions = {},
  ) {
    this.alpha = opts.alpha ?? 0.3;
    this.encodings = opts.encodings ?? ['float32', 'float16'];
    this.maxError = opts.maxError ?? 0.05;
    this.backoffMs = opts.backoffMs ?? 1000;
    this.maxBackoffMs = opts.maxBackoffMs ?? 30_000;
    this.serverSpeedup = opts.serverSpeedup ?? 1;
    this.localStages = opts.local ?? new Set(graph.stages.map((s) => s.name));
    for (const s of graph.stages) {
      this.local.set(s.name, new Ewma(this.alpha));
      this.remote.set(s.name, new Ewma(this.alpha));
    }
    this.rtt = new Ewma(this.alpha, undefined, LINK_JUMP);
    this.msPerByte = new Ewma(this.alpha, undefined, LINK_JUMP);
    this.queue = new Ewma(this.alpha, 0);
  }

  /** The plans the policy chooses among: every split point, with the allowed encodings whose error is small enough. */
  candidates(): Plan[] {
    return this.graph.splitPlans(this.encodings).filter((p) => this.graph.encodingError(p.split!, p.encoding) <= this.maxError && this.runnable(p));
  }

  /** Whether the device has a build of every stage the plan places on it. */
  runnable(plan: Plan): boolean {
    return Object.entries(plan.placements).every(([stage, where]) => where === 'remote' || this.localStages.has(stage));
  }

  /** Whether the server is in use: not set aside after failures (a successful probe or request brings it back). */
  get serverAvailable(): boolean {
    return this.failures === 0;
  }

  /** The plan for the next frame; `inFlight`: frames a stream keeps in flight (throughput). */
  choose(objective: Objective = 'latency', inFlight = 1): Decision {
    const local = this.graph.splitPlan(this.graph.segments);
    if (!this.runnable(local)) return this.best(objective, inFlight, 'the device lacks builds of some stages');
    if (!this.serverAvailable)
      return { plan: local, predictedMs: this.predict(local, objective), reason: `server set aside after ${this.failures} failure(s)` };
    const missing = this.graph.stages.filter((s) => this.local.get(s.name)!.value === undefined);
    if (missing.length) return { plan: local, predictedMs: Number.NaN, reason: `measuring the device (${missing.map((s) => s.name).join(', ')})` };
    if (this.rtt.value === undefined) return { plan: local, predictedMs: this.predict(local, objective), reason: 'link not measured yet' };
    return this.best(objective, inFlight);
  }

  /** The candidate with the lowest prediction; `why` says why the choice is forced, when it is. */
  private best(objective: Objective, inFlight: number, why?: string): Decision {
    let best: Decision | undefined;
    for (const plan of this.candidates()) {
      const ms = this.predict(plan, objective, inFlight);
      if (!best || ms < best.predictedMs) best = { plan, predictedMs: ms, reason: '' };
    }
    const local = this.graph.splitPlan(this.graph.segments);
    best = best ?? { plan: local, predictedMs: this.predict(local, objective), reason: '' };
    const what = `lowest predicted ${objective === 'latency' ? 'latency' : 'period'} (${best.predictedMs.toFixed(1)} ms; ${this.describeLink()})`;
    best.reason = why ? `${what}; ${why}` : what;
    return best;
  }

  /**
   * Predicted ms of a plan: a frame's latency, or the period of a stream with `inFlight`
   * frames in flight. A stream's device part and remote part overlap; the remote part is
   * bound by the server's compute or the wire, or by whole round trips shared among the
   * frames in flight (requests are pipelined on the connection).
   */
  predict(plan: Plan, objective: Objective = 'latency', inFlight = 1): number {
    let device = 0;
    let server = 0;
    let anyRemote = false;
    for (const s of this.graph.stages) {
      if (plan.placements[s.name] === 'local') device += this.local.get(s.name)!.value ?? 0;
      else {
        anyRemote = true;
        server += this.remoteMs(s.name);
      }
    }
    if (!anyRemote) return device;
    const k = plan.split ?? this.graph.segments;
    const bytes = (plan.split !== undefined ? this.graph.crossingBytes(k, plan.encoding) : 0) + this.graph.outputBytes;
    const encode = plan.encoding === 'float32' ? 0 : (this.encode.get(plan.encoding)?.value ?? 0);
    const wire = bytes * (this.msPerByte.value ?? 0);
    const remote = (this.rtt.value ?? 0) + wire + server + (this.queue.value ?? 0);
    if (objective === 'latency') return device + encode + remote;
    return Math.max(device + encode, server + (this.queue.value ?? 0), wire, remote / inFlight);
  }

  /** A stage's server ms: measured, or its device time over the assumed speed-up. */
  private remoteMs(stage: string): number {
    return this.remote.get(stage)!.value ?? (this.local.get(stage)!.value ?? 0) / this.serverSpeedup;
  }

  /** A stage ran on the device. */
  observeLocal(stage: string, ms: number): void {
    this.local.get(stage)?.add(ms);
  }

  /** Encoding the crossing tensors took `ms` on the device. */
  observeEncode(encoding: Encoding, ms: number): void {
    if (!this.encode.has(encoding)) this.encode.set(encoding, new Ewma(this.alpha));
    this.encode.get(encoding)!.add(ms);
  }

  /** A ping answered after `ms` (carrying `bytes` of payload, when it measured the bandwidth too). */
  observePing(ms: number, bytes = 0): void {
    if (bytes === 0) this.rtt.add(ms);
    else if (this.rtt.value !== undefined) this.msPerByte.add(Math.max(ms - this.rtt.value, 0.05) / bytes);
    this.succeeded();
  }

  /**
   * A remote request succeeded. A warm-up request (the server loading its models) tells the
   * server's compute time only: its queue and wire times are not typical.
   */
  observeRemote(r: RemoteSample, warmup = false): void {
    this.succeeded();
    if (!r.server) return;
    const runMs = r.server.runUs / 1000;
    if (!warmup) this.queue.add(Math.max(r.server.totalUs - r.server.runUs, 0) / 1000);
    // The chain's run time, shared among its stages as their device times are.
    const weights = r.stages.map((s) => this.local.get(s)?.value ?? 1);
    const sum = weights.reduce((a, b) => a + b, 0) || 1;
    r.stages.forEach((s, i) => this.remote.get(s)?.add((runMs * weights[i]) / sum));
    if (warmup) return;
    const wire = r.wallMs - r.server.totalUs / 1000 - (this.rtt.value ?? 0);
    const bytes = r.bytesSent + r.bytesReceived;
    // Small transfers say little about bandwidth (the wire time is mostly noise then).
    if (bytes >= 16 * 1024) this.msPerByte.add(Math.max(wire, 0.05) / bytes);
  }

  /** A remote request failed (or passed its deadline): the server is set aside for a while. */
  observeFailure(): void {
    this.failures++;
    const wait = Math.min(this.backoffMs * 2 ** (this.failures - 1), this.maxBackoffMs);
    this.backoffUntil = performance.now() + wait;
  }

  /** The back-off is over, or a probe got through: forget the failures. */
  private succeeded(): void {
    this.failures = 0;
    this.backoffUntil = 0;
  }

  /** Whether the back-off after failures has ended without a probe yet (the runner then probes before offloading). */
  get needsProbe(): boolean {
    return this.failures > 0 && performance.now() >= this.backoffUntil;
  }

  /** The current estimates. */
  get estimates(): Estimates {
    const values = (m: Map<string, Ewma>) => Object.fromEntries([...m].map(([k, v]) => [k, v.value]));
    return {
      local: values(this.local),
      remote: Object.fromEntries(this.graph.stages.map((s) => [s.name, this.remote.get(s.name)!.value])),
      rttMs: this.rtt.value,
      bandwidth: this.msPerByte.value === undefined ? undefined : 1 / this.msPerByte.value,
      queueMs: this.queue.value,
      encodeMs: Object.fromEntries([...this.encode].map(([k, v]) => [k, v.value])),
      backoffUntil: this.backoffUntil,
      failures: this.failures,
    };
  }

  private describeLink(): string {
    const cost = this.msPerByte.value;
    const rate = cost === undefined ? 'bandwidth unknown' : `${(8 / cost / 1000).toFixed(1)} Mbit/s`;
    return `rtt ${(this.rtt.value ?? 0).toFixed(1)} ms, ${rate}`;
  }
}
