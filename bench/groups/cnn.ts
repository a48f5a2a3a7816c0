/**
 * The `cnn` group: CNNs built as ONNX and compiled by TVM (see bench/bench-models.ts and
 * scripts/compile_bench_models.py): MobileNetV2, ResNet-18 and SqueezeNet 1.1 (quick mode: a
 * small MobileNetV2). Each is compiled three ways: portable (`llvm`, untuned), native (preset
 * `host`, untuned) and tuned (MetaSchedule records of bench/tuning/: target x86-64-v4 in NCHW, or
 * x86-64-v3 with blocked NCHWc convolutions, whichever this CPU runs), and
 * each compile's runSync is measured against onnxruntime-node on the same .onnx in the same
 * rounds. The first model is also measured against Python's relax.VirtualMachine on the same
 * .so, and with 1/2/4 async runs in flight. The tuned compile is profiled per kernel.
 */
import path from 'node:path';
import type * as Ort from 'onnxruntime-node';
import { outputsOf, readNpy, Tensor, VirtualMachine } from '../../lib';
import { type BenchVariantEntry, compare } from '../bench-models';
import type { Ctx } from '../context';
import { repoRoot } from '../fixtures';
import { type Contender, hrtimeLoop, makeCase, measure, sequential, stats } from '../measure';
import type { CnnModelInfo, CnnProfile, CnnVariantInfo } from '../types';
import { dropAll, IN_FLIGHT, pumpContenders, pumpRuns } from './model';

/** The CNN of the `cnn` group's Python and async cases and of the threads group, per mode. */
export const CNN_MODEL = { full: 'mobilenet_v2', quick: 'mobilenet_v2_tiny' } as const;

/** Every CNN of the `cnn` group, per mode (scripts/compile_bench_models.py builds them). */
export const CNN_MODELS = { full: [CNN_MODEL.full, 'resnet18', 'squeezenet1_1'], quick: [CNN_MODEL.quick] } as const;

/** Idle gap before each contender's round in the cnn group (see {@link measure}). */
export const CNN_SETTLE_MS = 25;

/** Kernels listed per model in the report. */
export const CNN_PROFILE_TOP = 6;

export async function benchCnn(ctx: Ctx): Promise<void> {
  const names = ctx.quick ? CNN_MODELS.quick : CNN_MODELS.full;
  for (const [i, name] of names.entries()) await benchOne(ctx, name, i === 0);
}

const VARIANT_LABEL: Record<CnnVariantInfo['variant'], string> = {
  portable: 'untuned portable (llvm)',
  native: 'untuned native (host)',
  tuned: 'tuned',
};

