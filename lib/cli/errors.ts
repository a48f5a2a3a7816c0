/**
 * How the CLI fails: exit status 1 for runtime failures (model, device, file errors) and 2
 * for usage errors (the command line is wrong), each reported as one line
 * `tvm-node: <message> [<kind>]` and a `hint:` line on stderr.
 */
import { TvmError } from '../errors';

/** Exit statuses a script can rely on. */
export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

/** A mistake on the command line, kind `usage`: exit status 2. */
export class UsageError extends TvmError {
  constructor(
    message: string,
    /** What to do instead; defaults to pointing at `--help`. */
    readonly hint?: string,
    options?: ErrorOptions,
  ) {
    super('usage', message, '', options);
  }
}

/** A runtime failure the CLI explains itself (an unreadable input file, ...): exit status 1. */
export class CliError extends TvmError {
  constructor(
    message: string,
    /** Shown in brackets after the message, e.g. `IOError`. */
    kind: string,
    readonly hint?: string,
    options?: ErrorOptions,
  ) {
    super(kind, message, '', options);
  }
}

const HINTS = new WeakMap<object, string>();

/** Attaches a hint to any error (kept beside it, the error is not changed) and returns it. */
export function withHint<E>(err: E, hint: string): E {
  if (typeof err === 'object' && err !== null && !HINTS.has(err)) HINTS.set(err, hint);
  return err;
}

/** The kind shown in brackets: TVM's error kind, a Node error code, or the error's name. */
export function errorKind(err: unknown): string {
  if (err instanceof TvmError) return err.kind;
  const code = (err as { code?: unknown })?.code;
  if (typeof code === 'string' && code) return code;
  return err instanceof Error ? err.name : 'Error';
}

function defaultHint(err: unknown, command: string): string {
  const msg = err instanceof Error ? err.message : String(err);
  if (err instanceof TvmError && err.kind === 'DeviceError') return '`tvm-node info` lists the devices this TVM runtime can use';
  if (/does not exist|no such file|ENOENT/.test(msg)) return 'check the path';
  if (typeof (err as { syscall?: unknown })?.syscall === 'string') return 'check the path and its permissions';
  if (/^cannot load /.test(msg)) {
    return 'models are .so files from tvm.compile(...).export_library(...) by a matching TVM; `tvm-node info` shows this runtime';
  }
  return `run \`tvm-node ${command ? `${command} ` : ''}--help\` for usage`;
}

/** The two stderr lines and the exit status for an error raised by `command`. */
export function describeFailure(err: unknown, command = ''): { lines: [string, string]; exitCode: number } {
  const raw = err instanceof Error ? err.message : String(err);
  const message =
    raw
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l) ?? 'unknown error';
  const hint =
    (typeof err === 'object' && err !== null ? HINTS.get(err) : undefined) ??
    (err instanceof UsageError || err instanceof CliError ? err.hint : undefined) ??
    defaultHint(err, command);
  return {
    lines: [`tvm-node: ${message} [${errorKind(err)}]`, `hint: ${hint}`],
    exitCode: err instanceof UsageError ? EXIT.usage : EXIT.failure,
  };
}
