/**
 * Model manifests: the JSON file `NAME.json` beside an artifact `NAME.so` that says what TVM
 * does not keep in it — input and output names (e.g. an ONNX graph's), declared shapes and
 * dtypes, the device and the function to run:
 *
 * ```json
 * { "inputs":  [{ "name": "input", "shape": ["N", 3, 224, 224], "dtype": "float32" }],
 *   "outputs": [{ "name": "logits", "shape": ["N", 1000], "dtype": "float32" }],
 *   "device": "cpu", "function": "main" }
 * ```
 *
 * Every field is optional. Sizes are non-negative integers, names of symbolic sizes
 * (strings), or null (unknown). The model API ({@link Model}), the model repository and the
 * compile helpers (scripts/compile_fixtures.py, scripts/compile_bench_models.py) share this
 * format, and this module is the one reader of it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { device as parseDevice } from './device';
import { TvmValueError } from './errors';

/** One size of a shape: a number, the name of a symbolic size, or null (unknown). */
export type Dim = number | string | null;

/** An array as a manifest describes it. */
export interface TensorSpec {
  name?: string;
  shape: Dim[];
  dtype: string;
}

/** A manifest's fields, once checked. */
export interface Manifest {
  inputs?: TensorSpec[];
  outputs?: TensorSpec[];
  device?: string;
  function?: string;
}

/** A manifest that cannot be used; the message is "manifest NAME PROBLEM". */
export class ManifestError extends TvmValueError {
  constructor(
    /** The manifest as messages name it (a file name or a path). */
    readonly manifestName: string,
    /** What is wrong, completing "manifest NAME ...". */
    readonly problem: string,
  ) {
    super('ValueError', `manifest ${manifestName} ${problem}`);
  }
}

/** Text on one line (messages of a listing go to clients one line each). */
export const oneLine = (text: string): string => text.replace(/\s*\n\s*/g, ' ').trim();

/** "a string", "an array", "null", ... for messages about a JSON value. */
export const typeName = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'object' ? 'an object' : `a ${typeof v}`);

/**
 * A JSON.parse message without the excerpt of the text V8 may quote (listings go to clients),
 * its position as line and column.
 */
function jsonProblem(message: string, text: string): string {
  let problem = oneLine(message).replace(/, ".*" is not valid JSON$/, '');
  const at = / in JSON at position (\d+)(?: \(line \d+ column \d+\))?/.exec(problem);
  if (at) {
    const before = text.slice(0, Number(at[1]));
    const line = before.split('\n').length;
    problem = problem.replace(at[0], ` at line ${line}, column ${before.length - before.lastIndexOf('\n')}`);
  }
  return problem;
}

/** "has F of <type>: <rule>", or "has no F: <rule>" when it is missing. */
const wrong = (field: string, value: unknown, rule: string) =>
  value === undefined ? `has no ${field}: ${rule}` : `has ${field} of ${typeName(value)}: ${rule}`;

