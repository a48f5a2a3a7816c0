/**
 * Versions of tvm-node and of the TVM runtime it runs, and the checks that they fit.
 */
import fs from 'node:fs';
import path from 'node:path';
import { addon, packageRoot } from './binding';
import { VersionMismatchError } from './errors';
import { requireString } from './options';

/** What {@link versions} reports. */
export interface Versions {
  /** tvm-node's own version. */
  tvmNode: string;
  /** The TVM version the addon was built against (from the staged runtime). */
  tvm: string;
  /** Where that runtime came from: `pypi` or `TVM_HOME=...`. */
  tvmSource: string;
  /** The tvm-ffi library loaded at run time (the version it reports, from its headers' macros). */
  tvmFfi: string;
  /** The tvm-ffi headers the addon was compiled with. */
  tvmFfiHeaders: string;
  /**
   * The apache-tvm-ffi package the loaded library was staged from (e.g. `0.1.14.post1`, whose
   * headers say 0.1.15: they carry the next development patch number), when the loaded
   * libtvm_ffi.so is the one `npm run setup` staged; undefined otherwise.
   */
  tvmFfiPackage?: string;
  /** Node-API version the addon targets. */
  napi: number;
  node: string;
}

let cached: Versions | undefined;

/** Versions of tvm-node, the linked TVM runtime and tvm-ffi. */
export function versions(): Versions {
  if (cached) return cached;
  const v = addon.versions();
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string };
  cached = {
    tvmNode: pkg.version,
    tvm: v.tvm,
    tvmSource: v.tvmSource,
    tvmFfi: v.ffiRuntime,
    tvmFfiHeaders: v.ffiHeaders,
    tvmFfiPackage: stagedFfiPackage(addon.libraryPaths().ffi),
    napi: v.napi,
    node: process.versions.node,
  };
  return cached;
}

/**
 * The apache-tvm-ffi version recorded in tvm/staged.json at setup, if `loadedFfi` is the
 * library staged then (the staged copy, or the file it was copied from, of the same size).
 */
function stagedFfiPackage(loadedFfi: string): string | undefined {
  let staged: { ffiVersion?: string; libs?: Record<string, string> };
  try {
    staged = JSON.parse(fs.readFileSync(path.join(packageRoot, 'tvm', 'staged.json'), 'utf8'));
  } catch {
    return undefined;
  }
  const version = staged.ffiVersion;
  const source = staged.libs?.['libtvm_ffi.so'];
  if (!version || version === 'source' || !source || !loadedFfi) return undefined;
  try {
    const loaded = fs.realpathSync(loadedFfi);
    const copy = path.join(packageRoot, 'tvm', 'lib', 'libtvm_ffi.so');
    const same = [copy, source].some((p) => fs.existsSync(p) && fs.realpathSync(p) === loaded);
    return same && fs.statSync(loaded).size === fs.statSync(source).size ? version : undefined;
  } catch {
    return undefined;
  }
}

/**
 * tvm-ffi renamed its internal namespace `tvm::ffi::details` to `tvm::ffi::detail` in 0.1.15,
 * together with changes to inline ABI (e.g. the signature of custom `__any_hash__` functions).
 * Function names from its headers (in checks and type names) are compiled into every library
 * built against them, so the namespace a library's bytes name tells which generation of
 * tvm-ffi headers it was built with. A TVM runtime of one generation with a tvm-ffi of the
 * other links and loads (every dynamic symbol resolves) and then crashes, e.g. in JSON
 * serialization. Kept in step with scripts/toolchain.mjs, which checks the same at setup.
 */
export const ABI_GENERATIONS = [
  { namespace: 'tvm::ffi::details', generation: 'tvm-ffi 0.1.14 or earlier' },
  { namespace: 'tvm::ffi::detail', generation: 'tvm-ffi 0.1.15 or later' },
] as const;

/** The tvm-ffi ABI generation a library file was compiled against. */
export interface AbiFingerprint {
  file: string;
  /** The tvm-ffi internal namespace its bytes name, or null when they name neither (or both). */
  namespace: string | null;
  /** The generation of that namespace (`tvm-ffi 0.1.15 or later`), or null. */
  generation: string | null;
}

/** Reads a library file and tells which tvm-ffi generation it was built against. */
export function abiFingerprint(file: string): AbiFingerprint {
  requireString('abiFingerprint: file', file);
  const bytes = fs.readFileSync(file);
  const found = ABI_GENERATIONS.filter((g) => bytes.includes(`${g.namespace}::`));
  return found.length === 1 ? { file, ...found[0] } : { file, namespace: null, generation: null };
}

/** The file itself (the loader names it through the rpath, e.g. `build/Release/../../tvm/lib`). */
function realPath(file: string): string {
  try {
    return fs.realpathSync(file);
  } catch {
    return file;
  }
}

