/**
 * `tvm-node compile` (lib/cli/compile.ts + scripts/compile_model.py): the benchmark's small
 * MobileNetV2 ONNX compiled from the CLI for the host runs from Node and matches onnxruntime;
 * for aarch64 it is an aarch64 ELF (when the cross g++ is installed); bad requests are one
 * line each with the right exit status.
 *
 * The compiled artifacts are cached in .cache/compile-test/ by a sha256 over everything that
 * makes them (the .onnx, the compile scripts and the CLI code, the pinned requirements, the
 * target and this CPU), so a warm run only loads and checks them.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Model, readNpy } from '../lib';
import { PRESETS, parseInputShape } from '../lib/cli/compile';
import { UsageError } from '../lib/cli/errors';
import { readManifest } from '../lib/manifest';
import { assertFailure, type CliResult, runCli, writeUnsupportedOpModel } from './cli-run';
import { COMPILE_RECIPE_FILES, cpuKey, python, repoRoot } from './fixtures';

/** Runs the CLI from source as a child process, the way `tvm-node` runs. */
const cli = (args: string[], env: NodeJS.ProcessEnv = process.env) => runCli(args, { env, timeoutMs: 300_000 });

interface BenchModel {
  name: string;
  onnx: string;
  input: string;
  reference: string;
  tolerance: { rtol: number; atol: number };
}

/** The benchmark's small MobileNetV2 (scripts/compile_bench_models.py, cached): ONNX, input, onnxruntime's output. */
function benchModel(): BenchModel {
  const name = 'mobilenet_v2_tiny';
  const script = path.join(repoRoot, 'scripts', 'compile_bench_models.py');
  const out = execFileSync(python, [script, '--only', name], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const dir = out.trim().split('\n').pop()!;
  const entry = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).models[name];
  return {
    name,
    onnx: path.join(dir, entry.onnx),
    input: path.join(dir, entry.input.file),
    reference: path.join(dir, entry.output.file),
    tolerance: entry.tolerance,
  };
}

const sha256 = (data: crypto.BinaryLike) => crypto.createHash('sha256').update(data).digest('hex');

/**
 * `tvm-node compile ONNX -o <tmp>/NAME.so --target TARGET [...extra]`, cached in
 * .cache/compile-test/<key> (key: sha256 over the .onnx, COMPILE_RECIPE_FILES, the target, the extra
 * options and this CPU). Returns the artifact's path and whether it was compiled now.
 */
