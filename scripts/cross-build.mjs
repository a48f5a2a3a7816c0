#!/usr/bin/env node
// Builds prebuilds/linux-<arch>/ for glibc 2.28 on a Linux host, so the addon loads wherever TVM's
// own manylinux_2_28 wheels load: linux-x64 on this machine's architecture, linux-arm64 cross-built
// from an x86-64 one. Idempotently:
//   1. the host set-up (scripts/bootstrap.mjs deps toolchain): npm dependencies, tvm/.venv and the
//      host's TVM runtime staged in tvm/lib + tvm/include,
//   2. the target's TVM runtime, of exactly the pair pinned in tvm/requirements.txt:
//        the host's architecture: tvm/ as step 1 staged it from the wheels in tvm/.venv (a TVM_HOME
//          build is refused: its libraries need what the toolchain that built them gives),
//        another one: its wheels (pip download --platform manylinux_2_28_<gnu arch>), their
//          runtime libraries, headers and license files staged into .cache/<gnu arch>/tvm/ (lib/,
//          include/, licenses/, staged.json) and checked to be of one tvm-ffi ABI generation
//          (scripts/toolchain.mjs),
//   3. the g++ whose libstdc++ the addon is built against (the one TVM's libraries use): the
//      host's g++, or for another architecture Debian's cross g++ (g++-aarch64-linux-gnu;
//      installed with apt-get when missing and running as root),
//   4. the addon, built by cmake-js from the project's own CMakeLists.txt with
//      scripts/cross-toolchain.cmake into .cache/<gnu arch>/build-<toolchain> (2 jobs), by
//        zig (default): zig's clang (PyPI `ziglang`, pinned, in .cache/zig) for
//          <gnu arch>-linux-gnu.2.28 (the architecture's baseline CPU), with that g++'s libstdc++
//          (headers; libstdc++.so.6 linked dynamically, as TVM's libraries link it) and
//          scripts/libstdcxx-compat.cc: the addon needs no newer glibc/libstdc++ symbol versions
//          than manylinux_2_28 has, or the build fails saying which,
//        gnu: that g++ itself (Debian 12's: needs glibc >= 2.34, GLIBCXX_3.4.29),
//   5. prebuilds/linux-<arch>/ (staged by scripts/package.mjs's stagePrebuild): the stripped addon
//      under prebuildify's name (`tvm-node.glibc.node`), the TVM runtime libraries beside it (the
//      addon's rpath starts with $ORIGIN) and TVM's license and notice files in licenses/.
// Every step is skipped when its output is current. Everything staged lives in git-ignored
// folders (.cache/, prebuilds/). `--force` redoes steps 2 (another architecture's), 4 and 5.
//   node scripts/cross-build.mjs --arch arm64|x64 [--toolchain zig|gnu] [--force]
//     (or AARCH64_TOOLCHAIN / X86_64_TOOLCHAIN=gnu; AARCH64_CROSS_PREFIX overrides the cross tools' prefix)
// `npm run build:arm64` runs it for arm64, scripts/package.mjs (`npm pack`, `npm run prebuilds`) for
// this machine's architecture, scripts/arm64-check.mjs runs the arm64 result under qemu-user.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { elfMachine, formatNeeds, MANYLINUX_2_28, machineName, newerThan, versionNeeds } from './elf.mjs';
import { ADDON_NAME, licenseFiles, licenseFilesIn, OPTIONAL_LIBS, REQUIRED_LIBS, stagePrebuild } from './package.mjs';
import { checkAbiGenerations } from './toolchain.mjs';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The glibc version zig targets: manylinux_2_28's. */
export const GLIBC_TARGET = '2.28';

// The architectures (Node's names): GNU name, ELF machine, Debian's name in cross package names.
const ARCHES = {
  arm64: { gnu: 'aarch64', machine: 183, debian: 'aarch64-linux-gnu' },
  x64: { gnu: 'x86_64', machine: 62, debian: 'x86-64-linux-gnu' },
};

/**
 * Where everything of a target architecture lives and which tools build it: `native` when it is
 * the host's (the host's g++ and binutils, the runtime in tvm/), else Debian's cross toolchain
 * (`prefix`, `sysroot`) and the wheels staged in `dir`/tvm.
 */
