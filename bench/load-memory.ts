/**
 * Memory of loading a model (issue 13): the peak RSS while loading against the RSS the
 * process settles at once loaded, for tvm-node and for onnxruntime-node on the same model.
 *
 *   npx tsx bench/load-memory.ts [--model resnet50|resnet18] [--runs N] [--stock] [--json]
 *   npx tsx bench/load-memory.ts --so model.so --onnx model.onnx
 *
 * The model: a ResNet with seeded random weights built as ONNX (scripts/resnet_onnx.py;
 * ResNet-50: 25.6 M parameters, 98 MiB) and compiled by `tvm-node compile` (weights embedded
 * in the .so as VM constants), cached by content hash in .cache/mem/. `--stock` adds
 * tvm-node loading through TVM's own loader (TVM_NODE_STOCK_LOAD=1), the way it loaded before
 * native/library_load.cc.
 *
 * Each load runs in a fresh child process (`--expose-gc`): `base` is VmRSS just before the
 * load, `peak` the kernel's high-water mark (VmHWM, reset just before the load by writing 5 to
 * /proc/self/clear_refs) when the load has returned, `loaded` VmRSS right after the load (after
 * a GC), with its anonymous and file-backed parts, `afterRun` VmRSS after one inference.
 * Figures are the median over the runs.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { cpuKey } from './cpu';

/** One load, in MiB (loadMs: milliseconds). */
export interface LoadMemory {
  base: number;
  peak: number;
  loaded: number;
  loadedAnon: number;
  loadedFile: number;
  afterRun: number;
  loadMs: number;
  /** sha256 of the first output's bytes for an input of sin(0.37 i). */
  outputHash: string;
}

export type Runtime = 'tvm-node' | 'tvm-node (TVM loader)' | 'onnxruntime-node';

const repoRoot = path.resolve(__dirname, '..');
const python = path.join(repoRoot, 'tvm', '.venv', 'bin', 'python');

function status(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of fs.readFileSync('/proc/self/status', 'utf8').split('\n')) {
    const m = /^(\w+):\s+(\d+) kB/.exec(line);
    if (m) out[m[1]] = Number(m[2]) / 1024;
  }
  return out;
}

const gc = () => (globalThis as { gc?: () => void }).gc?.();

function input(n: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.sin(i * 0.37);
  return x;
}

const sizeOf = (shape: readonly unknown[] | null) => (shape ?? []).reduce<number>((a, d) => a * (typeof d === 'number' ? d : 1), 1);

