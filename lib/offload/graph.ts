/**
 * A split model as `tvm-node split` writes it (scripts/split_model.py): the graph manifest
 * `DIR/graph.json`, read and checked here, and the plans it allows.
 *
 * The model is cut at one or more cut sets; the stretch between two cuts is a segment, and
 * each segment holds one stage, or several when the cut leaves parallel branches. Every stage
 * exists for the device (`DIR/device/<stage>.so`, the local fallback) and as a model of the
 * server's repository (`DIR/server/`), also with its float32 inputs taken as float16 or int8.
 *
 * A {@link Plan} places each stage on the device or on the server. The plans a policy picks
 * from are split points: segments before point k run on the device, the rest on the server
 * (k = 0: all remote; k = segments: all local), with the tensors crossing at k sent as they
 * are or encoded.
 */
import fs from 'node:fs';
import path from 'node:path';
import { bytesPerElement, type DType, HOST_ARRAY } from '../dtype';
import { TvmValueError } from '../errors';
import { manifestProblem, oneLine, type TensorSpec, typeName } from '../manifest';

/** How the tensors crossing from the device to the server travel. */
export type Encoding = 'float32' | 'float16' | 'int8';
export const ENCODINGS: readonly Encoding[] = ['float32', 'float16', 'int8'];

/** A tensor with a static shape, as graph.json describes it. */
export interface StaticTensor extends TensorSpec {
  name: string;
  shape: number[];
}

/** One stage of a split model. */
export interface StageSpec {
  name: string;
  /** Its segment: stages of one segment are parallel branches. */
  segment: number;
  inputs: StaticTensor[];
  outputs: StaticTensor[];
  /** Whether the server has it. */
  remote: boolean;
  /** The device's build, relative to the split's folder. */
  device: { library: string; manifest?: string; content_hash?: string };
  /** The server's models: the stage, and its variants taking encoded inputs. */
  server: { model: string; encoded: Partial<Record<Encoding, string>>; content_hash?: string };
}

/** What crossing one cut costs, per encoding: bytes on the wire and the error it adds to the outputs (measured at split time). */
export interface CutSpec {
  tensors: Array<StaticTensor & { bytes: number }>;
  bytes: number;
  encodings: Partial<Record<Encoding, { bytes: number; max_abs_error: number }>>;
}

/** graph.json, checked. */
export interface SplitManifest {
  format: 'tvm-node-split/1';
  name: string;
  tvm_version?: string;
  inputs: StaticTensor[];
  outputs: StaticTensor[];
  cuts: CutSpec[];
  stages: StageSpec[];
  codec?: { library: string };
  repository: string;
  reference?: { inputs: string[]; outputs: string[]; by?: string };
  content_hash?: string;
}

/** Where each stage runs. */
export type Placement = 'local' | 'remote';

/**
 * Where each stage of one frame runs, and how the tensors going to the server travel.
 * `split` is set for split-point plans (see the module's documentation).
 */
export interface Plan {
  /** Stage name -> placement. */
  placements: Record<string, Placement>;
  encoding: Encoding;
  split?: number;
  /** A short name: `local`, `remote`, `split@1`, `split@1/float16`, or `custom`. */
  label: string;
}

/** A split folder that cannot be used; the message says which file and what is wrong. */
export class SplitManifestError extends TvmValueError {
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super('ValueError', `split ${file} ${oneLine(problem)}`);
  }
}

/** A split model's manifest and folder. */
export class SplitGraph {
  /** The stages in graph order (by segment). */
  readonly stages: readonly StageSpec[];
  /** Number of segments (cuts + 1). */
  readonly segments: number;

  private constructor(
    /** The split's folder (absolute). */
    readonly dir: string,
    readonly manifest: SplitManifest,
  ) {
    this.stages = [...manifest.stages].sort((a, b) => a.segment - b.segment);
    this.segments = manifest.cuts.length + 1;
  }