function compiled(onnx: string, target: string, extra: string[] = []): { so: string; fresh: boolean; result?: CliResult } {
  const h = crypto.createHash('sha256');
  for (const f of [onnx, ...COMPILE_RECIPE_FILES.map((f) => path.join(repoRoot, f))]) h.update(`${path.basename(f)}:${sha256(fs.readFileSync(f))}\n`);
  h.update(`target:${target}\nextra:${extra.join(' ')}\ncpu:${cpuKey()}\n`);
  const name = path.basename(onnx, '.onnx');
  const cacheRoot = path.join(repoRoot, '.cache', 'compile-test');
  const folder = path.join(cacheRoot, `${h.digest('hex').slice(0, 16)}-${target.replace(/[^\w.-]+/g, '_')}`);
  const so = path.join(folder, `${name}.so`);
  if (fs.existsSync(path.join(folder, `${name}.json`))) return { so, fresh: false };
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-compile-'));
  try {
    const result = cli(['compile', onnx, '-o', path.join(tmp, `${name}.so`), '--target', target, ...extra]);
    assert.equal(result.status, 0, `compile failed: ${result.stderr}`);
    fs.mkdirSync(cacheRoot, { recursive: true });
    const staged = fs.mkdtempSync(path.join(cacheRoot, '.tmp-'));
    for (const f of fs.readdirSync(tmp)) fs.copyFileSync(path.join(tmp, f), path.join(staged, f));
    try {
      fs.renameSync(staged, folder);
    } catch {
      fs.rmSync(staged, { recursive: true, force: true }); // another run published it first
    }
    return { so, fresh: true, result };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** max |a - b| and whether every element is within atol + rtol * |b|. */
function compare(a: ArrayLike<number>, b: ArrayLike<number>, tol: { rtol: number; atol: number }): { maxAbsDiff: number; ok: boolean } {
  let maxAbsDiff = 0;
  let ok = a.length === b.length;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    maxAbsDiff = Math.max(maxAbsDiff, d);
    if (!(d <= tol.atol + tol.rtol * Math.abs(b[i]))) ok = false;
  }
  return { maxAbsDiff, ok };
}

/** Runs the artifact from Node (Model.load, inputs by ONNX name) on the model's input and checks it against onnxruntime's output. */
async function matchesReference(so: string, model: BenchModel): Promise<void> {
  const x = readNpy(model.input);
  const ref = readNpy(model.reference);
  await using m = await Model.load(so);
  assert.deepEqual(m.inputNames, ['input']);
  assert.deepEqual(m.outputNames, ['logits']);
  const { logits } = await m.run({ input: { data: x.data, shape: x.shape } });
  try {
    assert.deepEqual(logits.shape, ref.shape);
    const { maxAbsDiff, ok } = compare((await logits.toArray()) as Float32Array, ref.data as Float32Array, model.tolerance);
    assert.ok(ok, `outside rtol ${model.tolerance.rtol} / atol ${model.tolerance.atol}: max |diff| ${maxAbsDiff}`);
    console.log(`      max |TVM - onnxruntime| = ${maxAbsDiff.toExponential(2)} (tolerance rtol ${model.tolerance.rtol}, atol ${model.tolerance.atol})`);
  } finally {
    await logits.dispose();
  }
}

const hasCrossGxx = spawnSync('sh', ['-c', 'command -v aarch64-linux-gnu-g++'], { encoding: 'utf8' }).status === 0;

describe('tvm-node compile', function () {
  this.timeout(600_000);
  let model: BenchModel;
  let tmp: string;

  before(() => {
    model = benchModel();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-compile-test-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  describe('the benchmark MobileNetV2 (tiny) for host', () => {
    let so: string;

    before(() => {
      const c = compiled(model.onnx, 'host');
      so = c.so;
      if (c.result) {
        assert.equal(c.result.stderr, '', 'no output on stderr when it is not a terminal');
        assert.match(c.result.stdout, /^compiled .*mobilenet_v2_tiny\.onnx in [\d.]+ s\n {2}artifact /);
        assert.match(c.result.stdout, /target +llvm x86_64-linux-gnu \S+ \(preset host\)|target +llvm aarch64-linux-gnu/);
      }
    });

    it('writes a manifest beside it: ONNX names, shapes, dtypes, target, TVM version, source and content hashes', () => {
      const file = so.replace(/\.so$/, '.json');
      const { manifest } = readManifest(file); // the runtime's own reader accepts it
      assert.deepEqual(manifest!.inputs, [{ name: 'input', shape: [1, 3, 64, 64], dtype: 'float32' }]);
      assert.deepEqual(manifest!.outputs, [{ name: 'logits', shape: [1, 10], dtype: 'float32' }]);
      assert.equal(manifest!.device, 'cpu');
      assert.equal(manifest!.function, 'main');
      const extra = JSON.parse(fs.readFileSync(file, 'utf8'));
      assert.equal(extra.target.kind, 'llvm');
      assert.equal(extra.preset, 'host');
      assert.match(extra.tvm_version, /^0\.27\./);
      assert.deepEqual(extra.source, { file: 'mobilenet_v2_tiny.onnx', sha256: sha256(fs.readFileSync(model.onnx)) });
      assert.match(extra.content_hash, /^[0-9a-f]{64}$/);
    });

    it('runs from Node (Model.load, inputs by ONNX name) and matches onnxruntime', () => matchesReference(so, model));

    it('runs with `tvm-node run` by the manifest names', () => {
      const out = path.join(tmp, 'run-out');
      const r = cli(['run', so, '--input', `input=${model.input}`, '-o', out]);
      assert.equal(r.status, 0, r.stderr);
      const got = readNpy(path.join(out, 'logits.npy'));
      const { ok, maxAbsDiff } = compare(got.data as Float32Array, readNpy(model.reference).data as Float32Array, model.tolerance);
      assert.ok(ok, `max |diff| ${maxAbsDiff}`);
    });
  });

  describe('--conv-layout NCHWc (blocked-channel convolutions, scripts/nchwc.py)', () => {
    let so: string;
    let result: CliResult | undefined;

    before(() => {
      ({ so, result } = compiled(model.onnx, 'host', ['--conv-layout', 'NCHWc', '--json']));
    });

    it('records the layout in the manifest, and the blocked template as its schedule', () => {
      const manifest = JSON.parse(fs.readFileSync(so.replace(/\.so$/, '.json'), 'utf8'));
      assert.equal(manifest.options.conv_layout, 'NCHWc');
      if (result) assert.match(JSON.parse(result.stdout).schedule, /^convolutions in blocked NCHW\[x\]c layout/);
    });

    it('matches onnxruntime like the NCHW build', () => matchesReference(so, model));

    it("takes channel blocks of two of the target's vectors: 32, 16, 8 for AVX-512, 16, 8 for AVX2", () => {
      const blocks = (mcpu: string) => {
        const target = JSON.stringify({ kind: 'llvm', mtriple: 'x86_64-linux-gnu', mcpu, 'num-cores': 2 });
        const built = compiled(model.onnx, target, ['--conv-layout', 'NCHWc']);
        return JSON.parse(fs.readFileSync(built.so.replace(/\.so$/, '.json'), 'utf8')).options.conv_blocks;
      };
      assert.deepEqual(blocks('x86-64-v4'), [32, 16, 8]);
      assert.deepEqual(blocks('x86-64-v3'), [16, 8]);
    });
  });

  it(`for aarch64: an aarch64 ELF (e_machine 183) with its manifest${hasCrossGxx ? '' : ' (skipped: aarch64-linux-gnu-g++ is not installed; apt-get install -y g++-aarch64-linux-gnu)'}`, function () {
    if (!hasCrossGxx) this.skip();
    const { so } = compiled(model.onnx, 'aarch64');
    const head = Buffer.alloc(20);
    const fd = fs.openSync(so, 'r');
    try {
      fs.readSync(fd, head, 0, 20, 0);
    } finally {
      fs.closeSync(fd);
    }
    assert.equal(head.subarray(0, 4).toString('latin1'), '\x7fELF');
    assert.equal(head[4], 2, 'ELFCLASS64');
    assert.equal(head.readUInt16LE(18), 183, 'e_machine EM_AARCH64');
    const m = JSON.parse(fs.readFileSync(so.replace(/\.so$/, '.json'), 'utf8'));
    assert.equal(m.target.mtriple, 'aarch64-linux-gnu');
    assert.equal(m.preset, 'aarch64');
    assert.deepEqual(m.inputs, [{ name: 'input', shape: [1, 3, 64, 64], dtype: 'float32' }]);
  });

  it(`for jetson-orin: CUDA sm_87 kernels (as CUDA C) in an aarch64 ELF, device cuda in the manifest${hasCrossGxx ? '' : ' (skipped: aarch64-linux-gnu-g++ is not installed)'}`, function () {
    if (!hasCrossGxx) this.skip();
    const { so } = compiled(model.onnx, 'jetson-orin');
    const bytes = fs.readFileSync(so);
    assert.equal(bytes.readUInt16LE(18), 183, 'e_machine EM_AARCH64 (host code)');
    // TVM 0.27 keeps CUDA kernels as source, compiled when loaded (README: Compiling models, CUDA).
    assert.ok(bytes.includes('extern "C" __global__'), 'CUDA C kernels embedded');
    const m = JSON.parse(fs.readFileSync(so.replace(/\.so$/, '.json'), 'utf8'));
    assert.equal(m.device, 'cuda');
    assert.equal(m.target.kind, 'cuda');
    assert.equal(m.target.arch, 'sm_87');
    assert.equal(m.target.host.mcpu, 'cortex-a78ae');
  });

  it("lists the presets scripts/compile_model.py has, in its order (the CLI's help names them)", () => {
    const out = execFileSync(python, [path.join(repoRoot, 'scripts', 'compile_model.py'), '--list-presets'], { encoding: 'utf8' });
    assert.deepEqual(
      PRESETS.map((p) => p.name),
      JSON.parse(out).map((p: { name: string }) => p.name),
    );
    const help = cli(['compile', '--help']);
    assert.equal(help.status, 0);
    for (const p of PRESETS) assert.ok(help.stdout.includes(p.name), `help names ${p.name}`);
  });

  describe('bad requests: one line and a hint, exit 1 (failure) or 2 (usage)', () => {
    it('a missing model file', () => {
      assertFailure(cli(['compile', 'no/such/model.onnx', '-o', path.join(tmp, 'x.so')]), 1, /^FileNotFoundError$/, /no\/such\/model\.onnx: no such file/);
    });

    it('an unknown preset', () => {
      const r = cli(['compile', model.onnx, '-o', path.join(tmp, 'x.so'), '--target', 'jetson-nano']);
      assertFailure(r, 2, /^usage$/, /unknown target 'jetson-nano': presets are host, aarch64, jetson-orin, rk3588/);
    });

    it('an old-style target string', () => {
      const r = cli(['compile', model.onnx, '-o', path.join(tmp, 'x.so'), '--target', 'llvm -mcpu=cortex-a76']);
      assertFailure(r, 2, /^usage$/, /TVM 0\.27 takes targets as JSON/);
    });

    it('a CPU LLVM does not know', () => {
      const r = cli(['compile', model.onnx, '-o', path.join(tmp, 'x.so'), '--target', '{"kind": "llvm", "mcpu": "cortex-z9"}']);
      assertFailure(r, 2, /^usage$/, /LLVM knows no CPU 'cortex-z9' for \w+-linux-gnu/);
    });

    it('a malformed --input-shape', () => {
      assertFailure(
        cli(['compile', model.onnx, '-o', path.join(tmp, 'x.so'), '--input-shape', 'input=1,3,six,64!']),
        2,
        /^usage$/,
        /--input-shape 'input=1,3,six,64!': size '64!'/,
      );
      assertFailure(cli(['compile', model.onnx, '-o', path.join(tmp, 'x.so'), '--input-shape', '1,3,64,64']), 2, /^usage$/, /expected NAME=D1,D2/);
    });

    it('an --input-shape for an input the model does not have, or of another rank', () => {
      assertFailure(
        cli(['compile', model.onnx, '-o', path.join(tmp, 'x.so'), '--input-shape', 'data=1,3,64,64']),
        2,
        /^usage$/,
        /no input 'data'; its inputs: input\[1, 3, 64, 64\]/,
      );
      assertFailure(
        cli(['compile', model.onnx, '-o', path.join(tmp, 'x.so'), '--input-shape', 'input=1,64,64']),
        2,
        /^usage$/,
        /3 sizes for input 'input' of rank 4/,
      );
    });

    it('a file that is not ONNX', () => {
      const junk = path.join(tmp, 'model.onnx');
      fs.writeFileSync(junk, 'this is not a protobuf\n'.repeat(10));
      assertFailure(cli(['compile', junk, '-o', path.join(tmp, 'x.so')]), 1, /^ONNXError$/, /model\.onnx is not an ONNX model/);
    });

    it('an operator the ONNX frontend does not have', () => {
      const file = path.join(tmp, 'unknown_op.onnx');
      writeUnsupportedOpModel(file);
      assertFailure(
        cli(['compile', file, '-o', path.join(tmp, 'x.so')]),
        1,
        /^UnsupportedOperator$/,
        /unknown_op\.onnx: operator\(s\) not supported by TVM 0\.27.* FancyNewOp$/,
      );
    });

    it('a cross target without its cross g++: the apt command in the one line', () => {
      // No PATH: no cross g++ to be found (node and the toolchain's Python are run by path).
      const r = cli(['compile', model.onnx, '-o', path.join(tmp, 'x.so'), '--target', 'rk3588'], { ...process.env, PATH: path.join(tmp, 'empty-path') });
      assertFailure(r, 1, /^ToolchainError$/, /aarch64-linux-gnu-g\+\+ not found: .*install it with `apt-get install -y g\+\+-aarch64-linux-gnu`/);
    });

    it('a --conv-layout other than NCHW or NCHWc, and NCHWc for a GPU target', () => {
      const r = cli(['compile', model.onnx, '-o', path.join(tmp, 'x.so'), '--conv-layout', 'NHWC']);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /--conv-layout.*'NHWC'.*NCHW, NCHWc/);
      const gpu = cli(['compile', model.onnx, '-o', path.join(tmp, 'x.so'), '--conv-layout', 'NCHWc', '--target', 'cuda']);
      assertFailure(gpu, 2, /usage/, /^--conv-layout NCHWc: blocked convolutions are for CPU \(llvm\) targets, not 'cuda'$/);
    });

    it('an output that is not a .so, and no -o', () => {
      assertFailure(cli(['compile', model.onnx, '-o', path.join(tmp, 'x.bin')]), 2, /^usage$/, /must be a \.so file/);
      assertFailure(cli(['compile', model.onnx]), 2, /^usage$/, /required option '-o, --out <file\.so>'/);
    });
  });

  describe('parseInputShape', () => {
    it('NAME=sizes by commas or x; names are symbolic sizes; ONNX names keep their punctuation', () => {
      assert.deepEqual(parseInputShape('input=1,3,224,224'), { name: 'input', shape: [1, 3, 224, 224] });
      assert.deepEqual(parseInputShape('x.1=1x3x224x224'), { name: 'x.1', shape: [1, 3, 224, 224] });
      assert.deepEqual(parseInputShape('gpu_0/data:0=N, 3, 224, 224'), { name: 'gpu_0/data:0', shape: ['N', 3, 224, 224] });
    });

    it('refuses no name, no sizes and sizes that are neither integers nor names', () => {
      for (const bad of ['1,3,224,224', '=1,2', 'x=', 'x=1,,2', 'x=1,-3', 'x=1.5']) assert.throws(() => parseInputShape(bad), UsageError, bad);
    });
  });
});
