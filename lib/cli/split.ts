/**
 * `tvm-node split`: the build side of edge offloading. An ONNX model is cut at tensors into
 * stages (parallel branches become parallel stages), each compiled for the device and for
 * the server, with the server's stages in a model repository that `tvm-node rpc-server
 * --models DIR/server` serves as is, encoded entry points for slow links (float16, int8),
 * a codec for the device, and `DIR/graph.json`, the manifest the offloading runtime reads.
 * The work is scripts/split_model.py, run like `compile` (lib/cli/python-tool.ts).
 */
import path from 'node:path';
import type { InputShape } from './compile';
import { UsageError } from './errors';
import type { StageProgress } from './progress';
import { checkModelFile, runPythonTool } from './python-tool';

/** What `split` was asked to do. */
export interface SplitOptions {
  /** The `.onnx` model. */
  model: string;
  /** The folder to write (graph.json, device/, server/, reference/). */
  out: string;
  /** The cuts, each tensor names that together separate the graph (one `--cut` each). */
  cuts: readonly string[][];
  /** Device and server targets: a preset, a TVM target kind or a TVM target as JSON. Default `llvm`. */
  deviceTarget?: string;
  serverTarget?: string;
  inputShapes?: readonly InputShape[];
  /** The server models' base name (default: the model file's stem). */
  name?: string;
  /** The Python with TVM (default: $TVM_NODE_PYTHON, else the checkout's tvm/.venv). */
  python?: string;
  /** Pass the compiler's own output through to stderr. */
  verbose?: boolean;
}

/** A tensor of the split (static shapes only). */
export interface SplitTensor {
  name: string;
  shape: number[];
  dtype: string;
}

/** Bytes of a cut on the wire in one encoding, and the largest error it causes in the model's outputs. */
export interface CutEncoding {
  bytes: number;
  /** max |output - onnxruntime's output of the unsplit model|; null when nothing could run it here. */
  max_abs_error: number | null;
}

/** A cut: the tensors that cross it (from the device to the server when offloaded there). */
export interface SplitCut {
  tensors: Array<SplitTensor & { bytes: number }>;
  bytes: number;
  /** `float16` and `int8` only when the cut has float32 tensors (the others cross as they are). */
  encodings: { float32: CutEncoding; float16?: CutEncoding; int8?: CutEncoding };
}

/** One compiled stage; stages of one segment are parallel branches. */
export interface SplitStage {
  name: string;
  segment: number;
  inputs: SplitTensor[];
  outputs: SplitTensor[];
  remote: boolean;
  /** Paths relative to the split's folder. */
  device: { library: string; manifest: string; content_hash: string };
  /** Model names in the server repository; `encoded` is empty for a stage without float32 inputs. */
  server: { model: string; encoded: { float16?: string; int8?: string }; content_hash: string };
}

/** `DIR/graph.json`, format `tvm-node-split/1` (README, "tvm-node split"). */
export interface SplitGraph {
  format: 'tvm-node-split/1';
  name: string;
  source: { file: string; sha256: string };
  tvm_version: string;
  device_target: Record<string, unknown>;
  server_target: Record<string, unknown>;
  inputs: SplitTensor[];
  outputs: SplitTensor[];
  cuts: SplitCut[];
  stages: SplitStage[];
  codec: { library: string };
  repository: string;
  reference: { inputs: string[]; outputs: string[]; by: string };
  /** How the chain was checked against the reference (`by` null: no target runs on the machine that split). */
  check: { by: string | null; tolerance?: { rtol: number; atol: number }; max_abs_error?: number; note?: string };
  content_hash: string;
}

/** What scripts/split_model.py reports on success. */
export interface SplitResult {
  /** The split's folder, absolute. */
  dir: string;
  graph: SplitGraph;
  seconds: number;
  /** Seconds per step. */
  stages: Record<string, number>;
}

/** A tensor that alone separates the graph's inputs from its outputs. */
export interface CutPoint {
  name: string;
  shape: Array<number | string | null> | null;
  dtype: string | null;
  bytes: number | null;
  /** The operator producing it, and its node's name if it has one. */
  op: string;
  node: string | null;
  /** Its producing node's position in the graph. */
  index: number;
}

/** What `--list-cuts` reports. */
export interface CutList {
  model: string;
  inputs: SplitTensor[];
  outputs: SplitTensor[];
  cuts: CutPoint[];
  hint: string;
}

/** Parses one `--cut` value: tensor names joined by commas. */
export function parseCut(text: string): string[] {
  const names = text
    .split(',')
    .map((n) => n.trim())
    .filter(Boolean);
  if (names.length === 0) throw new UsageError('no tensor names', 'give NAME, or NAME,NAME,... for a cut of several tensors');
  return names;
}

const shapeArgs = (shapes: readonly InputShape[] = []) => shapes.flatMap((s) => ['--input-shape', `${s.name}=${s.shape.join(',')}`]);

