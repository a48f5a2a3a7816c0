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
// This machine's folder is staged from the addon set-up built (build/Release, cmake-js) and
// the runtime it links (tvm/lib): no second build. Other folders (linux-arm64, made the same
// way by scripts/cross-aarch64.mjs) are only checked here: every folder must be complete, its
// ELF files built for its architecture and its addon no older than native/, or packing stops
// with one line naming the folder and what is wrong.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const log = (msg) => process.stderr.write(`[tvm-node package] ${msg}\n`);

/** The addon's file name in a prebuild folder (prebuildify's naming: package name, libc tag). */
export const ADDON_NAME = 'tvm-node.glibc.node';
/** Runtime libraries the addon links (NEEDED) and those it loads beside them when present. */
export const REQUIRED_LIBS = ['libtvm_ffi.so', 'libtvm_runtime.so'];
export const OPTIONAL_LIBS = ['libtvm_runtime_extra.so', 'libtvm_runtime_cuda.so'];
/** License files every prebuild folder holds in licenses/ (scripts/cross-aarch64.mjs names them alike). */
export const LICENSES = ['LICENSE.tvm', 'NOTICE.tvm', 'LICENSE.tvm-ffi', 'NOTICE.tvm-ffi'];

/** ELF e_machine of each Node architecture a prebuild folder may be named after. */
const MACHINE_OF_ARCH = { x64: 62, arm64: 183, arm: 40, ia32: 3, riscv64: 243, ppc64: 21, s390x: 22, loong64: 258 };

function elfMachine(file) {
  const fd = fs.openSync(file, 'r');
  try {
    const h = Buffer.alloc(20);
    const n = fs.readSync(fd, h, 0, 20, 0);
    if (n < 20 || h.readUInt32BE(0) !== 0x7f454c46) return null;
    return h[5] === 2 ? h.readUInt16BE(18) : h.readUInt16LE(18);
  } finally {
    fs.closeSync(fd);
  }
}

/** The newest symbol version of `prefix` (GLIBC, GLIBCXX) a library asks for: the names are plain strings in its .dynstr. */
function newestVersion(file, prefix) {
  const text = fs.readFileSync(file).toString('latin1');
  let best = null;
  for (const m of text.matchAll(new RegExp(`${prefix}_(\\d+(?:\\.\\d+)+)\\0`, 'g'))) {
    const v = m[1].split('.').map(Number);
    if (!best || compareVersions(v, best) > 0) best = v;
  }
  return best ? best.join('.') : null;
}