export function targetOf(arch) {
  const a = ARCHES[arch];
  if (!a) throw new Error(`--arch ${arch}: use ${Object.keys(ARCHES).join(' or ')}`);
  const triple = `${a.gnu}-linux-gnu`;
  const envName = a.gnu.toUpperCase();
  const native = arch === process.arch;
  const dir = path.join(root, '.cache', a.gnu);
  const prefix = native ? '' : (process.env[`${envName}_CROSS_PREFIX`] ?? `${triple}-`);
  return {
    arch,
    gnu: a.gnu,
    triple,
    envName,
    machine: a.machine,
    native,
    dir,
    prefix,
    platform: `linux-${arch}`,
    prebuildDir: path.join(root, 'prebuilds', `linux-${arch}`),
    stagedDir: native ? path.join(root, 'tvm') : path.join(dir, 'tvm'),
    wheelPlatform: `manylinux_2_28_${a.gnu}`,
    /** The cross toolchain's root (also what qemu-user needs as -L); null for the host's own. */
    sysroot: native ? null : `/usr/${triple}`,
    /** Commands the build needs -> the Debian package that has each. */
    commands: native ? { 'g++': 'g++', strip: 'binutils' } : { [`${prefix}g++`]: `g++-${a.debian}`, [`${prefix}strip`]: `binutils-${a.debian}` },
  };
}

// The Python version only picks which apache-tvm-ffi wheel is fetched (it is per CPython version;
// only its libtvm_ffi.so, headers and licenses are used, never its Python extension).
const WHEEL_PYTHON = '3.11';
const JOBS = '2';
// zig (PyPI `ziglang`) as a C++ compiler that targets a glibc version; one copy for every target.
const ZIG_VERSION = '0.17.1';
const zigDir = path.join(root, '.cache', 'zig');
const toolchainFile = path.join(root, 'scripts', 'cross-toolchain.cmake');
const compatSource = path.join(root, 'scripts', 'libstdcxx-compat.cc');

const logger = (t) => (msg) => process.stderr.write(`[cross-build ${t.platform}] ${msg}\n`);

