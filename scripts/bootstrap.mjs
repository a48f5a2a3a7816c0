#!/usr/bin/env node
// One-shot, idempotent project set-up used by `npm start`, `npm test` and `npm run bench`:
//   1. npm dependencies (when node_modules is missing or older than the lockfile),
//   2. the pinned TVM toolchain in tvm/.venv (from tvm/requirements.txt, PyPI only), with the
//      development tools of tvm/requirements-dev.txt (clang-format); reinstalled when either
//      file's hash changes,
//   3. the TVM runtime libraries and headers staged into tvm/lib and tvm/include, and checked
//      to be ABI-compatible with the tvm-ffi staged beside them (scripts/toolchain.mjs),
//   4. the native addon (cmake-js) when it is missing or older than its sources.
// Every step is skipped when its output is current, so a warm run costs well under a second.
// Only Node built-ins are used here: this runs before node_modules exists.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stageToolchain } from './toolchain.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const log = (msg) => process.stderr.write(`[tvm-node setup] ${msg}\n`);

function run(cmd, args, opts = {}) {
  log(`${cmd} ${args.join(' ')}`);
  execFileSync(cmd, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'], ...opts });
}

function mtime(p) {
  try {
    return fs.statSync(p).mtimeMs;
  } catch {
    return 0;
  }
}

function newestIn(dir, exts) {
  let newest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && exts.some((e) => entry.name.endsWith(e))) {
      newest = Math.max(newest, mtime(path.join(entry.parentPath ?? entry.path, entry.name)));
    }
  }
  return newest;
}

function ensureNodeModules() {
  const stamp = path.join(root, 'node_modules', '.package-lock.json');
  if (mtime(stamp) >= mtime(path.join(root, 'package-lock.json')) && mtime(stamp) > 0) return;
  // --ignore-scripts: our own install script would try to build the addon before the
  // toolchain below exists; we build it ourselves in step 4.
  run('npm', ['ci', '--ignore-scripts', '--no-audit', '--no-fund']);
}

function pythonForVenv() {
  for (const candidate of [process.env.PYTHON, 'python3.11', 'python3']) {
    if (!candidate) continue;
    try {
      execFileSync(candidate, ['-c', 'import sys; assert sys.version_info >= (3, 10)'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // try the next one
    }
  }
  throw new Error('tvm-node setup needs Python >= 3.10 (set PYTHON=/path/to/python3)');
}

/**
 * A virtual environment at tvm/<name> with exactly the given requirement files installed;
 * reinstalled when any of them changes (a stamp of their hash is kept inside).
 */
function ensureVenv(name, requirements) {
  const venv = path.join(root, 'tvm', name);
  const py = path.join(venv, 'bin', 'python');
  const reqFiles = requirements.map((f) => path.join(root, 'tvm', f));
  const hash = createHash('sha256');
  for (const f of reqFiles) hash.update(fs.readFileSync(f));
  const want = hash.digest('hex');
  const stampFile = path.join(venv, '.requirements.sha256');
  if (fs.existsSync(py) && fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8') === want) return py;
  if (!fs.existsSync(py)) run(pythonForVenv(), ['-m', 'venv', venv]);
  run(py, ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', ...reqFiles.flatMap((f) => ['-r', f])]);
  fs.writeFileSync(stampFile, want);
  return py;
}

function ensureAddon() {
  const addon = path.join(root, 'build', 'Release', 'tvm_node.node');
  const sources = Math.max(
    newestIn(path.join(root, 'native'), ['.cc', '.h']),
    mtime(path.join(root, 'CMakeLists.txt')),
    mtime(path.join(root, 'tvm', 'staged.json')),
  );
  if (mtime(addon) >= sources) return;
  run(process.execPath, [path.join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js'), 'compile', '--log-level', 'warn']);
}

function main() {
  const steps = new Set(process.argv.slice(2));
  const all = steps.size === 0;
  if (all || steps.has('deps')) ensureNodeModules();
  if (all || steps.has('toolchain')) {
    // The toolchain, and the development tools (clang-format) beside it.
    const py = ensureVenv('.venv', ['requirements.txt', 'requirements-dev.txt']);
    stageToolchain({ root, python: py, log });
  }
  // Triton's Python client (KServe v2 over HTTP and gRPC), which the serving tests and the
  // http benchmark talk to tvm-node serve with: a venv of its own, since its pins (ml_dtypes)
  // differ from the toolchain's.
  if (all || steps.has('clients')) ensureVenv('.venv-clients', ['requirements-clients.txt']);
  if (all || steps.has('addon')) ensureAddon();
}

try {
  main();
} catch (err) {
  log(`failed: ${err.message}`);
  process.exit(1);
}
