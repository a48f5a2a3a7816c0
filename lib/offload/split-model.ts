/**
 * A split model at run time: its stages on this process's device and on an edge server,
 * frame by frame, with a per-frame placement chosen by {@link OffloadPolicy} (or given), the
 * local fallback when the server fails, and pipelined streams.
 *
 * Per frame:
 * - local stages run on the device ({@link Model}, one run at a time per stage, so frames of
 *   a stream queue at each stage in order and stage k of frame n+1 overlaps stage k+1 of frame
 *   n); a stage starts as soon as its inputs exist, so parallel branches run concurrently;
 * - remote stages run on the server as one request per connected group of them (a chain of
 *   the repository's models, lib/rpc/infer.ts), so tensors cross the network only where an
 *   edge crosses placements, once; tensors crossing at the split point may travel float16 or
 *   int8 (encoded on the device by the split's codec, decoded by the server's variant of the
 *   stage);
 * - a remote group that fails, passes the deadline or loses its connection is run on the
 *   device instead: the frame is still answered, and the policy sets the server aside.
 *
 * The byte counters count tensor bytes of requests and answers: a frame that runs locally
 * sends none.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import type { Device } from '../device';
import { type DType, dtypeOfArray, HOST_ARRAY, type TypedArray } from '../dtype';
import { TvmRuntimeError, TvmValueError } from '../errors';
import { HandleOwner } from '../handle';
import { Model } from '../model';
import { connect, type RPCSession } from '../rpc/client';
import { CHAIN_SEPARATOR, PING } from '../rpc/infer';
import { Tensor } from '../tensor';
import { outputsOf } from '../vm';
import { type Encoding, type Placement, type Plan, SplitGraph, type StageSpec, type StaticTensor } from './graph';
import { type Decision, type Objective, OffloadPolicy, type PolicyOptions } from './policy';

/** Where the server is: a session, `host:port`, or a function that connects (called again after the connection is lost). */
export type ServerTarget = RPCSession | string | (() => Promise<RPCSession>);

/** Options of {@link SplitModel.load}. */
export interface SplitModelOptions {
  /** The edge server serving the split's repository (`tvm-node rpc-server --models DIR/server`). None: everything runs locally. */
  server?: ServerTarget;
  /** The device the local stages run on. Default: the CPU. */
  device?: Device | string;
  /** The offload policy's options. */
  policy?: PolicyOptions;
  /** A remote request not answered within this many ms is given up and run locally. Default 2000. */
  deadlineMs?: number;
  /** While frames run locally, ping the server at most this often (ms) to notice a recovered link. Default 1000. */
  probeIntervalMs?: number;
  /** Bytes of the payload a bandwidth probe carries. Default 256 KiB. */
  probeBytes?: number;
  /** Run every stage once locally (and every remote plan once on the server) on zeros at load, so the first frames are not the slow ones and the policy has estimates. Default true. */
  warmup?: boolean;
}

/**
 * Which placement a frame uses: `'auto'` (the policy), `'local'`, `'remote'`, a split point
 * (segments before it local), a split point with an encoding, or stage-by-stage placements.
 * This is the seed's control input X: given, it overrides the policy.
 */
export type PlanChoice =
  | 'auto'
  | 'local'
  | 'remote'
  | number
  | { split: number; encoding?: Encoding }
  | { placements: Record<string, Placement>; encoding?: Encoding };

/** One input of a frame: a tensor, a TypedArray of the input's declared shape, or data with a shape. */
export type FrameInput = Tensor | TypedArray | { data: TypedArray; shape: readonly number[]; dtype?: DType };

/** Options of {@link SplitModel.run}. */
export interface FrameOptions {
  plan?: PlanChoice;
  /** Overrides the model's deadline for this frame. */
  deadlineMs?: number;
}

/** Where and how long one stage ran in a frame. */
export interface StageTiming {
  stage: string;
  where: Placement;
  /** When it started, ms from the frame's start (a remote stage: when its request went out). */
  startMs: number;
  /** How long it took (remote: the request's round trip, shared among the stages it ran). */
  ms: number;
}