  /** Reads and checks `DIR/graph.json`; a {@link SplitManifestError} says what is wrong. */
  static read(dir: string): SplitGraph {
    const abs = path.resolve(dir);
    const file = path.join(abs, 'graph.json');
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new SplitManifestError(file, code === 'ENOENT' ? 'is missing: is this a folder written by `tvm-node split`?' : `cannot be read (${code})`);
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new SplitManifestError(file, `is not valid JSON (${(err as Error).message})`);
    }
    const problem = splitProblem(value);
    if (problem) throw new SplitManifestError(file, problem);
    return new SplitGraph(abs, value as SplitManifest);
  }

  /** A path of the split, absolute. */
  file(relative: string): string {
    return path.join(this.dir, relative);
  }

  /** The tensors crossing from the device to the server at split point k (the model's inputs at 0, none at the end). */
  crossing(k: number): StaticTensor[] {
    if (k <= 0) return this.manifest.inputs;
    return k >= this.segments ? [] : this.manifest.cuts[k - 1].tensors;
  }

  /** Bytes crossing at split point k with an encoding (as the split measured them; the model's inputs count float32-sized for 0). */
  crossingBytes(k: number, encoding: Encoding): number {
    if (k >= this.segments) return 0;
    if (k > 0) {
      const cut = this.manifest.cuts[k - 1];
      return cut.encodings[encoding]?.bytes ?? cut.bytes;
    }
    return this.manifest.inputs.reduce((n, t) => n + encodedBytes(t, encoding), 0);
  }

  /** Bytes of the model's outputs (what comes back from a remote suffix). */
  get outputBytes(): number {
    return this.manifest.outputs.reduce((n, t) => n + tensorBytes(t), 0);
  }

  /** The error an encoding adds to the outputs when used at split point k (0 for float32 and for the ends). */
  encodingError(k: number, encoding: Encoding): number {
    if (encoding === 'float32' || k >= this.segments) return 0;
    if (k === 0) return Number.POSITIVE_INFINITY; // not measured by the split
    return this.manifest.cuts[k - 1].encodings[encoding]?.max_abs_error ?? Number.POSITIVE_INFINITY;
  }

  /** Whether the server has a variant of every stage of segment k that takes `encoding`. */
  hasEncoding(k: number, encoding: Encoding): boolean {
    if (encoding === 'float32') return true;
    const first = this.stages.filter((s) => s.segment === k);
    return first.length > 0 && first.every((s) => !s.inputs.some((t) => t.dtype === 'float32') || s.server.encoded[encoding] !== undefined);
  }

  /** The plan of split point k (0..segments) with an encoding for the crossing tensors. */
  splitPlan(k: number, encoding: Encoding = 'float32'): Plan {
    if (!Number.isInteger(k) || k < 0 || k > this.segments)
      throw new TvmValueError(
        'ValueError',
        `split point ${k} is out of range: ${this.manifest.name} has split points 0 (all remote) to ${this.segments} (all local)`,
      );
    const placements = Object.fromEntries(this.stages.map((s) => [s.name, s.segment < k ? 'local' : 'remote'] as const));
    const enc = k === this.segments ? 'float32' : encoding;
    if (!this.hasEncoding(k, enc)) throw new TvmValueError('ValueError', `the server has no ${enc} variant of segment ${k}'s stages`);
    for (const s of this.stages) if (placements[s.name] === 'remote' && !s.remote) throw new TvmValueError('ValueError', `stage ${s.name} cannot run remotely`);
    const label = k === 0 ? 'remote' : k === this.segments ? 'local' : `split@${k}`;
    return { placements, encoding: enc, split: k, label: enc === 'float32' ? label : `${label}/${enc}` };
  }

  /** A plan placing stages one by one (e.g. one parallel branch on the server); stages not named run locally. */
  customPlan(placements: Readonly<Record<string, Placement>>, encoding: Encoding = 'float32'): Plan {
    const all: Record<string, Placement> = {};
    for (const s of this.stages) {
      const p = placements[s.name] ?? 'local';
      if (p !== 'local' && p !== 'remote')
        throw new TvmValueError('ValueError', `placement of stage ${s.name} must be 'local' or 'remote', not ${JSON.stringify(p)}`);
      if (p === 'remote' && !s.remote) throw new TvmValueError('ValueError', `stage ${s.name} cannot run remotely`);
      all[s.name] = p;
    }
    const unknown = Object.keys(placements).filter((n) => !this.stages.some((s) => s.name === n));
    if (unknown.length)
      throw new TvmValueError('ValueError', `no stage ${unknown.join(', ')} in ${this.manifest.name} (stages: ${this.stages.map((s) => s.name).join(', ')})`);
    // A split-point plan by another name gets its label (and its measurements).
    for (let k = 0; k <= this.segments; k++) {
      const p = this.splitPlan(k, 'float32');
      if (this.stages.every((s) => p.placements[s.name] === all[s.name]) && (encoding === 'float32' || this.hasEncoding(k, encoding)))
        return this.splitPlan(k, encoding);
    }
    return { placements: all, encoding, label: 'custom' };
  }

  /** Every split-point plan with the encodings the server has. */
  splitPlans(encodings: readonly Encoding[] = ENCODINGS): Plan[] {
    const plans: Plan[] = [];
    for (let k = 0; k <= this.segments; k++) {
      for (const e of encodings) {
        if (k === this.segments && e !== 'float32') continue;
        if (this.hasEncoding(k, e)) plans.push(this.splitPlan(k, e));
      }
    }
    return plans;
  }
}

