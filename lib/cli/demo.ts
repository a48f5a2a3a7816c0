/**
 * `tvm-node demo`: compiles (on first use, from a source checkout) and runs the bundled
 * example model, printing its output beside the numpy reference.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../binding';
import { cpu } from '../device';
import { readNpy } from '../npy';
import { Tensor } from '../tensor';
import { versions } from '../versions';
import { outputsOf, VirtualMachine } from '../vm';

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

/** `tvm-node demo`: runs the example model and checks it against numpy's output. */
export async function demo(): Promise<void> {
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
