/**
 * `tvm-node compile`: an ONNX model in, a Relax VM artifact (`.so`) and its manifest out,
 * compiled by the pinned TVM toolchain. The compile itself is scripts/compile_model.py (the
 * one compile path, also imported by scripts/compile_bench_models.py), run by the toolchain's
 * Python; it reports its stages and its result or error as JSON lines on stdout, shown here
 * as a progress bar and one result or one error (lib/cli/python-tool.ts, shared with `split`).
 */
import path from 'node:path';
import type { Dim } from '../manifest';
import { UsageError } from './errors';
import type { StageProgress } from './progress';
import { checkModelFile, runPythonTool } from './python-tool';

/** The presets of scripts/compile_model.py (`--list-presets`), in its order; test/compile.test.ts keeps them in step. */
export const PRESETS = [
  { name: 'host', summary: "this machine's CPU with all its features (may not run on a CPU without them)" },
  { name: 'aarch64', summary: 'generic aarch64 (ARMv8-A + NEON), any 64-bit Arm Linux board; cross-linked' },
  { name: 'jetson-orin', summary: 'NVIDIA Jetson Orin: CUDA sm_87 kernels + Cortex-A78AE host code; cross-linked' },
  { name: 'rk3588', summary: 'Rockchip RK3588 CPU (Cortex-A76, runs on its A55 cores too); cross-linked; Mali GPU (OpenCL) needs a user-built TVM' },
] as const;

/** `--input-shape NAME=1,3,224,224`: sizes are integers or names (symbolic sizes). */
export interface InputShape {
  name: string;
  shape: Array<number | string>;
}

/** What `compile` was asked to do. */
export interface CompileOptions {
  /** The `.onnx` model. */
  model: string;
  /** The artifact to write (`.so`); its manifest goes beside it. */
  out: string;
  /** A preset name, a TVM target kind, or a TVM target as JSON. */
  target: string;
  inputShapes: readonly InputShape[];
  /** The cross g++ to link with (default: `<arch>-linux-gnu-g++` for a foreign target). */
  cc?: string;
  /** The Python with TVM (default: $TVM_NODE_PYTHON, else the checkout's tvm/.venv). */
  python?: string;
  /** Pass the compiler's own output (TVM, LLVM, g++) through to stderr. */
  verbose?: boolean;
  /** MetaSchedule tuning (`--tune`); absent: the untuned compile. */
  tune?: TuneOptions;
  /**
   * `--conv-layout`: `NCHW` (the model's own, the default) or `NCHWc` (CPU targets: 2-D
   * convolutions in blocked-channel layouts with a register-blocked schedule template, 3x3
   * stride-1 ones on maps of 7x7 and up as Winograd F(4x4, 3x3) or F(2x2, 3x3) kernels; tuned
   * over those templates with `--tune`; scripts/nchwc.py, scripts/winograd.py).
   */
  convLayout?: ConvLayout;
}

/** The convolution layouts `compile --conv-layout` takes. */
export const CONV_LAYOUTS = ['NCHW', 'NCHWc'] as const;
export type ConvLayout = (typeof CONV_LAYOUTS)[number];

/** `--tune [--trials N] [--tuning-db DIR] [--tune-time SECONDS]`. */
export interface TuneOptions {
  /** The most candidates measured in this compile, over all kernels (default 64). */
  trials?: number;
  /** The tuning database's folder (default: $TVM_NODE_TUNING_DB, else ~/.cache/tvm-node/tuning). */
  database?: string;
  /** A time budget in seconds for the measuring. */
  seconds?: number;
  /** Measure on a device of this TVM RPC tracker (`host:port`) registered under {@link key}. */
  tracker?: string;
  key?: string;
}

/** What a tuned compile reports (the manifest's `tuning`). */
export interface TuningResult {
  /** Kernels (MetaSchedule tasks) of the model. */
  tasks: number;
  /** Of those, blocked convolutions tuned over the NCHWc templates (`--conv-layout NCHWc`: direct or Winograd), the others over MetaSchedule's generic space. */
  tasks_conv_template: number;
  /** Kernels tuned now; the others had records in the database. */
  tasks_tuned: number;
  tasks_from_database: number;
  /** Kernels whose schedule came from the database (the rest: the untuned schedule). */
  tasks_scheduled_from_database: number;
  /** Candidates measured now. */
  trials: number;
  trials_budget: number;
  failed_trials: number;
  records_added: number;
  time_budget: number | null;
  stopped_by_time: boolean;
  seconds: number;
  cost_model: string | null;
  runner: string;
  database: string;
  database_sha256: string | null;
}

/** A tensor as the manifest describes it. */
export interface CompiledTensor {
  name: string;
  shape: Dim[];
  dtype: string;
}

/** What scripts/compile_model.py reports on success. */
export interface CompileResult {
  library: string;
  manifest: string;
  target: Record<string, unknown>;
  target_summary: string;
  preset: string | null;
  notes: string;
  device: string;
  cross_compiler: string | null;
  host_triple: string;
  schedule: string;
  tvm_version: string;
  function: string;
  inputs: CompiledTensor[];
  outputs: CompiledTensor[];
  content_hash: string;
  bytes: number;
  seconds: number;
  stages: Record<string, number>;
  /** Present when tuned. */
  tuning?: TuningResult;
}

