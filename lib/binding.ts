/**
 * The typed surface of the native addon. Nothing else in lib/ touches untyped native
 * exports: every native class and function is declared here once.
 * @internal
 */
import fs from 'node:fs';
import path from 'node:path';
import { makeTvmError, TvmRuntimeError } from './errors';
import { applyThreadDefaults } from './threads';

/** Native tensor: one reference to a TVM tensor (DLPack-compatible). */
export interface NativeTensor {
  readonly shape: number[];
  readonly dtype: string;
  readonly deviceType: number;
  readonly deviceId: number;
  readonly byteLength: number;
  readonly isContiguous: boolean;
  readonly disposed: boolean;
  copyFromBytes(src: ArrayBufferView | ArrayBuffer): void;
  copyToBytes(dst: ArrayBufferView | ArrayBuffer): void;
  copyFromBytesAsync(src: ArrayBufferView | ArrayBuffer): Promise<null>;
  copyToBytesAsync(dst: ArrayBufferView | ArrayBuffer): Promise<null>;
  copyFrom(src: NativeTensor): void;
  copyFromAsync(src: NativeTensor): Promise<null>;
  hostView(): ArrayBuffer;
  toDLPack(): DLPackCapsule;
  dispose(): void;
  /** Releases the reference on the thread pool (for remote objects, a network request). */
  disposeAsync(): Promise<void>;
}

/** An opaque DLPack capsule (a `DLManagedTensorVersioned*`), consumed once. */
export type DLPackCapsule = object & { readonly __dlpack: unique symbol };

export interface NativeTensorClass {
  empty(shape: number[], dtype: string, deviceType: number, deviceId: number): NativeTensor;
  /** Zero-copy CPU tensor over host memory, or null when it is not 64-byte aligned. */
  fromHost(view: ArrayBufferView | ArrayBuffer, shape: unknown, dtype: string): NativeTensor | null;
  fromDLPack(capsule: DLPackCapsule): NativeTensor;
}

export interface NativeFunction {
  readonly disposed: boolean;
  call(...args: unknown[]): unknown;
  callAsync(args: unknown[]): Promise<unknown>;
  dispose(): void;
  /** Releases the reference on the thread pool (for remote objects, a network request). */
  disposeAsync(): Promise<void>;
}

export interface NativeModule {
  readonly kind: string;
  /** Imported modules, already wrapped as lib/ Modules. */
  readonly imports: unknown[];
  readonly disposed: boolean;
  getFunction(name: string, queryImports?: boolean): NativeFunction | null;
  /** Resolves with a lib/ PackedFunc (results pass through the `wrap` factory), or null. */
  getFunctionAsync(name: string): Promise<unknown>;
  implementsFunction(name: string, queryImports?: boolean): boolean;
  dispose(): void;
  /** Releases the reference on the thread pool (for remote objects, a network request). */
  disposeAsync(): Promise<void>;
}

export interface NativeModuleClass {
  load(path: string): NativeModule;
  /** Resolves with the lib/ Module wrapper (results pass through the `wrap` factory). */
  loadAsync(path: string): Promise<unknown>;
}

export interface NativeObject {
  readonly typeKey: string;
  readonly disposed: boolean;
  dispose(): void;
  /** Releases the reference on the thread pool (for remote objects, a network request). */
  disposeAsync(): Promise<void>;
}

export interface RuntimeLibrary {
  name: string;
  /** Where the addon looks for it: beside the loaded libtvm_runtime.so. */
  path: string;
  loaded: boolean;
  error?: string;
}

/** The files of the libraries loaded in this process, as the dynamic loader resolved them. */
export interface LibraryPaths {
  ffi: string;
  runtime: string;
  addon: string;
}

export interface Factories {
  error(kind: string, message: string, backtrace: string): Error;
  device(deviceType: number, deviceId: number): unknown;
  shape(dims: number[]): unknown;
  /** Wraps a native handle returned by TVM in its public lib/ class. */
  wrap(handle: NativeTensor | NativeFunction | NativeModule | NativeObject): unknown;
}