/** A frame's result and what it took. */
export interface FrameResult {
  /** The model's outputs by name (the caller's to dispose). */
  outputs: Record<string, Tensor>;
  /** The frame's number (from 0, in call order). */
  frame: number;
  plan: Plan;
  /** Why the plan was chosen. */
  reason: string;
  /** Set when remote stages failed and ran locally: what went wrong. */
  fallback?: string;
  ms: number;
  stages: StageTiming[];
  bytesSent: number;
  bytesReceived: number;
}

/** Counters since load. */
export interface OffloadStats {
  frames: number;
  /** Frames by plan label. */
  plans: Record<string, number>;
  fallbacks: number;
  remoteRequests: number;
  bytesSent: number;
  bytesReceived: number;
  pings: number;
  /** Bytes the bandwidth probes sent (not in bytesSent). */
  probeBytes: number;
}

/** Events of a {@link SplitModel}. */
export interface SplitModelEvents {
  decision: [{ frame: number } & Decision];
  stage: [{ frame: number } & StageTiming];
  fallback: [{ frame: number; stages: string[]; error: Error }];
  frame: [Omit<FrameResult, 'outputs'>];
  probe: [{ ok: boolean; rttMs?: number; error?: Error }];
}

/** A value of a frame: a tensor, or host data (a frame's inputs, until something needs a tensor). */
type Value = Tensor | { data: TypedArray; shape: readonly number[]; dtype: DType };

/** A tensor of a frame that may not exist yet. */
interface Slot {
  promise: Promise<Value>;
  resolve(v: Value): void;
  reject(err: Error): void;
}

function slot(): Slot {
  let resolve!: (v: Value) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<Value>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined); // whoever waits on it sees the error
  return { promise, resolve, reject };
}

/** A frame in progress: its tensors by name (made or to be made) and what it made. */
class Frame {
  private readonly slots = new Map<string, Slot>();
  readonly made: Tensor[] = [];
  readonly stages: StageTiming[] = [];
  bytesSent = 0;
  bytesReceived = 0;
  fallback?: string;
  readonly start = performance.now();
  constructor(readonly index: number) {}

  /** The tensor `name`, once it exists. */
  get(name: string): Promise<Value> {
    return this.slot(name).promise;
  }

  /** Whether anything makes (or made) `name` in this frame. */
  has(name: string): boolean {
    return this.slots.has(name);
  }

  /** Says that `name` will be made. */
  expect(name: string): void {
    this.slot(name);
  }

  /** `name` is made: `v`, which the frame disposes at its end unless `owned` is false (the caller's inputs). */
  set(name: string, v: Value, owned = true): void {
    if (owned && v instanceof Tensor) this.made.push(v);
    this.slot(name).resolve(v);
  }

  /** What waits for `names` fails with `err` (a no-op for those already made). */
  fail(names: Iterable<string>, err: Error): void {
    for (const n of names) this.slot(n).reject(err);
  }

  private slot(name: string): Slot {
    const known = this.slots.get(name);
    if (known) return known;
    const made = slot();
    this.slots.set(name, made);
    return made;
  }

  /** Disposes what the frame made, except `keep`. */
  release(keep: ReadonlySet<Tensor> = new Set()): void {
    for (const t of this.made) if (!keep.has(t) && !t.disposed) t.disposeSync();
  }
}

/**
 * The remote stages of a plan in groups, each group one request: stages connected through
 * remote edges or a shared input.
 */
function remoteGroups(graph: SplitGraph, plan: Plan): StageSpec[][] {
  const remote = graph.stages.filter((s) => plan.placements[s.name] === 'remote');
  // Union stages whose tensors flow between them (the graph is small: quadratic is fine).
  const parent = remote.map((_, i) => i);
  const root = (i: number): number => (parent[i] === i ? i : root(parent[i]));
  // Stages that share an input go in one request too, so that input crosses once.
  const joined = (a: StageSpec, b: StageSpec) =>
    a.outputs.some((o) => b.inputs.some((t) => t.name === o.name)) || a.inputs.some((i) => b.inputs.some((t) => t.name === i.name));
  for (const [i, a] of remote.entries()) {
    for (const [j, b] of remote.entries()) if (i !== j && joined(a, b)) parent[root(i)] = root(j);
  }
  const groups = new Map<number, StageSpec[]>();
  remote.forEach((s, i) => {
    const r = root(i);
    groups.set(r, [...(groups.get(r) ?? []), s]);
  });
  return [...groups.values()];
}