/** In the child: load `file`, print the figures as one JSON line. */
async function child(who: Runtime, file: string): Promise<void> {
  // Everything a load needs is imported before the baseline is taken.
  let load: () => Promise<() => Promise<Uint8Array>>;
  if (who === 'onnxruntime-node') {
    const ort = require('onnxruntime-node') as typeof import('onnxruntime-node');
    load = async () => {
      const session = await ort.InferenceSession.create(file);
      return async () => {
        const meta = session.inputMetadata[0] as { name: string; shape: readonly unknown[] };
        const shape = meta.shape.map((d) => (typeof d === 'number' ? d : 1));
        const out = await session.run({ [meta.name]: new ort.Tensor('float32', input(sizeOf(shape)), shape) });
        const y = out[session.outputNames[0]].data as Float32Array;
        return new Uint8Array(y.buffer, y.byteOffset, y.byteLength);
      };
    };
  } else {
    const { Model } = await import('../lib');
    load = async () => {
      const model = await Model.load(file);
      return async () => {
        const spec = model.inputs[0];
        const out = await model.run({ [spec.name]: input(sizeOf(spec.shape)) });
        const tensors = Object.values(out);
        const y = (await tensors[0].toArray()) as Float32Array;
        for (const t of tensors) await t.dispose();
        return new Uint8Array(y.buffer, y.byteOffset, y.byteLength);
      };
    };
  }
  gc();
  const before = status();
  fs.writeFileSync('/proc/self/clear_refs', '5'); // VmHWM := VmRSS
  const t0 = performance.now();
  const run = await load();
  const loadMs = performance.now() - t0;
  const peak = status().VmHWM;
  gc();
  const loaded = status();
  const y = await run();
  gc();
  const result: LoadMemory = {
    base: before.VmRSS,
    peak,
    loaded: loaded.VmRSS,
    loadedAnon: loaded.RssAnon,
    loadedFile: loaded.RssFile,
    afterRun: status().VmRSS,
    loadMs,
    outputHash: crypto.createHash('sha256').update(y).digest('hex'),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

/** Loads `file` with `who` in a fresh process and returns what it measured. */
export function measureLoad(who: Runtime, file: string): LoadMemory {
  const env = { ...process.env };
  if (who === 'tvm-node (TVM loader)') env.TVM_NODE_STOCK_LOAD = '1';
  else delete env.TVM_NODE_STOCK_LOAD;
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', __filename, '--child', who, file], {
    cwd: repoRoot,
    env,
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`${who}: loading ${file} failed (status ${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as LoadMemory;
}

/** The models this measures: ResNet depth and input size (the weights do not depend on it). */
export const MODELS = {
  resnet50: { depth: 50, resolution: 224 },
  resnet18: { depth: 18, resolution: 64 },
} as const;
export type ModelName = keyof typeof MODELS;

/** What makes the compiled artifact, besides the model's arguments. */
const RECIPE_FILES = ['scripts/resnet_onnx.py', 'scripts/compile_model.py', 'scripts/nchwc.py', 'lib/cli/compile.ts', 'tvm/requirements.txt'];

/**
 * The model as ONNX and compiled by `tvm-node compile` (target host), cached in
 * .cache/mem/<key>-<name>/ (key: sha256 over RECIPE_FILES, the arguments and this CPU).
 */
export function memoryModel(name: ModelName): { onnx: string; so: string; weightsMiB: number } {
  const { depth, resolution } = MODELS[name];
  const h = crypto.createHash('sha256');
  for (const f of RECIPE_FILES)
    h.update(
      `${f}:${crypto
        .createHash('sha256')
        .update(fs.readFileSync(path.join(repoRoot, f)))
        .digest('hex')}\n`,
    );
  h.update(`depth:${depth} resolution:${resolution}\ncpu:${cpuKey()}\n`);
  const folder = path.join(repoRoot, '.cache', 'mem', `${h.digest('hex').slice(0, 16)}-${name}`);
  const onnx = path.join(folder, `${name}.onnx`);
  const so = path.join(folder, `${name}.so`);
  if (!fs.existsSync(path.join(folder, `${name}.json`))) {
    const staged = `${folder}.tmp-${process.pid}`;
    fs.rmSync(staged, { recursive: true, force: true });
    fs.mkdirSync(staged, { recursive: true });
    try {
      const o = path.join(staged, `${name}.onnx`);
      execFileSync(python, [path.join(repoRoot, 'scripts', 'resnet_onnx.py'), o, '--depth', `${depth}`, '--resolution', `${resolution}`], { stdio: 'inherit' });
      execFileSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'lib', 'cli.ts'), 'compile', o, '-o', path.join(staged, `${name}.so`)], {
        cwd: repoRoot,
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      fs.renameSync(staged, folder);
    } catch (err) {
      fs.rmSync(staged, { recursive: true, force: true });
      if (!fs.existsSync(path.join(folder, `${name}.json`))) throw err; // else another run published it
    }
  }
  // The ONNX file is its weights, near enough (the graph itself is a few kB).
  return { onnx, so, weightsMiB: fs.statSync(onnx).size / 2 ** 20 };
}

export interface Row {
  who: Runtime;
  file: string;
  runs: LoadMemory[];
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function table(rows: Row[]): string {
  const f = (x: number) => x.toFixed(0);
  const lines = [
    '| runtime | file MiB | before load | peak while loading | after load (anon + file) | peak / after load | peak - after load | after one run | load ms |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const { who, file, runs } of rows) {
    const m = (k: Exclude<keyof LoadMemory, 'outputHash'>) => median(runs.map((r) => r[k]));
    lines.push(
      `| ${who} | ${f(fs.statSync(file).size / 2 ** 20)} | ${f(m('base'))} | ${f(m('peak'))} | ${f(m('loaded'))} (${f(m('loadedAnon'))} + ${f(m('loadedFile'))}) | ${median(runs.map((r) => r.peak / r.loaded)).toFixed(2)} | ${f(median(runs.map((r) => r.peak - r.loaded)))} | ${f(m('afterRun'))} | ${f(m('loadMs'))} |`,
    );
  }
  return lines.join('\n');
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === '--child') return child(argv[1] as Runtime, argv[2]);
  const arg = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const runs = Number(arg('--runs') ?? 3);
  const name = (arg('--model') ?? 'resnet50') as ModelName;
  if (!(name in MODELS)) throw new Error(`--model: one of ${Object.keys(MODELS).join(', ')}`);
  const so = arg('--so');
  const onnx = arg('--onnx');
  const files = so && onnx ? { so: path.resolve(so), onnx: path.resolve(onnx) } : memoryModel(name);
  const contenders: [Runtime, string][] = [['tvm-node', files.so]];
  if (argv.includes('--stock')) contenders.push(['tvm-node (TVM loader)', files.so]);
  contenders.push(['onnxruntime-node', files.onnx]);
  const rows: Row[] = contenders.map(([who, file]) => ({ who, file, runs: [] }));
  for (let i = 0; i < runs; i++) for (const row of rows) row.runs.push(measureLoad(row.who, row.file)); // interleaved
  if (argv.includes('--json')) {
    process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
    return;
  }
  console.log(`${path.relative(repoRoot, files.so)}: RSS in MiB, median of ${runs} fresh processes each`);
  console.log(table(rows));
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