/** Splits and compiles the model (scripts/split_model.py in the toolchain's Python), showing progress. */
export async function splitModel(opts: SplitOptions, progress?: StageProgress): Promise<SplitResult> {
  checkModelFile(opts.model);
  if (opts.cuts.length === 0) throw new UsageError('give at least one --cut', '`tvm-node split MODEL --list-cuts` lists the tensors that cut the graph');
  const args = [opts.model, '-o', opts.out, '--device-target', opts.deviceTarget ?? 'llvm', '--server-target', opts.serverTarget ?? 'llvm'];
  for (const cut of opts.cuts) args.push('--cut', cut.join(','));
  args.push(...shapeArgs(opts.inputShapes));
  if (opts.name !== undefined) args.push('--name', opts.name);
  return runPythonTool<SplitResult>({ script: 'split_model.py', args, command: 'split', python: opts.python, verbose: opts.verbose }, progress);
}

/** The model's single-tensor cut points, in graph order. */
export async function listCuts(opts: Pick<SplitOptions, 'model' | 'inputShapes' | 'python' | 'verbose'>): Promise<CutList> {
  checkModelFile(opts.model);
  const args = [opts.model, '--list-cuts', ...shapeArgs(opts.inputShapes)];
  return runPythonTool<CutList>({ script: 'split_model.py', args, command: 'split', python: opts.python, verbose: opts.verbose });
}

const dims = (shape: ReadonlyArray<number | string | null> | null) => (shape ? `[${shape.map((d) => (d === null ? '?' : d)).join(', ')}]` : '[?]');
const tensor = (t: SplitTensor) => `${t.name} ${t.dtype}${dims(t.shape)}`;

/** 1536 -> "1.5 KiB". */
export function formatBytes(n: number | null): string {
  if (n === null) return '?';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

/** `llvm x86_64-linux-gnu znver3`, `cuda sm_87 (host llvm aarch64-linux-gnu cortex-a78ae)`. */
export function targetSummary(t: Record<string, unknown>): string {
  const part = (x: Record<string, unknown>) => [x.kind, x.arch, x.mtriple, x.mcpu].filter((v) => typeof v === 'string' && v).join(' ');
  const host = t.host && typeof t.host === 'object' ? ` (host ${part(t.host as Record<string, unknown>)})` : '';
  return part(t) + host;
}

const error = (e: CutEncoding) => (e.max_abs_error === null ? 'not measured' : `max error ${e.max_abs_error.toExponential(1)}`);

/** The human-readable report of a split. */
export function formatSplitResult(r: SplitResult, model: string): string {
  const g = r.graph;
  const rel = path.relative(process.cwd(), r.dir) || '.';
  const server = path.join(rel, g.repository);
  const encoded = g.stages.reduce((n, s) => n + Object.keys(s.server.encoded).length, 0);
  const lines = [
    `split ${model} at ${g.cuts.length} cut${g.cuts.length === 1 ? '' : 's'} into ${g.stages.length} stages in ${r.seconds.toFixed(1)} s: ${rel}`,
    '  stages',
    ...g.stages.map((s) => `    ${s.name.padEnd(4)}segment ${s.segment}  ${s.inputs.map(tensor).join(', ')} -> ${s.outputs.map(tensor).join(', ')}`),
    '  cuts (bytes sent per encoding; largest output error vs onnxruntime on the reference input)',
  ];
  g.cuts.forEach((c, k) => {
    lines.push(`    cut ${k}  ${c.tensors.map((t) => t.name).join(', ')}`);
    for (const [name, e] of Object.entries(c.encodings)) lines.push(`      ${name.padEnd(8)}${formatBytes(e.bytes).padStart(10)}  ${error(e)}`);
  });
  lines.push(
    `  device   ${path.join(rel, 'device')}: ${g.stages.map((s) => path.basename(s.device.library)).join(', ')} + codec.so (${targetSummary(g.device_target)})`,
    `  server   ${server}: ${g.stages.length} models + ${encoded} encoded (${targetSummary(g.server_target)})`,
    `  serve    tvm-node rpc-server --models ${server}`,
    g.check.by
      ? `  checked  ${g.check.by} vs ${g.reference.by}: max |diff| ${g.check.max_abs_error?.toExponential(1)}`
      : `  checked  no: ${g.check.note ?? 'neither target runs here'}`,
    `  manifest ${path.join(rel, 'graph.json')}`,
  );
  return lines.join('\n');
}

/** The human-readable table of `--list-cuts`. */
export function formatCutList(r: CutList): string {
  const rows = r.cuts.map((c) => [String(c.index), c.name, c.op, dims(c.shape), c.dtype ?? '?', formatBytes(c.bytes)]);
  const head = ['node', 'tensor', 'op', 'shape', 'dtype', 'bytes'];
  const widths = head.map((h, k) => Math.max(h.length, ...rows.map((row) => row[k].length)));
  const line = (cells: string[]) => `  ${cells.map((c, k) => (k === 5 ? c.padStart(widths[k]) : c.padEnd(widths[k]))).join('  ')}`.trimEnd();
  return [
    `${r.model}: ${r.cuts.length} single-tensor cut point${r.cuts.length === 1 ? '' : 's'} (${r.inputs.map(tensor).join(', ')} -> ${r.outputs.map(tensor).join(', ')})`,
    line(head),
    ...rows.map(line),
    `${r.hint}.`,
  ].join('\n');
}
