#!/usr/bin/env node
// Makes the npm package installable with no toolchain (`npm pack` / `npm publish` run this as
// `prepack`):
//   node scripts/package.mjs              set-up (scripts/bootstrap.mjs), dist/lib rebuilt from
//                                         scratch by tsc, then the prebuilds as below
//   node scripts/package.mjs prebuilds    only the prebuilds (`npm run prebuilds`)
//
// prebuilds/<platform>-<arch>/ holds what a machine of that kind needs to load tvm-node
// (lib/binding.ts finds it there), flat:
//   tvm-node.glibc.node            the addon (stripped; prebuildify's name), rpath $ORIGIN
//   libtvm_ffi.so, libtvm_runtime.so, and the sidecars the addon loads when present
//                                  (libtvm_runtime_extra.so, libtvm_runtime_cuda.so)
//   licenses/                      TVM's and tvm-ffi's license and notice files: LICENSE.tvm,
//                                  NOTICE.tvm, LICENSE.tvm-ffi, NOTICE.tvm-ffi,
//                                  LICENSE.libbacktrace, and TVM's LICENSE.*.txt of the
//                                  third-party code in its libraries
// This machine's folder (linux-x64 or linux-arm64, with the TVM runtime of the pinned wheels) is
// built by scripts/cross-build.mjs for glibc 2.28 (zig), so it loads where TVM's manylinux_2_28
// wheels load; skipped when current. Otherwise (a TVM_HOME build, another machine, or
// <GNU ARCH>_TOOLCHAIN=gnu, e.g. X86_64_TOOLCHAIN=gnu) it is staged from the addon the set-up built
// (build/Release, cmake-js, the host's g++ and glibc) and the runtime it links (tvm/lib). Then
// the folder as users get it is loaded with its libraries alone. Other folders (linux-arm64, made
// by `npm run build:arm64`) are only checked here: every folder must be complete, its ELF files
// built for its architecture and its addon no older than native/, or packing stops with one line
// naming the folder and what is wrong. Last, one line per folder: its size and the newest glibc /
// libstdc++ symbol versions its addon and TVM's libraries need.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { elfMachine, formatNeeds, MANYLINUX_2_28, maxVersions, newerThan, versionNeeds } from './elf.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const log = (msg) => process.stderr.write(`[tvm-node package] ${msg}\n`);

/** The addon's file name in a prebuild folder (prebuildify's naming: package name, libc tag). */
export const ADDON_NAME = 'tvm-node.glibc.node';
/** Runtime libraries the addon links (NEEDED) and those it loads beside them when present. */
export const REQUIRED_LIBS = ['libtvm_ffi.so', 'libtvm_runtime.so'];
export const OPTIONAL_LIBS = ['libtvm_runtime_extra.so', 'libtvm_runtime_cuda.so'];
/** License files every prebuild folder holds in licenses/. */
export const LICENSES = ['LICENSE.tvm', 'NOTICE.tvm', 'LICENSE.tvm-ffi', 'NOTICE.tvm-ffi'];

/** ELF e_machine of each Node architecture a prebuild folder may be named after. */
const MACHINE_OF_ARCH = { x64: 62, arm64: 183, arm: 40, ia32: 3, riscv64: 243, ppc64: 21, s390x: 22, loong64: 258 };

/**
 * License and notice files of a staged TVM (a tvm/staged.json record), as they sit in a
 * prebuild folder's licenses/: name -> source file (see licenseFilesIn). The PyPI wheels keep
 * them in the packages' folders and tvm-ffi's dist-info; a TVM_HOME source tree at its top and
 * under 3rdparty/tvm-ffi.
 */
export function licenseFiles(staged) {
  const what = `the TVM staged from ${staged.source} (tvm ${staged.tvmVersion}, tvm-ffi ${staged.ffiVersion})`;
  if (staged.source !== 'pypi') {
    const tvm = staged.source.replace(/^TVM_HOME=/, '');
    const ffi = path.join(tvm, '3rdparty', 'tvm-ffi');
    return licenseFilesIn({ tvm, ffi, ffiLicenses: ffi }, what);
  }
  // <site-packages>/tvm/lib and <site-packages>/tvm_ffi/lib: the packages sit one level up.
  const tvm = path.dirname(path.dirname(staged.libs['libtvm_runtime.so']));
  const ffi = path.dirname(path.dirname(staged.libs['libtvm_ffi.so']));
  return licenseFilesIn({ tvm, ffi, ffiLicenses: path.join(path.dirname(ffi), `apache_tvm_ffi-${staged.ffiVersion}.dist-info`, 'licenses') }, what);
}

/**
 * The license files of TVM's folder `tvm`, tvm-ffi's folder `ffi` and the folder of tvm-ffi's
 * LICENSE and NOTICE (`ffiLicenses`), named as in a prebuild folder's licenses/: LICENSE.tvm,
 * NOTICE.tvm, LICENSE.tvm-ffi, NOTICE.tvm-ffi, LICENSE.libbacktrace (tvm-ffi's), and TVM's
 * LICENSE.*.txt of the third-party code in its libraries. Throws when one of LICENSES is missing.
 */
