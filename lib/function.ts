/**
 * Packed functions: TVM's universal calling convention, and the global function registry.
 */

import { addon, type NativeFunction, registerWrapper } from './binding';
import { atCallers, TvmAttributeError, TvmError, TvmValueError } from './errors';
import { HandleOwner } from './handle';
import { checkBoolean, checkInstance, checkOptions } from './options';

/**
 * A TVM packed function. Arguments map as: Tensor, PackedFunc, Module, Device, Shape ->
 * themselves; number -> int if integral else float (override with `float()`/`int()`);
 * bigint -> int64; string -> str; boolean -> bool; Buffer/TypedArray -> bytes; arrays ->
 * ffi.Array; null -> None. Results map back the same way (ints beyond 2^53 as bigint).
 */
export class PackedFunc extends HandleOwner<NativeFunction> {
  /** @internal */
  constructor(
    handle: NativeFunction,
    /** The name it was looked up by, for messages. */
    readonly name = '<anonymous>',
  ) {
    super(handle);
  }

  /**
   * Calls on a worker thread of the libuv pool; the event loop keeps running. A result that
   * holds resources (a Tensor, Module, PackedFunc, ...) is the caller's to dispose.
   */
  async call(...args: unknown[]): Promise<unknown> {
    // A disposed function or an argument that cannot convert fails before the call is
    // queued; being async, this reports it through the promise like every other failure.
    try {
      return await this.handle.callAsync(unwrapArgs(args));
    } catch (err) {
      throw atCallers(err, PackedFunc.prototype.call);
    }
  }

  /**
   * {@link PackedFunc.call} on the JS thread, blocking the event loop until it returns: only
   * for work well under a millisecond.
   */
  callSync(...args: unknown[]): unknown {
    return this.handle.call(...unwrapArgs(args));
  }
}

/**
 * Passes lib/ objects to the native layer as their handles: a tagged native object is its
 * cheapest argument to recognize (measured: a Tensor argument cost ~0.9 µs more otherwise).
 * @internal
 */
export function unwrapArgs(args: unknown[]): unknown[] {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a instanceof HandleOwner) args[i] = a.handle;
  }
  return args;
}

/** A global function by name, or null. */
export function getGlobalFunc(name: string): PackedFunc | null {
  const h = addon.getGlobalFunc(name);
  return h ? new PackedFunc(h, name) : null;
}

/** A global function by name; throws {@link TvmAttributeError} when it is missing. */
export function requireGlobalFunc(name: string): PackedFunc {
  const f = getGlobalFunc(name);
  if (!f) throw new TvmAttributeError('AttributeError', `no global function '${name}' is registered`);
  return f;
}

/** Names of all registered global functions. */
export function listGlobalFuncs(): string[] {
  return addon.listGlobalFuncs();
}

/** Undoes a {@link registerFunc}. */
export interface Registration extends Disposable {
  readonly name: string;
  unregister(): void;
}

/**
 * Makes a JS function callable from TVM (and from TVM RPC peers) under `name`. TVM may
 * call it from any thread: calls from other threads run on this JS thread while the
 * caller waits, so the JS thread must be free (use the async forms of runs that call it).
 * A thrown error reaches TVM with its kind (a {@link TvmError}'s kind, else RuntimeError).
 */
// biome-ignore lint/suspicious/noExplicitAny: a callback takes whatever TVM passes it; `any[]` lets it declare its own parameter types
export function registerFunc(name: string, fn: (...args: any[]) => unknown, opts: { override?: boolean } = {}): Registration {
  // A name of another type is refused by the native layer (a TvmTypeError naming it).
  if (name === '') throw new TvmValueError('ValueError', 'registerFunc: name must be a non-empty string, got ""');
  checkInstance('registerFunc: fn', fn, Function, 'a function');
  const override = checkBoolean('registerFunc: override', checkOptions('registerFunc', opts, ['override']).override, false);
  const id = addon.registerFunc(name, fn, override);
  let done = false;
  const unregister = () => {
    if (done) return;
    done = true;
    addon.unregisterFunc(name, id);
  };
  return { name, unregister, [Symbol.dispose]: unregister };
}

registerWrapper(addon.NativeFunction, (h) => new PackedFunc(h));
