/**
 * Modules: compiled artifacts (`.so` from TVM's `export_library`) and their functions.
 *
 * The dynamic loader hands back a library it has loaded already when asked for a path name it
 * loaded before, or for a file (device + inode) it has mapped: once `model.so` is loaded, a new
 * `model.so` (renamed over it, deleted and put back, or copied over it in place) would give
 * the old code for as long as the old one stays loaded. So {@link loadModule} remembers, for
 * the whole process, which file (device, inode, size, modification and change times) each
 * path and each inode was loaded as, and loads a path whose file has changed since from a
 * private copy (a new name and a new inode, which the loader cannot match), removed as soon as
 * it is loaded. The first load of a file, the usual case, loads the file itself.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isMainThread } from 'node:worker_threads';
import { addon, type NativeModule, registerWrapper } from './binding';
import { callerStack, TvmAttributeError, TvmError, TvmRuntimeError, TvmValueError, VersionMismatchError } from './errors';
import { PackedFunc } from './function';
import { HandleOwner } from './handle';
import { checkBoolean, checkOptions, requireString } from './options';
import { checkRuntimeVersions } from './versions';

/** A TVM runtime module: a loaded library of packed functions (`ffi.Module`). */
export class Module extends HandleOwner<NativeModule> {
  /** The module kind, e.g. `'library'` for a `.so`, `'relax.VMExecutable'`, `'rpc'`. */
  get typeKey(): string {
    return this.handle.kind;
  }

  /** Modules this one imports (e.g. device code of a host library). */
  get imports(): Module[] {
    return this.handle.imports as Module[];
  }

  /**
   * A function by name (searching imports too), or null, looked up on the thread pool (for an
   * RPC module the lookup crosses the network). The function is the caller's to dispose.
   */
  async getFunction(name: string): Promise<PackedFunc | null> {
    const f = (await this.handle.getFunctionAsync(name).catch(callerStack())) as PackedFunc | null;
    return f ? new PackedFunc(f.handle, name) : null;
  }

  /** {@link Module.getFunction} on the JS thread (a local lookup; over RPC, a blocking round trip). */
  getFunctionSync(name: string, opts: { queryImports?: boolean } = {}): PackedFunc | null {
    const h = this.handle.getFunction(name, queryImports('Module.getFunctionSync', opts));
    return h ? new PackedFunc(h, name) : null;
  }

  /** {@link Module.getFunction} that throws {@link TvmAttributeError} when the function is missing. */
  async requireFunction(name: string): Promise<PackedFunc> {
    const f = await this.getFunction(name);
    if (!f) throw new TvmAttributeError('AttributeError', `module (${this.typeKey}) has no function '${name}'`);
    return f;
  }

  /** {@link Module.requireFunction} on the JS thread. */
  requireFunctionSync(name: string): PackedFunc {
    const f = this.getFunctionSync(name);
    if (!f) throw new TvmAttributeError('AttributeError', `module (${this.typeKey}) has no function '${name}'`);
    return f;
  }

  /** Whether the module implements `name`. */
  implementsFunction(name: string, opts: { queryImports?: boolean } = {}): boolean {
    return this.handle.implementsFunction(name, queryImports('Module.implementsFunction', opts));
  }
}

/** The `queryImports` option of a lookup, checked (default true). */
function queryImports(caller: string, opts: { queryImports?: boolean }): boolean {
  return checkBoolean(`${caller}: queryImports`, checkOptions(caller, opts, ['queryImports']).queryImports, true);
}

/** Checks the arguments of {@link loadModule} / {@link loadModuleSync}. */
function checkLoadArgs(caller: string, file: unknown, opts: LoadOptions | undefined): void {
  requireString(`${caller}: path`, file);
  checkBoolean(`${caller}: privateCopy`, checkOptions(caller, opts, ['privateCopy']).privateCopy);
}

/** Files the runtime loads with the dynamic loader (TVM maps `.dll`, `.dylib`, `.dso` to its `.so` loader). */
const SHARED_LIBRARY = /\.(so|dll|dylib|dso)$/;

