#!/usr/bin/env node
// The package's `install` step (`npm install tvm-node`): checks that the native addon loads —
// the prebuilt binary for this platform (prebuilds/<platform>-<arch>/, with the TVM runtime
// beside it), or a local build — and never builds anything, so installing needs no compiler,
// cmake or Python. When nothing can load, the install fails with the one message
// lib/binding.ts gives at run time (what is missing, what to do) instead of a build log.
// In a source checkout it does nothing: `npm run setup` builds the addon there.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
if (fs.existsSync(path.join(root, 'scripts', 'bootstrap.mjs'))) process.exit(0);

try {
  createRequire(import.meta.url)(path.join(root, 'dist', 'lib', 'binding.js'));
} catch (err) {
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
}
