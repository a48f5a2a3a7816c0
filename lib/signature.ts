/**
 * What a compiled Relax artifact itself says about a function's inputs and outputs.
 *
 * TVM keeps no signature table in a Relax VM executable, but it keeps the checks it runs on
 * every call, and those carry the signature:
 *
 * - each parameter is checked by `vm.builtin.check_tensor_info` / `vm.builtin.match_shape`
 *   with an error-context string in the constant pool,
 *   `ErrorContext(fn=main, loc=param[0], param=x, annotation=R.Tensor((n, 4), dtype="float32"))`:
 *   the parameter's struct info as TVMScript prints it (symbolic sizes by name);
 * - a return value whose shape is not known statically is checked the same way (`loc=return`);
 * - otherwise the outputs are what the bytecode allocates last: `ret` of a
 *   `vm.builtin.make_tuple` of `vm.builtin.alloc_tensor`s, whose shapes and dtypes are
 *   constants or `vm.builtin.make_shape`s of symbolic sizes stored by the parameter checks.
 *
 * The executable shows its constant pool through `stats()` and its bytecode through
 * `as_text()`. This module reads both texts, defensively: whatever it cannot read with
 * certainty is reported unknown (null), never guessed.
 */
import type { Dim } from './manifest';

/** What the artifact says about one tensor; null: it does not say. */
export interface ArtifactTensor {
  shape: Dim[] | null;
  dtype: string | null;
}

/** The signature of one function as the artifact has it. */
export interface ArtifactSignature {
  /** One entry per parameter. */
  inputs: ArtifactTensor[];
  /** The flattened outputs, or null when even their number cannot be told. */
  outputs: ArtifactTensor[] | null;
}

const UNKNOWN: ArtifactTensor = { shape: null, dtype: null };

/** A constant of the pool, as `stats()` prints it. */
type Constant = { kind: 'dtype'; dtype: string } | { kind: 'shape'; dims: number[] } | { kind: 'string'; text: string } | { kind: 'other' };

// ---------------------------------------------------------------------------------------------
// The constant pool
// ---------------------------------------------------------------------------------------------

const DTYPE = /^(?:bool|u?int\d+|float\d+|bfloat16|float8_\w+|float4_\w+|handle)(?:x\d+)?$/;

/** Where the ErrorContext string starting at `open` (its `"`) ends (the index of its closing `"`), or -1. */
function errorContextEnd(text: string, open: number): number {
  let depth = 0;
  for (let i = open + 1; i < text.length; i++) {
    const c = text[i];
    if (c === '(') depth++;
    else if (c === ')' && --depth === 0) return text.startsWith(' "', i + 1) ? i + 2 : -1;
    else if (c === '\n') return -1;
  }
  return -1;
}

/**
 * The constant pool of `stats()`: `Constant pool (# N): [c0, c1, ...]`. Strings are printed
 * unescaped, so where a string ends is ambiguous when it holds `", `: every way of ending it
 * is tried, and the split used is the first that gives exactly N entries (error contexts end
 * at their balanced closing parenthesis, which is tried first). Null when none does.
 */
