/**
 * Checks of option values at the public boundary: a wrong value is refused where it is
 * given, naming the option, what it must be and what it was, instead of misbehaving later
 * (a NaN limit that never fires, a negative size that refuses everything).
 */
import { TvmTypeError, TvmValueError } from './errors';

/** What a numeric option must be. */
export interface NumberRule {
  /** Smallest allowed value (inclusive). */
  min?: number;
  /** Largest allowed value (inclusive). */
  max?: number;
  /** Whole numbers only. */
  integer?: boolean;
}

function describe(rule: NumberRule): string {
  const what = rule.integer ? 'a whole number' : 'a number';
  if (rule.min !== undefined && rule.max !== undefined) return `${what} from ${rule.min} to ${rule.max}`;
  if (rule.min !== undefined) return `${what} >= ${rule.min}`;
  if (rule.max !== undefined) return `${what} <= ${rule.max}`;
  return `a finite ${what.replace(/^an? /, '')}`;
}

/**
 * How a message shows a value it refuses: strings quoted (and shortened), numbers, bigints,
 * booleans, null and undefined as written, anything else by its kind (`an array of 3`,
 * `a Float32Array`, `an object`, `a function`).
 */
export function received(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
    case 'number':
    case 'boolean':
    case 'undefined':
      return String(value);
    case 'bigint':
      return `${value}n`;
    case 'symbol':
      return value.toString();
    case 'function':
      return 'a function';
  }
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array of ${value.length}`;
  const name = (value as object).constructor?.name;
  return name && name !== 'Object' ? article(name) : 'an object';
}

/** `a Tensor`, `an Int8Array`. */
export function article(noun: string): string {
  return `${/^[AEIOU]/i.test(noun) ? 'an' : 'a'} ${noun}`;
}

const typeError = (name: string, what: string, value: unknown) => new TvmTypeError('TypeError', `${name} must be ${what}, got ${received(value)}`);
const valueError = (name: string, what: string, value: unknown) => new TvmValueError('ValueError', `${name} must be ${what}, got ${received(value)}`);

/**
 * `value` when it satisfies `rule` (finite, in range), `fallback` when it is undefined;
 * otherwise a {@link TvmValueError} (or {@link TvmTypeError} for a non-number) naming `name`.
 * `name` is how the message names the parameter, e.g. `'VirtualMachine: concurrency'`.
 */
export function checkNumber(name: string, value: unknown, rule: NumberRule, fallback: number): number;
export function checkNumber(name: string, value: unknown, rule: NumberRule): number | undefined;
export function checkNumber(name: string, value: unknown, rule: NumberRule, fallback?: number): number | undefined {
  if (value === undefined) return fallback;
  if (typeof value !== 'number') throw typeError(name, describe(rule), value);
  const ok =
    Number.isFinite(value) &&
    (!rule.integer || Number.isInteger(value)) &&
    (rule.min === undefined || value >= rule.min) &&
    (rule.max === undefined || value <= rule.max);
  if (!ok) throw valueError(name, describe(rule), value);
  return value;
}

/** {@link checkNumber} for a parameter that must be given: undefined is a {@link TvmTypeError}. */
export function requireNumber(name: string, value: unknown, rule: NumberRule): number {
  if (value === undefined) throw typeError(name, describe(rule), value);
  return checkNumber(name, value, rule, 0);
}

/**
 * `value` when it is one of `allowed`, `fallback` when it is undefined; a non-string is a
 * {@link TvmTypeError}, any other string a {@link TvmValueError} listing the allowed ones.
 */
export function checkEnum<T extends string>(name: string, value: unknown, allowed: readonly T[], fallback: T): T;
export function checkEnum<T extends string>(name: string, value: unknown, allowed: readonly T[]): T | undefined;
export function checkEnum<T extends string>(name: string, value: unknown, allowed: readonly T[], fallback?: T): T | undefined {
  if (value === undefined) return fallback;
  const what = `one of ${allowed.map((a) => `'${a}'`).join(', ')}`;
  if (typeof value !== 'string') throw typeError(name, what, value);
  if (!(allowed as readonly string[]).includes(value)) throw valueError(name, what, value);
  return value as T;
}

/** `value` when it is a boolean, `fallback` when it is undefined; else a {@link TvmTypeError}. */
export function checkBoolean(name: string, value: unknown, fallback: boolean): boolean;
export function checkBoolean(name: string, value: unknown): boolean | undefined;
export function checkBoolean(name: string, value: unknown, fallback?: boolean): boolean | undefined {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw typeError(name, 'true or false', value);
  return value;
}

/** What a string parameter must be. */
export interface StringRule {
  /** The empty string is refused (a path, a name, a host). */
  nonEmpty?: boolean;
}

/**
 * `value` when it is a string (non-empty, where the rule says so), `fallback` when it is
 * undefined; a non-string is a {@link TvmTypeError}, an empty one a {@link TvmValueError}.
 */
export function checkString(name: string, value: unknown, rule: StringRule, fallback: string): string;
export function checkString(name: string, value: unknown, rule?: StringRule): string | undefined;
export function checkString(name: string, value: unknown, rule: StringRule = {}, fallback?: string): string | undefined {
  if (value === undefined) return fallback;
  const what = rule.nonEmpty ? 'a non-empty string' : 'a string';
  if (typeof value !== 'string') throw typeError(name, what, value);
  if (rule.nonEmpty && value === '') throw valueError(name, what, value);
  return value;
}

/** A string parameter that must be given and not be empty (a path, a name, a host). */
export function requireString(name: string, value: unknown): string {
  if (typeof value !== 'string') throw typeError(name, 'a non-empty string', value);
  if (value === '') throw valueError(name, 'a non-empty string', value);
  return value;
}

/** `value` when it is an instance of `cls`; else a {@link TvmTypeError} naming `what` (e.g. 'a Device'). */
export function checkInstance<T>(name: string, value: unknown, cls: abstract new (...args: never[]) => T, what: string): T {
  if (!(value instanceof cls)) throw typeError(name, what, value);
  return value;
}

/**
 * An array whose every element is an instance of `cls` (e.g. the devices of a VM), or
 * `undefined` when not given. Not an array: a {@link TvmTypeError}; an element of another
 * kind: a {@link TvmTypeError} naming its index; empty where `nonEmpty`: a {@link TvmValueError}.
 */
export function checkArrayOf<T>(
  name: string,
  value: unknown,
  cls: abstract new (...args: never[]) => T,
  what: string,
  rule: { nonEmpty?: boolean } = {},
): T[] | undefined {
  if (value === undefined) return undefined;
  const whole = `${rule.nonEmpty ? 'a non-empty ' : 'an '}array of ${what}s`;
  if (!Array.isArray(value)) throw typeError(name, whole, value);
  if (rule.nonEmpty && value.length === 0) throw new TvmValueError('ValueError', `${name} must be ${whole}, got an empty array`);
  value.forEach((v, i) => checkInstance(`${name}[${i}]`, v, cls, article(what)));
  return value as T[];
}

/**
 * An options object: `{}` for undefined, the object itself when every key is one of
 * `known`. Not a plain object (null, an array, a string, ...) is a {@link TvmTypeError};
 * an unknown key (a typo such as `concurency`) a {@link TvmValueError} listing the known ones.
 * `caller` names the entry point (`'VirtualMachine'`); `what` names the object when it is not
 * the options themselves (`'cache'`: "RPCServer: unknown key 'x' in cache"). A known key
 * whose value is undefined counts as not given.
 */
export function checkOptions<T extends object>(caller: string, value: T | undefined, known: readonly (keyof T & string)[], what = 'options'): Partial<T> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value) || ArrayBuffer.isView(value)) {
    throw typeError(`${caller}: ${what}`, 'an object', value);
  }
  for (const key of Object.keys(value)) {
    if (!(known as readonly string[]).includes(key)) {
      const near = known.find((k) => closeTo(k, key));
      const unknown = what === 'options' ? `unknown option '${key}'` : `unknown key '${key}' in ${what}`;
      throw new TvmValueError(
        'ValueError',
        `${caller}: ${unknown}${near ? ` (did you mean '${near}'?)` : ''}; known ${what === 'options' ? 'options' : 'keys'}: ${known.join(', ') || '(none)'}`,
      );
    }
  }
  return value;
}

/** Whether two option names differ by at most two edits (a typo), ignoring case. */
function closeTo(a: string, b: string): boolean {
  a = a.toLowerCase();
  b = b.toLowerCase();
  if (Math.abs(a.length - b.length) > 2) return false;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length] <= 2;
}