const elapsed = (start: number) => performance.now() - start;

/** Bytes of a value's data. */
function valueBytes(v: Value): number {
  return v instanceof Tensor ? v.byteLength : v.data.byteLength;
}

export class SplitModel extends EventEmitter<SplitModelEvents> implements AsyncDisposable {
  readonly policy: OffloadPolicy;
  /** Counters since load. */
  readonly stats: OffloadStats = { frames: 0, plans: {}, fallbacks: 0, remoteRequests: 0, bytesSent: 0, bytesReceived: 0, pings: 0, probeBytes: 0 };
  private session?: Promise<RPCSession>;
  private frames = 0;
  /** The tail of each stage's queue of device runs. */
  private readonly lanes = new Map<string, Promise<unknown>>();
  private remoteInFlight = 0;
  private probing?: Promise<void>;
  private lastProbe = 0;
  private disposed = false;
  private readonly deadlineMs: number;
  private readonly probeIntervalMs: number;
  private readonly probeBytes: number;

  private constructor(
    readonly graph: SplitGraph,
    private readonly models: ReadonlyMap<string, Model>,
    private readonly codec: Model | undefined,
    private readonly server: ServerTarget | undefined,
    opts: SplitModelOptions,
  ) {
    super();
    this.policy = new OffloadPolicy(graph, { ...opts.policy, local: new Set(models.keys()) });
    this.deadlineMs = opts.deadlineMs ?? 2000;
    this.probeIntervalMs = opts.probeIntervalMs ?? 1000;
    this.probeBytes = opts.probeBytes ?? 256 * 1024;
    if (typeof server === 'object') this.session = Promise.resolve(server);
  }

  /** Loads a split (the folder `tvm-node split` wrote): every stage's device build, and the connection to the server when one is given. */
  static async load(dir: string, opts: SplitModelOptions = {}): Promise<SplitModel> {
    const graph = SplitGraph.read(dir);
    const models = new Map<string, Model>();
    let codec: Model | undefined;
    try {
      for (const s of graph.stages) {
        // A device may hold only the stages it runs (the server keeps the others' weights).
        if (!fs.existsSync(graph.file(s.device.library))) {
          if (opts.server === undefined)
            throw new TvmValueError(
              'ValueError',
              `split ${graph.dir}: stage ${s.name} has no device build (${s.device.library}) and no server was given to run it`,
            );
          continue;
        }
        const manifest = s.device.manifest ? graph.file(s.device.manifest) : undefined;
        models.set(s.name, await Model.load(graph.file(s.device.library), { device: opts.device, concurrency: 1, ...(manifest ? { manifest } : {}) }));
      }
      if (graph.manifest.codec)
        codec = await Model.load(graph.file(graph.manifest.codec.library), { device: opts.device, manifest: false, function: 'encode_f16_r1' });
    } catch (err) {
      await Promise.all([...models.values(), ...(codec ? [codec] : [])].map((m) => m.dispose()));
      throw err;
    }
    const model = new SplitModel(graph, models, codec, opts.server, opts);
    if (opts.warmup !== false) {
      try {
        await model.warmup();
      } catch (err) {
        await model.dispose();
        throw err;
      }
    }
    // Frames and counters start with the caller's first frame.
    model.frames = 0;
    Object.assign(model.stats, { frames: 0, plans: {}, fallbacks: 0, remoteRequests: 0, bytesSent: 0, bytesReceived: 0 });
    return model;
  }

  /** The model's inputs. */
  get inputs(): readonly StaticTensor[] {
    return this.graph.manifest.inputs;
  }

  /** The model's outputs. */
  get outputs(): readonly StaticTensor[] {
    return this.graph.manifest.outputs;
  }

  /**
   * Runs one frame: inputs by name, outputs by name (the caller's to dispose). The plan is the
   * policy's unless `opts.plan` gives one; remote stages that fail run locally.
   */
  async run(inputs: Readonly<Record<string, FrameInput>>, opts: FrameOptions = {}): Promise<FrameResult> {
    return this.runFrame(inputs, opts, 'latency');
  }