/** A static tensor's size in bytes. */
export function tensorBytes(t: StaticTensor): number {
  return t.shape.reduce((n, d) => n * d, 1) * bytesPerElement(t.dtype as DType);
}

/** A tensor's size on the wire when its float32 data travels encoded (int8 adds a float32 scale). */
export function encodedBytes(t: StaticTensor, encoding: Encoding): number {
  if (t.dtype !== 'float32' || encoding === 'float32') return tensorBytes(t);
  const n = t.shape.reduce((a, d) => a * d, 1);
  return encoding === 'float16' ? 2 * n : n + 4;
}

const isStatic = (t: TensorSpec): t is StaticTensor => typeof t.name === 'string' && t.shape.every((d) => typeof d === 'number');

/** What is wrong with a parsed graph.json (completing "split FILE ..."), or undefined. */
function splitProblem(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return `must hold a JSON object, not ${typeName(v)}`;
  const m = v as Record<string, unknown>;
  if (m.format !== 'tvm-node-split/1') return `has format ${JSON.stringify(m.format)}: this tvm-node reads "tvm-node-split/1" (split the model again)`;
  if (typeof m.name !== 'string') return 'has no "name"';
  const tensors = (key: string, value: unknown): string | undefined => {
    const problem = manifestProblem({ inputs: value });
    if (problem) return problem.replace('"inputs"', `"${key}"`);
    if (!(value as TensorSpec[]).every(isStatic)) return `has "${key}" with an unnamed tensor or a size that is not a number (split with --input-shape)`;
    const odd = (value as TensorSpec[]).find((t) => !(t.dtype in HOST_ARRAY));
    if (odd) return `has "${key}" with dtype ${JSON.stringify(odd.dtype)}, which tvm-node does not support`;
    return undefined;
  };
  const top = tensors('inputs', m.inputs) ?? tensors('outputs', m.outputs);
  if (top) return top;
  if (!Array.isArray(m.cuts)) return 'has no "cuts" array';
  if (!Array.isArray(m.stages) || m.stages.length === 0) return 'has no "stages"';
  for (const [i, c] of (m.cuts as unknown[]).entries()) {
    const cut = c as Partial<CutSpec> | null;
    const problem = tensors(`cuts[${i}].tensors`, cut?.tensors);
    if (problem) return problem;
    if (typeof cut?.bytes !== 'number' || typeof cut.encodings !== 'object' || cut.encodings === null) return `has cuts[${i}] without "bytes" or "encodings"`;
  }
  const segments = (m.cuts as unknown[]).length + 1;
  const names = new Set<string>();
  for (const [i, s] of (m.stages as unknown[]).entries()) {
    const st = s as Partial<StageSpec> | null;
    const at = `stages[${i}]`;
    if (typeof st?.name !== 'string' || names.has(st.name)) return `has ${at} without a name, or a name used twice`;
    names.add(st.name);
    if (!Number.isInteger(st.segment) || st.segment! < 0 || st.segment! >= segments)
      return `has ${at}.segment ${JSON.stringify(st.segment)}: segments are 0..${segments - 1}`;
    const problem = tensors(`${at}.inputs`, st.inputs) ?? tensors(`${at}.outputs`, st.outputs);
    if (problem) return problem;
    if (typeof st.device?.library !== 'string') return `has ${at} without "device"."library"`;
    if (typeof st.server?.model !== 'string' || typeof st.server.encoded !== 'object') return `has ${at} without "server"."model" and "encoded"`;
  }
  if (typeof m.repository !== 'string') return 'has no "repository"';
  return undefined;
}
