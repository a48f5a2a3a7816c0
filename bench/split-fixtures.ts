/**
 * Split models for the offloading tests: ONNX models built by scripts/offload_fixtures.py,
 * split and compiled by `tvm-node split` (lib/cli/split.ts + scripts/split_model.py) with
 * both targets `llvm` (portable, like the other fixtures), cached by content hash in
 * `.cache/split/<hash>/`.
 *
 * The hash covers the scripts that make a split (the model builders, the split and compile
 * scripts, the pinned requirements), the model's name and the cuts asked for, so a warm run
 * needs no Python at all. A folder is complete once its graph.json exists: splits are built
 * in a temporary folder beside it and renamed into place, so concurrent test processes keep
 * whichever finished first. The model's `.onnx` is kept in the folder as `source/<name>.onnx`.
 */
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { parseCut, splitModel } from '../lib/cli/split';
import { python, repoRoot } from './fixtures';

/** The models scripts/offload_fixtures.py builds. */
export type SplitFixtureName = 'mobilenet_v2_tiny' | 'mobilenet_v2' | 'branchy';

/** Everything whose content makes a split fixture. */
const RECIPE_FILES = [
  'scripts/offload_fixtures.py',
  'scripts/compile_bench_models.py',
  'scripts/split_model.py',
  'scripts/compile_model.py',
  'scripts/nchwc.py',
  'scripts/compile_fixtures.py',
  'tvm/requirements.txt',
];

/** The cache key of a fixture: 16 hex digits of a sha256 over the recipe, the name and the cuts. */
export function splitFixtureKey(which: SplitFixtureName, cuts?: readonly string[]): string {
  const h = crypto.createHash('sha256');
  for (const f of RECIPE_FILES) {
    const data = fs.readFileSync(path.join(repoRoot, f));
    h.update(`${f}:${data.length}\n`).update(data);
  }
  h.update(`model:${which}\ncuts:${JSON.stringify(cuts ?? null)}\n`);
  return h.digest('hex').slice(0, 16);
}

const building = new Map<string, Promise<string>>();

/**
 * The absolute folder of a split of `which` (graph.json, device/, server/, reference/,
 * source/), split at `opts.cuts` (one `--cut` value each, e.g. `['stem', 'a_out,b_out']`) or
 * at the model's default cuts; built on first use (seconds to a minute), then cached.
 */
export function splitFixture(which: SplitFixtureName, opts: { cuts?: string[] } = {}): Promise<string> {
  const key = splitFixtureKey(which, opts.cuts);
  const dir = path.join(repoRoot, '.cache', 'split', key);
  if (fs.existsSync(path.join(dir, 'graph.json'))) return Promise.resolve(dir);
  let pending = building.get(key);
  if (!pending) {
    pending = build(which, opts.cuts, dir).finally(() => building.delete(key));
    building.set(key, pending);
  }
  return pending;
}

async function build(which: SplitFixtureName, cuts: string[] | undefined, dir: string): Promise<string> {
  const root = path.dirname(dir);
  fs.mkdirSync(root, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(root, `.tmp-${path.basename(dir)}-`));
  const started = Date.now();
  process.stderr.write(`      splitting ${which} into ${dir} ...\n`);
  try {
    const { stdout } = await promisify(execFile)(python, [path.join(repoRoot, 'scripts', 'offload_fixtures.py'), which, '--out', path.join(tmp, 'source')], {
      cwd: repoRoot,
      encoding: 'utf8',
    });
    const made = JSON.parse(stdout) as { onnx: string; cuts: string[] };
    await splitModel({ model: made.onnx, out: tmp, cuts: (cuts ?? made.cuts).map(parseCut) });
    fs.chmodSync(tmp, 0o755); // mkdtemp's 0700 would survive the rename
    try {
      fs.renameSync(tmp, dir);
    } catch (err) {
      if (!fs.existsSync(path.join(dir, 'graph.json'))) throw err;
      fs.rmSync(tmp, { recursive: true, force: true }); // another process published it first
    }
    process.stderr.write(`      split ${which} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    return dir;
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}