  /**
   * Runs a stream of frames pipelined: up to `maxInFlight` frames at once (the next input is
   * taken only when one finishes: backpressure), results in input order. With the policy, a
   * stream minimizes the period (throughput) rather than each frame's latency.
   */
  async *stream(
    frames: AsyncIterable<Readonly<Record<string, FrameInput>>> | Iterable<Readonly<Record<string, FrameInput>>>,
    opts: FrameOptions & { maxInFlight?: number } = {},
  ): AsyncGenerator<FrameResult> {
    const max = opts.maxInFlight ?? 3;
    if (!Number.isInteger(max) || max < 1) throw new TvmValueError('ValueError', `SplitModel.stream: maxInFlight must be a positive integer, not ${max}`);
    const pending: Array<Promise<FrameResult>> = [];
    try {
      for await (const inputs of frames) {
        const p = this.runFrame(inputs, opts, 'throughput', max);
        p.catch(() => undefined); // awaited in order below
        pending.push(p);
        if (pending.length >= max) yield await pending.shift()!;
      }
      while (pending.length) yield await pending.shift()!;
    } finally {
      // A consumer that stops early: the frames in flight finish and their outputs are released.
      for (const p of pending)
        void p.then(
          (r) => disposeOutputs(r.outputs),
          () => undefined,
        );
    }
  }

  private async runFrame(inputs: Readonly<Record<string, FrameInput>>, opts: FrameOptions, objective: Objective, inFlight = 1): Promise<FrameResult> {
    if (this.disposed) throw new TvmRuntimeError('RuntimeError', 'SplitModel: it was disposed');
    const frame = new Frame(this.frames++);
    const decision = this.decide(opts.plan ?? 'auto', objective, inFlight);
    this.emit('decision', { frame: frame.index, ...decision });
    if ((opts.plan ?? 'auto') === 'auto') this.maybeProbe(decision.plan);
    const start = performance.now();
    try {
      this.bindInputs(frame, inputs);
      const outputs = await this.execute(frame, decision.plan, opts.deadlineMs ?? this.deadlineMs);
      const result: FrameResult = {
        outputs,
        frame: frame.index,
        plan: decision.plan,
        reason: decision.reason,
        fallback: frame.fallback,
        ms: elapsed(start),
        stages: frame.stages,
        bytesSent: frame.bytesSent,
        bytesReceived: frame.bytesReceived,
      };
      frame.release(new Set(Object.values(outputs)));
      this.count(result);
      const { outputs: _, ...summary } = result;
      this.emit('frame', summary);
      return result;
    } catch (err) {
      frame.release();
      throw err;
    }
  }

  private count(r: FrameResult): void {
    this.stats.frames++;
    this.stats.plans[r.plan.label] = (this.stats.plans[r.plan.label] ?? 0) + 1;
    if (r.fallback) this.stats.fallbacks++;
    this.stats.bytesSent += r.bytesSent;
    this.stats.bytesReceived += r.bytesReceived;
  }

  /** The plan for a frame: the control input's, or the policy's (local when there is no server). */
  private decide(choice: PlanChoice, objective: Objective, inFlight: number): Decision {
    const g = this.graph;
    const given = (plan: Plan): Decision => ({ plan, predictedMs: this.policy.predict(plan, objective), reason: 'given' });
    if (choice === 'local') return given(g.splitPlan(g.segments));
    if (choice === 'remote') return given(g.splitPlan(0));
    if (typeof choice === 'number') return given(g.splitPlan(choice));
    if (typeof choice === 'object' && choice !== null && 'split' in choice) return given(g.splitPlan(choice.split, choice.encoding));
    if (typeof choice === 'object' && choice !== null && 'placements' in choice) return given(g.customPlan(choice.placements, choice.encoding));
    if (choice !== 'auto')
      throw new TvmValueError(
        'ValueError',
        `plan must be 'auto', 'local', 'remote', a split point, {split, encoding} or {placements}, not ${JSON.stringify(choice)}`,
      );
    if (this.server === undefined) return { plan: g.splitPlan(g.segments), predictedMs: Number.NaN, reason: 'no server' };
    return this.policy.choose(objective, inFlight);
  }