const SIZE = /^(\d+|[A-Za-z_][A-Za-z0-9_]*)$/;

/** Parses `--input-shape`: `NAME=1,3,224,224` (or `NAME=1x3x224x224`); a size may be a name (symbolic). */
export function parseInputShape(text: string): InputShape {
  const eq = text.lastIndexOf('=');
  const name = eq > 0 ? text.slice(0, eq).trim() : '';
  if (!name) throw new UsageError('expected NAME=D1,D2,... such as input=1,3,224,224', 'name the ONNX input, then its sizes joined by commas');
  const dims = text.slice(eq + 1).trim();
  if (!dims) throw new UsageError(`no sizes after '${name}='`, 'write the sizes joined by commas, e.g. input=1,3,224,224');
  const parts = dims.split(dims.includes(',') ? ',' : /[x×]/).map((d) => d.trim());
  const bad = parts.find((d) => !SIZE.test(d));
  if (bad !== undefined) {
    throw new UsageError(
      `size '${bad}' is neither a non-negative integer nor a name`,
      'sizes are integers, or names for sizes left symbolic (e.g. input=N,3,224,224)',
    );
  }
  return { name, shape: parts.map((d) => (/^\d+$/.test(d) ? Number(d) : d)) };
}

/** Compiles the model (scripts/compile_model.py in the toolchain's Python), showing progress. */
export async function compileModel(opts: CompileOptions, progress?: StageProgress): Promise<CompileResult> {
  checkModelFile(opts.model);
  if (path.extname(opts.out) !== '.so')
    throw new UsageError(`-o ${opts.out}: the artifact must be a .so file`, 'e.g. -o model.so (its manifest is written beside it as model.json)');
  const args = [opts.model, '-o', opts.out, '--target', opts.target];
  for (const s of opts.inputShapes) args.push('--input-shape', `${s.name}=${s.shape.join(',')}`);
  if (opts.cc) args.push('--cc', opts.cc);
  if (opts.convLayout) args.push('--conv-layout', opts.convLayout);
  if (opts.tune) {
    const { trials, database, seconds, tracker, key } = opts.tune;
    if (trials !== undefined && !(Number.isInteger(trials) && trials >= 0))
      throw new UsageError(`--trials ${trials}: give a whole number of trials >= 0`, 'e.g. --trials 64');
    if (seconds !== undefined && !(seconds > 0)) throw new UsageError(`--tune-time ${seconds}: give a number of seconds > 0`, 'e.g. --tune-time 600');
    args.push('--tune');
    if (trials !== undefined) args.push('--trials', String(trials));
    if (database !== undefined) args.push('--tuning-db', database);
    if (seconds !== undefined) args.push('--tune-time', String(seconds));
    if (tracker !== undefined) args.push('--rpc-tracker', tracker);
    if (key !== undefined) args.push('--rpc-key', key);
  }
  return runPythonTool<CompileResult>({ script: 'compile_model.py', args, command: 'compile', python: opts.python, verbose: opts.verbose }, progress);
}

const describe = (t: CompiledTensor) => `${t.name} ${t.dtype}[${t.shape.map((d) => (d === null ? '?' : d)).join(', ')}]`;

/** The human-readable report of a compile. */
export function formatCompileResult(r: CompileResult, model: string): string {
  const mb = (r.bytes / 2 ** 20).toFixed(1);
  const rows: Array<[string, string]> = [
    ['artifact', `${r.library} (${mb} MiB)`],
    ['manifest', r.manifest],
    ['target', `${r.target_summary}${r.preset ? ` (preset ${r.preset})` : ''}${r.cross_compiler ? `, linked with ${r.cross_compiler}` : ''}`],
    ['device', r.device],
    ...r.inputs.map((t): [string, string] => ['input', describe(t)]),
    ...r.outputs.map((t): [string, string] => ['output', describe(t)]),
    ['schedule', r.schedule],
    ['TVM', r.tvm_version],
    ['hash', r.content_hash],
  ];
  const t = r.tuning;
  if (t) {
    const from = t.tasks_from_database ? `, ${t.tasks_from_database} from the database` : '';
    const time = t.stopped_by_time ? ' (time budget spent)' : '';
    rows.push(
      ['tuning', `${t.trials} trials in ${t.seconds.toFixed(1)} s${time}: ${t.tasks_tuned} of ${t.tasks} kernels tuned now${from}`],
      ['', `${t.tasks_scheduled_from_database} of ${t.tasks} kernels scheduled from the database ${t.database}`],
    );
  }
  if (r.notes) rows.push(['note', r.notes]);
  return [`compiled ${model} in ${r.seconds.toFixed(1)} s`, ...rows.map(([k, v]) => `  ${k.padEnd(9)}${v}`)].join('\n');
}
