/**
 * The npm package as users get it: `npm pack` (its prepack, scripts/package.mjs, builds dist/
 * and prebuilds/<platform>-<arch>/: for linux-x64 the addon built by zig for glibc 2.28,
 * test/prebuild.test.ts checks its symbol versions), the tarball installed by npm into an empty folder
 * with PATH holding only node and npm (no compiler, cmake or Python: nothing can be built
 * there), then a model compiled elsewhere (the mlp fixture) loaded and run through
 * `require('tvm-node')` against its numpy reference, and the installed `tvm-node info`.
 * Also: the one message an addon that cannot load gives (no prebuild for the platform, a
 * runtime library missing, a glibc too old), and the native loader naming the architecture
 * of a library built for another machine.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { addon, addonLoadError } from '../lib/binding';
import { TvmValueError } from '../lib/errors';
import { type Fixture, fixture, fixtureFile, npy, repoRoot } from './fixtures';

const target = `${process.platform}-${process.arch}`;

/** npm's own entry script (npm-cli.js): the npm that runs this test, else the first on PATH. */
function npmCli(): string {
  const onPath = (process.env.PATH ?? '').split(path.delimiter).map((d) => path.join(d, 'npm'));
  for (const c of [process.env.npm_execpath, path.join(path.dirname(process.execPath), 'npm'), ...onPath]) {
    if (c && /npm(-cli\.js)?$/.test(c) && fs.existsSync(c)) return fs.realpathSync(c);
  }
  throw new Error('npm not found (next to node or on PATH)');
}

/** The environment of a machine with node and npm only: PATH is `bin`, which holds just those two. */
function bareEnv(bin: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { HOME: process.env.HOME ?? os.homedir(), PATH: bin, TMPDIR: os.tmpdir(), LANG: 'C.UTF-8' };
  // Where npm keeps its cache and which registry and proxy it uses stay as configured here, so
  // the package's few JS dependencies come from the cache that `npm ci` filled.
  for (const k of ['npm_config_cache', 'npm_config_registry', 'HTTPS_PROXY', 'HTTP_PROXY', 'NO_PROXY', 'https_proxy', 'http_proxy', 'no_proxy']) {
    if (process.env[k]) env[k] = process.env[k];
  }
  // npm runs install scripts with `sh` from PATH; a board has /bin/sh, and nothing else is needed.
  env.npm_config_script_shell = '/bin/sh';
  return env;
}

interface Packed {
  filename: string;
  size: number;
  unpackedSize: number;
  entryCount: number;
  files: Array<{ path: string; size: number }>;
}

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

