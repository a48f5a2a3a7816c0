/**
 * The cnn group's models, built as ONNX and compiled by TVM (scripts/compile_bench_models.py,
 * cached in .cache/bench-models), onnxruntime-node (loaded if it can be), and
 * {@link compare}, the check of an output against its reference (cnn and rpc check every
 * runtime's output before timing it).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type * as Ort from 'onnxruntime-node';
import { python, repoRoot } from './fixtures';

interface ModelArray {
  name: string;
  shape: number[];
  dtype: string;
  file: string;
}

/** One entry of .cache/bench-models/<key>/index.json (see scripts/compile_bench_models.py). */
interface BenchModelEntry {
  onnx: string;
  library: string;
  function: string;
  opset: number;
  input: ModelArray;
  output: ModelArray;
  reference: string;
  tolerance: { rtol: number; atol: number };
  max_abs_diff: number;
  macs: number;
  params: number;
  compile_s: number;
  notes: string;
  /** The native and tuned compiles (models with spec.tuned); a variant that could not be built says why. */
  variants?: Partial<Record<'native' | 'tuned', BenchVariantEntry | { skipped: string }>>;
}

/** One more compile of a benchmark model (scripts/compile_bench_models.py, compile_variant). */
export interface BenchVariantEntry {
  library: string;
  manifest: string;
  target: Record<string, unknown>;
  target_summary: string;
  schedule: string;
  compile_s: number;
  max_abs_diff: number;
  tuning?: {
    tasks: number;
    tasks_from_database: number;
    trials: number;
    seconds: number;
    cost_model: string | null;
    database: string;
  };
  tuning_provenance?: { trials: number; seconds: number; cost_model: string | null; [k: string]: unknown } | null;
}

export interface BuiltModels {
  dir: string;
  index: {
    tvm_version: string;
    onnx_version: string;
    onnxruntime_version: string;
    target: string;
    schedule: string;
    tune_target?: { name: string; target: Record<string, unknown>; database: string };
    models: Record<string, BenchModelEntry>;
  };
  scriptS: number;
}

/**
 * Builds (or finds cached) benchmark models; progress goes to stderr. `tuneMissing`: kernels the
 * committed tuning database (bench/tuning/) lacks are tuned (minutes); else they get the untuned schedule.
 */
export function buildBenchModels(names: string[], opts: { tuneMissing?: boolean } = {}): BuiltModels {
  const t0 = process.hrtime.bigint();
  const script = path.join(repoRoot, 'scripts', 'compile_bench_models.py');
  const args = [script, '--only', names.join(','), ...(opts.tuneMissing ? ['--tune-missing'] : [])];
  const out = execFileSync(python, args, { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const dir = out.trim().split('\n').pop()!;
  const index = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8'));
  return { dir, index, scriptS: Number(process.hrtime.bigint() - t0) / 1e9 };
}

/** onnxruntime-node, or the reason it cannot be used here. */
export function loadOrt(): { module: typeof Ort; version: string } | { error: string } {
  try {
    const module = require('onnxruntime-node') as typeof Ort;
    const version = (require('onnxruntime-node/package.json') as { version: string }).version;
    return { module, version };
  } catch (err) {
    return { error: `onnxruntime-node cannot be loaded: ${(err as Error).message.split('\n')[0]}` };
  }
}

/** max |a - b|, and whether every element is within atol + rtol * |b|. */
export function compare(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: { rtol: number; atol: number }): { maxAbsDiff: number; ok: boolean } {
  let maxAbsDiff = 0;
  let ok = actual.length === expected.length;
  for (let i = 0; i < expected.length && ok; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    maxAbsDiff = Math.max(maxAbsDiff, d);
    if (!(d <= tol.atol + tol.rtol * Math.abs(expected[i]))) ok = false;
  }
  return { maxAbsDiff, ok };
}