export function parseConstantPool(stats: string): Constant[] | null {
  const head = /Constant pool \(# (\d+)\): \[/.exec(stats);
  if (!head) return null;
  const count = Number(head[1]);
  const start = head.index + head[0].length;
  const globals = stats.indexOf(']\n  Globals (#', start);
  const body = stats.slice(start, globals >= 0 ? globals : stats.lastIndexOf(']'));
  const failed = new Set<string>();

  /** The entries from `i` on, given `k` entries before; null if they cannot be split into count - k. */
  const from = (i: number, k: number): Constant[] | null => {
    const out: Constant[] = [];
    for (;;) {
      if (i === body.length) return k + out.length === count ? out : null;
      if (k + out.length >= count) return null;
      if (body[i] === '"') break;
      // Anything but a string: ", " separates, except inside a shape's brackets.
      const bracket = /^(?:shapetuple)?\[/.test(body.slice(i, i + 11));
      const close = bracket ? body.indexOf(']', i) : i;
      if (close < 0) return null;
      const sep = body.indexOf(', ', close);
      const end = sep < 0 ? body.length : sep;
      out.push(constantOf(body.slice(i, end)));
      i = sep < 0 ? end : end + 2;
    }
    // A string at i: try each place it may end.
    const key = `${i}:${k + out.length}`;
    if (failed.has(key)) return null;
    const ends: number[] = [];
    if (body.startsWith('"ErrorContext(', i)) {
      const e = errorContextEnd(body, i);
      if (e >= 0) ends.push(e);
    }
    for (let q = body.indexOf('"', i + 1); q >= 0; q = body.indexOf('"', q + 1)) {
      if ((q === body.length - 1 || body.startsWith(', ', q + 1)) && !ends.includes(q)) ends.push(q);
    }
    for (const q of ends) {
      const next = q + 1 === body.length ? q + 1 : q + 3;
      const rest = from(next, k + out.length + 1);
      if (rest) return [...out, { kind: 'string', text: body.slice(i + 1, q) }, ...rest];
    }
    failed.add(key);
    return null;
  };
  return count === 0 ? (body === '' ? [] : null) : from(0, 0);
}

function constantOf(token: string): Constant {
  if (DTYPE.test(token)) return { kind: 'dtype', dtype: token };
  // An empty shape tuple prints as "shapetupl]" (TVM steps back over "e[" before "], ").
  if (token === 'shapetupl]') return { kind: 'shape', dims: [] };
  if (token === 'shapetuple[]') return { kind: 'shape', dims: [] };
  const shape = /^shapetuple\[([\d, ]*)\]$/.exec(token);
  if (shape) return { kind: 'shape', dims: shape[1].split(', ').map(Number) };
  return { kind: 'other' };
}

// ---------------------------------------------------------------------------------------------
// Struct info annotations (TVMScript text)
// ---------------------------------------------------------------------------------------------

/** Splits `text` at top-level commas (outside parentheses and quotes). */
function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') quoted = !quoted;
    else if (quoted) continue;
    else if (c === '(' || c === '[') depth++;
    else if (c === ')' || c === ']') depth--;
    else if (c === ',' && depth === 0) {
      parts.push(text.slice(start, i).trim());
      start = i + 1;
    }
  }
  const last = text.slice(start).trim();
  if (last) parts.push(last);
  return parts;
}

/** `R.Tensor(args)` -> { head: 'R.Tensor', args: 'args' }; `R.Object` -> { head, args: undefined }. */
function callOf(text: string): { head: string; args?: string } | null {
  const m = /^([A-Za-z_][\w.]*)\s*(?:\((.*)\))?$/s.exec(text.trim());
  return m ? { head: m[1], args: m[2] } : null;
}

/** One size as TVMScript prints it: `4`, `T.int64(4)`, `n`, or an expression (kept as text). */
function dimOf(text: string): Dim {
  const t = text.trim();
  const literal = /^(?:T\.u?int(?:8|16|32|64)\()?(\d+)\)?$/.exec(t);
  if (literal && (t.startsWith('T.') ? t.endsWith(')') : !t.endsWith(')'))) return Number(literal[1]);
  return t || null;
}

/**
 * The tensors of a struct info annotation, tuples flattened: `R.Tensor((n, 4), dtype="float32")`
 * gives one, `R.Tuple(A, B)` (or `T.Tuple`) gives A's and B's; anything else
 * (`R.Object`, `R.Shape(...)`, `R.Prim(...)`) one unknown entry.
 */
export function parseAnnotation(text: string): ArtifactTensor[] {
  const call = callOf(text);
  if (!call) return [UNKNOWN];
  if (/^[RT]\.Tuple$/.test(call.head)) return splitTopLevel(call.args ?? '').flatMap(parseAnnotation);
  if (call.head !== 'R.Tensor') return [UNKNOWN];
  let shape: Dim[] | null = null;
  let dtype: string | null = null;
  for (const arg of splitTopLevel(call.args ?? '')) {
    const kw = /^(\w+)\s*=\s*(.*)$/s.exec(arg);
    if (!kw) {
      const tuple = /^\((.*)\)$/s.exec(arg) ?? /^\[(.*)\]$/s.exec(arg);
      if (tuple) shape = splitTopLevel(tuple[1]).map(dimOf);
      else if (/^"[^"]*"$/.test(arg)) dtype = arg.slice(1, -1) || null; // R.Tensor((2, 3), "float32")
      continue;
    }
    const [, key, value] = kw;
    if (key === 'dtype') dtype = /^"([^"]*)"$/.exec(value)?.[1] || null;
    else if (key === 'ndim' && shape === null && /^\d+$/.test(value)) shape = Array.from({ length: Number(value) }, () => null);
  }
  if (dtype === 'void') dtype = null;
  return [{ shape, dtype }];
}