export interface Addon {
  versions(): { ffiRuntime: string; ffiHeaders: string; tvm: string; tvmSource: string; napi: number };
  runtimeLibraries(): RuntimeLibrary[];
  libraryPaths(): LibraryPaths;
  setFactories(f: Factories): void;
  deviceEnabled(deviceType: number): boolean;
  deviceAttr(deviceType: number, deviceId: number, kind: number): number | string | boolean | undefined;
  deviceSync(deviceType: number, deviceId: number): void;
  NativeTensor: NativeTensorClass & (new () => NativeTensor);
  NativeFunction: new () => NativeFunction;
  NativeModule: NativeModuleClass & (new () => NativeModule);
  NativeObject: new () => NativeObject;
  getGlobalFunc(name: string): NativeFunction | null;
  listGlobalFuncs(): string[];
  registerFunc(name: string, fn: (...args: unknown[]) => unknown, override: boolean): number;
  unregisterFunc(name: string, id: number): void;
  /** A connected Unix socket pair: [end for a net.Socket, blocking end for TVM's RPC loop]. */
  socketPair(): [number, number];
  /** shutdown(fd, SHUT_RDWR): ends TVM's RPC loop on that socket. */
  shutdownSocket(fd: number): void;
  /** Sets FD_CLOEXEC on every open descriptor (TVM's sockets lack it), before forking. */
  markCloexec(): void;
  /** An ArrayBuffer over fresh mmap'd pages (zeroed), unmapped by GC or by {@link freeHostBuffer}. */
  allocHostBuffer(size: number): ArrayBuffer;
  /** The same bytes (up to `size`) in a buffer of `size` (mremap: no copy); detaches `buffer`. */
  resizeHostBuffer(buffer: ArrayBuffer, size: number): ArrayBuffer;
  /** Unmaps the pages now and detaches `buffer` (views of it read as empty). */
  freeHostBuffer(buffer: ArrayBuffer): void;
  /**
   * Drops the tensor reference behind a `hostView()` buffer now instead of at its garbage
   * collection, and detaches the buffer (views of it read as empty).
   */
  releaseHostView(buffer: ArrayBuffer): void;
  /**
   * A CPU tensor over mmap'd pages (huge pages asked for when large): fresh, or those of a
   * released one (old bytes: the caller writes every byte before anyone reads it). Its
   * mapping goes to a bounded cache when its last reference goes.
   */
  allocHostTensor(shape: number[], dtype: string): NativeTensor;
  /** Bounds that cache in bytes (0: none; default 256 MiB), unmapping what no longer fits; returns the bytes it holds. */
  setHostTensorCache(bytes?: number): number;
  /**
   * Sets the TVM workers of each libuv pool thread when given (0: TVM's own, from
   * TVM_NUM_THREADS), and reports it with TVM's MaxConcurrency on the calling thread.
   */
  threadSettings(poolThreadConcurrency?: number): { poolThreadConcurrency: number; maxConcurrency: number };
  /** A variable of the process environment (what TVM reads), set to `defaultValue` first when unset. */
  processEnv(name: string, defaultValue?: string): { value: string | null; setByTvmNode: boolean };
}

/** Package root: lib/ in a source checkout, dist/lib/ when built. */
export const packageRoot = path.resolve(__dirname, __dirname.includes(`${path.sep}dist${path.sep}`) ? '../..' : '..');

/** This process's platform as the prebuild folders are named (`linux-x64`, `linux-arm64`). */
export const platformTarget = `${process.platform}-${process.arch}`;

/** One file the addon was tried from, and why it did not load. */
export interface AddonLoadFailure {
  file: string;
  error: Error;
}

/**
 * Where the addon is looked for, in order: a local build (build/Release: `npm run setup` in a
 * source checkout, or a build from source), so a checkout always runs what it just built, then
 * the prebuilt binary for this platform (prebuilds/<platform>-<arch>/*.node, with the TVM
 * runtime libraries beside it; scripts/package.mjs stages them). Only files that exist.
 */
