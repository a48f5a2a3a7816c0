/**
 * Typed errors. Every TVM error reaches JS as a {@link TvmError} subclass chosen by TVM's
 * error kind (ValueError, TypeError, RuntimeError, ...), carrying TVM's message and
 * backtrace; tvm-node's own validation raises the same classes, and so does the native
 * layer for arguments it cannot convert (a {@link TvmTypeError} for a value of the wrong
 * type, a {@link TvmValueError} for a wrong size), so callers catch one way. An error that
 * explains another keeps it as its `cause`.
 */

/** Base class of every error tvm-node raises. */
export class TvmError extends Error {
  /**
   * A stable name of what went wrong: TVM's error kind (`ValueError`, `TypeError`,
   * `RuntimeError`, `InternalError`, ...), or for tvm-node's own classes their name
   * (`DisposedError`, `DeviceError`, `VersionMismatchError`, ...).
   */
  readonly kind: string;
  /** TVM's backtrace (native frames), when TVM reported one. */
  readonly tvmBacktrace: string;

  constructor(kind: string, message: string, tvmBacktrace = '', options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
    this.tvmBacktrace = tvmBacktrace;
    this.name = new.target.name;
  }
}

/** A value of the right type but the wrong content (bad shape, unknown dtype, ...). */
export class TvmValueError extends TvmError {}
/** A value of the wrong type (wrong dtype for a kernel argument, wrong JS type, ...). */
export class TvmTypeError extends TvmError {}
/** An index or count out of range (wrong arity, missing output index, ...). */
export class TvmIndexError extends TvmError {}
/** A missing attribute or function. */
export class TvmAttributeError extends TvmError {}
/** An error raised by the runtime while running (missing file, failed load, kernel error). */
export class TvmRuntimeError extends TvmError {}
/** A failed internal check of TVM (often a malformed artifact). */
export class TvmInternalError extends TvmError {}
/** A failed `R.assert_op` or kernel assertion. */
export class TvmAssertionError extends TvmError {}
/** A feature this runtime does not provide. */
export class TvmNotImplementedError extends TvmError {}
/** Use of a tensor, function, module or VM after `dispose()`. */
export class DisposedError extends TvmError {}
/** A device type the linked runtime lacks, or a device that does not exist. */
export class DeviceError extends TvmError {}
/** The loaded TVM runtime or an artifact does not fit the one tvm-node was built for. */
export class VersionMismatchError extends TvmError {}

const BY_KIND: Record<string, new (kind: string, message: string, bt?: string, options?: ErrorOptions) => TvmError> = {
  ValueError: TvmValueError,
  TypeError: TvmTypeError,
  IndexError: TvmIndexError,
  KeyError: TvmIndexError,
  AttributeError: TvmAttributeError,
  RuntimeError: TvmRuntimeError,
  InternalError: TvmInternalError,
  AssertionError: TvmAssertionError,
  NotImplementedError: TvmNotImplementedError,
  DisposedError,
  DeviceError,
  VersionMismatchError,
};

/** Builds the typed error for a TVM error kind (used by the native layer). */
export function makeTvmError(kind: string, message: string, backtrace = '', options?: ErrorOptions): TvmError {
  const Ctor = BY_KIND[kind] ?? TvmError;
  return new Ctor(kind, message, backtrace, options);
}

/**
 * Re-targets an async native error at its callers, from the `catch` of the async function
 * `fn` that awaited it: the native error has no JS stack, so the stack captured here — `fn`
 * and, through V8's async stack traces, every async function awaiting it — is grafted on.
 * Unlike {@link callerStack} it costs nothing when the call succeeds (capturing a stack
 * before each call cost ~2-3 µs, a tenth of a small model's async run).
 */
export function atCallers(err: unknown, fn: (...args: never[]) => unknown): unknown {
  if (err instanceof Error) {
    const holder: { stack?: string } = {};
    Error.captureStackTrace(holder, fn);
    if (holder.stack) err.stack = `${err.name}: ${err.message}\n${holder.stack.split('\n').slice(1).join('\n')}`;
  }
  return err;
}

/**
 * Returns a function that re-targets an async native error at the caller: the native
 * error has no JS stack, so the stack captured before the call is grafted on.
 */
export function callerStack(): (err: unknown) => never {
  const holder: { stack?: string } = {};
  Error.captureStackTrace(holder, callerStack);
  return (err: unknown) => {
    if (err instanceof Error && holder.stack) {
      err.stack = `${err.name}: ${err.message}\n${holder.stack.split('\n').slice(1).join('\n')}`;
    }
    throw err;
  };
}
