/**
 * Running the Python tools of the compile path (scripts/compile_model.py for `compile`,
 * scripts/split_model.py for `split`) in the toolchain's Python: both report their steps and
 * their result or error as JSON lines on stdout (scripts/compile_model.py, "Progress and
 * errors"), shown here as a progress bar and one result or one error.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { packageRoot } from '../binding';
import { CliError, UsageError } from './errors';
import type { StageProgress } from './progress';

/** One line of the tools' JSON-lines protocol. */
type ToolEvent<R> =
  | { event: 'start'; stages: Array<{ name: string; title: string }> }
  | { event: 'stage'; index: number; total: number; name: string; title: string }
  | { event: 'done'; result: R }
  | { event: 'error'; kind: string; message: string; hint: string | null };

/** A run of one of the tools. */
export interface ToolRun {
  /** The script in scripts/, e.g. `compile_model.py`. */
  script: string;
  /** Its arguments (`--events` is added). */
  args: string[];
  /** The command it serves, for hints (`compile`, `split`). */
  command: string;
  /** The Python with TVM (default: $TVM_NODE_PYTHON, else the checkout's tvm/.venv). */
  python?: string;
  /** Pass the tool's own output (TVM, LLVM, g++) through to stderr. */
  verbose?: boolean;
}

/** The Python that runs a tool, and the tool's path; a missing one is a one-line error. */
export function toolCommand(scriptName: string, python?: string): { python: string; script: string } {
  const script = path.join(packageRoot, 'scripts', scriptName);
  if (!fs.existsSync(script)) {
    throw new CliError(
      `the compiler (scripts/${scriptName}) is not in this installation (${packageRoot})`,
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

/** Checks that the `.onnx` model is a file, so the common mistake answers at once (the tools check it as well). */
export function checkModelFile(model: string): void {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(model);
  } catch {}
  if (!st) throw new CliError(`${model}: no such file`, 'FileNotFoundError', 'check the path of the .onnx model');
  if (!st.isFile()) throw new CliError(`${model}: not a file`, 'FileNotFoundError', 'give the path of an .onnx file');
}

/** The last non-empty line of some text, for a message about a crash. */
function lastLine(text: string): string {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return lines[lines.length - 1] ?? '';
}

/**
 * Runs a tool with `--events`, showing its steps on `progress`; resolves with its result, or
 * rejects with its error as a {@link UsageError} (kind `usage`) or a {@link CliError}.
 */
export async function runPythonTool<R>(run: ToolRun, progress?: StageProgress): Promise<R> {
  const { python, script } = toolCommand(run.script, run.python);
  const child = spawn(python, [script, ...run.args, '--events'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PYTHONUNBUFFERED: '1' },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    if (run.verbose) process.stderr.write(chunk);
    stderr = (stderr + chunk).slice(-16384);
  });
  // Ctrl-C or a failure here must not leave the tool running.
  const killChild = () => child.kill('SIGTERM');
  process.once('exit', killChild);

  let result: R | undefined;
  let failure: Error | undefined;
  const lines = readline.createInterface({ input: child.stdout, crlfDelay: Infinity });
  lines.on('line', (line) => {
    let ev: ToolEvent<R>;
    try {
      ev = JSON.parse(line) as ToolEvent<R>;
    } catch {
      return; // not one of ours (the tools keep stdout for their events; be lenient anyway)
    }
    if (ev.event === 'start') progress?.start(ev.stages.length);
    else if (ev.event === 'stage') progress?.stage(ev.index, ev.title);
    else if (ev.event === 'done') result = ev.result;
    else if (ev.event === 'error') {
      failure =
        ev.kind === 'usage'
          ? new UsageError(ev.message, ev.hint ?? `run \`tvm-node ${run.command} --help\` for usage`)
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
  if (code !== 0 || result === undefined) {
    const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
    const last = lastLine(stderr);
    throw new CliError(`the compiler ${how}${last ? `: ${last}` : ''}`, 'CompileError', "run again with --verbose to see TVM's own output");
  }
  return result;
}
