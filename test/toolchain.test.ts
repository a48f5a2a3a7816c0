/**
 * The pinned toolchain (tvm/requirements.txt) pairs TVM with the tvm-ffi it was built against,
 * and the checks at setup (scripts/toolchain.mjs) and at load (lib/versions.ts) catch a TVM
 * runtime built against another tvm-ffi generation than the one loaded.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  ABI_GENERATIONS,
  abiFingerprint,
  checkAbiGenerations,
  checkRuntimeVersions,
  cpu,
  type LoadedLibrary,
  loadedLibraries,
  outputsOf,
  readNpy,
  Tensor,
  VersionMismatchError,
  VirtualMachine,
  versions,
} from '../lib';
import { python, repoRoot } from './fixtures';

const stagedDir = path.join(repoRoot, 'tvm', 'lib');
const stagedLibs = ['libtvm_ffi.so', 'libtvm_runtime.so', 'libtvm_runtime_extra.so', 'libtvm_runtime_cuda.so'].filter((n) =>
  fs.existsSync(path.join(stagedDir, n)),
);

/** The version `tvm/requirements.txt` pins for a package. */
function pinned(pkg: string): string {
  const m = new RegExp(`^${pkg}==(\\S+)`, 'm').exec(fs.readFileSync(path.join(repoRoot, 'tvm', 'requirements.txt'), 'utf8'));
  assert.ok(m, `${pkg} is pinned`);
  return m[1];
}

/**
 * Calls an export of scripts/toolchain.mjs in a plain Node process (as `npm run setup` runs it,
 * without tsx); returns its JSON result, or `{ error }` with the message it threw.
 */
function toolchain(fn: string, ...args: unknown[]): { result?: any; error?: string; log: string[] } {
  const script = `
    import * as t from ${JSON.stringify(path.join(repoRoot, 'scripts', 'toolchain.mjs'))};
    const log = [];
    const args = JSON.parse(process.argv[1]).map((a) => (a && a.__log ? { ...a, log: (m) => log.push(m) } : a));
    try { console.log(JSON.stringify({ result: t[${JSON.stringify(fn)}](...args), log })); }
    catch (e) { console.log(JSON.stringify({ error: e.message, log })); }`;
  const env = { ...process.env };
  delete env.TVM_HOME;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script, JSON.stringify(args)], { encoding: 'utf8', env });
  return JSON.parse(out);
}

/** A file of random bytes with `text` somewhere in the middle, like a library's .rodata. */
function syntheticLibrary(dir: string, name: string, ...texts: string[]): string {
  const file = path.join(dir, name);
  const noise = () => Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 131 + 17) % 251));
  fs.writeFileSync(file, Buffer.concat([noise(), ...texts.flatMap((t) => [Buffer.from(`\0${t}\0`), noise()])]));
  return file;
}

