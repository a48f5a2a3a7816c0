/**
 * A model repository: the `.so` artifacts in a folder, served by name, so devices run a
 * model the server owns without uploading it (TensorFlow Serving style; seeds/000, 002).
 *
 * Each model may have a manifest `<name>.json` beside it:
 * `{ "inputs": [{ "name", "shape", "dtype" }], "outputs": [...], "device": "cpu", "function": "main" }`.
 * Loaded models live in an LFU cache bounded by count and bytes, keyed `name#mtime` as
 * MLInferBooster keys `model_name#create_time`: a changed file is a new key (reloaded),
 * a cached one is never loaded again, and the least frequently used go first when full.
 */
import fs from 'node:fs';
import path from 'node:path';
import { device as parseDevice } from '../device';
import { TvmValueError } from '../errors';
import { loadModule, loadModuleAsync, type Module } from '../module';
import { VirtualMachine } from '../vm';

/** An array as a manifest describes it. */
export interface TensorSpec {
  name?: string;
  shape: (number | string)[];
  dtype: string;
}

/** What the repository knows of a model. */
export interface ModelInfo {
  name: string;
  file: string;
  bytes: number;
  /** Modification time of the artifact (ms since epoch): part of the cache key. */
  mtimeMs: number;
  inputs?: TensorSpec[];
  outputs?: TensorSpec[];
  device: string;
  function: string;
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

interface Entry {
  key: string;
  info: ModelInfo;
  vm: VirtualMachine;
  uses: number;
  lastUse: number;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** MLInferBooster's `model_name#create_time`: a changed file is a different key. */
function cacheKey(info: ModelInfo): string {
  return `${info.name}#${info.mtimeMs}`;
}

export class ModelRepository {
  private readonly cache = new Map<string, Entry>();
  private readonly maxModels: number;
  private readonly maxBytes: number;
  private readonly concurrency: number;
  /** Loads under way, so concurrent requests for one model load it once. */
  private readonly loading = new Map<string, Promise<Entry>>();
  private tick = 0;
  /** Loads and evictions so far, for tests and metrics. */
  readonly stats = { loads: 0, hits: 0, evictions: 0 };

  constructor(
    readonly dir: string,
    limits: CacheLimits = {},
  ) {
    this.maxModels = limits.maxModels ?? 8;
    this.maxBytes = limits.maxBytes ?? 2 * 2 ** 30;
    this.concurrency = limits.concurrency ?? 1;
  }

  /** The models in the folder now. */
  list(): ModelInfo[] {
    return fs
      .readdirSync(this.dir)
      .filter((f) => f.endsWith('.so') && NAME.test(f.slice(0, -3)))
      .map((f) => this.info(f.slice(0, -3)))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /** What the repository knows of `name`; a bad or unknown name is a {@link TvmValueError}. */
  info(name: string): ModelInfo {
    if (!NAME.test(name)) throw new TvmValueError('ValueError', `bad model name '${name}'`);
    const file = path.join(this.dir, `${name}.so`);
    let st: fs.Stats;
    try {
      st = fs.statSync(file);
    } catch {
      throw new TvmValueError('ValueError', `no model '${name}' in the repository`);
    }
    const manifestFile = path.join(this.dir, `${name}.json`);
    const manifest = fs.existsSync(manifestFile) ? (JSON.parse(fs.readFileSync(manifestFile, 'utf8')) as Partial<ModelInfo>) : {};
    return {
      name,
      file,
      bytes: st.size,
      mtimeMs: st.mtimeMs,
      inputs: manifest.inputs,
      outputs: manifest.outputs,
      device: manifest.device ?? 'cpu',
      function: manifest.function ?? 'main',
    };
  }

  /** The loaded model (from the cache, or loaded now on the JS thread, evicting what LFU says). */
  get(name: string): { vm: VirtualMachine; info: ModelInfo } {
    const info = this.info(name);
    return this.hit(info) ?? this.insert(info, loadModule(info.file));
  }

  /** {@link ModelRepository.get} with the artifact loaded on the thread pool; concurrent calls share one load. */
  async getAsync(name: string): Promise<{ vm: VirtualMachine; info: ModelInfo }> {
    const info = this.info(name);
    const cached = this.hit(info);
    if (cached) return cached;
    const key = cacheKey(info);
    let pending = this.loading.get(key);
    if (!pending) {
      pending = loadModuleAsync(info.file)
        .then((mod) => this.insert(info, mod))
        .finally(() => this.loading.delete(key));
      this.loading.set(key, pending);
    }
    return pending;
  }

  /** The cached entry for this version of the model, counted as a use; undefined if not loaded. */
  private hit(info: ModelInfo): Entry | undefined {
    this.tick++;
    const hit = this.cache.get(info.name);
    if (!hit || hit.key !== cacheKey(info)) return undefined;
    hit.uses++;
    hit.lastUse = this.tick;
    this.stats.hits++;
    return hit;
  }

  private insert(info: ModelInfo, mod: Module): Entry {
    // A synchronous get() may have loaded this very version while an async load was under way.
    const current = this.hit(info);
    if (current) {
      mod.dispose();
      return current;
    }
    let vm: VirtualMachine;
    try {
      vm = new VirtualMachine(mod, { devices: [parseDevice(info.device)], concurrency: this.concurrency });
    } catch (err) {
      mod.dispose();
      throw err;
    }
    if (this.cache.has(info.name)) this.evict(info.name); // the file changed: drop the stale version
    this.makeRoom(info.bytes);
    const entry: Entry = { key: cacheKey(info), info, vm, uses: 1, lastUse: this.tick };
    this.cache.set(info.name, entry);
    this.stats.loads++;
    return entry;
  }

  /** Names of the models loaded now. */
  get loaded(): string[] {
    return [...this.cache.keys()];
  }

  private loadedBytes(): number {
    let n = 0;
    for (const e of this.cache.values()) n += e.info.bytes;
    return n;
  }

  /** Evicts least frequently used models (ties: least recently used) until `bytes` more fit. */
  private makeRoom(bytes: number): void {
    while (this.cache.size > 0 && (this.cache.size >= this.maxModels || this.loadedBytes() + bytes > this.maxBytes)) {
      const victim = [...this.cache.values()].reduce((a, b) => (b.uses < a.uses || (b.uses === a.uses && b.lastUse < a.lastUse) ? b : a));
      this.evict(victim.info.name);
    }
  }

  private evict(name: string): void {
    const e = this.cache.get(name);
    if (!e) return;
    this.cache.delete(name);
    this.stats.evictions++;
    void e.vm.dispose().then(() => e.vm.module.dispose());
  }

  /** Releases every loaded model. */
  async dispose(): Promise<void> {
    const all = [...this.cache.values()];
    this.cache.clear();
    await Promise.all(all.map((e) => e.vm.dispose().then(() => e.vm.module.dispose())));
  }
}
