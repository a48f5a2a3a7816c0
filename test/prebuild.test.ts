/**
 * The prebuilds load where TVM's own wheels load: manylinux_2_28 (glibc 2.28, GCC 8's libstdc++).
 * For each prebuilds/<platform>/ folder, the addon's version needs (`readelf --version-info`: the
 * symbol versions it asks of libc, libstdc++ and the rest) are read and held to that: GLIBC_2.28
 * at most, and no newer GLIBCXX_ / CXXABI_ than manylinux_2_28's libstdc++ has nor than TVM's
 * libraries beside it ask for. This machine's folder is built first when missing or stale
 * (scripts/cross-build.mjs, zig for glibc 2.28, as `npm pack` builds it; a few seconds when
 * current, about a minute and the zig download from PyPI when not); linux-arm64 is checked when
 * present, and otherwise the test says why it is skipped.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from './fixtures';

/**
 * The newest versions a library built for manylinux_2_28 may need: glibc 2.28 and GCC 8's
 * libstdc++ (AlmaLinux 8: GLIBCXX_3.4.25, CXXABI_1.3.11). The addon is held to TVM's libraries'
 * needs as well, which are older (GLIBCXX_3.4.22 with TVM 0.27).
 */
const MANYLINUX_2_28: Record<string, string> = { GLIBC: '2.28', GLIBCXX: '3.4.25', CXXABI: '1.3.11' };
/** The folders the package ships, and why one may be missing here. */
const PLATFORMS: Record<string, string> = {
  'linux-x64': 'built by `npm pack` and `npm run prebuilds` on an x86-64 Linux machine',
  'linux-arm64':
    "`npm run build:arm64` makes it on an x86-64 machine (Debian's g++-aarch64-linux-gnu, installed by apt-get as root, and ~200 MB of downloads), which `npm test` does not do",
};
const host = `${process.platform}-${process.arch}`;

function compare(a: string, b: string): number {
  const [x, y] = [a.split('.').map(Number), b.split('.').map(Number)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  return 0;
}

/**
 * What an ELF file needs, from the version needs section that `readelf --version-info` prints:
 * the newest version of each family (GLIBC, GLIBCXX, CXXABI, GCC) and the libraries it names.
 */
function needsOf(file: string): { newest: Record<string, string>; from: string[] } {
  const text = execFileSync('readelf', ['--version-info', '--wide', file], { encoding: 'utf8' });
  const section = text.split(/^Version needs section/m)[1] ?? '';
  const newest: Record<string, string> = {};
  for (const [, family, v] of section.matchAll(/Name: ([A-Z]+)_(\d+(?:\.\d+)*)\s/g)) {
    if (!newest[family] || compare(v, newest[family]) > 0) newest[family] = v;
  }
  return { newest, from: [...section.matchAll(/File: (\S+)/g)].map((m) => m[1]) };
}

const show = (n: Record<string, string>) =>
  ['GLIBC', 'GLIBCXX', 'CXXABI']
    .filter((k) => n[k])
    .map((k) => `${k}_${n[k]}`)
    .join(' ');

describe("prebuilds: the addon needs no newer glibc or libstdc++ than TVM's manylinux_2_28 wheels", function () {
  this.timeout(900000);
  /** Why this machine's folder could not be built (then its test is skipped with this reason). */
  let hostSkip: string | undefined;

  before(() => {
    if (!(host in PLATFORMS)) return;
    const staged = JSON.parse(fs.readFileSync(path.join(repoRoot, 'tvm', 'staged.json'), 'utf8')) as { source: string };
    if (staged.source !== 'pypi') {
      hostSkip = `the TVM runtime in tvm/ is from ${staged.source}; the glibc 2.28 build is made against the pinned wheels`;
      return;
    }
    const r = spawnSync(process.execPath, [path.join(repoRoot, 'scripts', 'cross-build.mjs'), '--arch', process.arch], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 840000,
    });
    assert.equal(r.status, 0, `scripts/cross-build.mjs --arch ${process.arch} failed (status ${r.status}, signal ${r.signal})\n${r.stderr.slice(-4000)}`);
  });

  const present = fs.existsSync(path.join(repoRoot, 'prebuilds')) ? fs.readdirSync(path.join(repoRoot, 'prebuilds')) : [];
  for (const platform of [...new Set([...Object.keys(PLATFORMS), ...present.filter((p) => !p.endsWith('.tmp'))])].sort()) {
    it(`${platform}: GLIBC <= 2.28, GLIBCXX and CXXABI no newer than manylinux_2_28's nor TVM's libraries'`, function () {
      const dir = path.join(repoRoot, 'prebuilds', platform);
      const addon = path.join(dir, 'tvm-node.glibc.node');
      const skip =
        platform === host
          ? hostSkip
          : !fs.existsSync(addon)
            ? `prebuilds/${platform} is not built here: ${PLATFORMS[platform] ?? 'no script here makes it'}`
            : undefined;
      if (skip) {
        this.test!.title += ` [skipped: ${skip}]`;
        this.skip();
      }
      const needs = needsOf(addon);
      const libs = fs.readdirSync(dir).filter((f) => /^libtvm_.*\.so$/.test(f));
      assert.ok(libs.includes('libtvm_runtime.so'), `no libtvm_runtime.so in prebuilds/${platform}`);
      // What TVM's own libraries (from the manylinux_2_28 wheels) need: the C++ runtime floor.
      const tvm: Record<string, string> = {};
      for (const lib of libs) {
        const n = needsOf(path.join(dir, lib)).newest;
        for (const [k, v] of Object.entries(n)) if (!tvm[k] || compare(v, tvm[k]) > 0) tvm[k] = v;
        for (const k of Object.keys(MANYLINUX_2_28))
          assert.ok(!n[k] || compare(n[k], MANYLINUX_2_28[k]) <= 0, `prebuilds/${platform}/${lib} needs ${k}_${n[k]}: not TVM's manylinux_2_28 wheel`);
      }
      const summary = `addon needs ${show(needs.newest)} (from ${needs.from.join(', ')}); TVM's libraries ${show(tvm)}`;
      for (const k of Object.keys(MANYLINUX_2_28)) {
        assert.ok(needs.newest[k], `the addon needs no ${k}_ version at all: ${summary}`);
        assert.ok(
          compare(needs.newest[k], MANYLINUX_2_28[k]) <= 0,
          `the addon needs ${k}_${needs.newest[k]}, newer than manylinux_2_28's ${k}_${MANYLINUX_2_28[k]}: ${summary}`,
        );
      }
      for (const k of ['GLIBCXX', 'CXXABI']) {
        assert.ok(
          compare(needs.newest[k], tvm[k]) <= 0,
          `the addon needs ${k}_${needs.newest[k]}, newer than TVM's libraries beside it (${k}_${tvm[k]}): ${summary}`,
        );
      }
      this.test!.title += ` [${summary}]`;
    });
  }
});