/** The error contexts in the constant pool: function, location (param index or return), annotation. */
interface ErrorContext {
  fn: string;
  param?: number;
  isReturn: boolean;
  annotation: string;
}

function errorContextOf(text: string): ErrorContext | undefined {
  const m = /^ErrorContext\(fn=([^,]+), loc=(param\[(\d+)\]|return)(?:, param=[^,]*)?, annotation=(.*)\) $/s.exec(text);
  if (!m) return undefined;
  return { fn: m[1], param: m[3] === undefined ? undefined : Number(m[3]), isReturn: m[2] === 'return', annotation: m[4] };
}

// ---------------------------------------------------------------------------------------------
// Bytecode
// ---------------------------------------------------------------------------------------------

/** An instruction of `as_text()`: `call NAME in: ARGS dst: DST`, `ret %R`, or control flow. */
type Instr = { op: 'call'; fn: string; args: string[]; dst: string } | { op: 'ret'; reg: string } | { op: 'other' };

/** The bytecode of function `fn` in `as_text()`, or null when it is not there. */
function bytecodeOf(text: string, fn: string): Instr[] | null {
  const lines = text.split('\n');
  const start = lines.indexOf(`@${fn}:`);
  if (start < 0) return null;
  const out: Instr[] = [];
  for (const line of lines.slice(start + 1)) {
    if (!line.startsWith('  ')) break;
    const call = /^\s+call\s+(\S+)\s+in:\s*(.*?)\s*dst: (%\w+)\s*$/.exec(line);
    const ret = /^\s+ret\s+(%\w+)\s*$/.exec(line);
    if (call) out.push({ op: 'call', fn: call[1], args: call[2] ? call[2].split(/,\s*/) : [], dst: call[3] });
    else if (ret) out.push({ op: 'ret', reg: ret[1] });
    else out.push({ op: 'other' });
  }
  return out;
}

const imm = (arg: string | undefined): number | undefined => (arg && /^i-?\d+$/.test(arg) ? Number(arg.slice(1)) : undefined);
const constIndex = (arg: string | undefined): number | undefined => {
  const m = arg ? /^c\[(\d+)\]$/.exec(arg) : null;
  return m ? Number(m[1]) : undefined;
};

