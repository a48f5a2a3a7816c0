/**
 * `tvm-node bench`: calls a model function many times with several calls in flight and
 * reports latency percentiles and throughput. Inputs are made once, on the device, from
 * `.npy` files or at random from `--shape`/`--dtype`, and reused by every call.
 */
import path from 'node:path';
import { checkInputs } from '../bind';
import type { Device } from '../device';
import { metadataOfFile } from '../model';
import { Tensor } from '../tensor';
import { withHint } from './errors';
import { bindInputs, type DTypeSpec, describeArray, type InputSpec, inputTensor, type ShapeSpec, seededRandom } from './inputs';
import { openModel, signatureOf, syncDevice } from './model';
import { flattenOutputs } from './run';
import { formatNumber, type LatencyStats, latencyStats } from './stats';

/** What `bench` was asked to do. */
export interface BenchOptions {
  model: string;
  device: Device;
  function: string;
  /** Timed calls. */
  runs: number;
  /** Untimed calls first (they also create the VM instances). */
  warmup: number;
  /** Calls in flight at once. */
  concurrency: number;
  inputs: readonly InputSpec[];
  shapes: readonly ShapeSpec[];
  dtypes: readonly DTypeSpec[];
}

/** Progress of the timed calls (a progress bar, or nothing). */
export interface BenchProgress {
  start(total: number): void;
  tick(): void;
  stop(): void;
}

/** The result of `bench`. */
export interface BenchResult {
  model: string;
  function: string;
  signature: string;
  device: string;
  runs: number;
  warmup: number;
  concurrency: number;
  inputs: Array<{ name: string; shape: number[]; dtype: string; source: 'file' | 'random'; file?: string }>;
  /** Latency of each call, from issue to result (device work included), in milliseconds. */
  latencyMs: LatencyStats;
  /** Completed calls per second of wall time. */
  throughput: number;
  /** Wall time of the timed calls, in seconds. */
  wallSeconds: number;
}

/**
 * Runs `one` `count` times with at most `concurrency` in flight; stops issuing new calls
 * after the first failure, waits for those in flight, then rejects with that failure.
 */
export async function inFlight(count: number, concurrency: number, one: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async () => {
    while (next < count && !failure) {
      const i = next++;
      try {
        await one(i);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, worker));
  if (failure) throw failure.err;
}

/**
 * Async calls run on the libuv thread pool (4 threads unless UV_THREADPOOL_SIZE says
 * otherwise, read when the pool first starts): widen it to fit `concurrency` calls when
 * the user has not chosen a size. Has no effect once the pool has started.
 */
export function fitThreadPool(concurrency: number): void {
  if (!process.env.UV_THREADPOOL_SIZE && concurrency > 4) process.env.UV_THREADPOOL_SIZE = String(Math.min(concurrency, 1024));
}

const noProgress: BenchProgress = { start() {}, tick() {}, stop() {} };

/** Loads the model and times `runs` calls after `warmup` untimed ones. */
export async function benchModel(opts: BenchOptions, progress: BenchProgress = noProgress): Promise<BenchResult> {
  fitThreadPool(opts.concurrency);
  const { vm, fn: vmFn } = await openModel(opts.model, opts.device, opts.function, opts.concurrency);
  const tensors: Tensor[] = [];
  try {
    // Inputs by the model's names (the manifest's, e.g. ONNX names, else the parameters'),
    // checked against its shapes and dtypes before the first call (lib/bind.ts).
    const meta = metadataOfFile(vm, opts.model, vmFn.name);
    const fn = { ...vmFn, params: meta.inputs.map((i) => i.name) };
    const bound = bindInputs(fn, opts.inputs, { shapes: opts.shapes, dtypes: opts.dtypes });
    const rand = seededRandom(0x5eed);
    const args = bound.map((b) => {
      const t = inputTensor(b, opts.device, rand);
      tensors.push(t);
      return t;
    });
    const inputs = bound.map((b, i) => ({
      name: b.name,
      shape: args[i].shape,
      dtype: args[i].dtype,
      ...(b.source.kind === 'file' ? { source: 'file' as const, file: b.source.file } : { source: 'random' as const }),
    }));
    const call = async (): Promise<number> => {
      const started = process.hrtime.bigint();
      const result = await vm.run(fn.name, ...args);
      await syncDevice(opts.device);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      for (const o of flattenOutputs(result)) if (o.value instanceof Tensor) o.value.disposeSync();
      return ms;
    };
    const explain = (err: unknown) => {
      const given = inputs.map((i) => `${i.name} ${describeArray(i.shape, i.dtype)}`).join(', ');
      return withHint(err, `${signatureOf(fn)} was called with ${given || 'no inputs'}; check them against the shapes and dtypes the model was compiled for`);
    };

    try {
      checkInputs(meta.inputs, args, { model: `model '${meta.name}'` });
    } catch (err) {
      throw explain(err);
    }
    await inFlight(opts.warmup, opts.concurrency, async () => void (await call())).catch((err) => Promise.reject(explain(err)));
    const latencies: number[] = [];
    progress.start(opts.runs);
    const started = process.hrtime.bigint();
    try {
      await inFlight(opts.runs, opts.concurrency, async () => {
        latencies.push(await call());
        progress.tick();
      });
    } catch (err) {
      throw explain(err);
    } finally {
      progress.stop();
    }
    const wallSeconds = Number(process.hrtime.bigint() - started) / 1e9;
    return {
      model: path.resolve(opts.model),
      function: fn.name,
      signature: signatureOf(fn),
      device: String(opts.device),
      runs: opts.runs,
      warmup: opts.warmup,
      concurrency: opts.concurrency,
      inputs,
      latencyMs: latencyStats(latencies),
      throughput: opts.runs / wallSeconds,
      wallSeconds,
    };
  } finally {
    for (const t of tensors) t.disposeSync();
    await vm.dispose();
  }
}

/** The human-readable report of a benchmark. */
export function formatBenchResult(r: BenchResult): string {
  const rows: string[] = [];
  const width = Math.max(12, ...r.inputs.map((i) => i.name.length + 8));
  const row = (label: string, text: string) => rows.push(`${label.padEnd(width)}${text}`);
  const ms = (v: number) => `${formatNumber(v, 4)} ms`;
  const l = r.latencyMs;
  row('model', r.model);
  row('function', `${r.signature} on ${r.device}`);
  for (const i of r.inputs) row(`input ${i.name}`, `${describeArray(i.shape, i.dtype)}  ${i.source === 'file' ? `from ${i.file}` : 'random'}`);
  row('runs', `${r.runs} timed after ${r.warmup} warmup, ${r.concurrency} in flight`);
  row('latency', `p50 ${ms(l.p50)}  p90 ${ms(l.p90)}  p99 ${ms(l.p99)}`);
  row('', `mean ${ms(l.mean)}  stddev ${ms(l.stddev)}  min ${ms(l.min)}  max ${ms(l.max)}`);
  row('throughput', `${formatNumber(r.throughput, 5)} runs/s  (${formatNumber(r.wallSeconds, 4)} s wall)`);
  return rows.join('\n');
}
