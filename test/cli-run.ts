/**
 * Running the CLI from source as a child process, the way `tvm-node` runs, and checking its
 * failure reports: what the CLI tests (test/cli.test.ts, test/compile.test.ts,
 * test/split.test.ts) share.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { python, repoRoot } from './fixtures';

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** `tvm-node ...args` from source (colors off); throws only when it cannot be started. */
export function runCli(args: readonly string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs: number }): CliResult {
  const r = spawnSync(process.execPath, ['--require', 'tsx/cjs', path.join(repoRoot, 'lib', 'cli.ts'), ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: opts.timeoutMs,
    env: { ...(opts.env ?? process.env), FORCE_COLOR: '0' },
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Asserts a failure report: nothing on stdout, exactly `tvm-node: ... [kind]` and `hint: ...`. */
export function assertFailure(r: CliResult, status: number, kind: RegExp, message: RegExp): void {
  assert.equal(r.status, status, `exit status; stderr: ${r.stderr}`);
  assert.equal(r.stdout, '');
  const lines = r.stderr.replace(/\n$/, '').split('\n');
  assert.equal(lines.length, 2, `two stderr lines, got: ${r.stderr}`);
  const m = /^tvm-node: (.+) \[([^\]]+)\]$/.exec(lines[0]);
  assert.ok(m, `first line: ${lines[0]}`);
  assert.match(m[1], message);
  assert.match(m[2], kind);
  assert.match(lines[1], /^hint: \S/);
}

/** Writes `file`: an ONNX model x -> Relu -> y -> FancyNewOp -> z, whose second operator no frontend has. */
export function writeUnsupportedOpModel(file: string): void {
  execFileSync(python, [
    '-c',
    `import onnx
from onnx import TensorProto, helper
g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("FancyNewOp", ["y"], ["z"])], "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
m.ir_version = 8
onnx.save(m, ${JSON.stringify(file)})`,
  ]);
}
