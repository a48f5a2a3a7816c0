/**
 * The typed surface of the native addon. Nothing else in lib/ touches untyped native
 * exports: every native class and function is declared here once.
 * @internal
 */
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

function loadAddon(): Addon {
  // node-gyp-build: a local build (build/Release) first, then prebuilds/<platform>-<arch>/.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const load = require('node-gyp-build') as (dir: string) => Addon;
  try {
    return load(packageRoot);
  } catch (err) {
    const msg = (err as Error).message;
    throw new TvmRuntimeError(
      'RuntimeError',
      `tvm-node: could not load the native addon (${msg}). ` +
        'In a source checkout run `npm run setup`; for installs, check that a prebuilt binary exists for ' +
        `${process.platform}-${process.arch} or that the TVM runtime libraries sit beside it.`,
      '',
      { cause: err },
    );
  }
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
