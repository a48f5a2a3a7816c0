/**
 * A model repository: the `.so` artifacts in a folder, served by name, so devices run a
 * model the server owns without uploading it (TensorFlow Serving style; seeds/000, 002).
 *
 * Each model may have a manifest `<name>.json` beside it:
 * `{ "inputs": [{ "name", "shape", "dtype" }], "outputs": [...], "device": "cpu", "function": "main" }`.
 * A malformed manifest makes only its own model unusable (listed with an `error`), and
 * {@link ModelRepository.check} reports it at start-up.
 *
 * Loaded models live in an LFU cache bounded by count and bytes, keyed by name and version
 * as MLInferBooster keys `model_name#create_time`: the version is the artifact's identity
 * (device, inode, size, modification and change times) and its manifest's, so a replaced or
 * rewritten `.so`, or an edited, added or deleted manifest, is a new key (reloaded); a cached
 * version is never loaded again, and the least frequently used go first when full.
 *
 * Artifacts are loaded from private copies ({@link loadModule}'s `privateCopy`), so a file
 * replaced in any way — renamed over, deleted and put back, or overwritten in place with
 * `cp` — gives the new model, while runs in flight finish on the old one.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import type { TensorInfo } from '../bind';
import { device as parseDevice } from '../device';
import { DisposedError, TvmError, TvmValueError } from '../errors';
import { type Manifest, ManifestError, type ManifestFile, oneLine, readManifest, type TensorSpec, fileVersion as versionOf } from '../manifest';
import { modelMetadata } from '../model';
import { loadModule, loadModuleSync, type Module } from '../module';
import { checkNumber, checkOptions, requireString } from '../options';
import { VirtualMachine } from '../vm';

export type { TensorSpec } from '../manifest';

/** What the repository knows of a model. */
export interface ModelInfo {
  name: string;
  file: string;
  bytes: number;
  /** Modification time of the artifact (ms since epoch). */
  mtimeMs: number;
  inputs?: TensorSpec[];
  outputs?: TensorSpec[];
  device: string;
  function: string;
}

/**
 * A model as {@link ModelRepository.list} shows it: its info, or, when its manifest is
 * malformed, `error` (and no shapes, device or function).
 */
export interface ModelListing extends Omit<ModelInfo, 'device' | 'function'> {
  device?: string;
  function?: string;
  /** What is wrong with the model's manifest; it cannot be served until that is fixed. */
  error?: string;
}

/** A model as clients may see it ({@link ModelRepository.publicList}): no server paths or times. */
export interface PublicModelInfo {
  name: string;
  bytes: number;
  inputs?: TensorSpec[];
  outputs?: TensorSpec[];
  device?: string;
  function?: string;
  error?: string;
}

/**
 * A loaded model, as {@link ModelRepository.get} hands it out. It stays the repository's: the
 * repository disposes it when it is evicted or the repository is disposed (runs in flight
 * finish first); outputs of runs on its VM are the caller's.
 */
export interface LoadedModel {
  vm: VirtualMachine;
  info: ModelInfo;
  /** Number of inputs the model's function (`info.function`) takes. */
  arity: number;
  /** The function's inputs, from the artifact and the manifest (see lib/model.ts): what requests are bound against. */
  inputs: TensorInfo[];
  /** Its outputs, likewise (empty when neither says). */
  outputs: TensorInfo[];
}

/** Limits of the cache of loaded models. */
export interface CacheLimits {
  /** Most models loaded at once. Default 8. */
  maxModels?: number;
  /** Most artifact bytes loaded at once. Default 2 GiB. */
  maxBytes?: number;
  /** Runs of one model at once (VM instances per model). Default 1. */
  concurrency?: number;
}

/**
 * {@link CacheLimits} checked, with defaults filled in. `caller` and `what` name the entry
 * point and the object in messages (`'ModelRepository'`, `'limits'`; `'RPCServer'`, `'cache'`).
 * @internal
 */
export function checkCacheLimits(caller: string, limits: CacheLimits | undefined, what = 'limits'): Required<CacheLimits> {
  const o = checkOptions(caller, limits, ['maxModels', 'maxBytes', 'concurrency'], what);
  const whole = { min: 1, integer: true };
  const at = (key: string) => `${caller}: ${what}.${key}`;
  return {
    maxModels: checkNumber(at('maxModels'), o.maxModels, whole, 8),
    maxBytes: checkNumber(at('maxBytes'), o.maxBytes, whole, 2 * 2 ** 30),
    concurrency: checkNumber(at('concurrency'), o.concurrency, whole, 1),
  };
}