function run(cmd, args, { log, ...opts }) {
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

/**
 * A download folder: `dir` when it holds `file` and its file `version` says `version`; else
 * `fill(tmp)` fills a fresh temporary folder that then replaces `dir`, and a line says so.
 */
export function ensureVersioned(dir, version, file, log, what, fill) {
  const stamp = path.join(dir, 'version');
  if (fs.existsSync(file) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === version) return;
  const t0 = performance.now();
  const tmp = `${dir}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  fill(tmp);
  fs.writeFileSync(path.join(tmp, 'version'), version);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(tmp, dir);
  log(`${what} in ${path.relative(root, dir)} (${since(t0)})`);
}

let aptUpdated = false;

/**
 * Makes sure the commands `need` lists (command -> Debian package) are on PATH, installing the
 * packages of the missing ones with apt-get when running as root; otherwise says what to install.
 */
export function ensureCommands(need, log) {
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

/** The downloaded wheel of a distribution at a version for the target, if there is one. */
function findWheel(t, dist, version) {
  const dir = path.join(t.dir, 'wheels');
  const prefix = `${dist.replace(/-/g, '_')}-${version}-`;
  const f = (fs.existsSync(dir) ? fs.readdirSync(dir) : []).find((n) => n.startsWith(prefix) && n.includes(t.gnu) && n.endsWith('.whl'));
  return f && path.join(dir, f);
}

function ensureWheels(t, python, pins, log) {
  const want = { 'apache-tvm': pins.tvm, 'apache-tvm-ffi': pins.ffi };
  const missing = Object.entries(want).filter(([dist, v]) => !findWheel(t, dist, v));
  if (missing.length > 0) {
    const t0 = performance.now();
    const dir = path.join(t.dir, 'wheels');
    fs.mkdirSync(dir, { recursive: true });
    const args = ['-m', 'pip', 'download', '--disable-pip-version-check', '-q', '--no-deps', '--only-binary=:all:'];
    args.push('--platform', t.wheelPlatform, '--python-version', WHEEL_PYTHON, '-d', dir, ...missing.map(([d, v]) => `${d}==${v}`));
    run(python, args, { log });
    log(`downloaded ${missing.map(([d, v]) => `${d}==${v}`).join(', ')} for ${t.wheelPlatform} (${since(t0)})`);
  }
  return { tvm: findWheel(t, 'apache-tvm', pins.tvm), ffi: findWheel(t, 'apache-tvm-ffi', pins.ffi) };
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

/** The license files staged in `dir`/licenses: name -> file. */
function licensesIn(dir) {
  const lic = path.join(dir, 'licenses');
  return Object.fromEntries(fs.readdirSync(lic).map((n) => [n, path.join(lic, n)]));
}

/** Another architecture's runtime: its wheels staged into .cache/<gnu arch>/tvm (step 2). */
function stageWheelRuntime(t, python, log, force) {
  const pins = pinnedVersions();
  const wheels = ensureWheels(t, python, pins, log);
  const stagedFile = path.join(t.stagedDir, 'staged.json');
  const stamp = {
    source: 'pypi',
    platform: t.wheelPlatform,
    tvmVersion: pins.tvm,
    ffiVersion: pins.ffi,
    wheels: [wheels.tvm, wheels.ffi].map((w) => ({ file: path.basename(w), size: fs.statSync(w).size })),
  };
  const previous = readJson(stagedFile);
  const same = (r) => JSON.stringify({ ...r, libs: undefined, abi: undefined });
  if (!force && previous && same(previous) === same(stamp)) return { ...previous, licenses: licensesIn(t.stagedDir) };
  const t0 = performance.now();
  const tmp = `${t.stagedDir}.tmp`;
  fs.rmSync(tmp, { recursive: true, force: true });
  const raw = path.join(tmp, 'wheels');
  execFileSync(python, ['-c', EXTRACT, raw, wheels.tvm, wheels.ffi], { stdio: ['ignore', 2, 2] });
  const libDir = path.join(tmp, 'lib');
  fs.mkdirSync(libDir, { recursive: true });
  const libs = {};
  for (const name of [...REQUIRED_LIBS, ...OPTIONAL_LIBS]) {
    const from = [path.join(raw, 'tvm_ffi', 'lib', name), path.join(raw, 'tvm', 'lib', name)].find((p) => fs.existsSync(p));
    if (!from) {
      if (REQUIRED_LIBS.includes(name)) throw new Error(`${name} is not in ${path.basename(wheels.tvm)} / ${path.basename(wheels.ffi)}`);
      continue;
    }
    const machine = elfMachine(from);
    if (machine !== t.machine) throw new Error(`${name} from the ${t.wheelPlatform} wheels is ${machineName(machine)}, not ${t.gnu}`);
    fs.copyFileSync(from, path.join(libDir, name));
    libs[name] = path.relative(root, path.join(t.stagedDir, 'lib', name));
  }
  // Same layout as tvm/include (scripts/toolchain.mjs): tvm-ffi's headers (with dlpack), then TVM's.
  fs.cpSync(path.join(raw, 'tvm_ffi', 'include'), path.join(tmp, 'include'), { recursive: true });
  fs.cpSync(path.join(raw, 'tvm', 'include'), path.join(tmp, 'include'), { recursive: true });
  // The wheels' license files, named as in every prebuild folder (scripts/package.mjs licenseFiles).
  const licDir = path.join(tmp, 'licenses');
  fs.mkdirSync(licDir, { recursive: true });
  const ffiInfo = fs.readdirSync(raw).find((n) => n.startsWith('apache_tvm_ffi-') && n.endsWith('.dist-info'));
  const licenses = licenseFilesIn({ tvm: path.join(raw, 'tvm'), ffi: path.join(raw, 'tvm_ffi'), ffiLicenses: ffiInfo && path.join(raw, ffiInfo, 'licenses') });
  for (const [name, from] of Object.entries(licenses)) fs.copyFileSync(from, path.join(licDir, name));
  fs.rmSync(raw, { recursive: true, force: true });
  const generations = checkAbiGenerations(libDir, Object.keys(libs), { source: `the ${t.wheelPlatform} wheels`, tvmVersion: pins.tvm, ffiVersion: pins.ffi });
  const record = { ...stamp, libs, abi: { verdict: 'ok', generations } };
  fs.writeFileSync(path.join(tmp, 'staged.json'), JSON.stringify(record, null, 1));
  fs.rmSync(t.stagedDir, { recursive: true, force: true });
  fs.renameSync(tmp, t.stagedDir);
  log(`staged the ${t.gnu} TVM runtime (tvm ${pins.tvm}, tvm-ffi ${pins.ffi}) in ${path.relative(root, t.stagedDir)} (${since(t0)})`);
  return { ...record, licenses: licensesIn(t.stagedDir) };
}

/** The host's runtime: tvm/ as scripts/bootstrap.mjs staged it from the pinned wheels (step 2). */
function hostRuntime(t) {
  const staged = readJson(path.join(t.stagedDir, 'staged.json'));
  if (!staged) throw new Error('no TVM runtime staged in tvm/ (tvm/staged.json): run `npm run setup`');
  if (staged.source !== 'pypi') {
    throw new Error(
      `the TVM runtime in tvm/ is from ${staged.source}, not the pinned wheels: the glibc ${GLIBC_TARGET} build is made against TVM's manylinux_2_28 wheels (unset TVM_HOME and run \`npm run setup\`)`,
    );
  }
  const libs = Object.fromEntries(
    Object.keys(staged.libs)
      .filter((n) => fs.existsSync(path.join(t.stagedDir, 'lib', n)))
      .map((n) => [n, path.relative(root, path.join(t.stagedDir, 'lib', n))]),
  );
  return {
    source: 'pypi',
    platform: 'the wheels in tvm/.venv',
    tvmVersion: staged.tvmVersion,
    ffiVersion: staged.ffiVersion,
    libs,
    licenses: licenseFiles(staged),
  };
}

