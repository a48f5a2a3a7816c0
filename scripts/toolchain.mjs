// Stages the TVM runtime the addon links against into tvm/lib and tvm/include.
//
// Source, in order of preference:
//   - TVM_HOME: a TVM source tree with a build (needed for OpenCL/Vulkan runtimes, which the
//     PyPI wheel lacks). Libraries are looked up in build/, build/lib/, lib/; headers in
//     include/ and 3rdparty/tvm-ffi/include (+ its dlpack).
//   - otherwise the pinned wheels in tvm/.venv, located by asking the installed packages
//     (tvm-ffi-config, importlib) rather than assuming a site-packages layout.
// The addon is linked with an rpath to the staged folder, so no LD_LIBRARY_PATH is needed.
import { execFileSync } from 'node:child_process';
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

function locateWheels(python) {
  return { source: 'pypi', ...JSON.parse(execFileSync(python, ['-c', LOCATE_WHEELS], { encoding: 'utf8' })) };
}

function locateTvmHome(home) {
  const candidates = (...rels) => rels.map((r) => path.join(home, r)).filter((d) => fs.existsSync(d));
  const versionFile = path.join(home, 'python', 'tvm', '_version.py');
  const tvmVersion = fs.existsSync(versionFile)
    ? (fs.readFileSync(versionFile, 'utf8').match(/version\s*=\s*['"]([^'"]+)/) ?? [])[1] ?? 'source'
    : 'source';
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
 * Copies the runtime libraries and headers of the chosen TVM into tvm/lib and tvm/include and
 * records what was staged in tvm/staged.json (read by the build and by `versions()`).
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
  const stamp = JSON.stringify({ ...found, libs, mtimes: Object.values(libs).map((p) => fs.statSync(p).mtimeMs) });
  const stagedFile = path.join(root, 'tvm', 'staged.json');
  if (fs.existsSync(stagedFile) && fs.readFileSync(stagedFile, 'utf8') === stamp) return JSON.parse(stamp);

  log(`staging TVM runtime from ${found.source} (tvm ${found.tvmVersion}, tvm-ffi ${found.ffiVersion})`);
  const libOut = path.join(root, 'tvm', 'lib');
  const incOut = path.join(root, 'tvm', 'include');
  fs.rmSync(libOut, { recursive: true, force: true });
  fs.rmSync(incOut, { recursive: true, force: true });
  fs.mkdirSync(libOut, { recursive: true });
  for (const [name, p] of Object.entries(libs)) fs.copyFileSync(p, path.join(libOut, name));
  for (const dir of found.includeDirs) copyTree(dir, incOut);
  fs.writeFileSync(stagedFile, stamp);
  return JSON.parse(stamp);
}