/** What identifies the contents of a file: which file, and when it was last written. */
function identityOf(st: fs.BigIntStats): string {
  // ctime too: a copy over the file in place that keeps size and mtime (`cp -p`) still moves it.
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

const cannotLoad = (file: string, why: string) => `cannot load ${file}: ${why}`;

/**
 * Checks that `file` is a regular file, and, for a shared library, that it is an ELF shared
 * object for this machine; returns its identity as read through the opened file.
 */
function inspect(file: string, sharedLibrary: boolean): fs.BigIntStats {
  let st: fs.BigIntStats;
  try {
    st = fs.statSync(file, { bigint: true });
  } catch (err) {
    throw fileError(file, err);
  }
  if (!st.isFile()) throw new TvmRuntimeError('RuntimeError', cannotLoad(file, `it is ${kindOf(st)}, not a file`));
  if (!sharedLibrary) return st;
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    throw fileError(file, err);
  }
  try {
    const header = Buffer.alloc(64);
    const n = fs.readSync(fd, header, 0, header.length, 0);
    const opened = fs.fstatSync(fd, { bigint: true });
    checkElf(file, header.subarray(0, n));
    return opened;
  } finally {
    fs.closeSync(fd);
  }
}

function fileError(file: string, err: unknown): TvmError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') return new TvmRuntimeError('RuntimeError', cannotLoad(file, 'no such file'), '', { cause: err });
  if (code === 'EACCES' || code === 'EPERM')
    return new TvmRuntimeError('RuntimeError', cannotLoad(file, 'permission denied (the file must be readable)'), '', { cause: err });
  return new TvmRuntimeError('RuntimeError', cannotLoad(file, (err as Error).message), '', { cause: err });
}

function kindOf(st: fs.BigIntStats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a named pipe';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'a special file';
}

/** ELF `e_machine` of each Node architecture, with its ELF class (1: 32-bit, 2: 64-bit). */
const MACHINE_OF_ARCH: Record<string, [number, number]> = {
  x64: [62, 2],
  arm64: [183, 2],
  ia32: [3, 1],
  arm: [40, 1],
  riscv64: [243, 2],
  ppc64: [21, 2],
  s390x: [22, 2],
  loong64: [258, 2],
};

const MACHINE_NAMES: Record<number, string> = {
  3: 'x86 (32-bit)',
  8: 'MIPS',
  20: 'PowerPC (32-bit)',
  21: 'PowerPC 64',
  22: 's390',
  40: 'ARM (32-bit)',
  62: 'x86-64',
  183: 'aarch64',
  190: 'CUDA',
  224: 'AMD GPU',
  243: 'RISC-V',
  247: 'BPF',
  258: 'LoongArch',
};

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);

/** Refuses what the dynamic loader would, with the reason in words. */
function checkElf(file: string, header: Buffer): void {
  if (header.length === 0) throw new TvmValueError('ValueError', cannotLoad(file, 'the file is empty, not a shared library'));
  if (header.length < 4 || !header.subarray(0, 4).equals(ELF_MAGIC)) {
    throw new TvmValueError('ValueError', cannotLoad(file, `not a shared library (no ELF header: the file starts with ${describeStart(header)})`));
  }
  if (header.length < 20) throw new TvmValueError('ValueError', cannotLoad(file, `a truncated ELF file (${header.length} bytes)`));
  const elfClass = header[4];
  const le = header[5] !== 2;
  const type = le ? header.readUInt16LE(16) : header.readUInt16BE(16);
  const machine = le ? header.readUInt16LE(18) : header.readUInt16BE(18);
  const expected = MACHINE_OF_ARCH[process.arch];
  if (expected && (machine !== expected[0] || elfClass !== expected[1])) {
    const bits = elfClass === 1 ? '32-bit' : elfClass === 2 ? '64-bit' : 'unknown class';
    const built = MACHINE_NAMES[machine] ? `${MACHINE_NAMES[machine]}${machine === expected[0] ? ` (${bits})` : ''}` : `ELF machine ${machine} (${bits})`;
    throw new TvmValueError(
      'ValueError',
      cannotLoad(file, `built for ${built}, but this process runs on ${MACHINE_NAMES[expected[0]]} (${process.arch}): compile it for this machine's target`),
    );
  }
  if (type === 1)
    throw new TvmValueError('ValueError', cannotLoad(file, 'an object file (ELF relocatable), not a shared library: link it into one (TVM: export_library)'));
  if (type === 2) throw new TvmValueError('ValueError', cannotLoad(file, 'an executable, not a shared library'));
  if (type === 4) throw new TvmValueError('ValueError', cannotLoad(file, 'a core dump, not a shared library'));
  if (type !== 3) throw new TvmValueError('ValueError', cannotLoad(file, `an ELF file of unknown type ${type}, not a shared library`));
}

