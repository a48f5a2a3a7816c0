#!/usr/bin/env node
// Cross-builds the addon for Linux aarch64 (glibc) on an x86-64 Linux host, idempotently:
//   1. the host set-up (scripts/bootstrap.mjs deps toolchain): npm dependencies, tvm/.venv,
//   2. Debian's cross toolchain (g++-aarch64-linux-gnu: binutils, the aarch64 libstdc++ and its
//      headers; installed with apt-get when missing and running as root),
//   3. the aarch64 wheels of exactly the TVM pair pinned in tvm/requirements.txt (pip download
//      --platform manylinux_2_28_aarch64), their runtime libraries, headers and license files
//      staged into .cache/aarch64/tvm/ (lib/, include/, licenses/, staged.json) and checked to be
//      of one tvm-ffi ABI generation (scripts/toolchain.mjs),
//   4. the addon, built by cmake-js from the project's own CMakeLists.txt with
//      scripts/aarch64-toolchain.cmake into .cache/aarch64/build-<toolchain> (2 jobs), by
//        zig (default): zig's clang (PyPI `ziglang`, pinned, in .cache/aarch64/zig) targeting
//          glibc 2.28, with the cross toolchain's libstdc++ and scripts/aarch64-libstdcxx-compat.cc:
//          the addon needs no newer glibc/libstdc++ symbols than TVM's manylinux_2_28 wheels;
//        gnu: Debian's aarch64-linux-gnu-g++ (Debian 12: needs glibc >= 2.34, GLIBCXX_3.4.29),
//   5. prebuilds/linux-arm64/: the stripped addon under the name prebuildify gives the x64 one
//      (`<package name>.glibc.node`, what node-gyp-build looks for), the TVM runtime libraries
//      beside it (the addon's rpath starts with $ORIGIN) and TVM's license and notice files in
//      licenses/.
// Every step is skipped when its output is current. Everything staged lives in git-ignored
// folders (.cache/, prebuilds/). `--force` redoes steps 3-5.
//   node scripts/cross-aarch64.mjs [--toolchain zig|gnu] [--force]     (or AARCH64_TOOLCHAIN=gnu)
// scripts/arm64-check.mjs runs this, then runs the result under qemu-user.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { checkAbiGenerations } from './toolchain.mjs';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** Everything this script and scripts/arm64-check.mjs stage (git-ignored). */
export const aarch64Dir = path.join(root, '.cache', 'aarch64');
export const stagedDir = path.join(aarch64Dir, 'tvm');
export const prebuildDir = path.join(root, 'prebuilds', 'linux-arm64');
export const CROSS_PREFIX = process.env.AARCH64_CROSS_PREFIX ?? 'aarch64-linux-gnu-';
/** The aarch64 sysroot of Debian's cross toolchain (also what qemu-user needs as -L). */
export const SYSROOT = '/usr/aarch64-linux-gnu';

const wheelsDir = path.join(aarch64Dir, 'wheels');
const toolchainFile = path.join(root, 'scripts', 'aarch64-toolchain.cmake');
// The wheels' platform: what TVM's own aarch64 wheels are built for. The Python version only
// picks which apache-tvm-ffi wheel is fetched (it is per CPython version; only its
// libtvm_ffi.so, headers and licenses are used, never its Python extension).
const WHEEL_PLATFORM = 'manylinux_2_28_aarch64';
const WHEEL_PYTHON = '3.11';
const RUNTIME_LIBS = ['libtvm_ffi.so', 'libtvm_runtime.so'];
// Loaded by the addon at start-up when present (see OPTIONAL_LIBS in scripts/toolchain.mjs).
const OPTIONAL_LIBS = ['libtvm_runtime_extra.so', 'libtvm_runtime_cuda.so'];
const JOBS = '2';
// zig (PyPI `ziglang`) as a cross C++ compiler that targets a glibc version.
const ZIG_VERSION = '0.17.1';
export const GLIBC_TARGET = '2.28';
const zigDir = path.join(aarch64Dir, 'zig');
const compatSource = path.join(root, 'scripts', 'aarch64-libstdcxx-compat.cc');

const defaultLog = (msg) => process.stderr.write(`[cross-aarch64] ${msg}\n`);

