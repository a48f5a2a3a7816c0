/**
 * The `model` group: the `mlp` and `conv` fixtures, Node runSync (sync) and run (async) with
 * 1/2/4 in flight vs Python's relax.VirtualMachine on the same .so, and (diagnostic) one async
 * run against a bare libuv pool round trip, the part of it no addon can avoid. Its pumps (k
 * runs kept in flight) serve the cnn group too.
 */
import { randomFill } from 'node:crypto';
import path from 'node:path';
import { outputsOf, type Tensor, VirtualMachine } from '../../lib';
import type { Ctx } from '../context';
import { fixture, fixtureDir, inputTensor } from '../fixtures';
import { type Contender, hrtimeLoop, makeCase, measure, type RoundFn, sequential } from '../measure';

/** Ops per round of a pump keeping k runs in flight: at least this many times k. */
export const MIN_RUNS_PER_LANE = 2;

export const dropAll = (out: unknown) => outputsOf<Tensor>(out).forEach((t) => t.disposeSync());

/** Keeps `inFlight` vm.run calls going until n have been started; resolves with the wall ns. */
export function pumpRuns(vm: VirtualMachine, fn: string, inputs: Tensor[], inFlight: number): RoundFn {
  return async (n) => {
    let started = 0;
    const lane = async () => {
      while (started < n) {
        started++;
        dropAll(await vm.run(fn, ...inputs));
      }
    };
    const t0 = process.hrtime.bigint();
    await Promise.all(Array.from({ length: Math.min(inFlight, n) }, lane));
    return Number(process.hrtime.bigint() - t0);
  };
}

export const IN_FLIGHT = [1, 2, 4] as const;

export function pumpContenders(pump: (k: number) => RoundFn): Contender[] {
  return IN_FLIGHT.map((k) => ({ key: `a${k}`, name: `vm.run, ${k} in flight`, round: pump(k), minOps: MIN_RUNS_PER_LANE * k }));
}

export async function benchModels(ctx: Ctx): Promise<void> {
  for (const name of ['mlp', 'conv']) {
    const fx = fixture(name);
    const c = fx.cases[0];
    const inputs = c.inputs.map(inputTensor);
    const vm = await VirtualMachine.load(fx.path, { concurrency: 4 });
    const fn = fx.function ?? 'main';
    dropAll(vm.runSync(fn, ...inputs));
    await ctx.peer.request({
      op: 'vm',
      id: name,
      path: fx.path,
      func: fn,
      inputs: c.inputs.map((s) => path.join(fixtureDir(), s.file)),
    });
    const pump = (k: number) => pumpRuns(vm, fn, inputs, k);
    const small = Buffer.alloc(16);
    ctx.log(`model: ${name}`);
    const shape = c.inputs.map((s) => `[${s.shape.join(',')}]`).join(', ');
    const t = await measure(
      [
        { key: 'sync', name: 'vm.runSync', round: hrtimeLoop(() => dropAll(vm.runSync(fn, ...inputs))) },
        ...pumpContenders(pump),
        ctx.peer.contender('py', `${ctx.pyName}: relax.VirtualMachine["${fn}"](x)`, name),
        // Diagnostic: the thread hop alone, as Node's own pool work pays it.
        { key: 'uv', name: 'await crypto.randomFill(16 B)', round: sequential(() => uvRoundTrip(small)) },
      ],
      ctx.rounds,
      ctx.roundMs,
    );
    const what = `${name} ${shape}`;
    ctx.cases.push(makeCase('model', `${what}: runSync vs Python`, 'us/run', t.sync, t.py, { goal: '>= 1' }));
    for (const k of IN_FLIGHT) {
      ctx.cases.push(
        makeCase('model', `${what}: async run, ${k} in flight vs Python (sync)`, 'us/run', t[`a${k}`], t.py, {
          note: 'tvm-node figure is wall time / runs (inverse throughput)',
        }),
      );
    }
    ctx.cases.push(
      makeCase('model', `${what}: async run, 1 in flight vs a bare libuv pool round trip`, 'us/run', t.a1, t.uv, {
        note:
          'diagnostic: what an async run costs beyond the thread hop every pool job pays (a libuv queue + wake-up of a pool ' +
          'thread + completion back on the event loop); the rest is the run itself (runSync) and its set-up',
      }),
    );
    await vm.dispose();
    inputs.forEach((x) => x.disposeSync());
  }
}

/** One job through libuv's pool that does (almost) nothing: Node's own cost of a thread hop. */
export function uvRoundTrip(buf: Buffer): Promise<void> {
  return new Promise((resolve, reject) => randomFill(buf, (err) => (err ? reject(err) : resolve())));
}
