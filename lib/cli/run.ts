/**
 * `tvm-node run`: one call of a model function on inputs from `.npy` files, with a summary
 * of each output and, optionally, the outputs written as `.npy` files.
 */
import fs from 'node:fs';
import path from 'node:path';
import { checkInputs } from '../bind';
import type { Device } from '../device';
import { metadataOfFile } from '../model';
import { writeNpy } from '../npy';
import { Tensor } from '../tensor';
import { outputsOf } from '../vm';
import { withHint } from './errors';
import { bindInputs, describeArray, type InputSpec, inputTensor } from './inputs';
import { openModel, signatureOf, syncDevice } from './model';
import { formatNumber, type ValueStats, valueStats } from './stats';

/** What `run` was asked to do. */
export interface RunOptions {
  model: string;
  inputs: readonly InputSpec[];
  device: Device;
  function: string;
  /** Folder to write `<output name>.npy` into (created if missing). */
  out?: string;
}

/** One output of the call. */
export interface OutputSummary {
  /** The model's name for it (manifest), else `output<i>`; nested in a tuple output: `<name>_<j>`. */
  name: string;
  /** Tensors have shape, dtype, device and stats; other values (shapes, scalars) a `value`. */
  shape?: number[];
  dtype?: string;
  device?: string;
  stats?: ValueStats | null;
  value?: string;
  /** Where it was written, with `--out`. */
  file?: string;
  /** Why it was written differently or not at all. */
  note?: string;
}

/** The result of `run`. */
export interface RunResult {
  model: string;
  function: string;
  signature: string;
  device: string;
  inputs: Array<{ name: string; shape: number[]; dtype: string; file: string }>;
  outputs: OutputSummary[];
  /** Time of the call itself (device work included), inputs and outputs aside. */
  timeMs: number;
}

/**
 * Flattens a VM result (nested tuples included) into named outputs: output i takes `names[i]`
 * (the model's output names) or `output<i>`; an output nested in a tuple is `<name>_<j>`.
 */
export function flattenOutputs(result: unknown, names: readonly string[] = []): Array<{ name: string; value: unknown }> {
  const out: Array<{ name: string; value: unknown }> = [];
  const walk = (v: unknown, name: string) => {
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${name}_${i}`));
    else out.push({ name, value: v });
  };
  outputsOf(result).forEach((v, i) => walk(v, names[i] ?? `output${i}`));
  return out;
}

/** The values of a tensor as numbers / bigints, float16 and bfloat16 decoded. */
async function tensorValues(t: Tensor): Promise<ArrayLike<number | bigint>> {
  return t.dtype === 'float16' || t.dtype === 'bfloat16' ? t.toFloat32Array() : ((await t.toArray()) as ArrayLike<number | bigint>);
}

async function summarize(name: string, value: unknown, outDir?: string): Promise<OutputSummary> {
  if (!(value instanceof Tensor)) {
    return { name, value: String(value), note: outDir ? 'not a tensor, not written' : undefined };
  }
  const values = await tensorValues(value);
  const s: OutputSummary = { name, shape: value.shape, dtype: value.dtype, device: String(value.device), stats: valueStats(values) };
  if (outDir) {
    s.file = path.join(outDir, `${name}.npy`);
    if (value.dtype === 'bfloat16') {
      // .npy has no bfloat16: write the values as float32.
      writeNpy(s.file, { data: values as Float32Array, shape: value.shape, dtype: 'float32' });
      s.note = 'bfloat16 written as float32';
    } else {
      writeNpy(s.file, value);
    }
  }
  return s;
}

/** Loads the model, calls the function once and summarizes (and writes) its outputs. */
export async function runModel(opts: RunOptions): Promise<RunResult> {
  const { vm, fn: vmFn } = await openModel(opts.model, opts.device, opts.function, 1);
  const tensors: Tensor[] = [];
  try {
    // Inputs by the model's names (the manifest's, e.g. ONNX names, else the parameters'),
    // checked against its shapes and dtypes before the call (lib/bind.ts).
    const meta = metadataOfFile(vm, opts.model, vmFn.name);
    const fn = { ...vmFn, params: meta.inputs.map((i) => i.name) };
    const bound = bindInputs(fn, opts.inputs);
    const inputs = bound.map((b) => {
      const t = inputTensor(b, opts.device);
      tensors.push(t);
      return { name: b.name, shape: t.shape, dtype: t.dtype, file: b.source.kind === 'file' ? b.source.file : '' };
    });
    const hint = () => {
      const given = inputs.map((i) => `${i.name} ${describeArray(i.shape, i.dtype)}`).join(', ');
      return `${signatureOf(fn)} was called with ${given || 'no inputs'}; check them against the shapes and dtypes the model was compiled for`;
    };
    try {
      checkInputs(meta.inputs, tensors, { model: `model '${meta.name}'` });
    } catch (err) {
      throw withHint(err, hint());
    }
    const started = process.hrtime.bigint();
    let result: unknown;
    try {
      result = await vm.run(fn.name, ...tensors);
      await syncDevice(opts.device);
    } catch (err) {
      throw withHint(err, hint());
    }
    const timeMs = Number(process.hrtime.bigint() - started) / 1e6;
    const outputs = flattenOutputs(
      result,
      meta.outputs.map((o) => o.name),
    );
    for (const o of outputs) if (o.value instanceof Tensor) tensors.push(o.value);
    if (opts.out) fs.mkdirSync(opts.out, { recursive: true });
    const summaries: OutputSummary[] = [];
    for (const o of outputs) summaries.push(await summarize(o.name, o.value, opts.out));
    return {
      model: path.resolve(opts.model),
      function: fn.name,
      signature: signatureOf(fn),
      device: String(opts.device),
      inputs,
      outputs: summaries,
      timeMs,
    };
  } finally {
    // The inputs it made and the outputs it got are released here; the VM owns its module.
    await Promise.all(tensors.map((t) => t.dispose()));
    await vm.dispose();
  }
}

/** The human-readable report of a run. */
export function formatRunResult(r: RunResult): string {
  const rows: string[] = [];
  const width = Math.max(8, ...r.inputs.map((i) => i.name.length + 6), ...r.outputs.map((o) => o.name.length)) + 2;
  const row = (label: string, text: string) => rows.push(`${label.padEnd(width)}${text}`);
  row('model', r.model);
  row('function', `${r.signature} on ${r.device}`);
  for (const i of r.inputs) row(`input ${i.name}`, `${describeArray(i.shape, i.dtype)}  from ${i.file}`);
  for (const o of r.outputs) {
    if (o.value !== undefined) {
      row(o.name, `${o.value}${o.note ? `  (${o.note})` : ''}`);
      continue;
    }
    const st = o.stats;
    const stats = !st ? 'empty' : `min ${formatNumber(st.min)}  max ${formatNumber(st.max)}  mean ${formatNumber(st.mean)}${st.nan ? `  (${st.nan} NaN)` : ''}`;
    row(o.name, `${describeArray(o.shape!, o.dtype!)}  ${stats}`);
    if (o.file) row('', `-> ${o.file}${o.note ? `  (${o.note})` : ''}`);
  }
  row('time', `${formatNumber(r.timeMs, 4)} ms`);
  return rows.join('\n');
}