/** The first bytes of a file, as text when they are text. */
function describeStart(header: Buffer): string {
  const text = header.toString('latin1');
  if (text.startsWith('version https://git-lfs')) return 'a Git LFS pointer: fetch the real file (git lfs pull)';
  if (/^[\t\n\r\x20-\x7e]+$/.test(text)) {
    const line = text.replace(/\s+/g, ' ').trim();
    return `text "${line.length > 32 ? `${line.slice(0, 32)}...` : line}"`;
  }
  return `bytes ${[...header.subarray(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join(' ')}`;
}

/**
 * The process's own folder: what was loaded from where (shared by every thread, as the
 * dynamic loader is), and private copies while they are being loaded. The main thread
 * removes it at exit; folders of processes that died without doing so are removed by the
 * next process that makes its own.
 */
const PROCESS_DIR = path.join(os.tmpdir(), `tvm-node-${process.pid}`);
const RECORDS_DIR = path.join(PROCESS_DIR, 'loaded');
let staleSwept = false;

if (isMainThread) process.once('exit', () => fs.rmSync(PROCESS_DIR, { recursive: true, force: true }));

function processDir(): string {
  if (!staleSwept) {
    staleSwept = true;
    removeStaleFolders();
  }
  fs.mkdirSync(RECORDS_DIR, { recursive: true, mode: 0o700 });
  // Someone else's folder under our name would let them swap the copies we load.
  const st = fs.lstatSync(PROCESS_DIR);
  if (!st.isDirectory() || (process.getuid && st.uid !== process.getuid()) || (st.mode & 0o022) !== 0) {
    throw new TvmRuntimeError(
      'RuntimeError',
      `${PROCESS_DIR} is not a private folder of this process (owner ${st.uid}, mode ${(st.mode & 0o777).toString(8)}): remove it`,
    );
  }
  return PROCESS_DIR;
}

