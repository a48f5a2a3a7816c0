/**
 * Modules: compiled artifacts (`.so` from TVM's `export_library`) and their functions.
 */
import fs from 'node:fs';
import { HandleOwner } from './handle';
import { addon, registerWrapper, type NativeModule } from './binding';
import { callerStack, TvmAttributeError, TvmRuntimeError } from './errors';
import { PackedFunc } from './function';
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

  /** A function by name (searching imports too), or null. */
  getFunction(name: string, opts: { queryImports?: boolean } = {}): PackedFunc | null {
    const h = this.handle.getFunction(name, opts.queryImports ?? true);
    return h ? new PackedFunc(h, name) : null;
  }

  /** {@link Module.getFunction} on the thread pool (for RPC modules the lookup crosses the network). */
  async getFunctionAsync(name: string): Promise<PackedFunc | null> {
    const f = (await this.handle.getFunctionAsync(name).catch(callerStack())) as PackedFunc | null;
    return f ? new PackedFunc(f.handle, name) : null;
  }

  /** A function by name; throws {@link TvmAttributeError} when missing. */
  requireFunction(name: string): PackedFunc {
    const f = this.getFunction(name);
    if (!f) throw new TvmAttributeError('AttributeError', `module (${this.typeKey}) has no function '${name}'`);
    return f;
  }

  /** Whether the module implements `name`. */
  implementsFunction(name: string, opts: { queryImports?: boolean } = {}): boolean {
    return this.handle.implementsFunction(name, opts.queryImports ?? true);
  }



}

function checkFile(path: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch {
    throw new TvmRuntimeError('RuntimeError', `cannot load module: ${path} does not exist`);
  }
  if (!st.isFile()) throw new TvmRuntimeError('RuntimeError', `cannot load module: ${path} is not a file`);
}

/** Adds the runtime versions to a load failure: a mismatched artifact fails here. */
function explainLoadError(path: string): (err: unknown) => never {
  return (err: unknown) => {
    if (err instanceof Error) {
      const v = checkRuntimeVersions();
      err.message = `cannot load ${path}: ${err.message} (tvm-node runs TVM runtime ${v.tvm}, tvm-ffi ${v.tvmFfi}; ` +
        'the artifact must be compiled by a matching TVM)';
    }
    throw err;
  };
}

/** Loads a compiled artifact (`.so`), synchronously. Prefer {@link loadModuleAsync} in servers. */
export function loadModule(path: string): Module {
  checkRuntimeVersions();
  checkFile(path);
  try {
    return new Module(addon.NativeModule.load(path));
  } catch (err) {
    return explainLoadError(path)(err);
  }
}

/** Loads a compiled artifact on a worker thread. */
export async function loadModuleAsync(path: string): Promise<Module> {
  checkRuntimeVersions();
  checkFile(path);
  const rethrow = callerStack();
  try {
    return (await addon.NativeModule.loadAsync(path)) as Module;
  } catch (err) {
    try {
      explainLoadError(path)(err);
    } catch (e) {
      return rethrow(e);
    }
    throw err;
  }
}

registerWrapper(addon.NativeModule, (h) => new Module(h));
