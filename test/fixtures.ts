/**
 * Test fixtures compiled by the pinned TVM (scripts/compile_fixtures.py), cached by content
 * hash under .cache/fixtures, with numpy reference outputs beside them.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
// The fixture index's shapes and the toolchain's paths are the bench's too (bench/ never imports test/).
import { type ArraySpec, type Fixture, python, repoRoot } from '../bench/fixtures';
import { type NpyArray, readNpy, Tensor } from '../lib';

export { cpuKey } from '../bench/cpu';
export { type ArraySpec, type Case, type Fixture, python, repoRoot } from '../bench/fixtures';

/** The files whose content makes what `tvm-node compile` builds (the tests' caches of compiled artifacts key on them). */
export const COMPILE_RECIPE_FILES = [
  'scripts/compile_model.py',
  'scripts/nchwc.py',
  'scripts/winograd.py',
  'scripts/compile_fixtures.py',
  'lib/cli/compile.ts',
  'lib/cli.ts',
  'tvm/requirements.txt',
];

let dir: string | undefined;
let index: { fixtures: Record<string, Fixture> } | undefined;

/** Compiles (or finds cached) fixtures; returns their folder. */
/** Runs a Python check script of test/ with the toolchain's Python; returns the JSON of its last stdout line. */
export function pythonCheck<T>(script: string): T {
  const out = execFileSync(python, [path.join(repoRoot, 'test', script)], {
    cwd: repoRoot,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return JSON.parse(out.trim().split('\n').pop()!) as T;
}

export function fixtureDir(only?: string[]): string {
  if (!only && dir) return dir;
  const args = [path.join(repoRoot, 'scripts', 'compile_fixtures.py'), ...(only ? ['--only', only.join(',')] : [])];
  const out = execFileSync(python, args, { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const d = out.trim().split('\n').pop()!;
  if (!only) dir = d;
  return d;
}

export function fixture(name: string): Fixture & { path: string } {
  index ??= JSON.parse(fs.readFileSync(path.join(fixtureDir(), 'index.json'), 'utf8'));
  const f = index!.fixtures[name];
  assert.ok(f, `fixture ${name} missing`);
  return { ...f, path: path.join(fixtureDir(), f.file) };
}

/** Where a fixture array's `.npy` file is (for peers that read it themselves). */
export function fixtureFile(spec: { file: string }): string {
  return path.join(fixtureDir(), spec.file);
}

export function npy(spec: ArraySpec): NpyArray {
  return readNpy(fixtureFile(spec));
}

export function inputTensor(spec: ArraySpec): Tensor {
  const a = npy(spec);
  return Tensor.fromSync(a.data, { shape: a.shape, dtype: a.dtype });
}

/** Asserts a tensor equals a reference array: exact for ints, atol + rtol*|ref| for floats. */
export function assertMatches(actual: Tensor, spec: ArraySpec, tol = { rtol: 1e-5, atol: 1e-5 }): void {
  const ref = npy(spec);
  assert.deepEqual(actual.shape, ref.shape, `shape of ${spec.file}`);
  assert.equal(actual.dtype, ref.dtype, `dtype of ${spec.file}`);
  if (/^(u?int|bool)/.test(ref.dtype)) {
    assert.deepEqual(Array.from(actual.toArraySync() as ArrayLike<unknown>), Array.from(ref.data as ArrayLike<unknown>));
    return;
  }
  const got = actual.toFloat32ArraySync();
  const want =
    ref.dtype === 'float16'
      ? Tensor.fromSync(ref.data, { shape: ref.shape, dtype: 'float16' }).toFloat32ArraySync()
      : Float32Array.from(ref.data as Float32Array);
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]) - (tol.atol + tol.rtol * Math.abs(want[i]));
    worst = Math.max(worst, err);
    assert.ok(err <= 0, `${spec.file}[${i}]: got ${got[i]}, want ${want[i]}`);
  }
  assert.ok(worst <= 0);
}