interface Entry {
  key: string;
  model: LoadedModel;
  uses: number;
  lastUse: number;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** A model's artifact and manifest as they are now, or why the manifest cannot be used. */
type Probe = { info: ModelInfo; key: string } | { missing: true } | { listing: ModelListing; error: ManifestError };

/** Why a model left the cache ({@link RepositoryEvents.evict}). */
export type EvictReason = 'lfu' | 'stale' | 'unload';

/** The events a {@link ModelRepository} emits (for metrics and logs), with their arguments. */
export interface RepositoryEvents {
  /** A request found the model's current version loaded. */
  hit: [name: string];
  /** A request found it not loaded: a load follows (or joins one under way). */
  miss: [name: string];
  /** A version of the model ({@link ModelRepository.version}) was loaded, in this many seconds (reading, linking, VM set-up). */
  load: [name: string, seconds: number, version: string];
  /** Loading a version of the model failed: the request gets `error`; the repository's other models are untouched. */
  loadError: [name: string, error: Error, version: string];
  /** The model left the cache: least frequently used when full, replaced by a new version, or unloaded. */
  evict: [name: string, reason: EvictReason];
}

export class ModelRepository extends EventEmitter<RepositoryEvents> implements AsyncDisposable {
  private readonly cache = new Map<string, Entry>();
  /** Manifests as last read, by path: a request re-reads one only when its file changed. */
  private readonly manifests = new Map<string, ManifestFile>();
  private readonly maxModels: number;
  private readonly maxBytes: number;
  private readonly concurrency: number;
  /** Loads under way, so concurrent requests for one model load it once. */
  private readonly loading = new Map<string, Promise<Entry>>();
  private tick = 0;
  private disposing?: Promise<void>;
  /** Loads and evictions so far, for tests and metrics. */
  readonly stats = { loads: 0, hits: 0, evictions: 0 };

  constructor(
    readonly dir: string,
    limits: CacheLimits = {},
  ) {
    super();
    requireString('ModelRepository: dir', dir);
    ({ maxModels: this.maxModels, maxBytes: this.maxBytes, concurrency: this.concurrency } = checkCacheLimits('ModelRepository', limits));
  }

  /**
   * Checks the repository as a server does at start-up: the folder exists, and every
   * model's manifest is valid. Throws a {@link TvmValueError} with a one-line message naming
   * the folder, or the first malformed manifest file.
   */
  check(): void {
    for (const name of this.modelNames()) {
      const probe = this.probe(name);
      if ('error' in probe) {
        throw new TvmValueError('ValueError', `models folder ${this.dir}: manifest ${path.join(this.dir, probe.error.manifestName)} ${probe.error.problem}`);
      }
    }
  }

  /** The models in the folder now; a model whose manifest is malformed is listed with `error`. */
  list(): ModelListing[] {
    const out: ModelListing[] = [];
    for (const name of this.modelNames()) {
      const probe = this.probe(name);
      if ('info' in probe) out.push(probe.info);
      else if ('listing' in probe) out.push(probe.listing);
      // else: removed since the folder was read
    }
    return out;
  }

  /** {@link ModelRepository.list} as untrusted clients may see it: no file paths, no times. */
  publicList(): PublicModelInfo[] {
    return this.list().map((m) =>
      m.error !== undefined
        ? { name: m.name, bytes: m.bytes, error: m.error }
        : { name: m.name, bytes: m.bytes, inputs: m.inputs, outputs: m.outputs, device: m.device, function: m.function },
    );
  }

  /** What the repository knows of `name`; a bad or unknown name, or a malformed manifest, is a {@link TvmValueError}. */
  info(name: string): ModelInfo {
    return this.describe(name).info;
  }

  /**
   * The loaded model, from the cache or loaded now (evicting what LFU says) with the artifact
   * loaded on the thread pool; concurrent calls share one load. The model stays the
   * repository's (see {@link LoadedModel}).
   */
  async get(name: string): Promise<LoadedModel> {
    this.checkOpen();
    const { info, key } = this.describe(name);
    const cached = this.hit(name, key);
    if (cached) return cached.model;
    let pending = this.loading.get(key);
    if (!pending) {
      const start = performance.now();
      pending = loadModule(info.file, { privateCopy: true })
        .then((mod) => this.insert(info, key, mod, start))
        .catch((err: Error) => this.loadFailed(name, key, err))
        .finally(() => this.loading.delete(key));
      this.loading.set(key, pending);
    }
    return (await pending).model;
  }

  /** Whether `name` is a model name and the folder has its artifact now (a malformed manifest does not matter here). */
  has(name: string): boolean {
    return NAME.test(name) && !('missing' in this.probe(name));
  }