/** As {@link abiFingerprint}, but a file the loader named and that cannot be read says nothing. */
function readableFingerprint(file: string): AbiFingerprint {
  try {
    return abiFingerprint(file);
  } catch {
    return { file, namespace: null, generation: null };
  }
}

/** A library loaded in this process, with what it is and its ABI generation. */
export interface LoadedLibrary {
  /** `tvm-ffi`, `TVM runtime`, `TVM runtime sidecar` or `tvm-node addon`. */
  role: string;
  /** Its file, as the dynamic loader resolved it. */
  path: string;
  /** Its version, in words (`TVM 0.27.0.post1`, `tvm-ffi 0.1.15 (apache-tvm-ffi 0.1.14.post1)`). */
  version: string;
  abi: AbiFingerprint;
}

let loadedCache: LoadedLibrary[] | undefined;

/**
 * The tvm-ffi library, the TVM runtime, its loaded sidecars and the addon, as loaded in this
 * process, each with its ABI fingerprint. Computed once per process (it reads the files).
 */
export function loadedLibraries(): LoadedLibrary[] {
  if (loadedCache) return loadedCache;
  const v = versions();
  const paths = addon.libraryPaths();
  const lib = (role: string, file: string, version: string): LoadedLibrary => {
    const real = realPath(file);
    return { role, path: real, version, abi: readableFingerprint(real) };
  };
  loadedCache = [
    lib('tvm-ffi', paths.ffi, `tvm-ffi ${v.tvmFfi}${v.tvmFfiPackage ? ` (apache-tvm-ffi ${v.tvmFfiPackage})` : ''}`),
    lib('TVM runtime', paths.runtime, `TVM ${v.tvm}`),
    ...addon
      .runtimeLibraries()
      .filter((l) => l.loaded)
      .map((l) => lib('TVM runtime sidecar', l.path, `TVM ${v.tvm}`)),
    lib('tvm-node addon', paths.addon, `tvm-node ${v.tvmNode}, tvm-ffi headers ${v.tvmFfiHeaders}`),
  ];
  return loadedCache;
}

/**
 * Throws {@link VersionMismatchError} when a library was built against another tvm-ffi ABI
 * generation than the tvm-ffi library (the entry with role `tvm-ffi`). Libraries whose
 * generation cannot be told are not judged.
 */
export function checkAbiGenerations(libs: readonly LoadedLibrary[]): void {
  const ffi = libs.find((l) => l.role === 'tvm-ffi');
  if (!ffi?.abi.namespace) return;
  for (const l of libs) {
    if (l === ffi || !l.abi.namespace || l.abi.namespace === ffi.abi.namespace) continue;
    throw new VersionMismatchError(
      'VersionMismatchError',
      `the ${l.role} ${l.path} (${l.version}) was built against the headers of ${l.abi.generation} ` +
        `(${l.abi.namespace}), but the loaded tvm-ffi ${ffi.path} (${ffi.version}) is ${ffi.abi.generation} ` +
        `(${ffi.abi.namespace}): the two are ABI-incompatible (TVM objects are misread across them; ` +
        'serialization crashes). Install the apache-tvm-ffi release this TVM was built against ' +
        '(tvm/requirements.txt, then npm run setup) or rebuild TVM against the loaded tvm-ffi',
    );
  }
}

let verdict: { ok: Versions } | { error: VersionMismatchError } | undefined;

/**
 * tvm-ffi's C++ ABI is only stable within a release (0.1.13 vs 0.1.13.post2 broke silently),
 * so the loaded library must be the one the addon was compiled against, and the TVM runtime
 * (and its sidecars) must have been built against the same generation of tvm-ffi as the
 * loaded library (see {@link ABI_GENERATIONS}). Throws {@link VersionMismatchError} naming
 * both; called before any artifact is loaded. Decided once per process.
 */
export function checkRuntimeVersions(): Versions {
  verdict ??= decide();
  if ('error' in verdict) throw verdict.error;
  return verdict.ok;
}

function decide(): { ok: Versions } | { error: VersionMismatchError } {
  const v = versions();
  try {
    // The TVM runtime first: a generation mismatch there is what crashes TVM itself.
    checkAbiGenerations(loadedLibraries());
    if (v.tvmFfi !== v.tvmFfiHeaders) {
      throw new VersionMismatchError(
        'VersionMismatchError',
        `tvm-ffi ${v.tvmFfi} is loaded but tvm-node was built against tvm-ffi ${v.tvmFfiHeaders} ` +
          `(TVM ${v.tvm}); rebuild tvm-node (npm run setup) or install the matching runtime`,
      );
    }
  } catch (err) {
    if (err instanceof VersionMismatchError) return { error: err };
    throw err;
  }
  return { ok: v };
}