async function benchOne(ctx: Ctx, name: string, primary: boolean): Promise<void> {
  const built = ctx.cnn!;
  const m = built.index.models[name];
  const file = (f: string) => path.join(built.dir, f);
  const shape = `[${m.input.shape.join(',')}]`;
  const what = `${name} ${shape}`;

  // The same input for everyone, and the onnxruntime (Python) reference output.
  const x = readNpy(file(m.input.file));
  const reference = readNpy(file(m.output.file)).data as Float32Array;
  const input = Tensor.fromSync(x.data, { shape: x.shape, dtype: x.dtype });
  const fn = m.function;

  const check = (who: string, out: ArrayLike<number>): number => {
    const c = compare(out, reference, m.tolerance);
    if (!c.ok) throw new Error(`${name}: ${who} output differs from the reference (max |diff| ${c.maxAbsDiff})`);
    return c.maxAbsDiff;
  };

  // Each compile of the model, loaded and checked before anything is timed.
  interface Loaded {
    info: CnnVariantInfo;
    vm: VirtualMachine;
  }
  const loaded: Loaded[] = [];
  const load = async (
    variant: CnnVariantInfo['variant'],
    library: string,
    extra: Omit<CnnVariantInfo, 'variant' | 'library' | 'maxAbsDiff' | 'medianMs' | 'ratioVsOnnxruntime'>,
  ) => {
    const vm = await VirtualMachine.load(file(library), { concurrency: 4 });
    const [y] = outputsOf<Tensor>(vm.runSync(fn, input));
    const maxAbsDiff = check(`tvm-node (${variant})`, y.toFloat32ArraySync());
    y.disposeSync();
    loaded.push({ vm, info: { variant, library, maxAbsDiff, medianMs: null, ratioVsOnnxruntime: null, ...extra } });
  };
  await load('portable', m.library, { target: built.index.target, schedule: built.index.schedule, compileS: m.compile_s });
  for (const variant of ['native', 'tuned'] as const) {
    const v = m.variants?.[variant];
    if (!v) continue;
    if ('skipped' in v) {
      ctx.skipped.push({ group: 'cnn', name: `${what}: ${VARIANT_LABEL[variant]}`, skipped: v.skipped });
      continue;
    }
    const e = v as BenchVariantEntry;
    await load(variant, e.library, {
      target: e.target_summary,
      schedule: e.schedule,
      compileS: e.compile_s,
      ...(e.tuning
        ? {
            tuning: {
              tasks: e.tuning.tasks,
              tasksFromDatabase: e.tuning.tasks_from_database,
              trials: e.tuning.trials,
              seconds: e.tuning.seconds,
              costModel: e.tuning.cost_model,
              database: e.tuning.database,
              provenance: e.tuning_provenance ?? null,
            },
          }
        : {}),
    });
  }
  const portable = loaded[0].vm;

  const py = primary
    ? await ctx.peer.request({
        op: 'vm',
        id: name,
        path: file(m.library),
        func: fn,
        inputs: [file(m.input.file)],
        expect: file(m.output.file),
        tolerance: m.tolerance,
      })
    : null;

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

  const info: CnnModelInfo = {
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
    maxAbsDiff: { tvmPython: py ? py.maxAbsDiff : null, tvmNode: loaded[0].info.maxAbsDiff, onnxruntimeNode: ortDiff },
    toolchain: { onnx: built.index.onnx_version, onnxruntime: built.index.onnxruntime_version, tvm: built.index.tvm_version },
    dir: path.relative(repoRoot, built.dir),
    variants: loaded.map((l) => l.info),
    onnxruntimeNodeMs: null,
  };
  ctx.models.push(info);

  ctx.log(`cnn: ${what} (${loaded.map((l) => l.info.variant).join(', ')})`);
  const syncKey = (v: string) => (v === 'portable' ? 'sync' : v);
  const contenders: Contender[] = loaded.map((l) => ({
    key: syncKey(l.info.variant),
    name: `vm.runSync (${VARIANT_LABEL[l.info.variant]}: ${l.info.target})`,
    round: hrtimeLoop(() => dropAll(l.vm.runSync(fn, input))),
  }));
  if (primary) {
    contenders.push(...pumpContenders((k) => pumpRuns(portable, fn, [input], k)));
    contenders.push(ctx.peer.contender('py', `${ctx.pyName}: relax.VirtualMachine["${fn}"](x)`, name));
  }
  const ortName = ctx.ort ? `onnxruntime-node ${ctx.ort.version}: await session.run(feeds)` : '';
  if (session) contenders.push({ key: 'ort', name: ortName, round: sequential(() => session!.run(feeds)) });
  const t = await measure(contenders, ctx.rounds, ctx.roundMs, CNN_SETTLE_MS);

  if (primary) {
    ctx.cases.push(makeCase('cnn', `${what}: runSync vs Python`, 'us/run', t.sync, t.py, { goal: '~1 (same kernels)' }));
    for (const k of IN_FLIGHT) {
      ctx.cases.push(
        makeCase('cnn', `${what}: async run, ${k} in flight vs Python (sync)`, 'us/run', t[`a${k}`], t.py, {
          note: 'tvm-node figure is wall time / runs (inverse throughput)',
        }),
      );
    }
  }
  for (const l of loaded) {
    const mine = t[syncKey(l.info.variant)];
    l.info.medianMs = stats(mine.perOp).median / 1e6;
  }
  if (t.ort) {
    info.onnxruntimeNodeMs = stats(t.ort.perOp).median / 1e6;
    for (const l of loaded) {
      const v = l.info.variant;
      const label = v === 'portable' ? '' : ` ${v}`;
      const c = makeCase('cnn', `${what}${label}: runSync vs onnxruntime-node`, 'us/run', t[syncKey(v)], t.ort, { note: variantNote(l.info) });
      l.info.ratioVsOnnxruntime = c.ratio.median;
      ctx.cases.push(c);
    }
    if (primary) {
      for (const k of IN_FLIGHT) {
        ctx.cases.push(
          makeCase('cnn', `${what}: async run, ${k} in flight vs onnxruntime-node`, 'us/run', t[`a${k}`], t.ort, {
            note: 'portable build; onnxruntime-node runs on the JS thread (one at a time); tvm-node figure is wall time / runs',
          }),
        );
      }
    }
  } else {
    ctx.skipped.push({ group: 'cnn', name: `${what}: vs onnxruntime-node`, skipped: 'onnxruntime-node is not available (see the other skipped entry)' });
  }

  // Where the time goes: TVM's per-kernel profile (in the Python peer) of the tuned compile, or
  // of the fastest one when there is none.
  const fastest = loaded.reduce((a, b) => ((b.info.medianMs ?? Infinity) < (a.info.medianMs ?? Infinity) ? b : a));
  const profiled = loaded.find((l) => l.info.variant === 'tuned') ?? fastest;
  const prof = await ctx.peer.request({
    op: 'profile',
    path: file(profiled.info.library),
    func: fn,
    inputs: [file(m.input.file)],
    runs: ctx.quick ? 2 : 10,
    top: CNN_PROFILE_TOP,
  });
  info.profile = { variant: profiled.info.variant, runs: prof.runs, totalMs: prof.totalMs, kernels: prof.kernels } satisfies CnnProfile;

  await session?.release();
  for (const l of loaded) await l.vm.dispose();
  input.disposeSync();
}

function variantNote(v: CnnVariantInfo): string {
  if (v.variant === 'portable') return "kernel quality: untuned portable TVM build vs onnxruntime's own kernels";
  if (v.variant === 'native') return `untuned, this machine's CPU (${v.target}) vs onnxruntime's own kernels`;
  const tn = v.tuning;
  const made = tn?.provenance
    ? `database made with ${tn.provenance.trials} trials in ${Math.round(tn.provenance.seconds)} s (${tn.provenance.cost_model})`
    : 'database';
  const how = /blocked NCHW\[x\]c/.test(v.schedule) ? 'blocked NCHWc convolutions, MetaSchedule-tuned' : 'MetaSchedule-tuned';
  return `${how} (${v.target}; ${made}; this compile measured ${tn?.trials ?? 0} trials) vs onnxruntime's own kernels`;
}