function run(cmd, args, { log = defaultLog, ...opts } = {}) {
  log(`${cmd} ${args.join(' ')}`);
  // Tools' output goes to stderr: stdout stays for results (scripts/arm64-check.mjs prints PASS/FAIL lines there).
  execFileSync(cmd, args, { cwd: root, stdio: ['ignore', 2, 2], ...opts });
}

function mtime(p) {
  try {
    return fs.statSync(p).mtimeMs;
  } catch {
    return 0;
  }
}

function readJson(p) {
  try {
    return JSON.parse(fs.readFileSync(p, 'utf8'));
  } catch {
    return undefined;
  }
}

function onPath(cmd) {
  return spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Seconds since `t0` (a performance.now() value), for log lines. */
export function since(t0) {
  return `${((performance.now() - t0) / 1000).toFixed(1)} s`;
}

let aptUpdated = false;

/**
 * Makes sure the commands `need` lists (command -> Debian package) are on PATH, installing the
 * packages of the missing ones with apt-get when running as root; otherwise says what to install.
 */
export function ensureCommands(need, log = defaultLog) {
  const missing = Object.entries(need).filter(([cmd]) => !onPath(cmd));
  if (missing.length === 0) return;
  const debs = [...new Set(missing.map(([, deb]) => deb))];
  const what = `${missing.map(([cmd]) => cmd).join(', ')} (Debian/Ubuntu: apt-get install ${debs.join(' ')})`;
  if (process.getuid?.() !== 0 || !onPath('apt-get')) throw new Error(`missing ${what}; install them and run again`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (!aptUpdated) run('apt-get', ['update', '-qq'], { log, env });
  aptUpdated = true;
  run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...debs], { log, env });
  const still = missing.filter(([cmd]) => !onPath(cmd));
  if (still.length > 0) throw new Error(`still missing after apt-get install: ${still.map(([cmd]) => cmd).join(', ')}`);
}

/** The ELF machine of a file: 'aarch64', 'x86-64', another number, or null when it is not ELF. */
export function elfMachine(file) {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(20);
    fs.readSync(fd, b, 0, 20, 0);
    if (b.readUInt32BE(0) !== 0x7f454c46) return null;
    const m = b[5] === 2 ? b.readUInt16BE(18) : b.readUInt16LE(18);
    return { 183: 'aarch64', 62: 'x86-64' }[m] ?? `machine ${m}`;
  } finally {
    fs.closeSync(fd);
  }
}

