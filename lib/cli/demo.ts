/**
 * `tvm-node demo`: compiles (on first use, from a source checkout) and runs the bundled
 * example model, printing its output beside the numpy reference.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../binding';
import { cpu } from '../device';
import { TvmAssertionError, TvmRuntimeError } from '../errors';
import { readNpy } from '../npy';
import { Tensor } from '../tensor';
import { versions } from '../versions';
import { outputsOf, VirtualMachine } from '../vm';

/** The bundled demo models, compiled on first use by the pinned TVM (source checkout only). */
const DEMO_MODELS = ['mlp', 'conv'];

/** Compiles (first use) the demo models; returns their folder (with index.json). */
function compileDemoModels(): string {
  const python = path.join(packageRoot, 'tvm', '.venv', 'bin', 'python');
  const script = path.join(packageRoot, 'scripts', 'compile_fixtures.py');
  if (!fs.existsSync(python) || !fs.existsSync(script)) {
    throw new TvmRuntimeError('RuntimeError', 'the demo models are compiled from a source checkout; run `npm start` there');
  }
  const out = execFileSync(python, [script, '--only', DEMO_MODELS.join(',')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return out.trim().split('\n').pop()!;
}

/** Compiles (first use) and locates the demo MLP with its reference data. */
function demoModel(): { dir: string; so: string; input: string; reference: string } {
  const dir = compileDemoModels();
  return { dir, so: path.join(dir, 'mlp.so'), input: path.join(dir, 'mlp.in0.npy'), reference: path.join(dir, 'mlp.out0.npy') };
}

/**
 * A model repository of the demo models (`.cache/demo-models`): each `.so` with a manifest
 * written from the compile script's index, as a server operator would write one.
 */
export function demoRepository(): string {
  const compiled = compileDemoModels();
  const index = JSON.parse(fs.readFileSync(path.join(compiled, 'index.json'), 'utf8')) as {
    fixtures: Record<string, { file: string; function: string; signature: { inputs: unknown[]; outputs: unknown[] } }>;
  };
  const repo = path.join(packageRoot, '.cache', 'demo-models');
  fs.mkdirSync(repo, { recursive: true });
  for (const name of DEMO_MODELS) {
    const fx = index.fixtures[name];
    fs.copyFileSync(path.join(compiled, fx.file), path.join(repo, `${name}.so`));
    const manifest = { inputs: fx.signature.inputs, outputs: fx.signature.outputs, device: 'cpu', function: fx.function };
    fs.writeFileSync(path.join(repo, `${name}.json`), `${JSON.stringify(manifest, null, 2)}\n`);
  }
  return repo;
}

/** `tvm-node demo`: runs the example model and checks it against numpy's output. */
export async function demo(): Promise<void> {
  const v = versions();
  console.log(`tvm-node ${v.tvmNode} on TVM ${v.tvm} (tvm-ffi ${v.tvmFfi}), Node ${v.node}`);
  const model = demoModel();
  // The VM owns the module it loads; the input and the output are ours to dispose.
  await using vm = await VirtualMachine.load(model.so, { devices: [cpu()] });
  console.log(`model ${model.so}`);
  for (const f of vm.functions()) console.log(`  function ${f.name}(${f.params.join(', ')})`);
  const x = readNpy(model.input);
  await using input = await Tensor.from(x.data, { shape: x.shape, dtype: x.dtype });
  await using y = outputsOf<Tensor>(await vm.run('main', input))[0];
  const ref = readNpy(model.reference).data as Float32Array;
  const got = (await y.toArray()) as Float32Array;
  const maxErr = got.reduce((m, g, i) => Math.max(m, Math.abs(g - ref[i])), 0);
  console.log(`input  x: shape [${x.shape}] ${x.dtype}`);
  console.log(`output  : shape [${y.shape}] ${y.dtype}`);
  for (let r = 0; r < y.shape[0]; r++) {
    const row = Array.from(got.subarray(r * y.shape[1], (r + 1) * y.shape[1]), (n) => n.toFixed(4).padStart(8));
    console.log(`  [${row.join(' ')}]`);
  }
  console.log(`max |output - numpy reference| = ${maxErr.toExponential(2)}`);
  if (!(maxErr < 1e-4)) throw new TvmAssertionError('AssertionError', 'demo output does not match the numpy reference');
}
