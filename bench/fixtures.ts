/**
 * The compiled models the bench runs: the test fixtures, compiled by the pinned TVM
 * (scripts/compile_fixtures.py) and cached by content hash under .cache/fixtures. The bench
 * reads them through this module of its own, so bench/ never imports from test/.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { type Tensor, tensorFromNpy } from '../lib';

export const repoRoot = path.resolve(__dirname, '..');
/** The pinned toolchain's Python (tvm/.venv). */
export const python = path.join(repoRoot, 'tvm', '.venv', 'bin', 'python');

export interface ArraySpec {
  name?: string;
  shape: (number | string | null)[];
  dtype: string;
  file: string;
  role?: string;
}
export interface Case {
  name: string;
  inputs: ArraySpec[];
  outputs: ArraySpec[];
  stdout?: string;
  args?: ArraySpec[];
}
export interface Fixture {
  kind: 'vm' | 'kernels';
  file: string;
  function?: string;
  returns?: 'tensor' | 'tuple';
  cases: Case[];
  functions?: Record<string, { args: ArraySpec[]; cases: Case[] }>;
  tolerance: { rtol: number; atol: number };
  needs_host_functions?: string[];
}

let dir: string | undefined;
let index: { fixtures: Record<string, Fixture> } | undefined;

/** Compiles (or finds cached) the fixtures; returns their folder. */
export function fixtureDir(): string {
  if (dir) return dir;
  const script = path.join(repoRoot, 'scripts', 'compile_fixtures.py');
  const out = execFileSync(python, [script], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  dir = out.trim().split('\n').pop()!;
  return dir;
}

/** A fixture by name, with the path of its `.so`. */
export function fixture(name: string): Fixture & { path: string } {
  index ??= JSON.parse(fs.readFileSync(path.join(fixtureDir(), 'index.json'), 'utf8')) as { fixtures: Record<string, Fixture> };
  const f = index.fixtures[name];
  if (!f) throw new Error(`fixture ${name} missing from ${fixtureDir()}`);
  return { ...f, path: path.join(fixtureDir(), f.file) };
}

/** A fixture array's `.npy` file as a CPU tensor. */
export function inputTensor(spec: ArraySpec): Tensor {
  return tensorFromNpy(path.join(fixtureDir(), spec.file));
}