/** Reads the signature of `fn` (`arity` parameters) from the executable's `stats()` and `as_text()`. */
export function readSignature(stats: string, asText: string, fn: string, arity: number): ArtifactSignature {
  const pool = parseConstantPool(stats);
  // Error contexts are found by their shape even when the pool as a whole cannot be split.
  const contexts: Array<{ index?: number; ctx: ErrorContext }> = [];
  if (pool) {
    pool.forEach((c, index) => {
      const ctx = c.kind === 'string' ? errorContextOf(c.text) : undefined;
      if (ctx && ctx.fn === fn) contexts.push({ index, ctx });
    });
  } else {
    for (const m of stats.matchAll(/"ErrorContext\(/g)) {
      const end = errorContextEnd(stats, m.index);
      const ctx = end >= 0 ? errorContextOf(stats.slice(m.index + 1, end)) : undefined;
      if (ctx && ctx.fn === fn) contexts.push({ ctx });
    }
  }

  const inputs: ArtifactTensor[] = Array.from({ length: arity }, () => UNKNOWN);
  const paramOfConstant = new Map<number, number>();
  for (const { index, ctx } of contexts) {
    if (ctx.param === undefined || ctx.param >= arity) continue;
    const [first, ...rest] = parseAnnotation(ctx.annotation);
    if (rest.length === 0) inputs[ctx.param] = first;
    if (index !== undefined) paramOfConstant.set(index, ctx.param);
  }
  const code = bytecodeOf(asText, fn);
  const ret = contexts.find((c) => c.ctx.isReturn);
  if (ret) return { inputs, outputs: parseAnnotation(ret.ctx.annotation) };
  if (!code || !pool) return { inputs, outputs: null };
  return { inputs, outputs: traceOutputs(code, pool, inputs, paramOfConstant, arity) };
}

/**
 * The outputs as the bytecode builds them: from `ret` back through `make_tuple` to the
 * `alloc_tensor`s (or parameters) that made each; anything else is an unknown output.
 */
function traceOutputs(code: Instr[], pool: Constant[], inputs: ArtifactTensor[], paramOfConstant: Map<number, number>, arity: number): ArtifactTensor[] | null {
  // Straight-line code only: with branches, "the last write before ret" means nothing.
  if (code.some((i) => i.op === 'other')) return null;
  const retAt = code.findIndex((i) => i.op === 'ret');
  if (retAt < 0) return null;

  // Heap slots the parameter checks store symbolic sizes in, and the sizes' names.
  const heapNames = new Map<number, Dim>();
  for (const i of code) {
    if (i.op !== 'call' || i.fn !== 'vm.builtin.match_shape') continue;
    const ndim = imm(i.args[2]);
    const ctx = constIndex(i.args[3 + 2 * (ndim ?? 0)]);
    const param = ctx === undefined ? undefined : paramOfConstant.get(ctx);
    if (ndim === undefined || param === undefined) continue;
    const shape = inputs[param].shape;
    for (let d = 0; d < ndim; d++) {
      if (imm(i.args[3 + 2 * d]) === 1) {
        const slot = imm(i.args[4 + 2 * d]);
        const name = shape?.[d];
        if (slot !== undefined && typeof name === 'string') heapNames.set(slot, name);
      }
    }
  }

  const writer = (reg: string, before: number): { instr: Instr & { op: 'call' }; at: number } | undefined => {
    for (let k = before - 1; k >= 0; k--) {
      const i = code[k];
      if (i.op === 'call' && i.dst === reg) return { instr: i, at: k };
    }
    return undefined;
  };
  const dtypeAt = (arg: string | undefined): string | null => {
    const k = constIndex(arg);
    const c = k === undefined ? undefined : pool[k];
    return c?.kind === 'dtype' ? c.dtype : null;
  };
  const shapeFrom = (arg: string | undefined, before: number): Dim[] | null => {
    const k = constIndex(arg);
    if (k !== undefined) {
      const c = pool[k];
      return c?.kind === 'shape' ? c.dims : null;
    }
    if (!arg?.startsWith('%')) return null;
    const w = writer(arg, before);
    if (w?.instr.fn !== 'vm.builtin.make_shape') return null;
    const args = w.instr.args;
    const ndim = imm(args[1]);
    if (ndim === undefined || args.length !== 2 + 2 * ndim) return null;
    return Array.from({ length: ndim }, (_, d) => {
      const kind = imm(args[2 + 2 * d]);
      const value = imm(args[3 + 2 * d]);
      if (kind === 0 && value !== undefined) return value;
      if (kind === 1 && value !== undefined) return heapNames.get(value) ?? null;
      return null;
    });
  };
  const trace = (reg: string, before: number, depth: number): ArtifactTensor[] => {
    const param = /^%(\d+)$/.exec(reg);
    const w = writer(reg, before);
    if (!w) return param && Number(param[1]) < arity ? [inputs[Number(param[1])]] : [UNKNOWN];
    const { instr, at } = w;
    if (instr.fn === 'vm.builtin.make_tuple' && depth < 8) return instr.args.flatMap((a) => (a.startsWith('%') ? trace(a, at, depth + 1) : [UNKNOWN]));
    if (instr.fn === 'vm.builtin.alloc_tensor') return [{ shape: shapeFrom(instr.args[2], at), dtype: dtypeAt(instr.args[3]) }];
    if (instr.fn === 'vm.builtin.reshape' && instr.args.length === 2) {
      const [src] = trace(instr.args[0], at, depth + 1);
      return [{ shape: shapeFrom(instr.args[1], at), dtype: src?.dtype ?? null }];
    }
    return [UNKNOWN];
  };
  const ret = code[retAt] as { op: 'ret'; reg: string };
  return trace(ret.reg, retAt, 0);
}