/** What g++ (`gxx`) builds with: its libstdc++ header folders, in order, and its libstdc++.so.6 and libgcc_s.so.1. */
function libstdcxxOf(gxx) {
  const r = spawnSync(gxx, ['-xc++', '-E', '-v', '-'], { input: '', encoding: 'utf8' });
  const out = r.stderr ?? '';
  const list = out.slice(out.indexOf('#include <...> search starts here:'), out.indexOf('End of search list.'));
  const includes = list
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.includes('/c++/'))
    .map((d) => path.resolve(d));
  if (r.status !== 0 || includes.length === 0) throw new Error(`${gxx} names no libstdc++ headers (\`${gxx} -xc++ -E -v -\`):\n${out.slice(-2000)}`);
  const lib = (name) => {
    const p = path.resolve(execFileSync(gxx, [`-print-file-name=${name}`], { encoding: 'utf8' }).trim());
    if (!fs.existsSync(p)) throw new Error(`${gxx} has no ${name}`);
    return p;
  };
  return { includes, libstdcxx: lib('libstdc++.so.6'), libgcc: lib('libgcc_s.so.1') };
}

// glibc < 2.32 has no sys/single_threaded.h; zig's copy refuses to be included for 2.28, but GCC 12's
// headers include it when it exists. This one says "not known to be single-threaded" (internal
// linkage: no symbol), so libstdc++'s inline code always takes its thread-safe paths.
const SINGLE_THREADED_SHIM = `/* Written by scripts/cross-build.mjs: glibc < 2.32 has no __libc_single_threaded. */
#pragma once
static const char __libc_single_threaded = 0;
`;

/**
 * zig in .cache/zig, a compiler wrapper for <triple>.2.28 with the libstdc++ headers of `cxx`
 * (libstdcxxOf), and the compat object in the target's folder; returns their paths.
 */
