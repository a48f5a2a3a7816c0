/**
 * Versions of tvm-node and of the TVM runtime it runs, and the check that they fit.
 */
import fs from 'node:fs';
import path from 'node:path';
import { addon, packageRoot } from './binding';
import { VersionMismatchError } from './errors';

/** What {@link versions} reports. */
export interface Versions {
  /** tvm-node's own version. */
  tvmNode: string;
  /** The TVM version the addon was built against (from the staged runtime). */
  tvm: string;
  /** Where that runtime came from: `pypi` or `TVM_HOME=...`. */
  tvmSource: string;
  /** The tvm-ffi library loaded at run time. */
  tvmFfi: string;
  /** The tvm-ffi headers the addon was compiled with. */
  tvmFfiHeaders: string;
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
    napi: v.napi,
    node: process.versions.node,
  };
  return cached;
}

/**
 * tvm-ffi's C++ ABI is only stable within a release (0.1.13 vs 0.1.13.post2 broke silently),
 * so the loaded library must be the one the addon was compiled against. Throws
 * {@link VersionMismatchError} naming both; called before any artifact is loaded.
 */
export function checkRuntimeVersions(): Versions {
  const v = versions();
  if (v.tvmFfi !== v.tvmFfiHeaders) {
    throw new VersionMismatchError(
      'VersionMismatchError',
      `tvm-ffi ${v.tvmFfi} is loaded but tvm-node was built against tvm-ffi ${v.tvmFfiHeaders} ` +
        `(TVM ${v.tvm}); rebuild tvm-node (npm run setup) or install the matching runtime`,
    );
  }
  return v;
}
