/**
 * The "device" of the offloading example: a process of its own (examples/offload/offload.ts
 * starts it pinned to one core with one TVM thread), which loads the split model's device
 * stages and runs frames in the mode it is asked for, through a shaped link to the edge server.
 *
 * It answers one IPC request at a time: `{ mode, frames, server }` -> {@link ModeResult}.
 */
import { readNpy } from '../../lib';
import { SplitGraph } from '../../lib/offload/graph';
import { type FrameInput, type PlanChoice, SplitModel } from '../../lib/offload/split-model';

/** How frames are run: which plan, and how many frames may be in flight. */
export type Mode = 'local' | 'remote' | 'split' | 'pipelined' | 'auto';
export const MODES: readonly Mode[] = ['local', 'remote', 'split', 'pipelined', 'auto'];

const PLANS: Record<Mode, { plan: PlanChoice; inFlight: number }> = {
  local: { plan: 'local', inFlight: 1 },
  remote: { plan: 'remote', inFlight: 1 },
  split: { plan: 1, inFlight: 1 },
  pipelined: { plan: 1, inFlight: 3 },
  auto: { plan: 'auto', inFlight: 3 },
};

/** One request to the device. */
export interface DeviceRequest {
  split: string;
  /** The edge server, `host:port` (the shaped link's end). */
  server: string;
  mode: Mode;
  frames: number;
  /** A fresh model (and policy) for this request; otherwise the last one of the same split, server and role is reused. */
  fresh?: boolean;
}

/** What a mode did over its frames. */
export interface ModeResult {
  mode: Mode;
  frames: number;
  wallMs: number;
  /** Per-frame latency (from the frame's start to its result). */
  latencyMs: number[];
  /** Frames per plan label. */
  plans: Record<string, number>;
  fallbacks: number;
  bytesSent: number;
  bytesReceived: number;
  /** Largest |output - reference| over the frames. */
  maxError: number;
}

/** Loaded models by split, server and role: `auto` has a model of its own, so its policy learns only from its own frames. */
const models = new Map<string, SplitModel>();

async function modelFor(req: DeviceRequest): Promise<SplitModel> {
  const key = `${req.split}@${req.server}:${req.mode === 'auto' ? 'auto' : 'fixed'}`;
  const known = models.get(key);
  if (known && !req.fresh) return known;
  models.delete(key);
  await known?.dispose();
  const model = await SplitModel.load(req.split, { server: req.server });
  models.set(key, model);
  return model;
}

async function runMode(req: DeviceRequest): Promise<ModeResult> {
  const model = await modelFor(req);
  const graph = SplitGraph.read(req.split);
  const ref = graph.manifest.reference!;
  const x = readNpy(graph.file(ref.inputs[0]));
  const expected = readNpy(graph.file(ref.outputs[0])).data as Float32Array;
  const input: Record<string, FrameInput> = { [graph.manifest.inputs[0].name]: { data: x.data as Float32Array, shape: x.shape } };
  const { plan, inFlight } = PLANS[req.mode];
  const before = { ...model.stats, plans: { ...model.stats.plans } };
  function* frames() {
    for (let i = 0; i < req.frames; i++) yield input;
  }
  const latencyMs: number[] = [];
  let maxError = 0;
  const start = performance.now();
  for await (const r of model.stream(frames(), { plan, maxInFlight: inFlight })) {
    latencyMs.push(r.ms);
    const got = r.outputs[graph.manifest.outputs[0].name].toFloat32ArraySync();
    for (let i = 0; i < expected.length; i++) maxError = Math.max(maxError, Math.abs(got[i] - expected[i]));
    for (const t of Object.values(r.outputs)) t.disposeSync();
  }
  const wallMs = performance.now() - start;
  const plans = Object.fromEntries(
    Object.entries(model.stats.plans)
      .map(([k, n]) => [k, n - (before.plans[k] ?? 0)])
      .filter(([, n]) => (n as number) > 0),
  );
  return {
    mode: req.mode,
    frames: req.frames,
    wallMs,
    latencyMs,
    plans,
    fallbacks: model.stats.fallbacks - before.fallbacks,
    bytesSent: model.stats.bytesSent - before.bytesSent,
    bytesReceived: model.stats.bytesReceived - before.bytesReceived,
    maxError,
  };
}

if (require.main === module) {
  process.on('message', (req: DeviceRequest) => {
    runMode(req).then(
      (ok) => process.send!({ ok }),
      (err: Error) => process.send!({ error: String(err?.stack ?? err) }),
    );
  });
  process.once('disconnect', () => {
    void Promise.all([...models.values()].map((m) => m.dispose())).finally(() => process.exit(0));
  });
  process.send!('ready');
}