describe('the npm package, installed with node and npm only', function () {
  // A cold `npm pack` builds prebuilds/linux-x64 with zig (scripts/cross-build.mjs): the zig
  // download and about a minute of compiling on 2 cores.
  this.timeout(600000);
  let work: string;
  let bin: string;
  let app: string;
  let packed: Packed;
  let installLog: string;
  let mlp: Fixture & { path: string };

  before(() => {
    mlp = fixture('mlp');
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-package-'));
    bin = path.join(work, 'bin');
    fs.mkdirSync(bin);
    fs.symlinkSync(process.execPath, path.join(bin, 'node'));
    fs.symlinkSync(npmCli(), path.join(bin, 'npm'));
    // npm pack in the checkout: prepack (scripts/package.mjs) builds dist/ and the prebuilds.
    const r = spawnSync(process.execPath, [npmCli(), 'pack', '--json', '--pack-destination', work], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 420000,
      maxBuffer: 64 * 1024 * 1024,
    });
    assert.equal(r.status, 0, `npm pack failed (status ${r.status}, signal ${r.signal})\n${r.stderr.slice(-4000)}`);
    packed = (JSON.parse(r.stdout.slice(r.stdout.search(/^\[/m))) as Packed[])[0];

    app = path.join(work, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
    const install = spawnSync(
      path.join(bin, 'npm'),
      ['install', '--no-audit', '--no-fund', '--prefer-offline', '--foreground-scripts', path.join(work, packed.filename)],
      { cwd: app, env: bareEnv(bin), encoding: 'utf8', timeout: 180000 },
    );
    installLog = `${install.stdout}\n${install.stderr}`;
    assert.equal(install.status, 0, `npm install of the tarball failed (status ${install.status}, signal ${install.signal})\n${installLog.slice(-4000)}`);
  });

  after(() => {
    if (work && !process.env.TVM_NODE_KEEP_PACKAGE_TEST) fs.rmSync(work, { recursive: true, force: true });
  });

  it('npm pack: dist/, the prebuilds with the TVM runtime and its licenses, tni1.py; no sources of tests or toolchain', function () {
    const files = new Set(packed.files.map((f) => f.path));
    const prebuilds = [...new Set(packed.files.map((f) => /^prebuilds\/([^/]+)\//.exec(f.path)?.[1]).filter((t): t is string => !!t))].sort();
    assert.ok(prebuilds.includes(target), `no prebuilds/${target} in the tarball: ${[...files].join(', ')}`);
    for (const t of prebuilds) {
      for (const f of ['tvm-node.glibc.node', 'libtvm_ffi.so', 'libtvm_runtime.so', 'libtvm_runtime_extra.so']) {
        assert.ok(files.has(`prebuilds/${t}/${f}`), `prebuilds/${t}/${f} missing`);
      }
      for (const f of ['LICENSE.tvm', 'NOTICE.tvm', 'LICENSE.tvm-ffi', 'NOTICE.tvm-ffi'])
        assert.ok(files.has(`prebuilds/${t}/licenses/${f}`), `prebuilds/${t}/licenses/${f} missing`);
    }
    for (const f of [
      'package.json',
      'README.md',
      'dist/lib/index.js',
      'dist/lib/index.d.ts',
      'dist/lib/cli.js',
      'dist/lib/binding.js',
      'scripts/install.mjs',
      'scripts/tni1.py',
    ]) {
      assert.ok(files.has(f), `${f} missing from the tarball`);
    }
    const unwanted = [...files].filter((f) => /^(test|bench|lib|build|dist\/(test|bench)|tvm\/(\.venv|lib|include)|\.cache|node_modules)\//.test(f));
    assert.deepEqual(unwanted, [], 'the tarball holds development files');
    // Two platforms' runtimes (~3 MB each, compressed) and the JS: a bound that catches a stray folder.
    assert.ok(packed.size < 8 * 1048576 * Math.max(1, prebuilds.length), `tarball ${mib(packed.size)}`);
    const perTarget = prebuilds.map((t) => {
      const bytes = packed.files.filter((f) => f.path.startsWith(`prebuilds/${t}/`)).reduce((n, f) => n + f.size, 0);
      return `${t} ${mib(bytes)}`;
    });
    const summary = `${packed.filename}: ${mib(packed.size)} (${packed.size} bytes) packed, ${mib(packed.unpackedSize)} unpacked, ${packed.entryCount} files; prebuilds: ${perTarget.join(', ')}`;
    this.test!.title += ` [${summary}]`;
    console.log(`      ${summary}`);
  });

  it('npm install ran no build: no node-gyp, no build/ folder, the install check passed', () => {
    assert.doesNotMatch(installLog, /gyp|cmake|g\+\+|python/i, `npm install tried to build:\n${installLog}`);
    assert.match(installLog, /node scripts\/install\.mjs/, `the install check did not run:\n${installLog}`);
    const pkg = path.join(app, 'node_modules', 'tvm-node');
    assert.ok(fs.existsSync(path.join(pkg, 'prebuilds', target, 'libtvm_runtime.so')));
    assert.ok(!fs.existsSync(path.join(pkg, 'build')), 'node_modules/tvm-node/build exists: something was built');
    // The check itself, as npm runs it (future npm may ask users to approve install scripts).
    const r = spawnSync(path.join(bin, 'node'), [path.join(pkg, 'scripts', 'install.mjs')], { cwd: pkg, env: bareEnv(bin), encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });

  it("require('tvm-node') loads the prebuild and runs a model compiled elsewhere to numpy's output", () => {
    fs.copyFileSync(mlp.path, path.join(app, 'model.so'));
    const [input, output] = [mlp.cases[0].inputs[0], mlp.cases[0].outputs[0]];
    fs.copyFileSync(fixtureFile(input), path.join(app, 'x.npy'));
    const script = `
      const tvm = require('tvm-node');
      (async () => {
        const x = tvm.readNpy('x.npy');
        const model = await tvm.Model.load('model.so');
        const { output0 } = await model.run({ ${input.name}: { data: x.data, shape: x.shape, dtype: x.dtype } });
        const out = { shape: output0.shape, dtype: output0.dtype, data: Array.from(await output0.toArray()) };
        await output0.dispose();
        await model.dispose();
        out.libraries = tvm.loadedLibraries().map((l) => ({ role: l.role, path: l.path }));
        process.stdout.write(JSON.stringify(out));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    fs.writeFileSync(path.join(app, 'run.js'), script);
    const r = spawnSync(path.join(bin, 'node'), ['run.js'], { cwd: app, env: bareEnv(bin), encoding: 'utf8', timeout: 60000 });
    assert.equal(r.status, 0, `run.js failed (status ${r.status}, signal ${r.signal})\n${r.stderr}`);
    const out = JSON.parse(r.stdout) as { shape: number[]; dtype: string; data: number[]; libraries: Array<{ role: string; path: string }> };
    const ref = npy(output);
    assert.deepEqual(out.shape, ref.shape);
    assert.equal(out.dtype, ref.dtype);
    const want = ref.data as Float32Array;
    const { rtol, atol } = mlp.tolerance;
    for (let i = 0; i < want.length; i++)
      assert.ok(Math.abs(out.data[i] - want[i]) <= atol + rtol * Math.abs(want[i]), `output[${i}]: ${out.data[i]} vs ${want[i]}`);
    // Every TVM library and the addon came from the installed prebuild folder.
    const prebuilt = fs.realpathSync(path.join(app, 'node_modules', 'tvm-node', 'prebuilds', target));
    for (const lib of out.libraries) assert.equal(path.dirname(lib.path), prebuilt, `${lib.role} loaded from ${lib.path}`);
  });

  it('the installed `tvm-node info` works', () => {
    const r = spawnSync(path.join(app, 'node_modules', '.bin', 'tvm-node'), ['info'], { cwd: app, env: bareEnv(bin), encoding: 'utf8', timeout: 60000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^tvm-node\s+\d+\.\d+\.\d+/m);
    assert.match(r.stdout, new RegExp(`^loaded\\s+tvm-node addon\\s+\\S*/node_modules/tvm-node/prebuilds/${target}/tvm-node\\.glibc\\.node`, 'm'));
    assert.match(r.stdout, /^abi check\s+ok/m);
    assert.match(r.stdout, /^device\s+cpu\(0\)\s+present/m);
  });

  it('with no prebuild for the platform: one message naming it, what the package has and what to do (require and install check)', () => {
    // An unsupported machine, as far as tvm-node can tell: process.arch says riscv64.
    const fake = path.join(work, 'riscv64.js');
    fs.writeFileSync(fake, "Object.defineProperty(process, 'arch', { value: 'riscv64' });\n");
    const expected =
      /tvm-node: no prebuilt binary for linux-riscv64 and no local build \(build\/Release\/tvm_node\.node\) in \S+; this package has prebuilt binaries for (linux-\w+, )*linux-\w+ \(glibc\)\. Install on one of those, or build from source: clone the tvm-node repository, run `npm run setup && npm pack` there \(needs Python >= 3\.10, cmake and g\+\+/m;
    const r = spawnSync(path.join(bin, 'node'), ['-r', fake, '-e', "require('tvm-node')"], { cwd: app, env: bareEnv(bin), encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, expected);
    assert.doesNotMatch(r.stderr, /gyp|No native build was found/);
    const check = spawnSync(path.join(bin, 'node'), ['-r', fake, path.join(app, 'node_modules', 'tvm-node', 'scripts', 'install.mjs')], {
      env: bareEnv(bin),
      encoding: 'utf8',
    });
    assert.equal(check.status, 1);
    assert.match(check.stderr, expected);
    assert.ok(check.stderr.startsWith('tvm-node: no prebuilt binary'), check.stderr);
    assert.equal(check.stderr.trim().split('\n').length, 1, `the install check printed more than one line:\n${check.stderr}`);
  });

  it('with a runtime library missing beside the prebuild: the message names it and says to reinstall', () => {
    const pkg = path.join(app, 'node_modules', 'tvm-node');
    const broken = path.join(app, 'node_modules', 'tvm-node-broken');
    fs.cpSync(pkg, broken, { recursive: true });
    fs.rmSync(path.join(broken, 'prebuilds', target, 'libtvm_runtime.so'));
    const r = spawnSync(path.join(bin, 'node'), ['-e', "require('tvm-node-broken')"], { cwd: app, env: bareEnv(bin), encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(
      r.stderr,
      new RegExp(
        `tvm-node: cannot load the native addon for ${target} in \\S+: prebuilds/${target}/tvm-node\\.glibc\\.node: the library libtvm_runtime\\.so is missing: ` +
          `it must sit beside the addon in \\S+/prebuilds/${target}\\. To fix: reinstall tvm-node`,
      ),
    );
  });
});

describe('the message of an addon that cannot load', () => {
  it('a glibc older than the prebuild needs: both versions and what to do', () => {
    const root = path.join(os.tmpdir(), 'no-such-tvm-node');
    const file = path.join(root, 'prebuilds', target, 'tvm-node.glibc.node');
    const error = new Error(`/lib/x86_64-linux-gnu/libc.so.6: version \`GLIBC_2.34' not found (required by ${file})`);
    const have = (process.report.getReport() as { header: { glibcVersionRuntime?: string } }).header.glibcVersionRuntime;
    const msg = addonLoadError([{ file, error }], root, target);
    assert.match(
      msg,
      new RegExp(`^tvm-node: cannot load the native addon for ${target} in \\S+: prebuilds/${target}/tvm-node\\.glibc\\.node: it needs glibc >= 2\\.34, `),
    );
    assert.ok(msg.includes(`this system has ${have ? `glibc ${have}` : 'no glibc'}`), msg);
    assert.match(msg, /To fix: run it on a system with glibc >= 2\.34, or build from source on this one\. To build from source: clone the tvm-node repository/);
  });

  it('a missing C++ runtime version and an unknown symbol are said in words', () => {
    const root = path.join(os.tmpdir(), 'no-such-tvm-node');
    const file = path.join(root, 'prebuilds', target, 'tvm-node.glibc.node');
    const cxx = addonLoadError([{ file, error: new Error("/lib/libstdc++.so.6: version `GLIBCXX_3.4.29' not found") }], root, target);
    assert.match(cxx, /it needs GLIBCXX_3\.4\.29 of libstdc\+\+, which this system's libstdc\+\+ is too old to have\. To fix: update libstdc\+\+/);
    const sym = addonLoadError([{ file, error: new Error(`${file}: undefined symbol: TVMFFIFoo`) }], root, target);
    assert.match(
      sym,
      /a symbol is missing \(TVMFFIFoo\): the TVM runtime libraries beside it are not the ones it was built against\. To fix: reinstall tvm-node/,
    );
  });
});

describe('the native module loader names the architecture of a foreign library', () => {
  let tmp: string;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-foreign-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('an x86-64 .so patched to aarch64 (e_machine 183): not "No such file or directory" but both architectures', async () => {
    // The mlp artifact, built for this machine, with its ELF header's e_machine (offset 18,
    // little-endian uint16) set to another machine's: what the dynamic loader calls missing.
    const [other, otherName, here, hereName] = process.arch === 'arm64' ? [62, 'x86-64', 183, 'aarch64'] : [183, 'aarch64', 62, 'x86-64'];
    const bytes = fs.readFileSync(fixture('mlp').path);
    assert.equal(bytes.readUInt16LE(18), here, 'the fixture is not built for this machine');
    bytes.writeUInt16LE(other, 18);
    const foreign = path.join(tmp, 'model.so');
    fs.writeFileSync(foreign, bytes);
    // lib/module.ts puts `cannot load <the caller's path>: ` in front (the addon may be loading a private copy).
    const expected = `built for ${otherName} (ELF machine ${other}), but this process runs on ${hereName} (ELF machine ${here}): compile it for this machine's target`;
    const check = (e: unknown) => {
      assert.ok(e instanceof TvmValueError, `not a TvmValueError: ${e}`);
      assert.equal((e as Error).message, expected);
      return true;
    };
    // The addon's own loader (what lib/module.ts's checks stand in front of).
    assert.throws(() => addon.NativeModule.load(foreign), check);
    await assert.rejects(addon.NativeModule.loadAsync(foreign), check);
    // A 32-bit class on the same machine is named too.
    bytes.writeUInt16LE(here, 18);
    bytes[4] = 1;
    const narrow = path.join(tmp, 'narrow.so');
    fs.writeFileSync(narrow, bytes);
    assert.throws(
      () => addon.NativeModule.load(narrow),
      (e: unknown) =>
        e instanceof TvmValueError && (e as Error).message.includes(`built for ${hereName} (ELF machine ${here}, 32-bit), but this process runs on`),
    );
  });

  it('the unpatched library still loads through the same path', () => {
    const m = addon.NativeModule.load(fixture('mlp').path);
    assert.equal(typeof m.kind, 'string');
    m.dispose();
  });
});