  /** The frame's inputs, checked by name and shape. */
  private bindInputs(frame: Frame, inputs: Readonly<Record<string, FrameInput>>): void {
    if (typeof inputs !== 'object' || inputs === null) throw new TvmValueError('ValueError', 'SplitModel.run: inputs must be an object of inputs by name');
    const known = new Set(this.inputs.map((t) => t.name));
    const unknown = Object.keys(inputs).filter((n) => !known.has(n));
    if (unknown.length) throw new TvmValueError('ValueError', `SplitModel.run: no input ${unknown.join(', ')} (inputs: ${[...known].join(', ')})`);
    for (const spec of this.inputs) {
      const v = inputs[spec.name];
      if (v === undefined) throw new TvmValueError('ValueError', `SplitModel.run: input '${spec.name}' is missing`);
      const value: Value =
        v instanceof Tensor
          ? v
          : ArrayBuffer.isView(v)
            ? { data: v, shape: spec.shape, dtype: dtypeOfArray(v) }
            : { data: v.data, shape: v.shape, dtype: v.dtype ?? dtypeOfArray(v.data) };
      checkInput(spec, value);
      frame.set(spec.name, value, false);
    }
  }

  /** Runs the stages of a plan; resolves with the model's outputs. */
  private async execute(frame: Frame, plan: Plan, deadlineMs: number): Promise<Record<string, Tensor>> {
    const groups = remoteGroups(this.graph, plan);
    const inGroup = new Map(groups.flatMap((g, i) => g.map((s) => [s.name, i] as const)));
    const started = new Set<number>();
    for (const s of this.graph.stages) for (const o of s.outputs) frame.expect(o.name);
    const tasks: Array<Promise<unknown>> = [];
    for (const stage of this.graph.stages) {
      const g = inGroup.get(stage.name);
      if (g === undefined) tasks.push(this.schedule(frame, [stage], () => this.runLocal(frame, stage)));
      else if (!started.has(g)) {
        started.add(g);
        tasks.push(this.schedule(frame, groups[g], () => this.runRemoteOrLocal(frame, groups[g], plan, deadlineMs)));
      }
    }
    await Promise.all(tasks);
    const outputs: Record<string, Tensor> = {};
    for (const o of this.outputs) outputs[o.name] = (await frame.get(o.name)) as Tensor;
    return outputs;
  }

  /**
   * Registers the outputs of `stages` as promises (so later stages can wait on them) and
   * starts `run` once every input they take from outside is there.
   */
  private schedule(frame: Frame, stages: StageSpec[], run: () => Promise<void>): Promise<void> {
    const produced = new Set(stages.flatMap((s) => s.outputs.map((o) => o.name)));
    const needed = [...new Set(stages.flatMap((s) => s.inputs.map((t) => t.name)))].filter((n) => !produced.has(n));
    const missing = needed.find((n) => !frame.has(n));
    if (missing)
      throw new TvmRuntimeError('RuntimeError', `split ${this.graph.manifest.name}: nothing makes tensor '${missing}' before stage ${stages[0].name}`);
    const done = Promise.all(needed.map((n) => frame.get(n))).then(run);
    // Stages waiting on these outputs fail with the same error (a no-op for outputs made).
    done.then(
      () =>
        frame.fail(produced, new TvmRuntimeError('RuntimeError', `split ${this.graph.manifest.name}: stage ${stages[0].name} did not make all its outputs`)),
      (err: Error) => frame.fail(produced, err),
    );
    return done;
  }

  /** Runs a stage on the device. */
  private async runLocal(frame: Frame, stage: StageSpec): Promise<void> {
    const model = this.models.get(stage.name);
    if (!model) throw new TvmRuntimeError('RuntimeError', `stage ${stage.name} has no device build here (${stage.device.library}): it runs only on the server`);
    const inputs: Record<string, Tensor | { data: TypedArray; shape: readonly number[]; dtype: DType }> = {};
    for (const t of stage.inputs) inputs[t.name] = await frame.get(t.name);
    // One run per stage at a time, in frame order; timed inside its turn, so the policy sees
    // the stage's compute and not its wait behind other frames.
    let ms = 0;
    let startMs = 0;
    const outputs = await this.inLane(stage.name, async () => {
      const start = performance.now();
      startMs = start - frame.start;
      const out = await model.run(inputs);
      ms = elapsed(start);
      return out;
    });
    this.policy.observeLocal(stage.name, ms);
    for (const o of stage.outputs) frame.set(o.name, outputs[o.name]);
    for (const [n, t] of Object.entries(outputs)) if (!stage.outputs.some((o) => o.name === n)) t.disposeSync();
    this.record(frame, { stage: stage.name, where: 'local', startMs, ms });
  }