function ensureZig(t, python, cxx, log) {
  const zig = path.join(zigDir, 'ziglang', 'zig');
  ensureVersioned(zigDir, ZIG_VERSION, zig, log, `zig ${ZIG_VERSION}`, (tmp) =>
    run(python, ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', '--no-deps', '--target', tmp, `ziglang==${ZIG_VERSION}`], { log }),
  );
  const shim = path.join(zigDir, 'shim');
  fs.mkdirSync(path.join(shim, 'sys'), { recursive: true });
  fs.writeFileSync(path.join(shim, 'sys', 'single_threaded.h'), SINGLE_THREADED_SHIM);
  // -I, not -isystem: zig puts its libc headers before every -isystem, and libstdc++'s headers
  // must come first (they #include_next the C library's). As -I they are not system headers, so
  // their deprecation warnings (get_temporary_buffer in std::stable_sort) are turned off; the host
  // build with g++ shows the addon's own. An explicit -target also means the architecture's
  // baseline CPU, never the build machine's.
  const q = (p) => `'${p}'`;
  const includes = [shim, ...cxx.includes].map((d) => `-I ${q(d)}`).join(' ');
  const wrapper = path.join(zigDir, `${t.triple}.${GLIBC_TARGET}-c++`);
  const script =
    `#!/bin/sh\n# Written by scripts/cross-build.mjs: zig's clang for ${t.triple} glibc ${GLIBC_TARGET} with g++'s libstdc++ headers.\n` +
    `export ZIG_GLOBAL_CACHE_DIR=${q(path.join(zigDir, 'cache'))} ZIG_LOCAL_CACHE_DIR=${q(path.join(zigDir, 'cache'))}\n` +
    `exec ${q(zig)} c++ -target ${t.triple}.${GLIBC_TARGET} -nostdinc++ ${includes} -Wno-deprecated-declarations "$@"\n`;
  if (!fs.existsSync(wrapper) || fs.readFileSync(wrapper, 'utf8') !== script) fs.writeFileSync(wrapper, script, { mode: 0o755 });
  fs.mkdirSync(t.dir, { recursive: true });
  const compat = path.join(t.dir, 'libstdcxx-compat.o');
  if (mtime(compat) < Math.max(mtime(compatSource), mtime(wrapper))) {
    run(wrapper, ['-std=c++17', '-O2', '-fPIC', '-Wall', '-c', compatSource, '-o', compat], { log });
  }
  return { cxx: wrapper, compat };
}

function newestSource(t) {
  const native = fs.readdirSync(path.join(root, 'native')).filter((f) => f.endsWith('.cc') || f.endsWith('.h'));
  return Math.max(
    ...native.map((f) => mtime(path.join(root, 'native', f))),
    mtime(path.join(root, 'CMakeLists.txt')),
    mtime(toolchainFile),
    mtime(compatSource),
    mtime(path.join(t.stagedDir, 'staged.json')),
  );
}

function buildAddon(t, toolchain, zig, cxx, log, force) {
  const buildDir = path.join(t.dir, `build-${toolchain}`);
  const built = path.join(buildDir, 'Release', 'tvm_node.node');
  const defs = { CMAKE_TOOLCHAIN_FILE: toolchainFile, TVM_STAGED_DIR: t.stagedDir, PREBUILD_PROCESSOR: t.gnu };
  if (!t.native) Object.assign(defs, { PREBUILD_TOOL_PREFIX: t.prefix, PREBUILD_SYSROOT: t.sysroot });
  if (zig)
    Object.assign(defs, { PREBUILD_ZIG_CXX: zig.cxx, PREBUILD_COMPAT_OBJ: zig.compat, PREBUILD_LIBSTDCXX: cxx.libstdcxx, PREBUILD_LIBGCC_S: cxx.libgcc });
  // A build folder configured otherwise (another compiler, other paths) starts over: CMake keeps its first compiler.
  const configFile = path.join(buildDir, 'tvm-node-config.json');
  const config = JSON.stringify(defs);
  const configured = fs.existsSync(configFile) && fs.readFileSync(configFile, 'utf8') === config;
  if (!force && configured && mtime(built) >= Math.max(newestSource(t), zig ? Math.max(mtime(zig.cxx), mtime(zig.compat)) : 0)) return built;
  const t0 = performance.now();
  if (!configured) fs.rmSync(buildDir, { recursive: true, force: true });
  const cmakeJs = path.join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
  const args = [cmakeJs, 'compile', '--arch', t.arch, '--out', buildDir, '--parallel', JOBS, '--log-level', 'warn'];
  args.push(...Object.entries(defs).map(([k, v]) => `--CD${k}=${v}`));
  run(process.execPath, args, { log, env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: JOBS } });
  fs.writeFileSync(configFile, config);
  const machine = elfMachine(built);
  if (machine !== t.machine) throw new Error(`${path.relative(root, built)} was built for ${machineName(machine)}, not ${t.gnu}`);
  // cmake-js relinks without touching the file when nothing changed: mark it current.
  const now = new Date();
  fs.utimesSync(built, now, now);
  log(`built ${path.relative(root, built)} with ${toolchain} (${since(t0)})`);
  return built;
}

function assemblePrebuild(t, built, runtime, log, force) {
  const addon = path.join(t.prebuildDir, ADDON_NAME);
  const libs = Object.keys(runtime.libs);
  // What the folder was assembled from (kept outside it, so it never ships), and the addon it got:
  // another stager (scripts/package.mjs from build/Release) may have replaced it since.
  const stampFile = path.join(t.dir, 'prebuild.json');
  const stamp = {
    built,
    builtMtime: mtime(built),
    libs: libs.map((n) => [n, mtime(path.join(t.stagedDir, 'lib', n))]),
    licenses: Object.keys(runtime.licenses),
  };
  const previous = readJson(stampFile);
  const present = [addon, ...libs.map((n) => path.join(t.prebuildDir, n))].every((p) => fs.existsSync(p));
  if (
    !force &&
    present &&
    previous &&
    JSON.stringify({ ...previous, addonMtime: undefined }) === JSON.stringify(stamp) &&
    previous.addonMtime === mtime(addon)
  ) {
    return addon;
  }
  stagePrebuild({ target: t.platform, addon: built, libDir: path.join(t.stagedDir, 'lib'), licenses: runtime.licenses, strip: `${t.prefix}strip` });
  fs.writeFileSync(stampFile, JSON.stringify({ ...stamp, addonMtime: mtime(addon) }));
  log(`assembled ${path.relative(root, t.prebuildDir)}: ${fs.readdirSync(t.prebuildDir).join(', ')}`);
  return addon;
}

