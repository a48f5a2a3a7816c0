/**
 * `tvm-node compile`: an ONNX model in, a Relax VM artifact (`.so`) and its manifest out,
 * compiled by the pinned TVM toolchain. The compile itself is scripts/compile_model.py (the
 * one compile path, also imported by scripts/compile_bench_models.py), run by the toolchain's
 * Python; it reports its stages and its result or error as JSON lines on stdout, shown here
 * as a progress bar and one result or one error.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { packageRoot } from '../binding';
import type { Dim } from '../manifest';
import { CliError, UsageError } from './errors';
import type { StageProgress } from './progress';

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
}

/** One line of the compiler's JSON-lines protocol (scripts/compile_model.py, "Progress and errors"). */
type CompileEvent =
  | { event: 'start'; stages: Array<{ name: string; title: string }> }
  | { event: 'stage'; index: number; total: number; name: string; title: string }
  | { event: 'done'; result: CompileResult }
  | { event: 'error'; kind: string; message: string; hint: string | null };

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

/** The Python that runs the compiler, and the script; a missing one is a one-line error. */
export function compilerCommand(python?: string): { python: string; script: string } {
  const script = path.join(packageRoot, 'scripts', 'compile_model.py');
  if (!fs.existsSync(script)) {
    throw new CliError(
      `the compiler (scripts/compile_model.py) is not in this installation (${packageRoot})`,
      'CompilerNotFound',
      'compile from a source checkout of tvm-node',
    );
  }
  const chosen = python ?? process.env.TVM_NODE_PYTHON;
  const venv = path.join(packageRoot, 'tvm', '.venv', 'bin', 'python');
  const exe = chosen ?? venv;
  // A bare name (`python3`) is looked up on PATH when it is run.
  if (exe.includes('/') && !fs.existsSync(exe)) {
    throw new CliError(
      chosen ? `Python '${chosen}' not found` : `TVM's Python toolchain is not set up (${path.relative(process.cwd(), venv) || venv} is missing)`,
      'CompilerNotFound',
      'run `node scripts/bootstrap.mjs` in the checkout (it installs tvm/.venv), or give --python a Python with apache-tvm==0.27.0.post1 and onnx',
    );
  }
  return { python: exe, script };
}

/** The last non-empty line of some text, for a message about a crash. */
function lastLine(text: string): string {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return lines[lines.length - 1] ?? '';
}

/** Compiles the model (scripts/compile_model.py in the toolchain's Python), showing progress. */
export async function compileModel(opts: CompileOptions, progress?: StageProgress): Promise<CompileResult> {
  // Checked here too, so the common mistakes answer at once (the script checks them as well).
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(opts.model);
  } catch {}
  if (!st) throw new CliError(`${opts.model}: no such file`, 'FileNotFoundError', 'check the path of the .onnx model');
  if (!st.isFile()) throw new CliError(`${opts.model}: not a file`, 'FileNotFoundError', 'give the path of an .onnx file');
  if (path.extname(opts.out) !== '.so')
    throw new UsageError(`-o ${opts.out}: the artifact must be a .so file`, 'e.g. -o model.so (its manifest is written beside it as model.json)');
  const { python, script } = compilerCommand(opts.python);

  const args = [script, opts.model, '-o', opts.out, '--target', opts.target, '--events'];
  for (const s of opts.inputShapes) args.push('--input-shape', `${s.name}=${s.shape.join(',')}`);
  if (opts.cc) args.push('--cc', opts.cc);

  const child = spawn(python, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PYTHONUNBUFFERED: '1' } });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    if (opts.verbose) process.stderr.write(chunk);
    stderr = (stderr + chunk).slice(-16384);
  });
  // Ctrl-C or a failure here must not leave the compiler running.
  const killChild = () => child.kill('SIGTERM');
  process.once('exit', killChild);

  let result: CompileResult | undefined;
  let failure: Error | undefined;
  const lines = readline.createInterface({ input: child.stdout, crlfDelay: Infinity });
  lines.on('line', (line) => {
    let ev: CompileEvent;
    try {
      ev = JSON.parse(line) as CompileEvent;
    } catch {
      return; // not one of ours (the script keeps stdout for its events; be lenient anyway)
    }
    if (ev.event === 'start') progress?.start(ev.stages.length);
    else if (ev.event === 'stage') progress?.stage(ev.index, ev.title);
    else if (ev.event === 'done') result = ev.result;
    else if (ev.event === 'error') {
      failure =
        ev.kind === 'usage'
          ? new UsageError(ev.message, ev.hint ?? 'run `tvm-node compile --help` for usage')
          : new CliError(ev.message, ev.kind, ev.hint ?? "run again with --verbose to see TVM's own output");
    }
  });
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new CliError(
          `cannot run Python '${python}' (${err.code ?? err.message})`,
          'CompilerNotFound',
          'give --python a Python with apache-tvm==0.27.0.post1 and onnx',
        ),
      ),
    );
    child.once('close', (c, s) => resolve([c, s]));
  }).finally(() => {
    process.removeListener('exit', killChild);
    progress?.stop();
  });
  if (failure) throw failure;
  if (code !== 0 || !result) {
    const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
    const last = lastLine(stderr);
    throw new CliError(`the compiler ${how}${last ? `: ${last}` : ''}`, 'CompileError', "run again with --verbose to see TVM's own output");
  }
  return result;
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
    ['TVM', r.tvm_version],
    ['hash', r.content_hash],
  ];
  if (r.notes) rows.push(['note', r.notes]);
  return [`compiled ${model} in ${r.seconds.toFixed(1)} s`, ...rows.map(([k, v]) => `  ${k.padEnd(9)}${v}`)].join('\n');
}