  /**
   * The version key of `name` as its files are now (artifact and manifest identity): changes
   * whenever either file does. Throws what {@link ModelRepository.info} documents.
   */
  version(name: string): string {
    return this.describe(name).key;
  }

  /** Whether this version of the model (a {@link ModelRepository.version} key) is loaded now. */
  isLoaded(name: string, version: string): boolean {
    return this.cache.get(name)?.key === version;
  }

  /**
   * Drops the model from the cache (its runs in flight finish first); the next
   * {@link ModelRepository.get} loads it again. Returns whether it was loaded.
   */
  unload(name: string): boolean {
    if (!this.cache.has(name)) return false;
    this.evict(name, 'unload');
    return true;
  }

  /** {@link ModelRepository.get} with the artifact loaded on the JS thread. */
  getSync(name: string): LoadedModel {
    this.checkOpen();
    const { info, key } = this.describe(name);
    const hit = this.hit(name, key);
    if (hit) return hit.model;
    const start = performance.now();
    try {
      return this.insert(info, key, loadModuleSync(info.file, { privateCopy: true }), start).model;
    } catch (err) {
      return this.loadFailed(name, key, err as Error);
    }
  }

  private loadFailed(name: string, key: string, err: Error): never {
    if (!(err instanceof DisposedError)) this.emit('loadError', name, err, key);
    throw err;
  }

  private checkOpen(): void {
    if (this.disposing) throw new DisposedError('DisposedError', 'ModelRepository has been disposed');
  }

  /** Names of the models in the folder (sorted); a missing or unreadable folder is a {@link TvmValueError}. */
  private modelNames(): string[] {
    let st: fs.Stats;
    try {
      st = fs.statSync(this.dir);
    } catch (err) {
      throw this.folderError(err);
    }
    if (!st.isDirectory()) throw new TvmValueError('ValueError', `models folder ${this.dir} is not a folder`);
    let files: string[];
    try {
      files = fs.readdirSync(this.dir);
    } catch (err) {
      throw this.folderError(err);
    }
    return files
      .filter((f) => f.endsWith('.so') && NAME.test(f.slice(0, -3)))
      .map((f) => f.slice(0, -3))
      .sort((a, b) => a.localeCompare(b));
  }

  private folderError(err: unknown): TvmValueError {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return new TvmValueError('ValueError', `models folder ${this.dir} does not exist`);
    if (code === 'ENOTDIR') return new TvmValueError('ValueError', `models folder ${this.dir} is not a folder`);
    return new TvmValueError('ValueError', `models folder ${this.dir} cannot be read: ${oneLine((err as Error).message)}`);
  }

  /** The model's info and cache key; throws what {@link ModelRepository.info} documents. */
  private describe(name: string): { info: ModelInfo; key: string } {
    if (!NAME.test(name)) throw new TvmValueError('ValueError', `bad model name '${name}'`);
    const probe = this.probe(name);
    if ('missing' in probe) throw new TvmValueError('ValueError', `no model '${name}' in the repository`);
    if ('error' in probe) throw new TvmValueError('ValueError', `model '${name}': ${probe.error.message}`);
    return probe;
  }

  private probe(name: string): Probe {
    const file = path.join(this.dir, `${name}.so`);
    let st: fs.BigIntStats | undefined;
    try {
      // No exception for a missing file: this runs on every request.
      st = fs.statSync(file, { bigint: true, throwIfNoEntry: false });
    } catch {
      return { missing: true };
    }
    if (!st?.isFile()) return { missing: true };
    // mtimeMs as fs.Stats computes it (seconds and nanoseconds apart), so the two agree.
    const mtimeMs = Number(st.mtimeNs / 1_000_000_000n) * 1e3 + Number(st.mtimeNs % 1_000_000_000n) / 1e6;
    const base = { name, file, bytes: Number(st.size), mtimeMs };
    let manifest: Manifest;
    let manifestVersion: string;
    try {
      ({ manifest, version: manifestVersion } = this.readManifest(name));
    } catch (err) {
      if (!(err instanceof ManifestError)) throw err;
      return { listing: { ...base, error: err.message }, error: err };
    }
    return {
      info: {
        ...base,
        inputs: manifest.inputs,
        outputs: manifest.outputs,
        device: manifest.device ?? 'cpu',
        function: manifest.function ?? 'main',
      },
      key: `${name}#${versionOf(st)}#${manifestVersion}`,
    };
  }

  /** The model's manifest (empty when there is none) and its version; a malformed one is a {@link ManifestError}. */
  private readManifest(name: string): { manifest: Manifest; version: string } {
    const manifestName = `${name}.json`;
    const { manifest, version } = readManifest(path.join(this.dir, manifestName), manifestName, this.manifests);
    return { manifest: manifest ?? {}, version };
  }