  /** Runs `job` after the jobs queued before it on `lane` (a stage's device runs). */
  private inLane<T>(lane: string, job: () => Promise<T>): Promise<T> {
    const next = (this.lanes.get(lane) ?? Promise.resolve()).then(job, job);
    this.lanes.set(
      lane,
      next.catch(() => undefined),
    );
    return next;
  }

  private record(frame: Frame, t: StageTiming): void {
    frame.stages.push(t);
    this.emit('stage', { frame: frame.index, ...t });
  }

  /** Runs a group of stages on the server; on failure (or past the deadline), on the device. */
  private async runRemoteOrLocal(frame: Frame, group: StageSpec[], plan: Plan, deadlineMs: number): Promise<void> {
    try {
      await this.runRemote(frame, group, plan, deadlineMs);
    } catch (err) {
      const error = err as Error;
      if (isInputError(error)) throw error;
      const serverOnly = group.filter((s) => !this.models.has(s.name));
      if (serverOnly.length) {
        this.policy.observeFailure();
        const names = serverOnly.map((s) => s.name).join(', ');
        throw new TvmRuntimeError('RuntimeError', `${names} failed on the server and has no device build to fall back to: ${error.message}`, '', {
          cause: error,
        });
      }
      this.policy.observeFailure();
      frame.fallback = `${group.map((s) => s.name).join(', ')} ran locally: ${error.message}`;
      this.emit('fallback', { frame: frame.index, stages: group.map((s) => s.name), error });
      for (const s of group) await this.runLocal(frame, s);
    }
  }

  /** One request running `group` on the server (a chain of its models). */
  private async runRemote(frame: Frame, group: StageSpec[], plan: Plan, deadlineMs: number): Promise<void> {
    const session = await withDeadline(this.connected(), deadlineMs);
    const encoding = plan.encoding;
    const firstSegment = Math.min(...group.map((s) => s.segment));
    const encodedStage = (s: StageSpec) => encoding !== 'float32' && s.segment === firstSegment && s.inputs.some((t) => t.dtype === 'float32');
    const names = group.map((s) => (encodedStage(s) ? s.server.encoded[encoding]! : s.server.model));
    // The request's tensors in the order the server's chain takes them (lib/rpc/infer.ts, planChain).
    const produced = new Set<string>();
    const order: Array<{ name: string; encode: boolean }> = [];
    for (const s of group) {
      for (const t of s.inputs)
        if (!produced.has(t.name) && !order.some((o) => o.name === t.name)) order.push({ name: t.name, encode: encodedStage(s) && t.dtype === 'float32' });
      for (const o of s.outputs) produced.add(o.name);
    }
    const taken = new Set(group.flatMap((s) => s.inputs.map((t) => t.name)));
    const returned = group.flatMap((s) => s.outputs).filter((o) => !taken.has(o.name));

    const request: Value[] = [];
    const encodeStart = performance.now();
    for (const o of order) {
      const v = await frame.get(o.name);
      if (o.encode) request.push(...(await this.encode(frame, v, encoding)));
      else request.push(v);
    }
    if (order.some((o) => o.encode)) this.policy.observeEncode(encoding, elapsed(encodeStart));

    const bytesSent = request.reduce((n, v) => n + valueBytes(v), 0);
    const start = performance.now();
    this.remoteInFlight++;
    this.stats.remoteRequests++;
    let reply: Awaited<ReturnType<RPCSession['inferReply']>>;
    try {
      reply = await withDeadline(
        session.inferReply(
          names.join(CHAIN_SEPARATOR),
          request.map((v) => (v instanceof Tensor ? v : { data: v.data, shape: [...v.shape], dtype: v.dtype })),
        ),
        deadlineMs,
        (late) => disposeOutputs(late.outputs),
      );
    } catch (err) {
      if (isClosed(err as Error)) this.session = undefined;
      throw err;
    } finally {
      this.remoteInFlight--;
    }
    const wallMs = elapsed(start);
    if (reply.outputs.length !== returned.length) {
      disposeOutputs(reply.outputs);
      throw new TvmRuntimeError(
        'RuntimeError',
        `the server answered ${reply.outputs.length} tensors for ${returned.length} outputs of ${names.join(CHAIN_SEPARATOR)}`,
      );
    }
    const bytesReceived = reply.outputs.reduce((n, t) => n + t.byteLength, 0);
    reply.outputs.forEach((t, i) => frame.set(returned[i].name, t));
    frame.bytesSent += bytesSent;
    frame.bytesReceived += bytesReceived;
    this.policy.observeRemote({ stages: group.map((s) => s.name), wallMs, server: reply.server, bytesSent, bytesReceived });
    const share = wallMs / group.length;
    for (const s of group) this.record(frame, { stage: s.name, where: 'remote', startMs: start - frame.start, ms: share });
  }

