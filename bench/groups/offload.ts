/**
 * The `offload` group: frames per second of a MobileNetV2 split between a slow "device" (a
 * process on one core, one TVM thread) and an edge server (another core), through a link
 * shaped to the issue's three profiles, for each fixed choice and for the auto policy. The
 * measurement is the offloading example's (examples/offload/offload.ts), run for several
 * rounds; within a round every mode runs the same number of frames, in rotating order.
 *
 * Cases per link: each mode's FPS against local-only's (the device alone), and auto's against
 * the best fixed choice of that link (by median FPS).
 */
import { fps, LINKS, type LinkResults, measureOffload, quantile } from '../../examples/offload/offload';
import type { Ctx } from '../context';
import { makeCase, type Timed } from '../measure';
import { splitFixture } from '../split-fixtures';
import type { OffloadSettings } from '../types';

/** The fixed choices auto is compared with. */
const FIXED = ['local', 'remote', 'split', 'pipelined'] as const;

export function offloadSettings(quick: boolean, rounds: number): OffloadSettings {
  return {
    model: quick ? 'mobilenet_v2_tiny' : 'mobilenet_v2',
    frames: quick ? 4 : 20,
    rounds: Math.min(rounds, 3),
    links: LINKS.map((l) => l.name),
    setup:
      'device: examples/offload/device.ts pinned to core 0 (taskset), TVM_NUM_THREADS=1; edge server: `tvm-node rpc-server --inference-only` ' +
      'pinned to core 1, TVM_NUM_THREADS=1; link: lib/net/shaped-link.ts between them (each direction: the bandwidth, plus the latency); ' +
      "split: `tvm-node split` at the model's default cut (bench/split-fixtures.ts); split = plan 1 one frame at a time, pipelined = plan 1 " +
      'with 3 frames in flight, auto = the policy with 3 in flight',
  };
}

/** A mode's per-frame ns over the rounds, as the bench's cases take them. */
function timed(results: LinkResults, mode: string): Timed {
  const runs = results.rounds.map((round) => round.find((r) => r.mode === mode)!);
  return { name: mode, opsPerRound: runs[0].frames, perOp: runs.map((r) => (r.wallMs * 1e6) / r.frames) };
}

function note(results: LinkResults, mode: string): string {
  const runs = results.rounds.map((round) => round.find((r) => r.mode === mode)!);
  const latency = runs.flatMap((r) => r.latencyMs);
  const plans: Record<string, number> = {};
  for (const r of runs) for (const [p, n] of Object.entries(r.plans)) plans[p] = (plans[p] ?? 0) + n;
  const sent = runs.reduce((n, r) => n + r.bytesSent, 0) / runs.reduce((n, r) => n + r.frames, 0);
  return (
    `${mode}: p50 ${quantile(latency, 0.5).toFixed(1)} ms, p99 ${quantile(latency, 0.99).toFixed(1)} ms, ${(sent / 1024).toFixed(0)} KiB sent/frame, ` +
    `plans ${Object.entries(plans)
      .map(([p, n]) => `${p}×${n}`)
      .join(' ')}, max|err| ${Math.max(...runs.map((r) => r.maxError)).toExponential(1)}`
  );
}

export async function benchOffload(ctx: Ctx): Promise<void> {
  const s = offloadSettings(ctx.quick, ctx.rounds);
  ctx.offloadGroup = s;
  const split = await splitFixture(s.model);
  const all = await measureOffload({
    split,
    frames: s.frames,
    rounds: s.rounds,
    onResult: (link, r, round) => ctx.log(`offload ${link.name} round ${round + 1}: ${r.mode} ${fps(r).toFixed(1)} FPS`),
  });
  for (const results of all) {
    const link = results.link.name;
    const local = timed(results, 'local');
    for (const mode of ['remote', 'split', 'pipelined', 'auto']) {
      const goal = mode === 'pipelined' && results.link === all[0].link ? '>= 1.5 on the fast link (issue 11)' : undefined;
      ctx.cases.push(
        makeCase('offload', `${link}: ${mode} vs local-only (FPS)`, 'infer/s', timed(results, mode), local, {
          goal,
          note: `${note(results, mode)}; ${note(results, 'local')}`,
        }),
      );
    }
    const median = (mode: string) => quantile(timed(results, mode).perOp, 0.5);
    const best = [...FIXED].sort((a, b) => median(a) - median(b))[0];
    ctx.cases.push(
      makeCase('offload', `${link}: auto vs the best fixed choice (${best}) (FPS)`, 'infer/s', timed(results, 'auto'), timed(results, best), {
        goal: '>= 0.9 (issue 11)',
        note: note(results, 'auto'),
      }),
    );
  }
}