  /** The cached entry for this version of the model, counted as a use; undefined if not loaded. */
  private hit(name: string, key: string): Entry | undefined {
    this.tick++;
    const hit = this.cache.get(name);
    if (!hit || hit.key !== key) {
      this.emit('miss', name);
      return undefined;
    }
    hit.uses++;
    hit.lastUse = this.tick;
    this.stats.hits++;
    this.emit('hit', name);
    return hit;
  }

  private insert(info: ModelInfo, key: string, mod: Module, start: number): Entry {
    if (this.disposing) {
      // Loaded while the repository was being disposed: nobody will ask for it.
      mod.disposeSync();
      throw new DisposedError('DisposedError', 'ModelRepository has been disposed');
    }
    // A synchronous get() may have loaded this very version while an async load was under way.
    const current = this.cache.get(info.name)?.key === key ? this.hit(info.name, key) : undefined;
    if (current) {
      mod.disposeSync();
      return current;
    }
    let vm: VirtualMachine | undefined;
    let meta: { inputs: TensorInfo[]; outputs: TensorInfo[]; arity: number };
    try {
      vm = new VirtualMachine(mod, { devices: [parseDevice(info.device)], concurrency: this.concurrency });
      const functions = vm.functions();
      const fn = functions.find((f) => f.name === info.function);
      if (!fn) {
        throw new TvmValueError(
          'ValueError',
          `model '${info.name}' has no function '${info.function}' (it has ${functions.map((f) => `'${f.name}'`).join(', ') || 'none'}): fix "function" in ${info.name}.json`,
        );
      }
      // Shapes and dtypes from the artifact, names from the manifest; server paths stay out of messages.
      meta = modelMetadata(vm, {
        name: info.name,
        artifact: `${info.name}.so`,
        function: info.function,
        manifest: { inputs: info.inputs, outputs: info.outputs },
        manifestName: `${info.name}.json`,
      });
    } catch (err) {
      const loaded = vm;
      if (loaded) void loaded.dispose().then(() => mod.dispose());
      else mod.disposeSync();
      if (err instanceof ManifestError) throw new TvmValueError('ValueError', `model '${info.name}': ${err.message}`, '', { cause: err });
      throw err instanceof TvmError ? err : new TvmValueError('ValueError', `model '${info.name}': ${(err as Error).message}`);
    }
    if (this.cache.has(info.name)) this.evict(info.name, 'stale'); // the file changed: drop the stale version
    this.makeRoom(info.bytes);
    const entry: Entry = { key, model: { vm, info, ...meta }, uses: 1, lastUse: this.tick };
    this.cache.set(info.name, entry);
    this.stats.loads++;
    this.emit('load', info.name, (performance.now() - start) / 1000, key);
    return entry;
  }

  /** Names of the models loaded now. */
  get loaded(): string[] {
    return [...this.cache.keys()];
  }

  private loadedBytes(): number {
    let n = 0;
    for (const e of this.cache.values()) n += e.model.info.bytes;
    return n;
  }

  /** Evicts least frequently used models (ties: least recently used) until `bytes` more fit. */
  private makeRoom(bytes: number): void {
    while (this.cache.size > 0 && (this.cache.size >= this.maxModels || this.loadedBytes() + bytes > this.maxBytes)) {
      const victim = [...this.cache.values()].reduce((a, b) => (b.uses < a.uses || (b.uses === a.uses && b.lastUse < a.lastUse) ? b : a));
      this.evict(victim.model.info.name, 'lfu');
    }
  }

  /** Drops a model from the cache; its runs in flight finish before it is released. */
  private evict(name: string, reason: EvictReason): void {
    const e = this.cache.get(name);
    if (!e) return;
    this.cache.delete(name);
    this.stats.evictions++;
    this.emit('evict', name, reason);
    void release(e.model);
  }

  /** Whether {@link ModelRepository.dispose} was called. */
  get disposed(): boolean {
    return this.disposing !== undefined;
  }

  /**
   * Releases every loaded model once its runs in flight finish (loads under way are waited
   * for and released too); later calls of {@link ModelRepository.get} throw
   * {@link DisposedError}. Idempotent.
   */
  dispose(): Promise<void> {
    this.disposing ??= (async () => {
      await Promise.allSettled([...this.loading.values()]);
      const all = [...this.cache.values()];
      this.cache.clear();
      await Promise.all(all.map((e) => release(e.model)));
    })();
    return this.disposing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

/** Releases a model the repository loaded: its VM (after runs in flight), then its module. */
async function release(model: LoadedModel): Promise<void> {
  await model.vm.dispose();
  await model.vm.module.dispose();
}