export function licenseFilesIn({ tvm, ffi, ffiLicenses }, what = `the TVM in ${tvm}`) {
  const out = {};
  const add = (name, file) => {
    if (file && fs.existsSync(file) && fs.statSync(file).isFile()) out[name] = file;
  };
  add('LICENSE.tvm', path.join(tvm, 'LICENSE'));
  add('NOTICE.tvm', path.join(tvm, 'NOTICE'));
  if (ffiLicenses) {
    add('LICENSE.tvm-ffi', path.join(ffiLicenses, 'LICENSE'));
    add('NOTICE.tvm-ffi', path.join(ffiLicenses, 'NOTICE'));
  }
  add('LICENSE.libbacktrace', path.join(ffi, '3rdparty', 'libbacktrace', 'LICENSE'));
  const third = path.join(tvm, 'licenses');
  for (const name of fs.existsSync(third) ? fs.readdirSync(third).sort() : []) add(name, path.join(third, name));
  for (const must of LICENSES) if (!out[must]) throw new Error(`${must} not found for ${what}`);
  return out;
}

/**
 * Fills prebuilds/<target>/ (emptied first) with `addon` (stripped with `strip`, the strip
 * binary for the target), the runtime libraries of `libDir`, and `licenses` (name -> file,
 * licenseFiles of the runtime in `libDir`) in licenses/.
 */
export function stagePrebuild({ root: pkgRoot = root, target, addon, libDir, licenses, strip = 'strip' }) {
  const dir = path.join(pkgRoot, 'prebuilds', target);
  const tmp = `${dir}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const dest = path.join(tmp, ADDON_NAME);
  fs.copyFileSync(addon, dest);
  // As prebuildify --strip: the static symbol table goes, the dynamic one stays.
  execFileSync(strip, ['--strip-all', dest], { stdio: ['ignore', 2, 2] });
  for (const name of [...REQUIRED_LIBS, ...OPTIONAL_LIBS]) {
    const from = path.join(libDir, name);
    if (fs.existsSync(from)) fs.copyFileSync(from, path.join(tmp, name));
    else if (REQUIRED_LIBS.includes(name)) throw new Error(`${name} missing in ${libDir}`);
  }
  fs.mkdirSync(path.join(tmp, 'licenses'));
  for (const [name, from] of Object.entries(licenses)) fs.copyFileSync(from, path.join(tmp, 'licenses', name));
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
  return dir;
}

/** Newest modification time of the addon's sources (native/*.cc, *.h). */
function newestSource(pkgRoot) {
  const dir = path.join(pkgRoot, 'native');
  return Math.max(...fs.readdirSync(dir).map((f) => fs.statSync(path.join(dir, f)).mtimeMs));
}

/**
 * Checks every prebuilds/<platform>-<arch>/ folder; returns a summary of each (size, files, the
 * newest glibc and libstdc++ symbol versions its addon and TVM's libraries need: versionNeeds).
 * Throws one line naming the folder and what is wrong.
 */
export function checkPrebuilds(pkgRoot = root) {
  const base = path.join(pkgRoot, 'prebuilds');
  const sources = newestSource(pkgRoot);
  const out = [];
  for (const target of fs.existsSync(base) ? fs.readdirSync(base).sort() : []) {
    const dir = path.join(base, target);
    const rel = `prebuilds/${target}`;
    if (!fs.statSync(dir).isDirectory() || target.endsWith('.tmp')) throw new Error(`${rel} is not a prebuild folder: remove it`);
    const names = fs.readdirSync(dir).sort();
    const addons = names.filter((f) => f.endsWith('.node'));
    if (addons.length !== 1) throw new Error(`${rel} must hold one addon (*.node), has ${addons.length ? addons.join(', ') : 'none'}`);
    for (const lib of REQUIRED_LIBS) if (!names.includes(lib)) throw new Error(`${rel} lacks ${lib}, which its addon links: stage it beside the addon`);
    for (const f of LICENSES) {
      if (!fs.existsSync(path.join(dir, 'licenses', f))) throw new Error(`${rel} lacks licenses/${f} (TVM's license and notice files ship with its libraries)`);
    }
    const arch = target.split('-').slice(1).join('-');
    const want = MACHINE_OF_ARCH[arch];
    const elfs = names.filter((n) => n.endsWith('.so') || n.endsWith('.node'));
    for (const f of elfs) {
      const m = elfMachine(path.join(dir, f));
      if (want !== undefined && m !== want) throw new Error(`${rel}/${f} is built for ELF machine ${m}, not ${arch} (${want})`);
    }
    if (fs.statSync(path.join(dir, addons[0])).mtimeMs < sources) {
      throw new Error(`${rel}/${addons[0]} is older than native/: rebuild it (linux-arm64: npm run build:arm64) or remove ${rel}`);
    }
    const size = (f) => fs.statSync(path.join(dir, f)).size;
    const all = fs.readdirSync(dir, { recursive: true }).filter((f) => fs.statSync(path.join(dir, f)).isFile());
    out.push({
      target,
      bytes: all.reduce((n, f) => n + size(f), 0),
      files: Object.fromEntries(elfs.map((f) => [f, size(f)])),
      licenses: all.filter((f) => f.startsWith(`licenses${path.sep}`)),
      addonNeeds: versionNeeds(path.join(dir, addons[0])),
      libNeeds: maxVersions(elfs.filter((f) => f !== addons[0]).flatMap((f) => Object.entries(versionNeeds(path.join(dir, f))))),
    });
  }
  return out;
}

