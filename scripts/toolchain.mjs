// Stages the TVM runtime the addon links against into tvm/lib and tvm/include.
//
// Source, in order of preference:
//   - TVM_HOME: a TVM source tree with a build (needed for OpenCL/Vulkan runtimes, which the
//     PyPI wheel lacks). Libraries are looked up in build/, build/lib/, lib/; headers in
//     include/ and 3rdparty/tvm-ffi/include (+ its dlpack).
//   - otherwise the pinned wheels in tvm/.venv, located by asking the installed packages
//     (tvm-ffi-config, importlib) rather than assuming a site-packages layout.
// The addon is linked with an rpath to the staged folder, so no LD_LIBRARY_PATH is needed.
//
// After staging, the pair is checked once (the verdict is kept in tvm/staged.json): every
// staged library must be of the same tvm-ffi ABI generation as libtvm_ffi.so (see
// abiFingerprint), and, for the PyPI wheels, TVM's Python must round-trip a small Relax module
// through tvm.ir.save_json/load_json in a subprocess (a mismatched pair crashes there).
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const RUNTIME_LIBS = ['libtvm_ffi.so', 'libtvm_runtime.so'];
// Loaded by the addon at start-up when present (registration side effects only).
const OPTIONAL_LIBS = ['libtvm_runtime_extra.so', 'libtvm_runtime_cuda.so'];

const LOCATE_WHEELS = `
import importlib.util, importlib.metadata, json, os
tvm_dir = importlib.util.find_spec("tvm").submodule_search_locations[0]
ffi_dir = importlib.util.find_spec("tvm_ffi").submodule_search_locations[0]
print(json.dumps({
  "tvmVersion": importlib.metadata.version("apache-tvm"),
  "ffiVersion": importlib.metadata.version("apache-tvm-ffi"),
  "libDirs": [os.path.join(ffi_dir, "lib"), os.path.join(tvm_dir, "lib")],
  "includeDirs": [os.path.join(ffi_dir, "include"), os.path.join(tvm_dir, "include")],
}))
`;

// tvm-ffi renamed its internal namespace `tvm::ffi::details` to `tvm::ffi::detail` in 0.1.15,
// together with inline ABI changes. Function names from its headers (__PRETTY_FUNCTION__ text in
// checks and type names) end up in every library compiled against them, so the namespace a
// library's bytes name tells which generation of headers it was built with. The dynamic
// symbols do not show this: a mismatched pair links and loads, then crashes. Keep in step
// with ABI_GENERATIONS in lib/versions.ts (test/toolchain.test.ts compares the two).
const ABI_GENERATIONS = [
  { namespace: 'tvm::ffi::details', generation: 'tvm-ffi 0.1.14 or earlier' },
  { namespace: 'tvm::ffi::detail', generation: 'tvm-ffi 0.1.15 or later' },
];

/**
 * The tvm-ffi ABI generation a library file was compiled against: `namespace` and
 * `generation` from ABI_GENERATIONS, or null for both when its bytes name neither namespace
 * (or both) and nothing can be said.
 */
export function abiFingerprint(file) {
  const bytes = fs.readFileSync(file);
  const found = ABI_GENERATIONS.filter((g) => bytes.includes(`${g.namespace}::`));
  return found.length === 1 ? { file, ...found[0] } : { file, namespace: null, generation: null };
}

// Builds a small Relax module and round-trips it through TVM's JSON serializer, which walks
// tvm-ffi objects with inline code from both sides of the TVM / tvm-ffi boundary.
const SERIALIZATION_PROBE = `
import tvm
from tvm import relax
bb = relax.BlockBuilder()
x = relax.Var("x", relax.TensorType((2, 3), "float32"))
with bb.function("main", [x]):
    with bb.dataflow():
        y = bb.emit(relax.op.add(x, x))
        z = bb.emit_output(relax.op.multiply(y, x))
    bb.emit_func_output(z)
mod = bb.get()
tvm.ir.assert_structural_equal(tvm.ir.load_json(tvm.ir.save_json(mod)), mod)
print("ok")
`;

function describePair(found) {
  return `TVM ${found.tvmVersion} with tvm-ffi ${found.ffiVersion} (from ${found.source})`;
}

/** Throws when a staged library was built against another tvm-ffi generation than libtvm_ffi.so. */
export function checkAbiGenerations(libDir, names, found) {
  const prints = Object.fromEntries(names.map((n) => [n, abiFingerprint(path.join(libDir, n))]));
  const ffi = prints['libtvm_ffi.so'];
  for (const [name, fp] of Object.entries(prints)) {
    if (!ffi.namespace || !fp.namespace || fp.namespace === ffi.namespace) continue;
    throw new Error(
      `${describePair(found)} is ABI-incompatible: ${name} was built against the headers of ${fp.generation} ` +
        `(${fp.namespace}), but libtvm_ffi.so is ${ffi.generation} (${ffi.namespace}); pin in ` +
        'tvm/requirements.txt the apache-tvm-ffi release the TVM build was compiled against',
    );
  }
  return Object.fromEntries(Object.entries(prints).map(([n, fp]) => [n, fp.namespace]));
}

