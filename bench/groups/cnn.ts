/**
 * The `cnn` group: a MobileNetV2 as ONNX, compiled by TVM (see bench/bench-models.ts); Node
 * runSync (sync) and run (async) with 1/2/4 in flight vs Python's relax.VirtualMachine on the same
 * .so, and vs onnxruntime-node on the same .onnx.
 */
import path from 'node:path';
import type * as Ort from 'onnxruntime-node';
import { outputsOf, readNpy, Tensor, VirtualMachine } from '../../lib';
import { compare } from '../bench-models';
import type { Ctx } from '../context';
import { repoRoot } from '../fixtures';
import { type Contender, hrtimeLoop, makeCase, measure, sequential } from '../measure';
import { dropAll, IN_FLIGHT, pumpContenders, pumpRuns } from './model';

/** The CNN of the `cnn` group, per mode (scripts/compile_bench_models.py builds both). */
export const CNN_MODEL = { full: 'mobilenet_v2', quick: 'mobilenet_v2_tiny' } as const;

/** Idle gap before each contender's round in the cnn group (see {@link measure}). */
export const CNN_SETTLE_MS = 25;

export async function benchCnn(ctx: Ctx): Promise<void> {
  const built = ctx.cnn!;
  const name = ctx.quick ? CNN_MODEL.quick : CNN_MODEL.full;
  const m = built.index.models[name];
  const file = (f: string) => path.join(built.dir, f);
  const shape = `[${m.input.shape.join(',')}]`;
  const what = `${name} ${shape}`;

  // The same input for everyone, and the onnxruntime (Python) reference output.
  const x = readNpy(file(m.input.file));
  const reference = readNpy(file(m.output.file)).data as Float32Array;
  const input = Tensor.fromSync(x.data, { shape: x.shape, dtype: x.dtype });
  const vm = await VirtualMachine.load(file(m.library), { concurrency: 4 });
  const fn = m.function;

  const check = (who: string, out: ArrayLike<number>): number => {
    const c = compare(out, reference, m.tolerance);
    if (!c.ok) throw new Error(`${name}: ${who} output differs from the reference (max |diff| ${c.maxAbsDiff})`);
    return c.maxAbsDiff;
  };
  const [y] = outputsOf<Tensor>(vm.runSync(fn, input));
  const tvmNode = check('tvm-node', y.toFloat32ArraySync());
  y.disposeSync();
  const py = await ctx.peer.request({
    op: 'vm',
    id: name,
    path: file(m.library),
    func: fn,
    inputs: [file(m.input.file)],
    expect: file(m.output.file),
    tolerance: m.tolerance,
  });

  // onnxruntime-node on the same .onnx, with the same number of threads as TVM.
  let session: Ort.InferenceSession | undefined;
  let feeds: Record<string, Ort.Tensor> = {};
  let ortDiff: number | null = null;
  if (ctx.ort) {
    const ort = ctx.ort.module;
    session = await ort.InferenceSession.create(file(m.onnx), {
      executionProviders: ['cpu'],
      intraOpNumThreads: ctx.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    });
    feeds = { [m.input.name]: new ort.Tensor('float32', x.data as Float32Array, x.shape) };
    const out = await session.run(feeds);
    ortDiff = check('onnxruntime-node', out[m.output.name].data as Float32Array);
  }

  ctx.models.push({
    name,
    notes: m.notes,
    input: { name: m.input.name, shape: m.input.shape, dtype: m.input.dtype },
    output: { name: m.output.name, shape: m.output.shape, dtype: m.output.dtype },
    macs: m.macs,
    params: m.params,
    opset: m.opset,
    compileS: m.compile_s,
    buildScriptS: Math.round(built.scriptS * 100) / 100,
    cached: built.scriptS < m.compile_s,
    target: built.index.target,
    schedule: built.index.schedule,
    reference: m.reference,
    tolerance: m.tolerance,
    maxAbsDiff: { tvmPython: py.maxAbsDiff, tvmNode, onnxruntimeNode: ortDiff },
    toolchain: { onnx: built.index.onnx_version, onnxruntime: built.index.onnxruntime_version, tvm: built.index.tvm_version },
    dir: path.relative(repoRoot, built.dir),
  });

  ctx.log(`cnn: ${what}`);
  const contenders: Contender[] = [
    { key: 'sync', name: 'vm.runSync', round: hrtimeLoop(() => dropAll(vm.runSync(fn, input))) },
    ...pumpContenders((k) => pumpRuns(vm, fn, [input], k)),
    ctx.peer.contender('py', `${ctx.pyName}: relax.VirtualMachine["${fn}"](x)`, name),
  ];
  const ortName = ctx.ort ? `onnxruntime-node ${ctx.ort.version}: await session.run(feeds)` : '';
  if (session) contenders.push({ key: 'ort', name: ortName, round: sequential(() => session!.run(feeds)) });
  const t = await measure(contenders, ctx.rounds, ctx.roundMs, CNN_SETTLE_MS);

  ctx.cases.push(makeCase('cnn', `${what}: runSync vs Python`, 'us/run', t.sync, t.py, { goal: '~1 (same kernels)' }));
  for (const k of IN_FLIGHT) {
    ctx.cases.push(
      makeCase('cnn', `${what}: async run, ${k} in flight vs Python (sync)`, 'us/run', t[`a${k}`], t.py, {
        note: 'tvm-node figure is wall time / runs (inverse throughput)',
      }),
    );
  }
  if (t.ort) {
    ctx.cases.push(
      makeCase('cnn', `${what}: runSync vs onnxruntime-node`, 'us/run', t.sync, t.ort, {
        note: "kernel quality: untuned portable TVM build vs onnxruntime's own kernels",
      }),
    );
    for (const k of IN_FLIGHT) {
      ctx.cases.push(
        makeCase('cnn', `${what}: async run, ${k} in flight vs onnxruntime-node`, 'us/run', t[`a${k}`], t.ort, {
          note: 'onnxruntime-node runs on the JS thread (one at a time); tvm-node figure is wall time / runs',
        }),
      );
    }
  } else {
    ctx.skipped.push({ group: 'cnn', name: `${what}: vs onnxruntime-node`, skipped: 'onnxruntime-node is not available (see the other skipped entry)' });
  }
  await session?.release();
  await vm.dispose();
  input.disposeSync();
}
