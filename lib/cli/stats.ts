/**
 * Small pure statistics for the CLI: latency percentiles and summaries of output values.
 */
import { TvmValueError } from '../errors';

/**
 * The `p`-th percentile (0..100) of ascending `sorted` values, interpolating linearly
 * between the two nearest ranks (numpy's default `linear` method): p0 is the minimum,
 * p100 the maximum, p50 of an even count the mean of the middle two.
 */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) throw new TvmValueError('ValueError', 'percentile of no values');
  if (!(p >= 0 && p <= 100)) throw new TvmValueError('ValueError', `percentile ${p} is outside 0..100`);
  const rank = ((sorted.length - 1) * p) / 100;
  const lo = Math.floor(rank);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

/** Latency statistics in the unit the samples were given in. */
export interface LatencyStats {
  count: number;
  min: number;
  max: number;
  mean: number;
  stddev: number;
  p50: number;
  p90: number;
  p99: number;
}

/** Summarizes latency samples (any order; not modified). */
export function latencyStats(samples: readonly number[]): LatencyStats {
  if (samples.length === 0) throw new TvmValueError('ValueError', 'no latency samples');
  const sorted = [...samples].sort((a, b) => a - b);
  const mean = sorted.reduce((s, v) => s + v, 0) / sorted.length;
  const variance = sorted.reduce((s, v) => s + (v - mean) ** 2, 0) / sorted.length;
  return {
    count: sorted.length,
    min: sorted[0],
    max: sorted[sorted.length - 1],
    mean,
    stddev: Math.sqrt(variance),
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
  };
}

/** Min, max and mean of an array's values; NaNs are counted and left out of the rest. */
export interface ValueStats {
  count: number;
  nan: number;
  min: number;
  max: number;
  mean: number;
}

/** Summarizes numbers (bigints are converted, booleans count as 0/1). Null for no values. */
export function valueStats(values: ArrayLike<number | bigint | boolean>): ValueStats | null {
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  let nan = 0;
  for (let i = 0; i < values.length; i++) {
    const v = Number(values[i]);
    if (Number.isNaN(v)) {
      nan++;
      continue;
    }
    if (v < min) min = v;
    if (v > max) max = v;
    sum += v;
  }
  const n = values.length - nan;
  if (values.length === 0) return null;
  return n === 0 ? { count: values.length, nan, min: NaN, max: NaN, mean: NaN } : { count: values.length, nan, min, max, mean: sum / n };
}

/**
 * A number for a human: `digits` significant digits without trailing fractional zeros
 * (2000.4 -> `2000`, 0.1234567 -> `0.123457`); a number with more integer digits than that
 * is rounded to a whole number (123456.7 -> `123457`) up to 1e15, beyond which (and below
 * 1e-6) it is written with an exponent.
 */
export function formatNumber(v: number, digits = 6): string {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const [mantissa, exponent] = v.toPrecision(digits).split('e');
  // More integer digits than `digits` (toPrecision gives 1.235e+5): the whole number.
  if (exponent !== undefined && Number(exponent) >= 0 && Math.abs(v) < 1e15) return String(Math.round(v));
  // Only zeros after the decimal point are dropped: "2000" keeps its own.
  const trimmed = mantissa.includes('.') ? mantissa.replace(/0+$/, '').replace(/\.$/, '') : mantissa;
  return exponent === undefined ? trimmed : `${trimmed}e${exponent}`;
}
