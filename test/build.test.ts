/**
 * The node-gyp build (binding.gyp) makes the same loadable addon as the cmake-js build
 * (CMakeLists.txt): built in a scratch folder, so the repo's build/ stays cmake-js's, then
 * loaded in a child process (never next to the addon this process has loaded). Both builds
 * must find the TVM runtime through $ORIGIN-relative rpaths only.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from './fixtures';

interface Staged {
  tvmVersion: string;
  source: string;
}

function haveReadelf(): boolean {
  try {
    execFileSync('readelf', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The dynamic section's rpath entries and needed libraries. */
function dynamicSection(file: string): { tag: 'RPATH' | 'RUNPATH' | null; paths: string[]; needed: string[] } {
  const out = execFileSync('readelf', ['-d', file], { encoding: 'utf8' });
  let tag: 'RPATH' | 'RUNPATH' | null = null;
  const paths: string[] = [];
  const needed: string[] = [];
  for (const line of out.split('\n')) {
    const rp = /\((RPATH|RUNPATH)\)\s+Library r(?:un)?path: \[(.*)\]/.exec(line);
    if (rp) {
      assert.equal(tag, null, `${file} has both RPATH and RUNPATH`);
      tag = rp[1] as 'RPATH' | 'RUNPATH';
      paths.push(...rp[2].split(':'));
    }
    const nd = /\(NEEDED\)\s+Shared library: \[(.*)\]/.exec(line);
    if (nd) needed.push(nd[1]);
  }
  return { tag, paths, needed };
}

function assertPortableLinkage(file: string): void {
  const d = dynamicSection(file);
  assert.ok(d.tag, `${file} has no RPATH/RUNPATH`);
  // --disable-new-dtags: RPATH, which (unlike RUNPATH) also serves the TVM libraries' own deps.
  assert.equal(d.tag, 'RPATH', `${file} has ${d.tag}, want RPATH`);
  assert.ok(d.paths.includes('$ORIGIN'), `${file} rpath ${d.paths.join(':')} lacks $ORIGIN`);
  assert.ok(d.paths.includes('$ORIGIN/../../tvm/lib'), `${file} rpath ${d.paths.join(':')} lacks $ORIGIN/../../tvm/lib`);
  for (const p of d.paths) {
    assert.ok(p.startsWith('$ORIGIN'), `${file} has a non-relocatable rpath entry '${p}'`);
    assert.ok(!path.isAbsolute(p), `${file} has an absolute rpath entry '${p}'`);
  }
  for (const lib of ['libtvm_ffi.so', 'libtvm_runtime.so']) {
    assert.ok(d.needed.includes(lib), `${file} does not need ${lib} by name (needs ${d.needed.join(', ')})`);
  }
  for (const n of d.needed) assert.ok(!n.includes('/'), `${file} needs a library by path: ${n}`);
}

describe('node-gyp build (binding.gyp)', function () {
  this.timeout(600000);
  const staged = JSON.parse(fs.readFileSync(path.join(repoRoot, 'tvm', 'staged.json'), 'utf8')) as Staged;
  let scratch: string;
  let built: string;

  before(async () => {
    // The local Node install's headers: <prefix>/include/node beside <prefix>/bin/node
    // (node-gyp would otherwise download them).
    const nodedir = path.resolve(process.execPath, '..', '..');
    assert.ok(fs.existsSync(path.join(nodedir, 'include', 'node', 'node_api.h')), `no Node headers under ${nodedir}/include/node`);

    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-gyp-'));
    fs.copyFileSync(path.join(repoRoot, 'binding.gyp'), path.join(scratch, 'binding.gyp'));
    fs.cpSync(path.join(repoRoot, 'native'), path.join(scratch, 'native'), { recursive: true });
    // binding.gyp finds node-addon-api and the staged runtime relative to itself.
    fs.symlinkSync(path.join(repoRoot, 'node_modules'), path.join(scratch, 'node_modules'), 'dir');
    fs.symlinkSync(path.join(repoRoot, 'tvm'), path.join(scratch, 'tvm'), 'dir');

    const nodeGyp = path.join(repoRoot, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    const jobs = String(Math.max(2, os.availableParallelism()));
    try {
      await promisify(execFile)(process.execPath, [nodeGyp, 'rebuild', `--nodedir=${nodedir}`, '-j', jobs], {
        cwd: scratch,
        maxBuffer: 64 * 1024 * 1024,
      });
    } catch (err) {
      const e = err as Error & { stdout?: string; stderr?: string };
      throw new Error(`node-gyp rebuild failed in ${scratch}: ${e.message}\n${(e.stdout ?? '').slice(-4000)}\n${(e.stderr ?? '').slice(-8000)}`);
    }
    built = path.join(scratch, 'build', 'Release', 'tvm_node.node');
  });

  after(() => {
    if (scratch && !process.env.TVM_NODE_KEEP_GYP_BUILD) fs.rmSync(scratch, { recursive: true, force: true });
  });

  it('builds build/Release/tvm_node.node', () => {
    assert.ok(fs.statSync(built).isFile(), `${built} missing`);
  });

  it('loads in a fresh process without LD_LIBRARY_PATH and reports the staged TVM', () => {
    const env = { ...process.env };
    delete env.LD_LIBRARY_PATH;
    const script = `process.stdout.write(JSON.stringify(require(${JSON.stringify(built)}).versions()))`;
    const v = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: os.tmpdir(), env, encoding: 'utf8' }));
    assert.equal(v.tvm, staged.tvmVersion);
    assert.equal(v.tvmSource, staged.source);
    assert.equal(v.ffiRuntime, v.ffiHeaders, 'tvm-ffi loaded at run time differs from the headers built against');
    assert.equal(v.napi, 8);
  });

  it('finds the TVM runtime through $ORIGIN rpaths only (readelf -d)', () => {
    assert.ok(haveReadelf(), 'readelf (binutils, which comes with g++) is needed to check the rpaths');
    assertPortableLinkage(built);
  });

  it('the cmake-js build (build/Release/tvm_node.node) has the same rpaths', () => {
    assert.ok(haveReadelf(), 'readelf (binutils, which comes with g++) is needed to check the rpaths');
    const cmakeBuilt = path.join(repoRoot, 'build', 'Release', 'tvm_node.node');
    assert.ok(fs.existsSync(cmakeBuilt), `${cmakeBuilt} missing (npm run setup builds it)`);
    assertPortableLinkage(cmakeBuilt);
    assert.deepEqual(dynamicSection(cmakeBuilt).paths, dynamicSection(built).paths);
  });
});