/** The toolchain asked for: `--toolchain zig|gnu` in `argv`, else <GNU ARCH>_TOOLCHAIN (AARCH64_TOOLCHAIN), else zig. */
export function toolchainArg(arch, argv = process.argv) {
  const value = argValue('--toolchain', argv) ?? process.env[`${targetOf(arch).envName}_TOOLCHAIN`] ?? 'zig';
  if (value !== 'zig' && value !== 'gnu') throw new Error(`--toolchain ${value}: use zig (glibc ${GLIBC_TARGET}) or gnu (g++ and its glibc)`);
  return value;
}

/** `--name value` or `--name=value` in argv, else undefined. */
function argValue(name, argv) {
  const i = argv.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return undefined;
  return argv[i].includes('=') ? argv[i].slice(name.length + 1) : argv[i + 1];
}

/**
 * Runs steps 1-5 (see the top of this file) for `arch` ('arm64', 'x64'); returns the prebuilt
 * addon's path, the folder, the built (unstripped) addon, the runtime record (versions, libs,
 * licenses), the toolchain used, and the addon's symbol version needs.
 */
export function crossBuild({ arch, log, force = false, toolchain = 'zig' }) {
  const t = targetOf(arch);
  log ??= logger(t);
  if (process.platform !== 'linux') throw new Error(`the ${t.platform} build runs on Linux (this is ${process.platform}-${process.arch})`);
  execFileSync(process.execPath, [path.join(root, 'scripts', 'bootstrap.mjs'), 'deps', 'toolchain'], { cwd: root, stdio: ['ignore', 2, 2] });
  const python = path.join(root, 'tvm', '.venv', 'bin', 'python');
  ensureCommands(t.commands, log);
  const runtime = t.native ? hostRuntime(t) : stageWheelRuntime(t, python, log, force);
  const cxx = libstdcxxOf(`${t.prefix}g++`);
  const zig = toolchain === 'zig' ? ensureZig(t, python, cxx, log) : undefined;
  const built = buildAddon(t, toolchain, zig, cxx, log, force);
  const needs = versionNeeds(built);
  const over = newerThan(needs, MANYLINUX_2_28);
  if (zig && Object.keys(over).length > 0) {
    throw new Error(
      `${path.relative(root, built)} needs ${formatNeeds(over)}, newer than manylinux_2_28 (${formatNeeds(MANYLINUX_2_28)}): ` +
        `${cxx.includes[0]} calls libstdc++ functions that scripts/libstdcxx-compat.cc does not define yet (objdump -T shows which)`,
    );
  }
  const addon = assemblePrebuild(t, built, runtime, log, force);
  return { addon, dir: t.prebuildDir, built, record: runtime, toolchain, needs, target: t };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const t0 = performance.now();
  const arch = argValue('--arch', process.argv);
  const log = arch && ARCHES[arch] ? logger(targetOf(arch)) : (msg) => process.stderr.write(`[cross-build] ${msg}\n`);
  try {
    if (!arch) throw new Error(`usage: node scripts/cross-build.mjs --arch ${Object.keys(ARCHES).join('|')} [--toolchain zig|gnu] [--force]`);
    const { addon, dir, toolchain, needs } = crossBuild({ arch, log, force: process.argv.includes('--force'), toolchain: toolchainArg(arch) });
    const files = fs.readdirSync(dir, { recursive: true }).filter((f) => fs.statSync(path.join(dir, f)).isFile());
    const bytes = files.reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
    log(
      `${path.relative(root, addon)} ready (${toolchain}): ${files.length} files, ${(bytes / 1e6).toFixed(1)} MB; needs ${formatNeeds(needs)} (${since(t0)})`,
    );
  } catch (err) {
    log(`failed: ${err.message}`);
    process.exit(1);
  }
}
