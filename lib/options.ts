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
 * `value` when it satisfies `rule` (finite, in range), `fallback` when it is undefined;
 * otherwise a {@link TvmValueError} (or {@link TvmTypeError} for a non-number) naming `name`.
 */
export function checkNumber(name: string, value: unknown, rule: NumberRule, fallback: number): number;
export function checkNumber(name: string, value: unknown, rule: NumberRule): number | undefined;
export function checkNumber(name: string, value: unknown, rule: NumberRule, fallback?: number): number | undefined {
  if (value === undefined) return fallback;
  if (typeof value !== 'number') throw new TvmTypeError('TypeError', `${name} must be ${describe(rule)}, got ${typeof value} ${JSON.stringify(value)}`);
  const ok =
    Number.isFinite(value) &&
    (!rule.integer || Number.isInteger(value)) &&
    (rule.min === undefined || value >= rule.min) &&
    (rule.max === undefined || value <= rule.max);
  if (!ok) throw new TvmValueError('ValueError', `${name} must be ${describe(rule)}, got ${value}`);
  return value;
}
