/**
 * Timing and statistics shared by every group: order statistics over rounds, the round
 * functions (hrtimeLoop, sequential), calibration and the rotating-order rounds of
 * {@link measure}, and how a case (subject vs peer, per-round ratio) is built from them.
 */
import type { BenchCase, Group, Side, Stats } from './types';

function quantile(sorted: number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function stats(values: number[]): Stats {
  const s = [...values].sort((a, b) => a - b);
  return { median: quantile(s, 0.5), p25: quantile(s, 0.25), p75: quantile(s, 0.75), min: s[0], max: s[s.length - 1], rounds: s.length };
}

/** Times `n` operations; resolves with the total in ns. */
export type RoundFn = (n: number) => number | Promise<number>;

export interface Contender {
  key: string;
  name: string;
  round: RoundFn;
  /** Lower bound on the calibrated ops per round (e.g. to keep k runs in flight). */
  minOps?: number;
}

/** Awaits `once()` n times in a row (one operation in flight). */
export function sequential(once: () => Promise<unknown>): RoundFn {
  return async (n) => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await once();
    return Number(process.hrtime.bigint() - t0);
  };
}

export function hrtimeLoop(fn: () => void): RoundFn {
  return (n) => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    return Number(process.hrtime.bigint() - t0);
  };
}

/** Ops per round so that a round takes about `roundNs`. */
async function calibrate(round: RoundFn, roundNs: number): Promise<number> {
  let n = 1;
  for (;;) {
    const t = Math.max(1, await round(n));
    if (t >= roundNs / 8 || n >= 1 << 26) return Math.max(1, Math.round((n * roundNs) / t));
    n *= t < roundNs / 1000 ? 64 : 4;
  }
}

export interface Timed {
  name: string;
  opsPerRound: number;
  /** ns per op, one entry per round (for a case in 'MiB': bytes, one entry per round). */
  perOp: number[];
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Calibrates and warms each contender, then runs `rounds` rounds; each round times every
 * contender once, in an order that rotates from round to round. `settleMs` is an idle gap
 * before each contender's round, so that thread pools still spinning after the previous
 * contender (TVM's, onnxruntime's) have gone to sleep before the next one is timed.
 */
export async function measure(contenders: Contender[], rounds: number, roundMs: number, settleMs = 0): Promise<Record<string, Timed>> {
  const roundNs = roundMs * 1e6;
  const ops: number[] = [];
  for (const c of contenders) {
    if (settleMs > 0) await sleep(settleMs);
    ops.push(Math.max(c.minOps ?? 1, await calibrate(c.round, roundNs)));
    await c.round(ops[ops.length - 1]); // warm-up round, not counted
  }
  const perOp: number[][] = contenders.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (let j = 0; j < contenders.length; j++) {
      const k = (j + r) % contenders.length;
      if (settleMs > 0) await sleep(settleMs);
      perOp[k].push((await contenders[k].round(ops[k])) / ops[k]);
    }
  }
  return Object.fromEntries(contenders.map((c, i) => [c.key, { name: c.name, opsPerRound: ops[i], perOp: perOp[i] }]));
}

export type Unit = BenchCase['unit'];

/** Units of throughput (higher is better); the others are times per operation. */
export const HIGHER_IS_BETTER: ReadonlySet<Unit> = new Set<Unit>(['GB/s', 'MB/s', 'infer/s']);

/** Several cases of one group and unit, each `[name, subject, peer, note]`. */
export function makeCases(group: Group, unit: Unit, rows: Array<[string, Timed, Timed, string]>): BenchCase[] {
  return rows.map(([name, subject, peer, note]) => makeCase(group, name, unit, subject, peer, { note }));
}

/** Builds a case from per-op ns (for 'MiB': bytes) of subject and peer (same rounds, paired). */
export function makeCase(
  group: Group,
  name: string,
  unit: Unit,
  subject: Timed,
  peer: Timed,
  extra: { bytes?: number; goal?: string; note?: string } = {},
): BenchCase {
  const convert = (ns: number): number => {
    switch (unit) {
      case 'GB/s':
        return extra.bytes! / ns; // bytes per ns = GB/s
      case 'MB/s':
        return (extra.bytes! / ns) * 1e3;
      case 'infer/s':
        return 1e9 / ns;
      case 'us/run':
      case 'us':
        return ns / 1e3;
      case 'ms/session':
        return ns / 1e6;
      case 'MiB':
        return ns / 2 ** 20; // a size, not a time: `perOp` holds bytes
      default:
        return ns;
    }
  };
  const side = (t: Timed): Side => ({ name: t.name, opsPerRound: t.opsPerRound, stats: stats(t.perOp.map(convert)) });
  return {
    group,
    name,
    ...(extra.bytes !== undefined ? { bytes: extra.bytes } : {}),
    unit,
    higherIsBetter: HIGHER_IS_BETTER.has(unit),
    subject: side(subject),
    peer: side(peer),
    ratio: stats(subject.perOp.map((s, i) => peer.perOp[i] / s)),
    ...(extra.goal ? { goal: extra.goal } : {}),
    ...(extra.note ? { note: extra.note } : {}),
  };
}