/** Checks the parsed contents of a manifest; returns what is wrong (completing "manifest X ..."), or undefined. */
export function manifestProblem(m: unknown): string | undefined {
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return `must hold a JSON object, not ${typeName(m)}`;
  const fields = m as Record<string, unknown>;
  for (const key of ['inputs', 'outputs'] as const) {
    const specs = fields[key];
    if (specs === undefined) continue;
    if (!Array.isArray(specs)) return `has "${key}" of ${typeName(specs)}: it must be an array of {"name"?, "shape", "dtype"}`;
    const seen = new Map<string, number>();
    for (const [i, spec] of specs.entries()) {
      const at = `"${key}"[${i}]`;
      if (typeof spec !== 'object' || spec === null || Array.isArray(spec))
        return `has ${at} of ${typeName(spec)}: it must be an object {"name"?, "shape", "dtype"}`;
      const { name, shape, dtype } = spec as Record<string, unknown>;
      if (name !== undefined && typeof name !== 'string') return wrong(`${at}.name`, name, 'it must be a string');
      if (typeof name === 'string') {
        if (seen.has(name)) return `has ${at}.name ${JSON.stringify(name)}, the name of "${key}"[${seen.get(name)}] too: names must differ`;
        seen.set(name, i);
      }
      if (!Array.isArray(shape)) return wrong(`${at}.shape`, shape, 'it must be an array of sizes');
      const bad = shape.findIndex((d) => !(typeof d === 'string' || d === null || (typeof d === 'number' && Number.isSafeInteger(d) && d >= 0)));
      if (bad >= 0) {
        return `has ${at}.shape[${bad}] = ${JSON.stringify(shape[bad])}: sizes are non-negative integers, names of dynamic sizes (strings) or null`;
      }
      if (typeof dtype !== 'string') return wrong(`${at}.dtype`, dtype, 'it must be a string such as "float32"');
    }
  }
  if (fields.device !== undefined) {
    if (typeof fields.device !== 'string') return `has "device" of ${typeName(fields.device)}: it must be a string such as "cpu" or "cuda:0"`;
    try {
      parseDevice(fields.device);
    } catch (err) {
      return `has "device" ${JSON.stringify(fields.device)}: ${(err as Error).message}`;
    }
  }
  if (fields.function !== undefined && typeof fields.function !== 'string')
    return `has "function" of ${typeName(fields.function)}: it must be a string such as "main"`;
  return undefined;
}

/** Checks a manifest given as a value (not read from a file); throws {@link ManifestError}. */
export function checkManifest(value: unknown, manifestName: string): Manifest {
  const problem = manifestProblem(value);
  if (problem) throw new ManifestError(manifestName, oneLine(problem));
  return value as Manifest;
}

/** Parses and checks a manifest's text; throws {@link ManifestError} naming `manifestName`. */
export function parseManifest(text: string, manifestName: string): Manifest {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ManifestError(manifestName, `is not valid JSON: ${jsonProblem((err as Error).message, text)}`);
  }
  return checkManifest(parsed, manifestName);
}

/** What identifies a version of a file (or its absence, `-`). */
export function fileVersion(st: fs.BigIntStats | undefined): string {
  return st ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}` : '-';
}

/**
 * A manifest as read from its file, with the file's version (see {@link fileVersion}).
 * `readManifest` takes a cache of these (by path) to skip reading and parsing a file whose
 * version has not changed.
 */
export interface ManifestFile {
  /** The manifest; undefined when there is no file. */
  manifest?: Manifest;
  version: string;
}

/**
 * Reads and checks the manifest `file`; no file is `{ version: '-' }`. An unreadable or
 * malformed one is a {@link ManifestError} naming `manifestName` (default: the path).
 */
export function readManifest(file: string, manifestName: string = file, cache?: Map<string, ManifestFile>): ManifestFile {
  const cannotRead = (err: unknown) =>
    new ManifestError(manifestName, `cannot be read (${(err as NodeJS.ErrnoException).code ?? oneLine((err as Error).message)})`);
  let st: fs.BigIntStats | undefined;
  try {
    // No exception for a missing file: a server asks this on every request.
    st = fs.statSync(file, { bigint: true, throwIfNoEntry: false });
  } catch (err) {
    throw cannotRead(err);
  }
  if (!st) return { version: fileVersion(undefined) };
  const version = fileVersion(st);
  const known = cache?.get(file);
  if (known?.version === version) return known;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw cannotRead(err);
  }
  const read = { manifest: parseManifest(text, manifestName), version };
  cache?.set(file, read);
  return read;
}

/** Where an artifact's manifest is: `model.so` -> `model.json` (any other name: NAME.json). */
export function manifestPathOf(artifact: string): string {
  const { dir, name, ext } = path.parse(artifact);
  return path.join(dir, `${ext === '.so' ? name : name + ext}.json`);
}