  /** A crossing tensor encoded by the split's codec on the device: [float16] or [int8, scale]. */
  private async encode(frame: Frame, v: Value, encoding: Encoding): Promise<Tensor[]> {
    if (!this.codec) throw new TvmValueError('ValueError', `split ${this.graph.manifest.name} has no codec: it cannot send ${encoding}`);
    const tensor = v instanceof Tensor ? v : keepTensor(frame, Tensor.fromSync(v.data, { shape: [...v.shape], dtype: v.dtype }));
    const fn = `encode_${encoding === 'float16' ? 'f16' : 'i8'}_r${tensor.shape.length}`;
    const out = outputsOf<Tensor>(await this.codec.vm.run(fn, tensor));
    for (const t of out) keepTensor(frame, t);
    return out;
  }

  /** The session, connecting (again) when needed. */
  private connected(): Promise<RPCSession> {
    if (this.session) return this.session;
    const target = this.server;
    if (target === undefined) return Promise.reject(new TvmRuntimeError('RuntimeError', 'SplitModel: no server was given'));
    const made = typeof target === 'function' ? target() : typeof target === 'string' ? connectTo(target) : Promise.resolve(target);
    this.session = made;
    made.catch(() => {
      if (this.session === made) this.session = undefined;
    });
    return made;
  }

  /** Starts a probe when the server is set aside and its back-off is over, or now and then while frames run locally. */
  private maybeProbe(plan: Plan): void {
    if (this.server === undefined || this.probing || this.disposed) return;
    const due =
      this.policy.needsProbe || (this.remoteInFlight === 0 && plan.split === this.graph.segments && performance.now() - this.lastProbe >= this.probeIntervalMs);
    if (!due) return;
    this.probing = this.probe().finally(() => {
      this.probing = undefined;
    });
  }

  /**
   * Pings the server: once empty (round-trip time), once with a payload (bandwidth). A failure
   * sets the server aside again (longer).
   */
  async probe(): Promise<void> {
    this.lastProbe = performance.now();
    try {
      const session = await withDeadline(this.connected(), this.deadlineMs);
      // The least of a few pings: the first on a new session also opens its channel.
      let rttMs = Number.POSITIVE_INFINITY;
      for (let i = 0; i < 3; i++) {
        const t = performance.now();
        await withDeadline(session.inferReply(PING, []), this.deadlineMs);
        rttMs = Math.min(rttMs, elapsed(t));
      }
      this.policy.observePing(rttMs);
      const payload = new Uint8Array(this.probeBytes);
      const start = performance.now();
      await withDeadline(session.inferReply(PING, [{ data: payload, shape: [payload.length], dtype: 'uint8' }]), this.deadlineMs);
      this.policy.observePing(elapsed(start), payload.length);
      this.stats.pings += 4;
      this.stats.probeBytes += payload.length;
      this.emit('probe', { ok: true, rttMs });
    } catch (err) {
      if (isClosed(err as Error)) this.session = undefined;
      this.policy.observeFailure();
      this.emit('probe', { ok: false, error: err as Error });
    }
  }