export function addonCandidates(root = packageRoot, target = platformTarget): string[] {
  const local = path.join(root, 'build', 'Release', 'tvm_node.node');
  const dir = path.join(root, 'prebuilds', target);
  let prebuilt: string[] = [];
  try {
    // prebuildify's names carry a libc tag (tvm-node.glibc.node): this system's libc first.
    const musl = fs.existsSync('/etc/alpine-release');
    const rank = (f: string) => (f.split('.').includes(musl ? 'glibc' : 'musl') ? 1 : 0);
    prebuilt = fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.node'))
      .sort((a, b) => rank(a) - rank(b) || a.localeCompare(b))
      .map((f) => path.join(dir, f));
  } catch {
    // no prebuilt binary for this platform
  }
  return [...(fs.existsSync(local) ? [local] : []), ...prebuilt];
}

/** The platforms this package has prebuilt binaries for (prebuilds/<platform>-<arch>/ with an addon). */
function prebuiltTargets(root: string): string[] {
  try {
    return fs
      .readdirSync(path.join(root, 'prebuilds'))
      .filter((t) => fs.readdirSync(path.join(root, 'prebuilds', t)).some((f) => f.endsWith('.node')))
      .sort();
  } catch {
    return [];
  }
}

const ELF_MACHINES: Record<number, string> = { 3: 'x86 (32-bit)', 40: 'ARM (32-bit)', 62: 'x86-64', 183: 'aarch64', 243: 'RISC-V' };

function elfMachineOf(file: string): string | undefined {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const h = Buffer.alloc(20);
      if (fs.readSync(fd, h, 0, 20, 0) < 20 || h.readUInt32BE(0) !== 0x7f454c46) return undefined;
      const m = h[5] === 2 ? h.readUInt16BE(18) : h.readUInt16LE(18);
      return ELF_MACHINES[m] ?? `ELF machine ${m}`;
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return undefined;
  }
}

