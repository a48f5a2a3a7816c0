#!/usr/bin/env node
/**
 * The `tvm-node` command line. Errors print one line with a hint and exit non-zero:
 * 1 for runtime failures, 2 for usage errors (commander's own).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { packageRoot } from './binding';
import { cpu, cuda, metal, opencl, outputsOf, readNpy, runtimeLibraries, Tensor, TvmError, versions, VirtualMachine, vulkan } from './index';

/** Compiles (first use) and locates the bundled demo model with its reference data. */
function demoModel(): { dir: string; so: string; input: string; reference: string } {
  const python = path.join(packageRoot, 'tvm', '.venv', 'bin', 'python');
  const script = path.join(packageRoot, 'scripts', 'compile_fixtures.py');
  if (!fs.existsSync(python) || !fs.existsSync(script)) {
    throw new Error('the demo model is compiled from a source checkout; run `npm start` there');
  }
  const out = execFileSync(python, [script, '--only', 'mlp'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const dir = out.trim().split('\n').pop()!;
  return { dir, so: path.join(dir, 'mlp.so'), input: path.join(dir, 'mlp.in0.npy'), reference: path.join(dir, 'mlp.out0.npy') };
}

async function demo(): Promise<void> {
  const v = versions();
  console.log(`tvm-node ${v.tvmNode} on TVM ${v.tvm} (tvm-ffi ${v.tvmFfi}), Node ${v.node}`);
  const model = demoModel();
  const vm = await VirtualMachine.load(model.so, { devices: [cpu()] });
  console.log(`model ${model.so}`);
  for (const f of vm.functions()) console.log(`  function ${f.name}(${f.params.join(', ')})`);
  const x = readNpy(model.input);
  const [y] = outputsOf<Tensor>(await vm.run('main', Tensor.from(x.data, { shape: x.shape, dtype: x.dtype })));
  const ref = readNpy(model.reference).data as Float32Array;
  const got = y.toArray() as Float32Array;
  const maxErr = got.reduce((m, g, i) => Math.max(m, Math.abs(g - ref[i])), 0);
  console.log(`input  x: shape [${x.shape}] ${x.dtype}`);
  console.log(`output  : shape [${y.shape}] ${y.dtype}`);
  for (let r = 0; r < y.shape[0]; r++) {
    const row = Array.from(got.subarray(r * y.shape[1], (r + 1) * y.shape[1]), (n) => n.toFixed(4).padStart(8));
    console.log(`  [${row.join(' ')}]`);
  }
  console.log(`max |output - numpy reference| = ${maxErr.toExponential(2)}`);
  await vm.dispose();
  if (!(maxErr < 1e-4)) throw new Error('demo output does not match the numpy reference');
}

function info(): void {
  const v = versions();
  console.log(`tvm-node   ${v.tvmNode}`);
  console.log(`node       ${v.node} (N-API ${v.napi})`);
  console.log(`tvm        ${v.tvm} from ${v.tvmSource}`);
  console.log(`tvm-ffi    ${v.tvmFfi} (built against ${v.tvmFfiHeaders})`);
  for (const lib of runtimeLibraries()) console.log(`library    ${lib.name}: ${lib.loaded ? 'loaded' : `not loaded (${lib.error})`}`);
  for (const d of [cpu(), cuda(), vulkan(), opencl(), metal()]) {
    const state = d.exists ? `present${d.name ? ` (${d.name})` : ''}` : d.enabled ? 'runtime present, no device' : 'not in this runtime';
    console.log(`device     ${String(d).padEnd(10)} ${state}`);
  }
}

function fail(err: unknown): never {
  const e = err as Error;
  const hint = e instanceof TvmError ? ` [${e.kind}]` : '';
  console.error(`tvm-node: ${e.message.split('\n')[0]}${hint}`);
  process.exit(1);
}

const program = new Command('tvm-node').description('The Apache TVM runtime in Node.js').version(versions().tvmNode);
program.command('demo').description('compile (on first use) and run the bundled example model').action(() => demo().catch(fail));
program.command('info').description('versions, where TVM was found, devices present').action(() => {
  try {
    info();
  } catch (err) {
    fail(err);
  }
});
program.parseAsync(process.argv).catch(fail);