/** Throws when TVM's Python cannot round-trip a Relax module through save_json/load_json. */
export function probeSerialization(python, found) {
  const r = spawnSync(python, ['-c', SERIALIZATION_PROBE], { encoding: 'utf8', timeout: 300_000 });
  if (r.error) throw new Error(`cannot run ${python} to check ${describePair(found)}: ${r.error.message}`);
  if (r.status === 0 && r.stdout.trim() === 'ok') return;
  const lastLine = (r.stderr ?? '').trim().split('\n').filter(Boolean).pop();
  // Python's faulthandler (or TVM's own handler) may turn a crash into exit 128 + signal.
  const crashed = r.signal ?? (r.status !== null && r.status > 128 ? `signal ${r.status - 128}` : null);
  throw new Error(
    crashed
      ? `${describePair(found)} is ABI-incompatible: tvm.ir.save_json/load_json of a small Relax module ` +
          `crashed (${crashed}); pin in tvm/requirements.txt the apache-tvm-ffi release the TVM wheel was ` +
          'compiled against'
      : `${describePair(found)} failed a tvm.ir.save_json/load_json round trip of a small Relax module ` +
          `(exit ${r.status}${lastLine ? `: ${lastLine}` : ''}); the pair may be ABI-incompatible`,
  );
}

function locateWheels(python) {
  return { source: 'pypi', ...JSON.parse(execFileSync(python, ['-c', LOCATE_WHEELS], { encoding: 'utf8' })) };
}

function locateTvmHome(home) {
  const candidates = (...rels) => rels.map((r) => path.join(home, r)).filter((d) => fs.existsSync(d));
  const versionFile = path.join(home, 'python', 'tvm', '_version.py');
  const tvmVersion = fs.existsSync(versionFile) ? ((fs.readFileSync(versionFile, 'utf8').match(/version\s*=\s*['"]([^'"]+)/) ?? [])[1] ?? 'source') : 'source';
  return {
    source: `TVM_HOME=${home}`,
    tvmVersion,
    ffiVersion: 'source',
    libDirs: candidates('build', 'build/lib', 'lib', 'build/3rdparty/tvm-ffi/lib', '3rdparty/tvm-ffi/build/lib'),
    includeDirs: candidates('3rdparty/tvm-ffi/include', '3rdparty/tvm-ffi/3rdparty/dlpack/include', 'include'),
  };
}

function findLib(libDirs, name) {
  return libDirs.map((d) => path.join(d, name)).find((p) => fs.existsSync(p));
}

function copyTree(from, to) {
  fs.cpSync(from, to, { recursive: true, dereference: true });
}

/**
 * Copies the runtime libraries and headers of the chosen TVM into tvm/lib and tvm/include,
 * checks that they fit together (see the top of this file) and records what was staged, with
 * the verdict, in tvm/staged.json (read by the build and by `versions()`). A staged runtime
 * that fails the check throws one line naming TVM's and tvm-ffi's versions, and leaves no
 * staged.json behind, so the next run checks again.
 */
export function stageToolchain({ root, python, log }) {
  const home = process.env.TVM_HOME;
  const found = home ? locateTvmHome(path.resolve(home)) : locateWheels(python);
  const libs = {};
  for (const name of [...RUNTIME_LIBS, ...OPTIONAL_LIBS]) {
    const p = findLib(found.libDirs, name);
    if (p) libs[name] = p;
    else if (RUNTIME_LIBS.includes(name)) {
      throw new Error(`${name} not found in ${found.libDirs.join(', ')} (from ${found.source})`);
    }
  }
  const stamp = { ...found, libs, mtimes: Object.values(libs).map((p) => fs.statSync(p).mtimeMs) };
  const stagedFile = path.join(root, 'tvm', 'staged.json');
  const libOut = path.join(root, 'tvm', 'lib');
  let previous;
  try {
    previous = JSON.parse(fs.readFileSync(stagedFile, 'utf8'));
  } catch {
    previous = undefined;
  }
  const { abi: previousAbi, ...previousStamp } = previous ?? {};
  const staged = previous !== undefined && JSON.stringify(previousStamp) === JSON.stringify(stamp);
  if (staged && previousAbi?.verdict === 'ok') return previous;

  if (!staged) {
    log(`staging TVM runtime from ${found.source} (tvm ${found.tvmVersion}, tvm-ffi ${found.ffiVersion})`);
    const incOut = path.join(root, 'tvm', 'include');
    fs.rmSync(stagedFile, { force: true });
    fs.rmSync(libOut, { recursive: true, force: true });
    fs.rmSync(incOut, { recursive: true, force: true });
    fs.mkdirSync(libOut, { recursive: true });
    for (const [name, p] of Object.entries(libs)) fs.copyFileSync(p, path.join(libOut, name));
    for (const dir of found.includeDirs) copyTree(dir, incOut);
  }
  let abi;
  try {
    const generations = checkAbiGenerations(libOut, Object.keys(libs), found);
    if (found.source === 'pypi') {
      log(`checking TVM ${found.tvmVersion} with tvm-ffi ${found.ffiVersion}: save_json/load_json round trip`);
      probeSerialization(python, found);
    }
    abi = { verdict: 'ok', generations, probe: found.source === 'pypi' ? 'save_json/load_json round trip ok' : 'skipped (not the PyPI wheels)' };
  } catch (err) {
    fs.rmSync(stagedFile, { force: true });
    throw err;
  }
  const record = { ...stamp, abi };
  fs.writeFileSync(stagedFile, JSON.stringify(record));
  return record;
}