function compareVersions(a, b) {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * The highest GLIBC_, GLIBCXX_ and CXXABI_ symbol versions an ELF file needs (from its dynamic
 * symbol table: `objdump -T`), e.g. { GLIBC: '2.34', GLIBCXX: '3.4.29', CXXABI: '1.3.13' }.
 */
export function symbolVersions(file, objdump = `${CROSS_PREFIX}objdump`) {
  const out = execFileSync(objdump, ['-T', file], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  const max = {};
  // Undefined symbols (*UND*) are what the file needs from others; the versions it defines don't count.
  for (const line of out.split('\n')) {
    if (!line.includes('*UND*')) continue;
    const m = line.match(/\b(GLIBC|GLIBCXX|CXXABI)_([0-9][0-9.]*)\b/);
    if (m && (!max[m[1]] || compareVersions(m[2], max[m[1]]) > 0)) max[m[1]] = m[2];
  }
  return max;
}

/** `name==version` pins of tvm/requirements.txt. */
function pinnedVersions() {
  const text = fs.readFileSync(path.join(root, 'tvm', 'requirements.txt'), 'utf8');
  const pin = (name) => {
    const m = text.match(new RegExp(`^${name.replace(/[-.]/g, '[-_.]')}==(\\S+)`, 'mi'));
    if (!m) throw new Error(`tvm/requirements.txt pins no exact ${name} version`);
    return m[1];
  };
  return { tvm: pin('apache-tvm'), ffi: pin('apache-tvm-ffi') };
}

/** The downloaded wheel of a distribution at a version for aarch64, if there is one. */
function findWheel(dist, version) {
  const prefix = `${dist.replace(/-/g, '_')}-${version}-`;
  const files = fs.existsSync(wheelsDir) ? fs.readdirSync(wheelsDir) : [];
  const f = files.find((n) => n.startsWith(prefix) && n.includes('aarch64') && n.endsWith('.whl'));
  return f && path.join(wheelsDir, f);
}

function ensureWheels(python, pins, log) {
  const want = { 'apache-tvm': pins.tvm, 'apache-tvm-ffi': pins.ffi };
  const missing = Object.entries(want).filter(([dist, v]) => !findWheel(dist, v));
  if (missing.length > 0) {
    const t0 = performance.now();
    fs.mkdirSync(wheelsDir, { recursive: true });
    const args = ['-m', 'pip', 'download', '--disable-pip-version-check', '-q', '--no-deps', '--only-binary=:all:'];
    args.push('--platform', WHEEL_PLATFORM, '--python-version', WHEEL_PYTHON, '-d', wheelsDir, ...missing.map(([d, v]) => `${d}==${v}`));
    run(python, args, { log });
    log(`downloaded ${missing.map(([d, v]) => `${d}==${v}`).join(', ')} for ${WHEEL_PLATFORM} (${since(t0)})`);
  }
  return { tvm: findWheel('apache-tvm', pins.tvm), ffi: findWheel('apache-tvm-ffi', pins.ffi) };
}

// Extracts from the wheels what the addon needs: runtime libraries, headers, license files.
const EXTRACT = `
import json, re, sys, zipfile
dest, wheels = sys.argv[1], sys.argv[2:]
keep = re.compile(r"^(tvm|tvm_ffi)/include/|^(tvm|tvm_ffi)/lib/libtvm_(ffi|runtime|runtime_extra|runtime_cuda)\\.so$"
                  r"|^tvm/(LICENSE|NOTICE)$|^tvm/licenses/|^tvm_ffi/3rdparty/libbacktrace/LICENSE$|^apache_tvm_ffi-[^/]*\\.dist-info/licenses/")
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest, [n for n in z.namelist() if keep.search(n) and not n.endswith("/")])
`;

function stageRuntime(python, wheels, pins, log, force) {
  const stagedFile = path.join(stagedDir, 'staged.json');
  const stamp = {
    source: 'pypi',
    platform: WHEEL_PLATFORM,
    tvmVersion: pins.tvm,
    ffiVersion: pins.ffi,
    wheels: [wheels.tvm, wheels.ffi].map((w) => ({ file: path.basename(w), size: fs.statSync(w).size })),
  };
  const previous = readJson(stagedFile);
  if (
    !force &&
    previous &&
    JSON.stringify({ ...previous, libs: undefined, abi: undefined }) === JSON.stringify({ ...stamp, libs: undefined, abi: undefined })
  ) {
    return previous;
  }
  const t0 = performance.now();
  const tmp = path.join(aarch64Dir, 'tvm.tmp');
  fs.rmSync(tmp, { recursive: true, force: true });
  const raw = path.join(tmp, 'wheels');
  execFileSync(python, ['-c', EXTRACT, raw, wheels.tvm, wheels.ffi], { stdio: ['ignore', 2, 2] });
  const libDir = path.join(tmp, 'lib');
  const incDir = path.join(tmp, 'include');
  const licDir = path.join(tmp, 'licenses');
  fs.mkdirSync(libDir, { recursive: true });
  fs.mkdirSync(licDir, { recursive: true });
  const libs = {};
  for (const name of [...RUNTIME_LIBS, ...OPTIONAL_LIBS]) {
    const from = [path.join(raw, 'tvm_ffi', 'lib', name), path.join(raw, 'tvm', 'lib', name)].find((p) => fs.existsSync(p));
    if (!from) {
      if (RUNTIME_LIBS.includes(name)) throw new Error(`${name} is not in ${path.basename(wheels.tvm)} / ${path.basename(wheels.ffi)}`);
      continue;
    }
    const machine = elfMachine(from);
    if (machine !== 'aarch64') throw new Error(`${name} from the ${WHEEL_PLATFORM} wheels is ${machine ?? 'not ELF'}, not aarch64`);
    fs.copyFileSync(from, path.join(libDir, name));
    libs[name] = path.relative(root, path.join(stagedDir, 'lib', name));
  }
  // Same layout as tvm/include (scripts/toolchain.mjs): tvm-ffi's headers (with dlpack), then TVM's.
  fs.cpSync(path.join(raw, 'tvm_ffi', 'include'), incDir, { recursive: true });
  fs.cpSync(path.join(raw, 'tvm', 'include'), incDir, { recursive: true });
  const ffiInfo = fs.readdirSync(raw).find((n) => n.startsWith('apache_tvm_ffi-') && n.endsWith('.dist-info'));
  const licenses = {
    'LICENSE.tvm': path.join(raw, 'tvm', 'LICENSE'),
    'NOTICE.tvm': path.join(raw, 'tvm', 'NOTICE'),
    'LICENSE.tvm-ffi': ffiInfo && path.join(raw, ffiInfo, 'licenses', 'LICENSE'),
    'NOTICE.tvm-ffi': ffiInfo && path.join(raw, ffiInfo, 'licenses', 'NOTICE'),
    'LICENSE.libbacktrace': path.join(raw, 'tvm_ffi', '3rdparty', 'libbacktrace', 'LICENSE'),
  };
  for (const [name, from] of Object.entries(licenses)) {
    if (!from || !fs.existsSync(from)) throw new Error(`${name}: not found in the wheels`);
    fs.copyFileSync(from, path.join(licDir, name));
  }
  // TVM's notices of the third-party code in its libraries (licenses/LICENSE.*.txt).
  for (const f of fs.existsSync(path.join(raw, 'tvm', 'licenses')) ? fs.readdirSync(path.join(raw, 'tvm', 'licenses')) : []) {
    fs.copyFileSync(path.join(raw, 'tvm', 'licenses', f), path.join(licDir, f));
  }
  fs.rmSync(raw, { recursive: true, force: true });
  const generations = checkAbiGenerations(libDir, Object.keys(libs), { source: `the ${WHEEL_PLATFORM} wheels`, tvmVersion: pins.tvm, ffiVersion: pins.ffi });
  const record = { ...stamp, libs, abi: { verdict: 'ok', generations } };
  fs.writeFileSync(path.join(tmp, 'staged.json'), JSON.stringify(record, null, 1));
  fs.rmSync(stagedDir, { recursive: true, force: true });
  fs.renameSync(tmp, stagedDir);
  log(`staged the aarch64 TVM runtime (tvm ${pins.tvm}, tvm-ffi ${pins.ffi}) in ${path.relative(root, stagedDir)} (${since(t0)})`);
  return record;
}

/** The cross toolchain's libstdc++ headers: /usr/aarch64-linux-gnu/include/c++/<newest GCC>. */
function libstdcxxHeaders() {
  const base = path.join(SYSROOT, 'include', 'c++');
  const versions = fs.existsSync(base) ? fs.readdirSync(base).filter((v) => /^\d+$/.test(v)) : [];
  if (versions.length === 0) throw new Error(`no libstdc++ headers in ${base} (package g++-aarch64-linux-gnu)`);
  return path.join(base, versions.sort((a, b) => Number(b) - Number(a))[0]);
}

// glibc < 2.32 has no sys/single_threaded.h; zig's copy refuses to be included for 2.28, but GCC 12's
// headers include it when it exists. This one says "not known to be single-threaded" (internal
// linkage: no symbol), so libstdc++'s inline code always takes its thread-safe paths.
const SINGLE_THREADED_SHIM = `/* Written by scripts/cross-aarch64.mjs: glibc < 2.32 has no __libc_single_threaded. */
#pragma once
static const char __libc_single_threaded = 0;
`;

/**
 * zig in .cache/aarch64/zig, a compiler wrapper for aarch64-linux-gnu.2.28 with the cross
 * toolchain's libstdc++ headers, and the compat object; returns their paths.
 */
function ensureZig(python, log) {
  const zig = path.join(zigDir, 'ziglang', 'zig');
  const stamp = path.join(zigDir, 'version');
  if (!(fs.existsSync(zig) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === ZIG_VERSION)) {
    const t0 = performance.now();
    const tmp = `${zigDir}.tmp`;
    fs.rmSync(tmp, { recursive: true, force: true });
    run(python, ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', '--no-deps', '--target', tmp, `ziglang==${ZIG_VERSION}`], { log });
    fs.writeFileSync(path.join(tmp, 'version'), ZIG_VERSION);
    fs.rmSync(zigDir, { recursive: true, force: true });
    fs.renameSync(tmp, zigDir);
    log(`zig ${ZIG_VERSION} in ${path.relative(root, zigDir)} (${since(t0)})`);
  }
  const headers = libstdcxxHeaders();
  const shim = path.join(zigDir, 'shim');
  fs.mkdirSync(path.join(shim, 'sys'), { recursive: true });
  fs.writeFileSync(path.join(shim, 'sys', 'single_threaded.h'), SINGLE_THREADED_SHIM);
  // -I, not -isystem: zig puts its libc headers before every -isystem, and libstdc++'s headers
  // must come first (they #include_next the C library's). As -I they are not system headers, so
  // their deprecation warnings (get_temporary_buffer in std::stable_sort) are turned off; the host
  // build with g++ shows the addon's own.
  const q = (p) => `'${p}'`;
  const includes = [shim, headers, path.join(headers, 'aarch64-linux-gnu'), path.join(headers, 'backward')].map((d) => `-I ${q(d)}`).join(' ');
  const cxx = path.join(zigDir, `aarch64-linux-gnu.${GLIBC_TARGET}-c++`);
  const script =
    "#!/bin/sh\n# Written by scripts/cross-aarch64.mjs: zig's clang for aarch64 glibc " +
    `${GLIBC_TARGET} with the cross g++'s libstdc++ headers.\n` +
    `export ZIG_GLOBAL_CACHE_DIR=${q(path.join(zigDir, 'cache'))} ZIG_LOCAL_CACHE_DIR=${q(path.join(zigDir, 'cache'))}\n` +
    `exec ${q(zig)} c++ -target aarch64-linux-gnu.${GLIBC_TARGET} -nostdinc++ ${includes} -Wno-deprecated-declarations "$@"\n`;
  if (!fs.existsSync(cxx) || fs.readFileSync(cxx, 'utf8') !== script) fs.writeFileSync(cxx, script, { mode: 0o755 });
  const compat = path.join(zigDir, 'libstdcxx-compat.o');
  if (mtime(compat) < Math.max(mtime(compatSource), mtime(cxx))) {
    run(cxx, ['-std=c++17', '-O2', '-fPIC', '-Wall', '-c', compatSource, '-o', compat], { log });
  }
  return { cxx, compat };
}

function newestSource() {
  const native = fs.readdirSync(path.join(root, 'native')).filter((f) => f.endsWith('.cc') || f.endsWith('.h'));
  return Math.max(
    ...native.map((f) => mtime(path.join(root, 'native', f))),
    mtime(path.join(root, 'CMakeLists.txt')),
    mtime(toolchainFile),
    mtime(compatSource),
    mtime(path.join(stagedDir, 'staged.json')),
  );
}

function buildAddon(toolchain, zig, log, force) {
  const buildDir = path.join(aarch64Dir, `build-${toolchain}`);
  const built = path.join(buildDir, 'Release', 'tvm_node.node');
  if (!force && mtime(built) >= Math.max(newestSource(), zig ? Math.max(mtime(zig.cxx), mtime(zig.compat)) : 0)) return built;
  const t0 = performance.now();
  const cmakeJs = path.join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
  const args = [cmakeJs, 'compile', '--arch', 'arm64', '--out', buildDir, '--parallel', JOBS, '--log-level', 'warn'];
  args.push(`--CDCMAKE_TOOLCHAIN_FILE=${toolchainFile}`, `--CDTVM_STAGED_DIR=${stagedDir}`);
  if (zig) args.push(`--CDAARCH64_ZIG_CXX=${zig.cxx}`, `--CDAARCH64_COMPAT_OBJ=${zig.compat}`);
  run(process.execPath, args, { log, env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: JOBS } });
  const machine = elfMachine(built);
  if (machine !== 'aarch64') throw new Error(`${path.relative(root, built)} was built for ${machine}, not aarch64`);
  // cmake-js relinks without touching the file when nothing changed: mark it current.
  const now = new Date();
  fs.utimesSync(built, now, now);
  log(`built ${path.relative(root, built)} with ${toolchain} (${since(t0)})`);
  return built;
}

/** The addon's file name in prebuilds/: prebuildify's for `--napi --tag-libc` (package.json's `prebuild`). */
export function prebuildName() {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  return `${pkg.name.replace(/\//g, '+')}.glibc.node`;
}

function assemblePrebuild(built, record, log, force) {
  const addon = path.join(prebuildDir, prebuildName());
  const libs = Object.keys(record.libs);
  // What the folder was assembled from (kept outside it, so it never ships).
  const stampFile = path.join(aarch64Dir, 'prebuild.json');
  const stamp = JSON.stringify({ built, builtMtime: mtime(built), libs: libs.map((n) => [n, mtime(path.join(stagedDir, 'lib', n))]) });
  const present = [addon, ...libs.map((n) => path.join(prebuildDir, n))].every((p) => fs.existsSync(p));
  if (!force && present && readJson(stampFile) !== undefined && JSON.stringify(readJson(stampFile)) === stamp) return addon;
  const tmp = `${prebuildDir}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  fs.copyFileSync(built, path.join(tmp, prebuildName()));
  // As prebuildify --strip: drop the static symbol table; the dynamic one stays.
  execFileSync(`${CROSS_PREFIX}strip`, ['--strip-all', path.join(tmp, prebuildName())]);
  for (const name of libs) fs.copyFileSync(path.join(stagedDir, 'lib', name), path.join(tmp, name));
  fs.cpSync(path.join(stagedDir, 'licenses'), path.join(tmp, 'licenses'), { recursive: true });
  fs.rmSync(prebuildDir, { recursive: true, force: true });
  fs.renameSync(tmp, prebuildDir);
  fs.writeFileSync(stampFile, stamp);
  log(`assembled ${path.relative(root, prebuildDir)}: ${fs.readdirSync(prebuildDir).join(', ')}`);
  return addon;
}

/** The toolchain asked for: `--toolchain zig|gnu` in `argv`, else AARCH64_TOOLCHAIN, else zig. */
export function toolchainArg(argv = process.argv) {
  const i = argv.findIndex((a) => a === '--toolchain' || a.startsWith('--toolchain='));
  const value = i < 0 ? (process.env.AARCH64_TOOLCHAIN ?? 'zig') : argv[i].includes('=') ? argv[i].split('=')[1] : argv[i + 1];
  if (value !== 'zig' && value !== 'gnu') throw new Error(`--toolchain ${value}: use zig (glibc ${GLIBC_TARGET}) or gnu (Debian's cross g++)`);
  return value;
}

/**
 * Runs steps 1-5 (see the top of this file); returns the prebuilt addon's path, the folder,
 * the built (unstripped) addon, the staged record and the toolchain used.
 */
export function crossBuild({ log = defaultLog, force = false, toolchain = 'zig' } = {}) {
  if (process.platform !== 'linux' || process.arch !== 'x64')
    throw new Error(`the aarch64 cross build runs on linux-x64 (this is ${process.platform}-${process.arch})`);
  execFileSync(process.execPath, [path.join(root, 'scripts', 'bootstrap.mjs'), 'deps', 'toolchain'], { cwd: root, stdio: ['ignore', 2, 2] });
  const python = path.join(root, 'tvm', '.venv', 'bin', 'python');
  ensureCommands({ [`${CROSS_PREFIX}g++`]: 'g++-aarch64-linux-gnu', [`${CROSS_PREFIX}strip`]: 'binutils-aarch64-linux-gnu' }, log);
  const pins = pinnedVersions();
  const wheels = ensureWheels(python, pins, log);
  const record = stageRuntime(python, wheels, pins, log, force);
  const zig = toolchain === 'zig' ? ensureZig(python, log) : undefined;
  const built = buildAddon(toolchain, zig, log, force);
  const addon = assemblePrebuild(built, record, log, force);
  return { addon, dir: prebuildDir, built, record, toolchain };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const t0 = performance.now();
  try {
    const { addon, dir, toolchain } = crossBuild({ force: process.argv.includes('--force'), toolchain: toolchainArg() });
    const files = fs.readdirSync(dir, { recursive: true }).filter((f) => fs.statSync(path.join(dir, f)).isFile());
    const bytes = files.reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
    const v = symbolVersions(addon);
    defaultLog(
      `${path.relative(root, addon)} ready (${toolchain}): ${files.length} files, ${(bytes / 1e6).toFixed(1)} MB; ` +
        `needs ${Object.entries(v)
          .map(([k, x]) => `${k}_${x}`)
          .join(' ')} (${since(t0)})`,
    );
  } catch (err) {
    defaultLog(`failed: ${err.message}`);
    process.exit(1);
  }
}