function run(cmd, args) {
  log([cmd, ...args].map((a) => (a.startsWith(`${root}${path.sep}`) ? path.relative(root, a) : path.basename(a))).join(' '));
  execFileSync(cmd, args, { cwd: root, stdio: ['ignore', process.stderr, 'inherit'] });
}

/**
 * Fills this machine's prebuild folder: built for glibc 2.28 by scripts/cross-build.mjs when it
 * can be (see the top of this file), else staged from build/Release. Returns the folder.
 */
async function hostPrebuild() {
  const target = `${process.platform}-${process.arch}`;
  const stagedFile = path.join(root, 'tvm', 'staged.json');
  if (!fs.existsSync(stagedFile)) throw new Error('no TVM runtime staged (tvm/staged.json): run `npm run setup` first');
  const staged = JSON.parse(fs.readFileSync(stagedFile, 'utf8'));
  // Imported here: scripts/cross-build.mjs imports this module's staging functions.
  const { crossBuild, toolchainArg, targetOf } = await import('./cross-build.mjs');
  const why =
    process.platform !== 'linux' || !['x64', 'arm64'].includes(process.arch)
      ? `zig builds linux-x64 and linux-arm64 here, not ${target}`
      : staged.source !== 'pypi'
        ? `the TVM runtime is from ${staged.source}, not the pinned wheels`
        : toolchainArg(process.arch, []) === 'gnu'
          ? `${targetOf(process.arch).envName}_TOOLCHAIN=gnu`
          : null;
  if (!why) return crossBuild({ arch: process.arch, log: (m) => log(`cross-build: ${m}`) }).dir;
  const addon = path.join(root, 'build', 'Release', 'tvm_node.node');
  if (!fs.existsSync(addon)) throw new Error('no addon built (build/Release/tvm_node.node): run `npm run setup` first');
  log(`prebuilds/${target} from build/Release (${why}): it needs the glibc and libstdc++ of the g++ that built it`);
  return stagePrebuild({ target, addon, libDir: path.join(root, 'tvm', 'lib'), licenses: licenseFiles(staged) });
}

async function main() {
  const mode = process.argv[2] ?? 'all';
  if (mode !== 'all' && mode !== 'prebuilds') {
    process.stderr.write('usage: node scripts/package.mjs [prebuilds]\n');
    process.exit(2);
  }
  if (mode === 'all') {
    run(process.execPath, [path.join(root, 'scripts', 'bootstrap.mjs')]);
    // From scratch: a module removed from lib/ must not ship from an old build.
    fs.rmSync(path.join(root, 'dist', 'lib'), { recursive: true, force: true });
    run(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(root, 'tsconfig.json')]);
  }
  const dir = await hostPrebuild();
  // The folder as users get it: the addon finds its runtime through $ORIGIN alone.
  const probe = `const a = require(${JSON.stringify(path.join(dir, ADDON_NAME))}); const p = a.libraryPaths(); process.stdout.write(JSON.stringify(p))`;
  const env = { ...process.env };
  delete env.LD_LIBRARY_PATH;
  const paths = JSON.parse(execFileSync(process.execPath, ['-e', probe], { cwd: dir, env, encoding: 'utf8' }));
  for (const [role, file] of Object.entries(paths)) {
    if (path.dirname(fs.realpathSync(file)) !== fs.realpathSync(dir))
      throw new Error(`${path.relative(root, dir)}: the ${role} library loaded from ${file}, not from beside the addon`);
  }
  for (const p of checkPrebuilds()) {
    const mib = (p.bytes / 1048576).toFixed(1);
    const files = Object.entries(p.files).map(([f, n]) => `${f} ${(n / 1048576).toFixed(2)}`);
    const over = newerThan(p.addonNeeds, MANYLINUX_2_28);
    const verdict = Object.keys(over).length === 0 ? "within manylinux_2_28, as TVM's wheels" : `newer than manylinux_2_28: ${formatNeeds(over)}`;
    log(
      `prebuilds/${p.target}: ${mib} MiB: ${files.join(', ')} MiB, ${p.licenses.length} license files; ` +
        `the addon needs ${formatNeeds(p.addonNeeds)} (${verdict}), TVM's libraries ${formatNeeds(p.libNeeds)}`,
    );
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    log(`failed: ${err.message}`);
    process.exit(1);
  });
}