/** Removes the folders of this user's processes that no longer run. */
function removeStaleFolders(): void {
  let names: string[];
  try {
    names = fs.readdirSync(os.tmpdir());
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^tvm-node-(\d+)$/.exec(name);
    if (!m || Number(m[1]) === process.pid) continue;
    const dir = path.join(os.tmpdir(), name);
    try {
      const st = fs.lstatSync(dir);
      if (!st.isDirectory() || (process.getuid && st.uid !== process.getuid())) continue;
      process.kill(Number(m[1]), 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}

/**
 * Records that `key` was loaded as `value`, unless it was loaded before: then whether it was
 * the same. Atomic across threads (exclusive create); a record being written reads as a
 * mismatch, which only costs a copy.
 */
function claim(key: string, value: string): boolean {
  const record = path.join(RECORDS_DIR, key);
  try {
    fs.writeFileSync(record, value, { flag: 'wx', mode: 0o600 });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return fs.readFileSync(record, 'utf8') === value;
}

const sha = (text: string) => crypto.createHash('sha256').update(text).digest('hex');

/**
 * Whether `file`, as `st` says it is now, can be handed to the dynamic loader by its name:
 * neither its path nor its inode was loaded before as something else. (A path stays
 * recorded: the loader matches the name it was given, which no longer shows once the file
 * is replaced or reached through a symbolic link. An inode only counts while it is mapped:
 * inode numbers are reused once no one holds the file.)
 */
function loadableByName(file: string, st: fs.BigIntStats): boolean {
  processDir();
  if (!claim(`path-${sha(file).slice(0, 32)}`, identityOf(st))) return false;
  const inodeKey = `inode-${st.dev}-${st.ino}`;
  const contents = `${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  if (claim(inodeKey, contents)) return true;
  if (isMapped(st)) return false;
  fs.writeFileSync(path.join(RECORDS_DIR, inodeKey), contents, { mode: 0o600 });
  return true;
}

/** Whether the process has the file (device and inode of `st`) mapped now, by /proc/self/maps. */
function isMapped(st: fs.BigIntStats): boolean {
  let maps: string;
  try {
    maps = fs.readFileSync('/proc/self/maps', 'utf8');
  } catch {
    return true; // cannot tell: assume it is
  }
  // glibc's encoding of dev_t; maps shows major:minor in hex.
  const major = ((st.dev >> 8n) & 0xfffn) | ((st.dev >> 32n) & ~0xfffn);
  const minor = (st.dev & 0xffn) | ((st.dev >> 12n) & ~0xffn);
  const dev = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}`;
  const ino = st.ino.toString();
  for (const line of maps.split('\n')) {
    const [, , , d, i] = line.split(/\s+/, 5);
    if (i === ino && d === dev) return true;
  }
  return false;
}

/** A new name for a private copy of `file` as `st` identifies it. */
function copyName(file: string, st: fs.BigIntStats): string {
  const ext = path.extname(file);
  const stem = path
    .basename(file, ext)
    .replace(/[^A-Za-z0-9._-]/g, '_')
    .slice(0, 64);
  // Named by the identity, and unique per load: no load removes a copy another is opening.
  return path.join(PROCESS_DIR, `${stem}-${sha(`${file}\0${identityOf(st)}`).slice(0, 16)}-${crypto.randomBytes(6).toString('hex')}${ext}`);
}

/** How a file is loaded: the file itself, or `copy` of it. */
interface Plan {
  file: string;
  st: fs.BigIntStats;
  copy?: string;
}

function plan(file: string, opts: LoadOptions): Plan {
  const shared = SHARED_LIBRARY.test(file);
  const st = inspect(file, shared);
  if (!shared) return { file, st };
  let byName = false;
  try {
    if (opts.privateCopy) processDir();
    else byName = loadableByName(file, st);
  } catch (err) {
    if (err instanceof TvmError) throw err;
    throw new TvmRuntimeError(
      'RuntimeError',
      cannotLoad(file, `the temporary folder ${PROCESS_DIR} is not usable (${(err as Error).message}); set TMPDIR to a writable folder`),
      '',
      { cause: err },
    );
  }
  return byName ? { file, st } : { file, st, copy: copyName(file, st) };
}

/** After copying: the file was not replaced or written meanwhile, and the copy is whole. */
function copyIsFaithful(p: Plan, now: fs.BigIntStats | undefined, copySize: bigint | undefined): boolean {
  return now !== undefined && identityOf(now) === identityOf(p.st) && copySize === p.st.size;
}

const COPY_ATTEMPTS = 3;
const keptChanging = (file: string) =>
  new TvmRuntimeError('RuntimeError', cannotLoad(file, 'it kept changing while being copied; try again once it is written'));

function copyFailed(p: Plan, err: unknown): TvmError {
  if ((err as NodeJS.ErrnoException).code === 'ENOENT') return fileError(p.file, err);
  return new TvmRuntimeError(
    'RuntimeError',
    cannotLoad(p.file, `could not copy it to ${PROCESS_DIR} (${(err as Error).message}); set TMPDIR to a writable folder`),
    '',
    { cause: err },
  );
}

/** Plans the load of `file` and makes its private copy when it needs one (synchronously). */
function prepare(file: string, opts: LoadOptions): Plan {
  for (let attempt = 0; attempt < COPY_ATTEMPTS; attempt++) {
    const p = plan(file, opts);
    if (!p.copy) return p;
    try {
      fs.copyFileSync(file, p.copy);
      if (copyIsFaithful(p, statOrUndefined(file), fs.statSync(p.copy, { bigint: true }).size)) return p;
    } catch (err) {
      fs.rmSync(p.copy, { force: true });
      throw copyFailed(p, err);
    }
    fs.rmSync(p.copy, { force: true });
  }
  throw keptChanging(file);
}

/** {@link prepare} with the copy (which may be large) on the thread pool. */
async function prepareAsync(file: string, opts: LoadOptions): Promise<Plan> {
  for (let attempt = 0; attempt < COPY_ATTEMPTS; attempt++) {
    const p = plan(file, opts);
    if (!p.copy) return p;
    try {
      await fs.promises.copyFile(file, p.copy);
      const now = await fs.promises.stat(file, { bigint: true }).catch(() => undefined);
      if (copyIsFaithful(p, now, (await fs.promises.stat(p.copy, { bigint: true })).size)) return p;
    } catch (err) {
      await fs.promises.rm(p.copy, { force: true });
      throw copyFailed(p, err);
    }
    await fs.promises.rm(p.copy, { force: true });
  }
  throw keptChanging(file);
}

function statOrUndefined(file: string): fs.BigIntStats | undefined {
  try {
    return fs.statSync(file, { bigint: true });
  } catch {
    return undefined;
  }
}

/**
 * A load failure in words: the dynamic loader's own message (copy names replaced by the
 * file's), and TVM versions blamed only for a missing symbol.
 */
function explainLoadError(p: Plan, err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  const target = p.copy ?? p.file;
  let message = err.message.split(target).join(p.file);
  const backtrace = err instanceof TvmError ? err.tvmBacktrace.split(target).join(p.file) : '';
  const marker = `Failed to load dynamic shared library ${p.file} `;
  const dl = message.includes(marker);
  if (dl) {
    message = message.slice(message.indexOf(marker) + marker.length); // dlerror(): "FILE: why"
    if (message.startsWith(`${p.file}: `)) message = message.slice(p.file.length + 2);
  }
  if (/undefined symbol: |symbol lookup error/.test(message)) {
    const v = checkRuntimeVersions();
    return new VersionMismatchError(
      'VersionMismatchError',
      cannotLoad(
        p.file,
        `${message.trim()} (tvm-node runs TVM runtime ${v.tvm}, tvm-ffi ${v.tvmFfi}: a symbol the artifact needs is missing, so it was probably compiled by another TVM version; compile it with a matching TVM)`,
      ),
      backtrace,
      { cause: err },
    );
  }
  if (p.copy && /failed to map segment/.test(message)) {
    message += ` (it was loaded from a private copy in ${PROCESS_DIR}: if that file system is mounted noexec, set TMPDIR to a folder that allows executables)`;
  }
  if (dl) return new TvmRuntimeError('RuntimeError', cannotLoad(p.file, message.trim()), backtrace, { cause: err });
  // TVM's own failure after the library was opened: keep its kind (and class).
  if (err instanceof TvmError) {
    const Ctor = err.constructor as new (kind: string, message: string, backtrace?: string, options?: ErrorOptions) => TvmError;
    return new Ctor(err.kind, cannotLoad(p.file, message), backtrace, { cause: err });
  }
  return new TvmRuntimeError('RuntimeError', cannotLoad(p.file, message), '', { cause: err });
}

/** Options of {@link loadModuleSync} and {@link loadModule}. */
export interface LoadOptions {
  /**
   * Load a shared library from a private copy even the first time, so that the module
   * survives its file being overwritten in place (`cp new.so model.so`): the loader maps the
   * file it opens, and writing over a mapped library changes the code of the modules loaded
   * from it under them (running or even unloading them may then crash the process). A
   * replaced file (renamed over, or deleted and put back) leaves loaded modules intact either
   * way. Costs a copy of the file per load, made in `os.tmpdir()` and removed once loaded
   * (where that folder is a tmpfs, the loaded copy's pages stay in memory). Default false.
   */
  privateCopy?: boolean;
}

/**
 * Loads a compiled artifact (`.so`) on the thread pool (static initializers and large
 * constants are loaded off the JS thread). A relative path is taken from the current
 * directory. A file that changed since this process last loaded it gives the new code;
 * modules loaded before keep theirs, unless their file was overwritten in place (see
 * {@link LoadOptions.privateCopy}). A file that cannot be loaded is a {@link TvmRuntimeError}
 * (missing, not a regular file, refused by the loader), a {@link TvmValueError} (not a shared
 * library, or one for another machine), or a {@link VersionMismatchError} (a symbol it needs
 * is missing from this runtime). The module is the caller's to dispose.
 */
export async function loadModule(file: string, opts: LoadOptions = {}): Promise<Module> {
  const rethrow = callerStack();
  let p: Plan;
  try {
    checkLoadArgs('loadModule', file, opts);
    checkRuntimeVersions();
    p = await prepareAsync(path.resolve(file), opts);
  } catch (err) {
    return rethrow(err);
  }
  try {
    return (await addon.NativeModule.loadAsync(p.copy ?? p.file)) as Module;
  } catch (err) {
    return rethrow(explainLoadError(p, err));
  } finally {
    if (p.copy) await fs.promises.rm(p.copy, { force: true });
  }
}

/** {@link loadModule} on the JS thread, blocking the event loop for the whole load: prefer {@link loadModule} in servers. */
export function loadModuleSync(file: string, opts: LoadOptions = {}): Module {
  checkLoadArgs('loadModuleSync', file, opts);
  checkRuntimeVersions();
  const p = prepare(path.resolve(file), opts);
  try {
    return new Module(addon.NativeModule.load(p.copy ?? p.file));
  } catch (err) {
    throw explainLoadError(p, err);
  } finally {
    // The loader keeps what it mapped: the copy's name is not needed once it is loaded.
    if (p.copy) fs.rmSync(p.copy, { force: true });
  }
}

registerWrapper(addon.NativeModule, (h) => new Module(h));