  /**
   * Runs every stage once on the device on zeros (measuring them), then, with a server, probes
   * the link and runs each remote plan the policy may pick once (the server loads those models).
   */
  private async warmup(): Promise<void> {
    const zeros = Object.fromEntries(this.inputs.map((t) => [t.name, zerosOf(t)]));
    if (this.models.size === this.graph.stages.length) {
      const local = await this.runFrame(zeros, { plan: 'local' }, 'latency');
      disposeOutputs(local.outputs);
    }
    if (this.server === undefined) return;
    await this.probe();
    if (!this.policy.serverAvailable) return;
    for (const plan of this.policy.candidates()) {
      if (plan.split === this.graph.segments) continue;
      const frame = new Frame(-1);
      try {
        this.bindInputs(frame, zeros);
        // Measured as warm-up: the server's first runs load its models.
        const outputs = await this.execute(frame, plan, Math.max(this.deadlineMs, 30_000));
        void outputs;
      } catch {
        // A server that cannot run a plan now is handled by the policy's back-off.
      } finally {
        frame.release();
      }
    }
  }

  /** Releases the device models (after frames in flight) and the session, when this model connected it. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.probing;
    await Promise.all([...this.models.values(), ...(this.codec ? [this.codec] : [])].map((m) => m.dispose()));
    if (this.server !== undefined && typeof this.server !== 'object' && this.session) {
      const s = await this.session.catch(() => undefined);
      await s?.dispose();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

function keepTensor(frame: Frame, t: Tensor): Tensor {
  frame.made.push(t);
  return t;
}

function disposeOutputs(outputs: Iterable<Tensor> | Record<string, Tensor>): void {
  const list = Symbol.iterator in Object(outputs) ? [...(outputs as Iterable<Tensor>)] : Object.values(outputs);
  for (const t of list) if (t instanceof HandleOwner && !t.disposed) t.disposeSync();
}

/** An input against the split's static shape and dtype: checked here, so a bad frame fails the same way on every plan. */
function checkInput(spec: StaticTensor, v: Value): void {
  const at = `SplitModel.run: input '${spec.name}'`;
  const shape = [...v.shape];
  if (v.dtype !== spec.dtype) throw new TvmValueError('ValueError', `${at} must be ${spec.dtype}; got ${v.dtype}`);
  if (shape.length !== spec.shape.length || shape.some((d, i) => d !== spec.shape[i]))
    throw new TvmValueError('ValueError', `${at} has shape [${shape.join(', ')}]; the model takes [${spec.shape.join(', ')}]`);
  const n = spec.shape.reduce((a, d) => a * d, 1);
  if (!(v instanceof Tensor) && v.data.length !== n)
    throw new TvmValueError('ValueError', `${at} has ${v.data.length} elements for shape [${spec.shape.join(', ')}] (${n})`);
}

/** Zeros of a tensor's shape and dtype (warm-up frames). */
function zerosOf(t: StaticTensor): { data: TypedArray; shape: number[]; dtype: DType } {
  const n = t.shape.reduce((a, d) => a * d, 1);
  const dtype = t.dtype as DType;
  return { data: new HOST_ARRAY[dtype](n), shape: t.shape, dtype };
}

/** A request that does not settle within `ms` rejects with RPCSessionTimeoutError; what it brings later goes to `late`. */
function withDeadline<T>(p: Promise<T>, ms: number, late?: (value: T) => void): Promise<T> {
  if (!Number.isFinite(ms)) return p;
  return new Promise<T>((resolve, reject) => {
    let over = false;
    const timer = setTimeout(() => {
      over = true;
      reject(new TvmRuntimeError('RPCSessionTimeoutError', `the server did not answer within ${ms} ms`));
    }, ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        if (over) late?.(v);
        else resolve(v);
      },
      (err) => {
        clearTimeout(timer);
        if (!over) reject(err);
      },
    );
  });
}

/** Errors about the inputs themselves: running locally would fail the same way. */
function isInputError(err: Error): boolean {
  return err.name === 'InputError';
}

function isClosed(err: Error): boolean {
  return /RPCSessionClosed|closed|ECONNRESET|EPIPE|ECONNREFUSED/.test(`${(err as { kind?: string }).kind ?? ''} ${err.message}`);
}

async function connectTo(address: string): Promise<RPCSession> {
  const at = address.lastIndexOf(':');
  const host = at > 0 ? address.slice(0, at) : '127.0.0.1';
  const port = Number(address.slice(at + 1));
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new TvmValueError('ValueError', `server '${address}': expected host:port`);
  return connect(host, port);
}
