#!/usr/bin/env node
// clang-format over the addon's sources (native/*.cc, native/*.h), style in .clang-format.
//   node scripts/clang-format.mjs --check   fail, listing what differs (`npm run lint`)
//   node scripts/clang-format.mjs --write   rewrite the files in place (`npm run format`)
// The binary is the pinned one from tvm/requirements-dev.txt, installed into tvm/.venv by
// scripts/bootstrap.mjs, so every machine formats alike.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const mode = process.argv[2];
if (mode !== '--check' && mode !== '--write') {
  process.stderr.write('usage: node scripts/clang-format.mjs --check | --write\n');
  process.exit(2);
}
const bin = path.join(root, 'tvm', '.venv', 'bin', 'clang-format');
if (!fs.existsSync(bin)) {
  process.stderr.write(`clang-format: ${path.relative(root, bin)} is missing; run \`npm run setup\` (it installs tvm/requirements-dev.txt)\n`);
  process.exit(1);
}
const files = fs
  .readdirSync(path.join(root, 'native'))
  .filter((f) => f.endsWith('.cc') || f.endsWith('.h'))
  .sort()
  .map((f) => path.join('native', f));
const args = mode === '--check' ? ['--dry-run', '-Werror'] : ['-i'];
const r = spawnSync(bin, [...args, ...files], { cwd: root, stdio: 'inherit' });
if (r.error) throw r.error;
if (r.status !== 0 && mode === '--check') process.stderr.write('clang-format: native/ is not formatted; `npm run format` fixes it\n');
process.exit(r.status ?? 1);