function compareVersions(a, b) {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function newestOf(versions) {
  const vs = versions.filter(Boolean).map((v) => v.split('.').map(Number));
  return vs.length ? vs.sort(compareVersions).pop().join('.') : null;
}

/**
 * License and notice files of a staged TVM (a tvm/staged.json record), as they sit in a
 * prebuild folder's licenses/: name -> source file. LICENSE.tvm, NOTICE.tvm, LICENSE.tvm-ffi,
 * NOTICE.tvm-ffi, LICENSE.libbacktrace (tvm-ffi's), and TVM's LICENSE.*.txt of the third-party
 * code in its libraries. The PyPI wheels keep them in the packages' folders and tvm-ffi's
 * dist-info; a TVM_HOME source tree at its top and under 3rdparty/tvm-ffi.
 */
export function licenseFiles(staged) {
  const out = {};
  const add = (name, file) => {
    if (file && fs.existsSync(file) && fs.statSync(file).isFile()) out[name] = file;
  };
  const addDir = (dir) => {
    if (!dir || !fs.existsSync(dir)) return;
    for (const name of fs.readdirSync(dir).sort()) add(name, path.join(dir, name));
  };
  let tvm;
  let ffiLicenses;
  let ffi;
  if (staged.source === 'pypi') {
    // <site-packages>/tvm/lib and <site-packages>/tvm_ffi/lib: the packages sit one level up.
    tvm = path.dirname(path.dirname(staged.libs['libtvm_runtime.so']));
    ffi = path.dirname(path.dirname(staged.libs['libtvm_ffi.so']));
    ffiLicenses = path.join(path.dirname(ffi), `apache_tvm_ffi-${staged.ffiVersion}.dist-info`, 'licenses');
  } else {
    tvm = staged.source.replace(/^TVM_HOME=/, '');
    ffi = path.join(tvm, '3rdparty', 'tvm-ffi');
    ffiLicenses = ffi;
  }
  add('LICENSE.tvm', path.join(tvm, 'LICENSE'));
  add('NOTICE.tvm', path.join(tvm, 'NOTICE'));
  add('LICENSE.tvm-ffi', path.join(ffiLicenses, 'LICENSE'));
  add('NOTICE.tvm-ffi', path.join(ffiLicenses, 'NOTICE'));
  add('LICENSE.libbacktrace', path.join(ffi, '3rdparty', 'libbacktrace', 'LICENSE'));
  addDir(path.join(tvm, 'licenses'));
  for (const must of LICENSES) {
    if (!out[must]) throw new Error(`${must} not found for the TVM staged from ${staged.source} (tvm ${staged.tvmVersion}, tvm-ffi ${staged.ffiVersion})`);
  }
  return out;
}

/**
 * Fills prebuilds/<target>/ (emptied first) with `addon` (stripped with `strip`, the strip
 * binary for the target), the runtime libraries of `libDir`, and the license files of `staged`
 * (a tvm/staged.json record of the runtime in `libDir`).
 */
export function stagePrebuild({ root: pkgRoot = root, target, addon, libDir, staged, strip = 'strip' }) {
  const dir = path.join(pkgRoot, 'prebuilds', target);
  const tmp = `${dir}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const dest = path.join(tmp, ADDON_NAME);
  fs.copyFileSync(addon, dest);
  // As prebuildify --strip: the static symbol table goes, the dynamic one stays.
  execFileSync(strip, ['--strip-all', dest], { stdio: ['ignore', 'inherit', 'inherit'] });
  for (const name of [...REQUIRED_LIBS, ...OPTIONAL_LIBS]) {
    const from = path.join(libDir, name);
    if (fs.existsSync(from)) fs.copyFileSync(from, path.join(tmp, name));
    else if (REQUIRED_LIBS.includes(name)) throw new Error(`${name} missing in ${libDir}`);
  }
  fs.mkdirSync(path.join(tmp, 'licenses'));
  for (const [name, from] of Object.entries(licenseFiles(staged))) fs.copyFileSync(from, path.join(tmp, 'licenses', name));
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
 * Checks every prebuilds/<platform>-<arch>/ folder; returns a summary of each (size, files,
 * the newest glibc and libstdc++ symbol versions its libraries ask for). Throws one line
 * naming the folder and what is wrong.
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
      throw new Error(`${rel}/${addons[0]} is older than native/: rebuild it (linux-arm64: node scripts/cross-aarch64.mjs) or remove ${rel}`);
    }
    const size = (f) => fs.statSync(path.join(dir, f)).size;
    const all = fs.readdirSync(dir, { recursive: true }).filter((f) => fs.statSync(path.join(dir, f)).isFile());
    out.push({
      target,
      bytes: all.reduce((n, f) => n + size(f), 0),
      files: Object.fromEntries(elfs.map((f) => [f, size(f)])),
      licenses: all.filter((f) => f.startsWith(`licenses${path.sep}`)),
      glibc: newestOf(elfs.map((f) => newestVersion(path.join(dir, f), 'GLIBC'))),
      glibcxx: newestOf(elfs.map((f) => newestVersion(path.join(dir, f), 'GLIBCXX'))),
    });
  }
  return out;
}

function run(cmd, args) {
  log([cmd, ...args].map((a) => (a.startsWith(`${root}${path.sep}`) ? path.relative(root, a) : path.basename(a))).join(' '));
  execFileSync(cmd, args, { cwd: root, stdio: ['ignore', process.stderr, 'inherit'] });
}

function main() {
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
  const addon = path.join(root, 'build', 'Release', 'tvm_node.node');
  const stagedFile = path.join(root, 'tvm', 'staged.json');
  if (!fs.existsSync(addon) || !fs.existsSync(stagedFile)) throw new Error('no addon built (build/Release/tvm_node.node): run `npm run setup` first');
  const target = `${process.platform}-${process.arch}`;
  const staged = JSON.parse(fs.readFileSync(stagedFile, 'utf8'));
  const dir = stagePrebuild({ target, addon, libDir: path.join(root, 'tvm', 'lib'), staged });
  // The folder as users get it: the addon finds its runtime through $ORIGIN alone.
  const probe = `const a = require(${JSON.stringify(path.join(dir, ADDON_NAME))}); const p = a.libraryPaths(); process.stdout.write(JSON.stringify(p))`;
  const env = { ...process.env };
  delete env.LD_LIBRARY_PATH;
  const paths = JSON.parse(execFileSync(process.execPath, ['-e', probe], { cwd: dir, env, encoding: 'utf8' }));
  for (const [role, file] of Object.entries(paths)) {
    if (path.dirname(fs.realpathSync(file)) !== fs.realpathSync(dir))
      throw new Error(`prebuilds/${target}: the ${role} library loaded from ${file}, not from beside the addon`);
  }
  for (const p of checkPrebuilds()) {
    const mib = (p.bytes / 1048576).toFixed(1);
    const files = Object.entries(p.files).map(([f, n]) => `${f} ${(n / 1048576).toFixed(2)}`);
    log(`prebuilds/${p.target}: ${mib} MiB: ${files.join(', ')} MiB, ${p.licenses.length} license files; needs glibc >= ${p.glibc}, GLIBCXX >= ${p.glibcxx}`);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    main();
  } catch (err) {
    log(`failed: ${err.message}`);
    process.exit(1);
  }
}