describe('toolchain: TVM and tvm-ffi are ABI-compatible', () => {
  let tmp: string;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-toolchain-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  describe('the pinned pair, exercised', () => {
    // With apache-tvm-ffi 0.1.15.x beside apache-tvm 0.27.0.post1 both save_json and
    // MetaSchedule's workload database segfaulted in tvm::ffi::ToJSONGraph.
    const ROUND_TRIP = `
import json, os, sys, tempfile
import numpy as np
import tvm
from tvm import relax
from tvm.s_tir import meta_schedule as ms

out = sys.argv[1]
rng = np.random.default_rng(7)
w = rng.standard_normal((8, 4)).astype("float32")
b = rng.standard_normal((4,)).astype("float32")
x_np = rng.standard_normal((3, 8)).astype("float32")

bb = relax.BlockBuilder()
x = relax.Var("x", relax.TensorType((3, 8), "float32"))
with bb.function("main", [x]):
    with bb.dataflow():
        h = bb.emit(relax.op.matmul(x, relax.const(w)))
        y = bb.emit_output(relax.op.nn.relu(relax.op.add(h, relax.const(b))))
    bb.emit_func_output(y)
mod = bb.get()

text = tvm.ir.save_json(mod)
back = tvm.ir.load_json(text)
tvm.ir.assert_structural_equal(back, mod)

lowered = relax.transform.LegalizeOps()(mod)
prim = [f for f in lowered.functions.values() if isinstance(f, tvm.tirx.PrimFunc)][0]
tir_mod = tvm.IRModule({"main": prim.with_attr("global_symbol", "main")})
with tempfile.TemporaryDirectory() as d:
    paths = dict(path_workload=os.path.join(d, "w.json"), path_tuning_record=os.path.join(d, "r.json"))
    ms.database.JSONDatabase(**paths).commit_workload(tir_mod)
    ms_ok = ms.database.JSONDatabase(**paths).has_workload(tir_mod)

tvm.compile(back, target="llvm").export_library(os.path.join(out, "roundtrip.so"))
np.save(os.path.join(out, "x.npy"), x_np)
np.save(os.path.join(out, "y.npy"), np.maximum(x_np @ w + b, 0))
print(json.dumps({"tvm": tvm.__version__, "json_chars": len(text),
                  "json_stable": tvm.ir.save_json(back) == text, "ms_workload": bool(ms_ok)}))
`;
    let report: { tvm: string; json_chars: number; json_stable: boolean; ms_workload: boolean };

    before(function () {
      this.timeout(300_000);
      const r = spawnSync(python, ['-c', ROUND_TRIP, tmp], { encoding: 'utf8', timeout: 280_000 });
      assert.equal(r.signal, null, `the pinned TVM crashed (${r.signal}): ${r.stderr.slice(-2000)}`);
      assert.equal(r.status, 0, r.stderr.slice(-2000));
      report = JSON.parse(r.stdout.trim().split('\n').pop()!);
    });

    it('round-trips a Relax module through tvm.ir.save_json / load_json, structurally equal', () => {
      assert.equal(report.tvm, pinned('apache-tvm'));
      assert.ok(report.json_chars > 1000, `JSON of ${report.json_chars} chars`);
      assert.equal(report.json_stable, true, 'save_json(load_json(text)) === text');
    });

    it("stores and finds a workload in MetaSchedule's JSON database", () => {
      assert.equal(report.ms_workload, true);
    });

    it('runs the module compiled from the reloaded JSON in tvm-node, matching numpy', async () => {
      const vm = await VirtualMachine.load(path.join(tmp, 'roundtrip.so'), { devices: [cpu()] });
      try {
        const x = readNpy(path.join(tmp, 'x.npy'));
        const want = readNpy(path.join(tmp, 'y.npy'));
        const [y] = outputsOf<Tensor>(await vm.run('main', Tensor.fromSync(x.data, { shape: x.shape, dtype: 'float32' })));
        assert.deepEqual(y.shape, [3, 4]);
        const got = y.toFloat32ArraySync();
        const ref = want.data as Float32Array;
        assert.equal(got.length, 12);
        assert.ok(ref.some((v) => v > 0) && ref.some((v) => v === 0), 'the reference exercises both sides of relu');
        for (let i = 0; i < ref.length; i++) assert.ok(Math.abs(got[i] - ref[i]) <= 1e-5 + 1e-5 * Math.abs(ref[i]), `y[${i}]: ${got[i]} vs ${ref[i]}`);
      } finally {
        await vm.dispose();
      }
    });
  });

  describe('ABI fingerprints', () => {
    it('the staged libraries are all of the tvm::ffi::details generation (tvm-ffi 0.1.14), as TVM 0.27.0.post1 is', () => {
      assert.ok(stagedLibs.includes('libtvm_ffi.so') && stagedLibs.includes('libtvm_runtime.so'));
      for (const name of stagedLibs) {
        const fp = abiFingerprint(path.join(stagedDir, name));
        assert.equal(fp.namespace, 'tvm::ffi::details', name);
        assert.equal(fp.generation, 'tvm-ffi 0.1.14 or earlier', name);
      }
    });

    it('tells the generations apart in synthetic files, and says nothing for neither or both', () => {
      const newer = syntheticLibrary(tmp, 'newer.so', 'void tvm::ffi::detail::AnyUnsafe::Foo()');
      const older = syntheticLibrary(tmp, 'older.so', 'void tvm::ffi::details::AnyUnsafe::Foo()');
      const both = syntheticLibrary(tmp, 'both.so', 'tvm::ffi::detail::A', 'tvm::ffi::details::B');
      const neither = syntheticLibrary(tmp, 'neither.so', 'tvm::ffi::Any', 'tvm::ffi::details');
      assert.deepEqual(abiFingerprint(newer), { file: newer, namespace: 'tvm::ffi::detail', generation: 'tvm-ffi 0.1.15 or later' });
      assert.deepEqual(abiFingerprint(older), { file: older, namespace: 'tvm::ffi::details', generation: 'tvm-ffi 0.1.14 or earlier' });
      assert.deepEqual(abiFingerprint(both), { file: both, namespace: null, generation: null });
      assert.deepEqual(abiFingerprint(neither), { file: neither, namespace: null, generation: null });
    });

    it('scripts/toolchain.mjs (setup) and lib/versions.ts (load) fingerprint alike', () => {
      const files = [
        ...stagedLibs.map((n) => path.join(stagedDir, n)),
        syntheticLibrary(tmp, 'a.so', 'tvm::ffi::detail::X'),
        syntheticLibrary(tmp, 'b.so', 'nothing'),
      ];
      for (const f of files) {
        const { result, error } = toolchain('abiFingerprint', f);
        assert.equal(error, undefined);
        assert.deepEqual(result, abiFingerprint(f), f);
      }
      assert.deepEqual(
        ABI_GENERATIONS.map((g) => g.namespace),
        ['tvm::ffi::details', 'tvm::ffi::detail'],
      );
    });
  });

  describe('the check at load', () => {
    it('finds the loaded libraries in tvm/lib, all of one generation, and passes', () => {
      const libs = loadedLibraries();
      const byRole = (role: string) => libs.filter((l) => l.role === role);
      assert.equal(byRole('tvm-ffi')[0].path, fs.realpathSync(path.join(stagedDir, 'libtvm_ffi.so')));
      assert.equal(byRole('TVM runtime')[0].path, fs.realpathSync(path.join(stagedDir, 'libtvm_runtime.so')));
      assert.ok(byRole('TVM runtime sidecar').some((l) => l.path === fs.realpathSync(path.join(stagedDir, 'libtvm_runtime_extra.so'))));
      assert.equal(byRole('tvm-node addon')[0].path, fs.realpathSync(path.join(repoRoot, 'build', 'Release', 'tvm_node.node')));
      for (const l of libs) assert.equal(l.abi.namespace, 'tvm::ffi::details', l.path);
      assert.doesNotThrow(() => checkAbiGenerations(libs));
      assert.equal(checkRuntimeVersions(), versions());
    });

    it('reports the installed apache-tvm-ffi package beside the version its headers announce', () => {
      const v = versions();
      assert.equal(v.tvmFfiPackage, pinned('apache-tvm-ffi'));
      assert.equal(v.tvm, pinned('apache-tvm'));
      assert.match(loadedLibraries()[0].version, new RegExp(`^tvm-ffi ${v.tvmFfi} \\(apache-tvm-ffi ${v.tvmFfiPackage!.replace(/\./g, '\\.')}\\)$`));
    });

    it('refuses a TVM runtime of the other generation than the loaded tvm-ffi, naming both', () => {
      const fakeFfi = syntheticLibrary(tmp, 'libtvm_ffi.so', 'tvm::ffi::detail::Foo');
      const real = loadedLibraries();
      const runtime = real.find((l) => l.role === 'TVM runtime')!;
      const ffi: LoadedLibrary = { role: 'tvm-ffi', path: fakeFfi, version: 'tvm-ffi 0.1.16', abi: abiFingerprint(fakeFfi) };
      let err: unknown;
      try {
        checkAbiGenerations([ffi, runtime]);
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof VersionMismatchError, String(err));
      assert.equal(
        err.message,
        `the TVM runtime ${runtime.path} (TVM ${pinned('apache-tvm')}) was built against the headers of tvm-ffi 0.1.14 or earlier ` +
          `(tvm::ffi::details), but the loaded tvm-ffi ${fakeFfi} (tvm-ffi 0.1.16) is tvm-ffi 0.1.15 or later ` +
          '(tvm::ffi::detail): the two are ABI-incompatible (TVM objects are misread across them; serialization crashes). ' +
          'Install the apache-tvm-ffi release this TVM was built against (tvm/requirements.txt, then npm run setup) or ' +
          'rebuild TVM against the loaded tvm-ffi',
      );
      // The other way round, and a library whose generation cannot be told, which is not judged.
      const oldRuntime = syntheticLibrary(tmp, 'old_runtime.so', 'tvm::ffi::details::Foo');
      const newFfiReal = { ...ffi, abi: abiFingerprint(fakeFfi) };
      assert.throws(
        () => checkAbiGenerations([newFfiReal, { role: 'tvm-node addon', path: oldRuntime, version: 'tvm-node 0', abi: abiFingerprint(oldRuntime) }]),
        (e: Error) => e instanceof VersionMismatchError && e.message.startsWith(`the tvm-node addon ${oldRuntime} (tvm-node 0) was built`),
      );
      const unknown = syntheticLibrary(tmp, 'unknown.so', 'no namespace here');
      assert.doesNotThrow(() => checkAbiGenerations([ffi, { ...runtime, path: unknown, abi: abiFingerprint(unknown) }]));
    });
  });

  describe('the check at setup', () => {
    it('keeps its verdict in tvm/staged.json, so a warm run neither restages nor probes', () => {
      const staged = JSON.parse(fs.readFileSync(path.join(repoRoot, 'tvm', 'staged.json'), 'utf8'));
      assert.equal(staged.ffiVersion, pinned('apache-tvm-ffi'));
      assert.equal(staged.abi.verdict, 'ok');
      assert.equal(staged.abi.probe, 'save_json/load_json round trip ok');
      assert.deepEqual(staged.abi.generations, Object.fromEntries(stagedLibs.map((n) => [n, 'tvm::ffi::details'])));
      const { result, error, log } = toolchain('stageToolchain', { root: repoRoot, python, __log: true });
      assert.equal(error, undefined);
      assert.deepEqual(log, [], 'a warm run logs nothing (no staging, no probe)');
      assert.deepEqual(result, staged);
    });

    it('refuses a venv whose tvm-ffi is of another generation than its TVM, with one line naming both', () => {
      // A stand-in for `python` that reports wheels whose libtvm_ffi.so is of the newer generation.
      const root = path.join(tmp, 'root');
      const ffiDir = path.join(tmp, 'site', 'tvm_ffi', 'lib');
      const tvmDir = path.join(tmp, 'site', 'tvm', 'lib');
      const incDir = path.join(tmp, 'site', 'include');
      for (const d of [path.join(root, 'tvm'), ffiDir, tvmDir, incDir]) fs.mkdirSync(d, { recursive: true });
      syntheticLibrary(ffiDir, 'libtvm_ffi.so', 'tvm::ffi::detail::Foo');
      fs.copyFileSync(path.join(stagedDir, 'libtvm_runtime.so'), path.join(tvmDir, 'libtvm_runtime.so'));
      const located = { tvmVersion: '0.27.0.post1', ffiVersion: '0.1.15.post2', libDirs: [ffiDir, tvmDir], includeDirs: [incDir] };
      const fakePython = path.join(tmp, 'python');
      fs.writeFileSync(fakePython, `#!/bin/sh\necho '${JSON.stringify(located)}'\n`, { mode: 0o755 });

      const { error, log } = toolchain('stageToolchain', { root, python: fakePython, __log: true });
      assert.equal(
        error,
        'TVM 0.27.0.post1 with tvm-ffi 0.1.15.post2 (from pypi) is ABI-incompatible: libtvm_runtime.so was built against ' +
          'the headers of tvm-ffi 0.1.14 or earlier (tvm::ffi::details), but libtvm_ffi.so is tvm-ffi 0.1.15 or later ' +
          '(tvm::ffi::detail); pin in tvm/requirements.txt the apache-tvm-ffi release the TVM build was compiled against',
      );
      assert.deepEqual(log, ['staging TVM runtime from pypi (tvm 0.27.0.post1, tvm-ffi 0.1.15.post2)']);
      assert.equal(fs.existsSync(path.join(root, 'tvm', 'staged.json')), false, 'no verdict is kept for a failed check');
    });

    it('fails setup when the save_json probe crashes, naming TVM and tvm-ffi', () => {
      const found = { tvmVersion: '0.27.0.post1', ffiVersion: '0.1.15.post2', source: 'pypi' };
      const crashing = path.join(tmp, 'python-crash');
      fs.writeFileSync(crashing, '#!/bin/sh\nkill -SEGV $$\n', { mode: 0o755 });
      assert.equal(
        toolchain('probeSerialization', crashing, found).error,
        'TVM 0.27.0.post1 with tvm-ffi 0.1.15.post2 (from pypi) is ABI-incompatible: tvm.ir.save_json/load_json of a ' +
          'small Relax module crashed (SIGSEGV); pin in tvm/requirements.txt the apache-tvm-ffi release the TVM wheel ' +
          'was compiled against',
      );
      const failing = path.join(tmp, 'python-fail');
      fs.writeFileSync(failing, '#!/bin/sh\necho "ImportError: no tvm" >&2\nexit 1\n', { mode: 0o755 });
      assert.match(
        toolchain('probeSerialization', failing, found).error!,
        /failed a tvm\.ir\.save_json\/load_json round trip .*\(exit 1: ImportError: no tvm\)/,
      );
      // And the real pinned venv passes it.
      assert.deepEqual(toolchain('probeSerialization', python, { ...found, ffiVersion: pinned('apache-tvm-ffi') }), { log: [] });
    });
  });

  describe('tvm-node info', () => {
    it('reports the installed apache-tvm-ffi, the libraries loaded with their generation, and the verdict', () => {
      const r = spawnSync(process.execPath, ['--require', 'tsx/cjs', 'lib/cli.ts', 'info'], { cwd: repoRoot, encoding: 'utf8', timeout: 90_000 });
      assert.equal(r.status, 0, r.stderr);
      const v = versions();
      assert.match(
        r.stdout,
        new RegExp(
          `^tvm-ffi\\s+apache-tvm-ffi ${pinned('apache-tvm-ffi').replace(/\./g, '\\.')}, library reports ${v.tvmFfi}, tvm-node built against headers ${v.tvmFfiHeaders}$`,
          'm',
        ),
      );
      for (const [role, file] of [
        ['tvm-ffi', path.join(stagedDir, 'libtvm_ffi.so')],
        ['TVM runtime', path.join(stagedDir, 'libtvm_runtime.so')],
        ['tvm-node addon', path.join(repoRoot, 'build', 'Release', 'tvm_node.node')],
      ]) {
        const line = `loaded     ${role.padEnd(20)} ${fs.realpathSync(file)}  [tvm::ffi::details (tvm-ffi 0.1.14 or earlier)]`;
        assert.ok(r.stdout.split('\n').includes(line), `missing line: ${line}\n${r.stdout}`);
      }
      assert.match(r.stdout, /^abi check {2}ok: the loaded libraries are built for the loaded tvm-ffi$/m);
    });
  });
});
