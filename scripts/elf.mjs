// What an ELF file is built for and which glibc / libstdc++ symbol versions it needs, for the
// prebuild scripts (scripts/package.mjs, scripts/cross-build.mjs, scripts/arm64-check.mjs).
// Symbol versions come from `readelf -V` (binutils), which reads ELF files of every machine, so
// the x86-64 host's readelf checks the arm64 prebuild too.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

/** Names of the ELF machines (e_machine) of the architectures the prebuilds are made for. */
export const MACHINE_NAMES = { 62: 'x86-64', 183: 'aarch64' };

/** The ELF machine number (e_machine) of a file, or null when it is not ELF. */
export function elfMachine(file) {
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

/** A machine number in words: 'aarch64', 'x86-64', 'ELF machine N', or 'not ELF' for null. */
export function machineName(m) {
  return m === null ? 'not ELF' : (MACHINE_NAMES[m] ?? `ELF machine ${m}`);
}

/** Compares dotted versions ('2.17' < '2.28', '3.4.9' < '3.4.22'): negative, 0 or positive. */
export function compareVersions(a, b) {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

const FAMILIES = ['GLIBC', 'GLIBCXX', 'CXXABI'];

/**
 * The newest GLIBC_, GLIBCXX_ and CXXABI_ version a file needs from the libraries it links:
 * its version needs (.gnu.version_r, `readelf -V`), e.g. { GLIBC: '2.17', GLIBCXX: '3.4.22',
 * CXXABI: '1.3.11' }. The versions it defines itself don't count.
 */
export function versionNeeds(file) {
  const out = execFileSync('readelf', ['-V', '-W', file], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const at = out.indexOf(".gnu.version_r'");
  if (at < 0) return {};
  return maxVersions([...out.slice(at).matchAll(/Name: (GLIBC|GLIBCXX|CXXABI)_([0-9][0-9.]*)\b/g)].map((m) => [m[1], m[2]]));
}

/** The newest version of each family among [family, version] pairs, or among several versionNeeds() results. */
export function maxVersions(pairs) {
  const max = {};
  for (const [family, v] of pairs) if (v && (!max[family] || compareVersions(v, max[family]) > 0)) max[family] = v;
  return Object.fromEntries(FAMILIES.filter((f) => max[f]).map((f) => [f, max[f]]));
}

/** { GLIBC: '2.17', GLIBCXX: '3.4.22' } -> 'GLIBC_2.17 GLIBCXX_3.4.22'. */
export function formatNeeds(needs) {
  return Object.entries(needs)
    .map(([k, v]) => `${k}_${v}`)
    .join(' ');
}

/**
 * manylinux_2_28, the platform of TVM's wheels (AlmaLinux 8: glibc 2.28, GCC 8's libstdc++ with
 * GLIBCXX_3.4.25 and CXXABI_1.3.11): a library that needs no newer versions loads wherever they do.
 */
export const MANYLINUX_2_28 = { GLIBC: '2.28', GLIBCXX: '3.4.25', CXXABI: '1.3.11' };

/** The needs of `needs` newer than `ceiling` (same shape; empty when none is). */
export function newerThan(needs, ceiling) {
  return Object.fromEntries(Object.entries(needs).filter(([k, v]) => ceiling[k] && compareVersions(v, ceiling[k]) > 0));
}