/** The glibc this process runs with, or undefined (musl, or not Linux). */
function systemGlibc(): string | undefined {
  return (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header?.glibcVersionRuntime;
}

/** What went wrong with one file, in words, and what to do about it. */
function explainFailure(f: AddonLoadFailure, local: boolean): { why: string; todo: string } {
  const msg = f.error.message;
  const fix = local ? 'run `npm run setup` to rebuild it' : 'reinstall tvm-node (its package ships the addon with its libraries)';
  const glibc = /version `GLIBC_([\d.]+)' not found/.exec(msg);
  if (glibc) {
    const have = systemGlibc();
    return {
      why: `it needs glibc >= ${glibc[1]}, and this system has ${have ? `glibc ${have}` : 'no glibc (musl?)'}`,
      todo: `run it on a system with glibc >= ${glibc[1]}, or build from source on this one`,
    };
  }
  const glibcxx = /version `(GLIBCXX_[\d.]+|CXXABI_[\d.]+)' not found/.exec(msg);
  if (glibcxx) {
    return {
      why: `it needs ${glibcxx[1]} of libstdc++, which this system's libstdc++ is too old to have`,
      todo: 'update libstdc++ (libstdc++6), or build from source on this machine',
    };
  }
  const missing = /(?:^|: )([^\s:]+\.so[\w.]*): cannot open shared object file/.exec(msg);
  if (missing && path.basename(missing[1]) !== path.basename(f.file)) {
    return { why: `the library ${missing[1]} is missing: it must sit beside the addon in ${path.dirname(f.file)}`, todo: fix };
  }
  if (/cannot open shared object file|wrong ELF class|ELF file's machine|invalid ELF header/.test(msg) && fs.existsSync(f.file)) {
    const built = elfMachineOf(f.file);
    const here = ELF_MACHINES[{ x64: 62, arm64: 183, arm: 40, ia32: 3, riscv64: 243 }[process.arch as string] ?? -1] ?? process.arch;
    if (built && built !== here) return { why: `it is built for ${built}, and this process runs on ${here} (${process.arch})`, todo: fix };
  }
  const symbol = /undefined symbol: (\S+)/.exec(msg);
  if (symbol) {
    return { why: `a symbol is missing (${symbol[1]}): the TVM runtime libraries beside it are not the ones it was built against`, todo: fix };
  }
  return { why: msg.split('\n')[0], todo: fix };
}

/**
 * The one message of an addon that cannot load: for each file tried, what is missing or
 * wrong; when there is none, which platforms have prebuilt binaries; and what to do.
 */
export function addonLoadError(failures: readonly AddonLoadFailure[], root = packageRoot, target = platformTarget): string {
  const local = path.join(root, 'build', 'Release', 'tvm_node.node');
  const checkout = fs.existsSync(path.join(root, 'scripts', 'bootstrap.mjs'));
  const fromSource = checkout
    ? 'run `npm run setup` in this checkout (it builds the addon; needs Python >= 3.10, cmake and g++)'
    : 'clone the tvm-node repository, run `npm run setup && npm pack` there (needs Python >= 3.10, cmake and g++; ' +
      'TVM_HOME=<your TVM build> where PyPI has no TVM wheels for this platform) and `npm install` the .tgz it makes';
  if (failures.length === 0) {
    const targets = prebuiltTargets(root);
    return (
      `tvm-node: no prebuilt binary for ${target} and no local build (${path.relative(root, local)}) in ${root}; ` +
      `this package has prebuilt binaries for ${targets.length ? `${targets.join(', ')} (glibc)` : 'no platform'}. ` +
      (checkout
        ? `To build it: ${fromSource}.`
        : `Install on ${targets.length ? 'one of those' : 'a platform that has one'}, or build from source: ${fromSource}.`)
    );
  }
  const explained = failures.map((f) => ({ file: f.file, ...explainFailure(f, f.file === local) }));
  const todos = [...new Set(explained.map((e) => e.todo))];
  const tried = explained.map((e) => `${path.relative(root, e.file)}: ${e.why}`).join('; ');
  const source = todos.some((t) => t.includes('from source')) && !checkout ? ` To build from source: ${fromSource}.` : '';
  return `tvm-node: cannot load the native addon for ${target} in ${root}: ${tried}. To fix: ${todos.join('; ')}.${source}`;
}

function loadAddon(): Addon {
  const failures: AddonLoadFailure[] = [];
  for (const file of addonCandidates()) {
    try {
      const loaded = require(file) as Addon;
      if (failures.length) process.emitWarning(`${addonLoadError(failures)} Using ${file} instead.`, { code: 'TVM_NODE_ADDON_FALLBACK' });
      return loaded;
    } catch (err) {
      failures.push({ file, error: err as Error });
    }
  }
  throw new TvmRuntimeError('RuntimeError', addonLoadError(failures), '', failures.length ? { cause: failures[0].error } : undefined);
}

/** The loaded addon, with lib/'s factories installed. */
export const addon: Addon = loadAddon();

// TVM's thread-pool settings (TVM_NUM_THREADS, TVM_BIND_THREADS, TVM_THREAD_POOL_SPIN_COUNT,
// and the libuv pool threads' workers) must be in place before the first kernel runs: TVM
// reads them when a thread first creates its pool. lib/threads.ts says what is chosen and why;
// a variable already set is never changed.
applyThreadDefaults(addon);

/** lib/ classes over native handles, by native class; each registers itself on import. */
const wrappers = new Map<unknown, (handle: never) => unknown>();

/** Registers the lib/ class that wraps handles of a native class (called by tensor.ts, ...). */
export function registerWrapper<H>(nativeClass: new () => H, wrap: (handle: H) => unknown): void {
  wrappers.set(nativeClass, wrap as (handle: never) => unknown);
}

/** Late-bound factories: device.ts and values.ts register theirs on import. */
export const factories: Factories = {
  error: makeTvmError,
  device: (deviceType, deviceId) => ({ deviceType, deviceId }),
  shape: (dims) => dims,
  wrap: (h) => wrappers.get(Object.getPrototypeOf(h).constructor)?.(h as never) ?? h,
};
addon.setFactories({
  error: (k, m, b) => factories.error(k, m, b),
  device: (t, i) => factories.device(t, i),
  shape: (d) => factories.shape(d),
  wrap: (h) => factories.wrap(h),
});
