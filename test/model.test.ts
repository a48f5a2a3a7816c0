/**
 * The model API (lib/model.ts), the input binding (lib/bind.ts), the artifact's signature
 * (lib/signature.ts) and manifests (lib/manifest.ts): metadata of real compiled fixtures, runs
 * by name against the numpy references, every wrong-input case with its message, disposal,
 * and the benchmark's MobileNetV2 (ONNX) against onnxruntime-node.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  checkInputs,
  DisposedError,
  InputError,
  type InputProblem,
  ManifestError,
  Model,
  readNpy,
  Tensor,
  type TensorInfo,
  TvmError,
  TvmTypeError,
  TvmValueError,
  writeNpy,
} from '../lib';
import { connect } from '../lib/rpc/client';
import { inferAsync } from '../lib/rpc/infer';
import { ModelRepository } from '../lib/rpc/repository';
import { RPCServer } from '../lib/rpc/server';
import { encodeBlob } from '../lib/rpc/tni1';
import { parseAnnotation, parseConstantPool, readSignature } from '../lib/signature';
import { type ArraySpec, assertMatches, fixture, fixtureDir, npy, python, repoRoot } from './fixtures';

/** The fields of a VM fixture's index entry this file reads (scripts/compile_fixtures.py). */
interface VMEntry {
  manifest: string;
  signature: {
    inputs: Array<{ name: string; shape: (number | string | null)[]; dtype: string }>;
    outputs: Array<{ name: string; shape: (number | string | null)[]; dtype: string }>;
  };
}
const entry = (name: string) => fixture(name) as unknown as ReturnType<typeof fixture> & VMEntry;

/** Host data of a fixture array, as `{ data, shape, dtype }`. */
function host(spec: ArraySpec) {
  const a = npy(spec);
  return { data: a.data, shape: a.shape, dtype: a.dtype };
}

/** Asserts `fn` throws (or rejects with) an InputError with this problem, input and message. */
async function rejectsInput(fn: () => unknown, problem: InputProblem, input: string | undefined, message: string | RegExp): Promise<void> {
  await assert.rejects(
    async () => fn(),
    (err: unknown) => {
      assert.ok(err instanceof InputError, `not an InputError: ${String(err)}`);
      assert.ok(err instanceof TvmValueError && err instanceof TvmError);
      assert.equal(err.kind, 'ValueError');
      assert.equal(err.problem, problem);
      assert.equal(err.input, input);
      if (typeof message === 'string') assert.equal(err.message, message);
      else assert.match(err.message, message);
      return true;
    },
  );
}

const VM_FIXTURES = ['mlp', 'conv', 'multi_out', 'fp16', 'dynamic', 'pair'];

describe('Model (model API)', () => {
  let tmp: string;
  before(() => {
    fixtureDir();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-model-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  describe('metadata', () => {
    for (const name of VM_FIXTURES) {
      it(`${name}: names, shapes and dtypes from the artifact merged with its manifest`, async () => {
        const fx = entry(name);
        await using model = await Model.load(fx.path);
        assert.equal(model.manifestPath, path.join(fixtureDir(), fx.manifest));
        assert.deepEqual(model.inputs, fx.signature.inputs);
        assert.deepEqual(model.outputs, fx.signature.outputs);
        assert.deepEqual(
          model.inputNames,
          fx.signature.inputs.map((i) => i.name),
        );
        assert.deepEqual(
          model.outputNames,
          fx.signature.outputs.map((o) => o.name),
        );
        assert.equal(model.name, name);
        assert.equal(model.function, 'main');
      });

      it(`${name}: everything but output names from the artifact alone (no manifest beside it)`, async () => {
        const fx = entry(name);
        const file = path.join(tmp, `${name}.so`);
        fs.copyFileSync(fx.path, file);
        for (const model of [await Model.load(file), Model.loadSync(fx.path, { manifest: false })]) {
          assert.equal(model.manifestPath, undefined);
          assert.deepEqual(model.inputs, fx.signature.inputs, 'inputs: the parameter checks TVM compiled in');
          assert.deepEqual(
            model.outputs,
            fx.signature.outputs.map((o, i) => ({ ...o, name: `output${i}` })),
            'outputs: the return check or the bytecode',
          );
          await model.dispose();
        }
      });
    }

    it('a manifest names what TVM does not keep and renames symbolic sizes; a string path, an object or false', async () => {
      const fx = entry('pair');
      const file = path.join(tmp, 'named.json');
      fs.writeFileSync(
        file,
        JSON.stringify({
          inputs: [
            { name: 'a', shape: ['batch', 4], dtype: 'float32' },
            { name: 'b', shape: [null, null], dtype: 'float32' },
          ],
          outputs: [{ name: 'sum', shape: ['batch', 4], dtype: 'float32' }],
        }),
      );
      await using model = await Model.load(fx.path, { manifest: file });
      assert.equal(model.manifestPath, file);
      assert.deepEqual(model.inputs, [
        { name: 'a', shape: ['batch', 4], dtype: 'float32' },
        // null in the manifest: the artifact's size stands (a static size always does)
        { name: 'b', shape: ['n', 4], dtype: 'float32' },
      ]);
      assert.deepEqual(model.outputNames, ['sum']);
      await using fromObject = await Model.load(fx.path, { manifest: { outputs: [{ name: 'z2', shape: ['n', 4], dtype: 'float32' }] } });
      assert.deepEqual(fromObject.inputNames, ['x', 'y']);
      assert.deepEqual(fromObject.outputNames, ['z2']);
      assert.equal(fromObject.manifestPath, undefined);
    });

    it('a manifest that disagrees with the artifact is refused, naming the manifest and the field', async () => {
      const fx = entry('mlp');
      const cases: Array<[object, RegExp]> = [
        [{ inputs: [{ name: 'x', shape: [4, 16], dtype: 'float16' }] }, /has "inputs"\[0\] \('x'\) of dtype float16, but .*mlp\.so takes float32 there$/],
        [
          { inputs: [{ name: 'x', shape: [4, 16, 1], dtype: 'float32' }] },
          /has "inputs"\[0\] \('x'\) of shape \[4, 16, 1\], but .*mlp\.so has rank 2 there: \[4, 16\]$/,
        ],
        [{ inputs: [{ name: 'x', shape: [8, 16], dtype: 'float32' }] }, /has "inputs"\[0\] \('x'\) of shape \[8, 16\], but .*mlp\.so has \[4, 16\] there$/],
        [{ inputs: [] }, /lists 0 inputs, but function 'main' of .*mlp\.so takes 1 \(x\)$/],
        [
          {
            outputs: [
              { name: 'a', shape: [4, 8], dtype: 'float32' },
              { name: 'b', shape: [4, 8], dtype: 'float32' },
            ],
          },
          /lists 2 outputs, but function 'main' of .*mlp\.so returns 1$/,
        ],
        [
          {
            outputs: [
              { name: 'a', shape: [4, 8], dtype: 'float32' },
              { name: 'a', shape: [4, 8], dtype: 'float32' },
            ],
          },
          /has "outputs"\[1\]\.name "a", the name of "outputs"\[0\] too: names must differ$/,
        ],
      ];
      for (const [i, [manifest, message]] of cases.entries()) {
        const file = path.join(tmp, `bad${i}.json`);
        fs.writeFileSync(file, JSON.stringify(manifest));
        await assert.rejects(Model.load(fx.path, { manifest: file }), (err: Error) => {
          assert.ok(err instanceof ManifestError && err instanceof TvmValueError, String(err));
          assert.ok(err.message.startsWith(`manifest ${file} `), err.message);
          assert.match(err.message, message);
          return true;
        });
      }
      // A size name where the artifact has a static size is no conflict: the static size stands.
      await using named = await Model.load(fx.path, { manifest: { inputs: [{ name: 'features', shape: ['batch', 16], dtype: 'float32' }] } });
      assert.deepEqual(named.inputs, [{ name: 'features', shape: [4, 16], dtype: 'float32' }]);
      fs.writeFileSync(path.join(tmp, 'broken.json'), '{"inputs": [');
      await assert.rejects(Model.load(fx.path, { manifest: path.join(tmp, 'broken.json') }), /^ManifestError: manifest .*broken\.json is not valid JSON/);
      await assert.rejects(Model.load(fx.path, { manifest: { inputs: [{ shape: [4], dtype: 3 }] } as never }), (err: Error) => {
        assert.equal(err.message, 'manifest (the manifest option) has "inputs"[0].dtype of a number: it must be a string such as "float32"');
        return true;
      });
    });

    it('checks every option, naming it', async () => {
      const fx = fixture('mlp');
      const bad: Array<[unknown, unknown, typeof TvmError, string]> = [
        [42, {}, TvmTypeError, 'Model.load: path must be a non-empty string; got 42'],
        [fx.path, null, TvmTypeError, 'Model.load: options must be an object; got null'],
        [fx.path, { concurrency: NaN }, TvmValueError, "Model.load: option 'concurrency' must be an integer >= 1; got NaN"],
        [fx.path, { concurrency: 0 }, TvmValueError, "Model.load: option 'concurrency' must be an integer >= 1; got 0"],
        [fx.path, { memory: 'fast' }, TvmValueError, `Model.load: option 'memory' must be 'pooled' or 'naive'; got "fast"`],
        [fx.path, { device: 7 }, TvmTypeError, "Model.load: option 'device' must be a Device or a name such as 'cpu' or 'cuda:0'; got 7"],
        [fx.path, { device: 'tpu' }, TvmValueError, "Model.load: unknown device 'tpu' (known: cpu, cuda, opencl, vulkan, metal, rocm, webgpu)"],
        [fx.path, { function: '' }, TvmTypeError, `Model.load: option 'function' must be a non-empty string; got ""`],
        [fx.path, { manifest: 1 }, TvmTypeError, "Model.load: option 'manifest' must be a path, a manifest object or false; got 1"],
        [fx.path, { manifest: path.join(tmp, 'none.json') }, TvmValueError, `Model.load: manifest ${path.join(tmp, 'none.json')} does not exist`],
        [
          fx.path,
          { devices: [] },
          TvmValueError,
          "Model.load: unknown option 'devices' (options: device, function, concurrency, memory, manifest, privateCopy)",
        ],
      ];
      for (const [file, opts, Type, message] of bad) {
        await assert.rejects(Model.load(file as string, opts as never), (err: Error) => {
          assert.ok(err instanceof Type, `${message}: got ${String(err)}`);
          if (message.includes('unknown device')) assert.ok(err.message.startsWith("Model.load: unknown device 'tpu'"), err.message);
          else assert.equal(err.message, message);
          return true;
        });
      }
      assert.throws(() => Model.loadSync(fx.path, { concurrency: 1.5 }), { message: "Model.loadSync: option 'concurrency' must be an integer >= 1; got 1.5" });
      await assert.rejects(Model.load(fx.path, { function: 'nope' }), (err: Error) => {
        assert.ok(err instanceof TvmValueError);
        assert.equal(err.message, `model 'mlp' (${fx.path}) has no function 'nope' (it has 'main')`);
        return true;
      });
    });

    it('resolves a bare file name against the current directory', async () => {
      const cwd = process.cwd();
      process.chdir(fixtureDir());
      try {
        await using model = await Model.load('mlp.so');
        assert.equal(model.path, fixture('mlp').path);
        assert.deepEqual(model.inputNames, ['x']);
      } finally {
        process.chdir(cwd);
      }
    });
  });

  describe('run', () => {
    for (const name of VM_FIXTURES) {
      it(`${name}: inputs by name give outputs by name equal to the numpy reference (run and runSync)`, async () => {
        const fx = entry(name);
        await using model = await Model.load(fx.path);
        for (const c of fx.cases) {
          const inputs = Object.fromEntries(c.inputs.map((spec, i) => [model.inputNames[i], host(spec)]));
          for (const out of [await model.run(inputs), model.runSync(inputs)]) {
            assert.deepEqual(Object.keys(out), model.outputNames);
            c.outputs.forEach((spec, i) => assertMatches(out[model.outputNames[i]], spec, fx.tolerance));
            for (const t of Object.values(out)) await t.dispose();
          }
        }
      });
    }

    it('takes Tensors, bare TypedArrays (shaped by the model) and inputs in parameter order', async () => {
      const fx = fixture('mlp');
      const c = fx.cases[0];
      const x = npy(c.inputs[0]).data as Float32Array;
      await using model = await Model.load(fx.path);
      using t = Tensor.fromSync(x, { shape: [4, 16] });
      for (const inputs of [{ x }, { x: t }, [x], [t]]) {
        const { output0 } = await model.run(inputs);
        assertMatches(output0, c.outputs[0], fx.tolerance);
        await output0.dispose();
      }
      assert.equal(t.disposed, false, "the caller's tensor stays the caller's");
    });

    it('multi_out: every output by its name, or only those asked for', async () => {
      const fx = fixture('multi_out');
      await using model = await Model.load(fx.path);
      const x = host(fx.cases[0].inputs[0]);
      const all = await model.run({ x });
      assert.deepEqual(Object.keys(all), ['doubled', 'row_sum', 'row_argmax']);
      assertMatches(all.doubled, fx.cases[0].outputs[0], fx.tolerance);
      assertMatches(all.row_sum, fx.cases[0].outputs[1], fx.tolerance);
      assertMatches(all.row_argmax, fx.cases[0].outputs[2]);
      assert.equal(all.row_argmax.dtype, 'int64');
      const some = await model.run({ x }, { outputs: ['row_argmax'] });
      assert.deepEqual(Object.keys(some), ['row_argmax']);
      assertMatches(some.row_argmax, fx.cases[0].outputs[2]);
      for (const t of [...Object.values(all), ...Object.values(some)]) await t.dispose();
      await assert.rejects(model.run({ x }, { outputs: ['sum'] }), {
        name: 'TvmValueError',
        message: "model 'multi_out' has no output 'sum'; its outputs are 'doubled', 'row_sum', 'row_argmax'",
      });
    });

    it('symbolic sizes: dynamic and pair run at every size, outputs shaped by it', async () => {
      await using dynamic = await Model.load(fixture('dynamic').path);
      assert.deepEqual(dynamic.inputs[0].shape, ['n', 4]);
      assert.deepEqual(dynamic.outputs[0], { name: 'dense', shape: ['n', 3], dtype: 'float32' });
      for (const rows of [1, 3, 7]) {
        const out = await dynamic.run({ x: { data: new Float32Array(rows * 4).fill(0.5), shape: [rows, 4] } });
        assert.deepEqual(out.dense.shape, [rows, 3]);
        assert.deepEqual(Array.from((await out.x_shape.toArray()) as BigInt64Array), [BigInt(rows), 4n]);
        for (const t of Object.values(out)) await t.dispose();
      }
      await using pair = await Model.load(fixture('pair').path);
      // A bare TypedArray takes n from its length, or from an input that set it already.
      const x = new Float32Array(12).map((_, i) => i);
      const y = new Float32Array(12).fill(2);
      const { z } = await pair.run({ x, y });
      assert.deepEqual(z.shape, [3, 4]);
      assert.deepEqual(
        Array.from((await z.toArray()) as Float32Array),
        Array.from(x, (v) => v * 2 + v),
      );
      await z.dispose();
    });

    it('float16: raw bits in a Uint16Array with the dtype, or a float16 Tensor', async () => {
      const fx = fixture('fp16');
      await using model = await Model.load(fx.path);
      assert.deepEqual(model.inputs, [{ name: 'x', shape: [8, 8], dtype: 'float16' }]);
      const x = host(fx.cases[0].inputs[0]);
      assert.ok(x.data instanceof Uint16Array);
      using t = Tensor.fromSync(x.data, { shape: x.shape, dtype: 'float16' });
      for (const inputs of [{ x }, { x: t }]) {
        const { output0 } = model.runSync(inputs);
        assert.equal(output0.dtype, 'float16');
        assertMatches(output0, fx.cases[0].outputs[0], fx.tolerance);
        await output0.dispose();
      }
    });
  });

  describe('wrong inputs', () => {
    let mlp: Model;
    let pair: Model;
    let fp16: Model;
    before(async () => {
      mlp = await Model.load(fixture('mlp').path);
      pair = await Model.load(fixture('pair').path);
      fp16 = await Model.load(fixture('fp16').path);
    });
    after(async () => {
      await Promise.all([mlp.dispose(), pair.dispose(), fp16.dispose()]);
    });

    const f32 = (n: number) => new Float32Array(n);
    const cases: Array<{ what: string; model: () => Model; inputs: () => unknown; problem: InputProblem; input?: string; message: string }> = [
      {
        what: 'an unknown name',
        model: () => mlp,
        inputs: () => ({ x: f32(64), z: f32(1) }),
        problem: 'unknown',
        input: 'z',
        message: "model 'mlp' has no input 'z'; its inputs are 'x'",
      },
      {
        what: 'a missing input',
        model: () => pair,
        inputs: () => ({ x: f32(8) }),
        problem: 'missing',
        input: 'y',
        message: "model 'pair': missing input 'y' (takes 2 inputs (x, y))",
      },
      {
        what: 'an undefined input',
        model: () => pair,
        inputs: () => ({ x: f32(8), y: undefined }),
        problem: 'missing',
        input: 'y',
        message: "model 'pair': missing input 'y' (takes 2 inputs (x, y))",
      },
      { what: 'too few positional inputs', model: () => pair, inputs: () => [f32(8)], problem: 'count', message: "model 'pair' takes 2 inputs (x, y); got 1" },
      {
        what: 'a lone TypedArray instead of inputs',
        model: () => mlp,
        inputs: () => f32(64),
        problem: 'type',
        message: "model 'mlp': inputs must be an object of inputs by name or an array in parameter order; got a Float32Array",
      },
      {
        what: 'a value of the wrong JS type',
        model: () => mlp,
        inputs: () => ({ x: 'hello' }),
        problem: 'type',
        input: 'x',
        message: "model 'mlp': input 'x' must be a Tensor, a TypedArray or { data, shape, dtype? }; got a string",
      },
      {
        what: 'a plain array',
        model: () => mlp,
        inputs: () => ({ x: [1, 2, 3] }),
        problem: 'type',
        input: 'x',
        message: "model 'mlp': input 'x' must be a Tensor, a TypedArray or { data, shape, dtype? }; got an array",
      },
      {
        what: 'host data without a TypedArray',
        model: () => mlp,
        inputs: () => ({ x: { data: [1, 2], shape: [2] } }),
        problem: 'type',
        input: 'x',
        message: "model 'mlp': input 'x' has data of an array: it must be a TypedArray (or a Buffer of raw bytes with a dtype)",
      },
      {
        what: 'a bad shape',
        model: () => mlp,
        inputs: () => ({ x: { data: f32(64), shape: [4, -16] } }),
        problem: 'type',
        input: 'x',
        message: "model 'mlp': input 'x' has shape [4,-16]: it must be an array of non-negative integers",
      },
      {
        what: 'an unknown dtype',
        model: () => mlp,
        inputs: () => ({ x: { data: f32(64), shape: [4, 16], dtype: 'float12' } }),
        problem: 'dtype',
        input: 'x',
        message: /^model 'mlp': input 'x' has dtype 'float12': unsupported dtype 'float12'/ as never,
      },
      {
        what: 'data not of the dtype',
        model: () => mlp,
        inputs: () => ({ x: { data: new Int32Array(64), shape: [4, 16], dtype: 'float32' } }),
        problem: 'type',
        input: 'x',
        message: "model 'mlp': input 'x' has data of an Int32Array for dtype float32: float32 data is a Float32Array (or a Buffer of raw bytes)",
      },
      {
        what: 'a TypedArray of the wrong dtype',
        model: () => mlp,
        inputs: () => ({ x: new Int32Array(64) }),
        problem: 'dtype',
        input: 'x',
        message: "model 'mlp': input 'x' must be float32; got an Int32Array (int32)",
      },
      {
        what: 'a Tensor of the wrong dtype',
        model: () => mlp,
        inputs: () => ({ x: Tensor.fromSync(new Float64Array(64), { shape: [4, 16] }) }),
        problem: 'dtype',
        input: 'x',
        message: "model 'mlp': input 'x' must be float32; got a float64 Tensor",
      },
      {
        what: 'float16 bits without the dtype',
        model: () => fp16,
        inputs: () => ({ x: new Uint16Array(64) }),
        problem: 'dtype',
        input: 'x',
        message:
          "model 'fp16': input 'x' must be float16; got a Uint16Array (uint16) (float16 data is raw bits in a Uint16Array: pass { data, shape, dtype: 'float16' }; fromFloat32() makes the bits)",
      },
      {
        what: 'the wrong rank',
        model: () => mlp,
        inputs: () => ({ x: { data: f32(64), shape: [64] } }),
        problem: 'rank',
        input: 'x',
        message: "model 'mlp': input 'x' must have 2 dimensions [4, 16]; got 1: [64]",
      },
      {
        what: 'a wrong static size',
        model: () => mlp,
        inputs: () => ({ x: { data: f32(64), shape: [8, 8] } }),
        problem: 'shape',
        input: 'x',
        message: "model 'mlp': input 'x' must have size 4 at dimension 0 (shape [4, 16]); got 8: [8, 8]",
      },
      {
        what: 'a Tensor of a wrong size',
        model: () => mlp,
        inputs: () => ({ x: Tensor.fromSync(f32(32), { shape: [2, 16] }) }),
        problem: 'shape',
        input: 'x',
        message: "model 'mlp': input 'x' must have size 4 at dimension 0 (shape [4, 16]); got 2: [2, 16]",
      },
      {
        what: 'a symbolic size that differs between inputs',
        model: () => pair,
        inputs: () => ({ x: { data: f32(8), shape: [2, 4] }, y: { data: f32(12), shape: [3, 4] } }),
        problem: 'shape',
        input: 'y',
        message: "model 'pair': input 'y' has size 3 at dimension 0, which is 'n' = 2 (set by input 'x'); shape [3, 4] for [n, 4]",
      },
      {
        what: 'data shorter than its shape',
        model: () => mlp,
        inputs: () => ({ x: { data: f32(60), shape: [4, 16] } }),
        problem: 'size',
        input: 'x',
        message: "model 'mlp': input 'x' has 60 elements; shape [4, 16] needs 64",
      },
      {
        what: 'raw bytes shorter than their shape',
        model: () => mlp,
        inputs: () => ({ x: { data: Buffer.alloc(255), shape: [4, 16], dtype: 'float32' } }),
        problem: 'size',
        input: 'x',
        message: "model 'mlp': input 'x' has 255 bytes of data; shape [4, 16] of float32 needs 256",
      },
      {
        what: 'a bare TypedArray longer than the static shape',
        model: () => mlp,
        inputs: () => ({ x: f32(65) }),
        problem: 'size',
        input: 'x',
        message: "model 'mlp': input 'x' has 65 elements; shape [4, 16] needs 64",
      },
      {
        what: 'a bare TypedArray whose length does not fill a symbolic shape',
        model: () => pair,
        inputs: () => ({ x: f32(6), y: f32(6) }),
        problem: 'shape',
        input: 'x',
        message: "model 'pair': input 'x' has 6 elements, which do not fill shape [n, 4] (a multiple of 4 is needed); pass { data, shape }",
      },
      {
        what: 'a bare TypedArray whose length disagrees with a size set by an earlier input',
        model: () => pair,
        inputs: () => ({ x: { data: f32(12), shape: [3, 4] }, y: f32(16) }),
        problem: 'size',
        input: 'y',
        message: "model 'pair': input 'y' has 16 elements; shape [3, 4] needs 12",
      },
      {
        what: 'a disposed Tensor',
        model: () => mlp,
        inputs: () => {
          const t = Tensor.fromSync(f32(64), { shape: [4, 16] });
          t.disposeSync();
          return { x: t };
        },
        problem: 'disposed',
        input: 'x',
        message: "model 'mlp': input 'x' is a disposed Tensor",
      },
    ];
    for (const c of cases) {
      it(`${c.what}: an InputError naming it, from run and runSync`, async () => {
        await rejectsInput(() => c.model().run(c.inputs() as never), c.problem, c.input, c.message);
        await rejectsInput(() => c.model().runSync(c.inputs() as never), c.problem, c.input, c.message);
      });
    }
  });

  describe('ownership', () => {
    it('releases the tensors it made from host data, after the run and when the run fails; outputs are the caller’s', async () => {
      const made: Tensor[] = [];
      const wrap = Tensor.wrap;
      Tensor.wrap = (...args: Parameters<typeof Tensor.wrap>) => {
        const t = wrap.apply(Tensor, args);
        made.push(t);
        return t;
      };
      const fx = fixture('mlp');
      const model = await Model.load(fx.path);
      let output0: Tensor;
      try {
        ({ output0 } = await model.run({ x: host(fx.cases[0].inputs[0]) }));
        assert.equal(made.length, 1, 'one tensor made for the one host input');
        assert.equal(made[0].disposed, true, 'released by the model after the run');
        const sync = model.runSync({ x: npy(fx.cases[0].inputs[0]).data as Float32Array });
        assert.equal(made.length, 2);
        assert.equal(made[1].disposed, true);
        await sync.output0.dispose();

        // dynamic asserts max|x| < 1000 inside the model: the run fails after binding.
        await using dynamic = await Model.load(fixture('dynamic').path);
        await assert.rejects(dynamic.run({ x: { data: new Float32Array(4).fill(5000), shape: [1, 4] } }), /dynamic: input out of range/);
        assert.equal(made.length, 3);
        assert.equal(made[2].disposed, true, 'released when the run fails too');
      } finally {
        Tensor.wrap = wrap;
      }
      await model.dispose();
      assert.equal(model.disposed, true);
      assert.equal(model.vm.disposed, true);
      assert.equal(model.vm.module.disposed, true, 'the model owns its module');
      await model.dispose(); // idempotent
      assert.equal(output0.disposed, false, 'outputs outlive the model');
      assertMatches(output0, fx.cases[0].outputs[0], fx.tolerance);
      await output0.dispose();
      await assert.rejects(
        model.run({ x: new Float32Array(64) }),
        (err: Error) => err instanceof DisposedError && err.message === "model 'mlp' has been disposed",
      );
      assert.throws(() => model.runSync({ x: new Float32Array(64) }), DisposedError);
    });

    it('dispose waits for runs in flight', async () => {
      const fx = fixture('mlp');
      const model = await Model.load(fx.path, { concurrency: 2, privateCopy: true });
      const runs = [0, 1, 2, 3].map(() => model.run({ x: host(fx.cases[0].inputs[0]) }));
      await model.dispose();
      for (const out of await Promise.all(runs)) {
        assertMatches(out.output0, fx.cases[0].outputs[0], fx.tolerance);
        await out.output0.dispose();
      }
    });
  });

  describe('MobileNetV2 (the benchmark model, built as ONNX) against onnxruntime-node', function () {
    // First build: ~15 s (scripts/compile_bench_models.py, cached by content hash).
    this.timeout(600_000);
    let dir: string;
    before(() => {
      const script = path.join(repoRoot, 'scripts', 'compile_bench_models.py');
      const out = execFileSync(python, [script, '--only', 'mobilenet_v2'], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
      dir = out.trim().split('\n').pop()!;
    });

    it('runs by its ONNX input name; outputs by ONNX name equal onnxruntime-node’s', async function () {
      this.timeout(60_000);
      const index = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')).models.mobilenet_v2;
      await using model = await Model.load(path.join(dir, index.library));
      assert.deepEqual(model.inputs, [{ name: 'input', shape: [1, 3, 224, 224], dtype: 'float32' }]);
      assert.deepEqual(model.outputs, [{ name: 'logits', shape: [1, 1000], dtype: 'float32' }]);

      const ort = require('onnxruntime-node') as typeof import('onnxruntime-node');
      const session = await ort.InferenceSession.create(path.join(dir, index.onnx));
      try {
        assert.deepEqual(session.inputNames, model.inputNames);
        assert.deepEqual(session.outputNames, model.outputNames);
        const x = readNpy(path.join(dir, index.input.file));
        const input = x.data as Float32Array;
        const expected = await session.run({ input: new ort.Tensor('float32', input, x.shape) });
        const got = await model.run({ input });
        assert.deepEqual(Object.keys(got), ['logits']);
        assert.deepEqual(got.logits.shape, expected.logits.dims);
        const a = (await got.logits.toArray()) as Float32Array;
        const e = expected.logits.data as Float32Array;
        assert.equal(a.length, 1000);
        const { rtol, atol } = index.tolerance as { rtol: number; atol: number };
        let worst = 0;
        for (let i = 0; i < e.length; i++) {
          const d = Math.abs(a[i] - e[i]);
          worst = Math.max(worst, d);
          assert.ok(d <= atol + rtol * Math.abs(e[i]), `logits[${i}]: tvm-node ${a[i]}, onnxruntime-node ${e[i]}`);
        }
        assert.ok(worst < 1e-3, `max |tvm-node - onnxruntime-node| = ${worst}`);
        assert.ok(new Set(e).size > 900, 'the logits are not degenerate');
        await got.logits.dispose();
      } finally {
        await session.release();
      }
    });
  });
});

describe('the model repository binds TNI1 requests the same way (lib/rpc/infer.ts)', () => {
  let dir: string;
  let repo: ModelRepository;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-model-repo-'));
    for (const name of ['pair', 'mlp']) fs.copyFileSync(fixture(name).path, path.join(dir, `${name}.so`));
    fs.writeFileSync(
      path.join(dir, 'pair.json'),
      JSON.stringify({
        inputs: [
          { name: 'left', shape: ['rows', 4], dtype: 'float32' },
          { name: 'right', shape: ['rows', 4], dtype: 'float32' },
        ],
      }),
    );
    repo = new ModelRepository(dir);
  });
  after(async () => {
    await repo.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('loaded models carry the merged metadata; requests are checked against it, naming the input', async () => {
    const pair = await repo.get('pair');
    assert.deepEqual(
      pair.inputs.map((i) => [i.name, i.shape, i.dtype]),
      [
        ['left', ['rows', 4], 'float32'],
        ['right', ['rows', 4], 'float32'],
      ],
    );
    assert.deepEqual((await repo.get('mlp')).inputs, [{ name: 'x', shape: [4, 16], dtype: 'float32' }], 'no manifest: the artifact alone');
    const fx = fixture('pair');
    const c = fx.cases[1];
    const { outputs: reply } = await inferAsync(repo, 'pair', encodeBlob(c.inputs.map((spec) => host(spec))));
    assert.equal(reply.length, 1);
    assertMatches(reply[0], c.outputs[0], fx.tolerance);
    reply[0].disposeSync();
    const two = (a: number, b: number) =>
      encodeBlob([
        { data: new Float32Array(a * 4), shape: [a, 4], dtype: 'float32' },
        { data: new Float32Array(b * 4), shape: [b, 4], dtype: 'float32' },
      ]);
    await rejectsInput(
      () => inferAsync(repo, 'pair', two(2, 3)),
      'shape',
      'right',
      "model 'pair': input 'right' has size 3 at dimension 0, which is 'rows' = 2 (set by input 'left'); shape [3, 4] for [rows, 4]",
    );
    await rejectsInput(
      () => inferAsync(repo, 'mlp', encodeBlob([{ data: new Int32Array(64), shape: [4, 16], dtype: 'int32' }])),
      'dtype',
      'x',
      "model 'mlp': input 'x' must be float32; got int32 data",
    );
    // The count is checked before any entry is read, as before.
    await assert.rejects(inferAsync(repo, 'pair', encodeBlob([])), { message: "model 'pair' takes 2 inputs; the request has 0" });
  });

  it('a manifest that disagrees with the artifact stops the model, without server paths in the message', async () => {
    fs.writeFileSync(path.join(dir, 'mlp.json'), JSON.stringify({ inputs: [{ name: 'x', shape: [4, 16], dtype: 'float16' }] }));
    await assert.rejects(repo.get('mlp'), (err: Error) => {
      assert.ok(err instanceof TvmValueError);
      assert.equal(err.message, `model 'mlp': manifest mlp.json has "inputs"[0] ('x') of dtype float16, but mlp.so takes float32 there`);
      assert.ok(!err.message.includes(dir));
      return true;
    });
    fs.rmSync(path.join(dir, 'mlp.json'));
  });
});

describe("session.infer by name, against tvm-node's inference-only server (lib/rpc/client.ts)", function () {
  this.timeout(60_000);
  let dir: string;
  let server: RPCServer;
  let port: number;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-model-rpc-'));
    for (const name of ['multi_out', 'pair', 'mlp']) fs.copyFileSync(fixture(name).path, path.join(dir, `${name}.so`));
    for (const name of ['multi_out', 'pair']) fs.copyFileSync(path.join(fixtureDir(), entry(name).manifest), path.join(dir, `${name}.json`));
    server = new RPCServer({ host: '127.0.0.1', port: 0, inferenceOnly: true, modelsDir: dir });
    ({ port } = await server.listen());
  });
  after(async () => {
    await server.close(1000);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('inputs by name in, outputs by name out; the server checks them, naming the input', async () => {
    await using session = await connect('127.0.0.1', port);
    const fx = fixture('multi_out');
    const out = await session.infer('multi_out', { x: host(fx.cases[0].inputs[0]) as { data: Float32Array; shape: number[] } });
    assert.deepEqual(Object.keys(out), ['doubled', 'row_sum', 'row_argmax']);
    fx.cases[0].outputs.forEach((spec, i) => assertMatches(Object.values(out)[i], spec, fx.tolerance));
    for (const t of Object.values(out)) await t.dispose();

    const pair = fixture('pair');
    const c = pair.cases[0];
    const { z } = await session.infer('pair', { y: host(c.inputs[1]) as never, x: host(c.inputs[0]) as never });
    assertMatches(z, c.outputs[0], pair.tolerance);
    await z.dispose();

    await assert.rejects(session.infer('pair', { x: host(c.inputs[0]) as never }), {
      name: 'InputError',
      message: "model 'pair': missing input 'y' (takes 2 inputs (x, y))",
    });
    const wrong = { x: { data: new Float32Array(8), shape: [2, 4] }, y: { data: new Float32Array(12), shape: [3, 4] } };
    await assert.rejects(session.infer('pair', wrong), (err: Error) => {
      // The server's InputError, as TVM's RPC client raises a peer's error.
      assert.ok(err instanceof TvmError, String(err));
      assert.match(err.message, /ValueError: model 'pair': input 'y'/);
      assert.match(err.message, /model 'pair': input 'y' has size 3 at dimension 0, which is 'n' = 2 \(set by input 'x'\)/);
      return true;
    });
    await assert.rejects(session.infer('mlp', { x: { data: new Float32Array(64), shape: [4, 16] } }), {
      message: "model 'mlp' has no input names on the server (its manifest names none): pass its inputs in order, as an array",
    });
    const [y] = await session.infer('mlp', [{ data: new Float32Array(64), shape: [4, 16] }]);
    assert.deepEqual(y.shape, [4, 8]);
    await y.dispose();
  });
});

describe('the CLI checks its inputs the same way (lib/cli/run.ts, lib/cli/bench.ts)', () => {
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, ['--require', 'tsx/cjs', 'lib/cli.ts', ...args], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 90_000,
      env: { ...process.env, FORCE_COLOR: '0' },
    });
  let tmp: string;
  before(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-model-cli-'))));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('run: a symbolic size that differs between inputs fails before the call, naming the input', () => {
    writeNpy(path.join(tmp, 'x.npy'), { data: new Float32Array(8), shape: [2, 4], dtype: 'float32' });
    writeNpy(path.join(tmp, 'y.npy'), { data: new Float32Array(12), shape: [3, 4], dtype: 'float32' });
    const r = cli('run', fixture('pair').path, '--input', `x=${path.join(tmp, 'x.npy')}`, '--input', `y=${path.join(tmp, 'y.npy')}`);
    assert.equal(r.status, 1, r.stderr);
    const [line, hint] = r.stderr.trim().split('\n');
    assert.equal(
      line,
      "tvm-node: model 'pair': input 'y' has size 3 at dimension 0, which is 'n' = 2 (set by input 'x'); shape [3, 4] for [n, 4] [ValueError]",
    );
    assert.equal(
      hint,
      'hint: main(x, y) was called with x [2, 4] float32, y [3, 4] float32; check them against the shapes and dtypes the model was compiled for',
    );
  });

  it('bench: inputs by the names of the manifest', () => {
    const file = path.join(tmp, 'renamed.so');
    fs.copyFileSync(fixture('mlp').path, file);
    fs.writeFileSync(path.join(tmp, 'renamed.json'), JSON.stringify({ inputs: [{ name: 'gpu_0/data_0', shape: [4, 16], dtype: 'float32' }] }));
    const ok = cli('bench', file, '--shape', 'gpu_0/data_0=4x16', '-n', '3', '-w', '0', '--json');
    assert.equal(ok.status, 0, ok.stderr);
    assert.deepEqual(
      JSON.parse(ok.stdout).inputs.map((i: { name: string }) => i.name),
      ['gpu_0/data_0'],
    );
    const bad = cli('bench', file, '--shape', 'gpu_0/data_0=4x15', '-n', '3');
    assert.equal(bad.status, 1);
    assert.match(
      bad.stderr,
      /^tvm-node: model 'renamed': input 'gpu_0\/data_0' must have size 16 at dimension 1 \(shape \[4, 16\]\); got 15: \[4, 15\] \[ValueError\]\n/,
    );
  });
});

describe('bind (lib/bind.ts) without a model', () => {
  const specs: TensorInfo[] = [
    { name: 'a', shape: ['N', 3], dtype: 'float32' },
    { name: 'b', shape: ['N', 'M', null], dtype: null },
    { name: 'c', shape: null, dtype: 'int64' },
  ];
  it('binds symbolic sizes once across inputs and reports them', () => {
    const { inputs, dims } = checkInputs(specs, {
      a: new Float32Array(6),
      b: { data: new Int32Array(2 * 5 * 7), shape: [2, 5, 7] },
      c: { data: new BigInt64Array(1), shape: [] },
    });
    assert.deepEqual(dims, { N: 2, M: 5 });
    assert.deepEqual(
      inputs.map((i) => [i.name, i.shape, i.dtype]),
      [
        ['a', [2, 3], 'float32'],
        ['b', [2, 5, 7], 'int32'],
        ['c', [], 'int64'],
      ],
    );
  });
  it('takes any name for a size, even one of an Object method', async () => {
    const odd: TensorInfo[] = [
      { name: 'p', shape: ['constructor'], dtype: 'float32' },
      { name: 'q', shape: ['constructor'], dtype: 'float32' },
    ];
    assert.deepEqual(checkInputs(odd, [new Float32Array(3), new Float32Array(3)]).dims, { constructor: 3 });
    await rejectsInput(
      () => checkInputs(odd, [new Float32Array(3), { data: new Float32Array(2), shape: [2] }]),
      'shape',
      'q',
      "the model: input 'q' has size 2 at dimension 0, which is 'constructor' = 3 (set by input 'p'); shape [2] for [constructor]",
    );
  });
  it('checks an unknown rank or dtype only against the data', async () => {
    await rejectsInput(
      () => checkInputs(specs, [new Float32Array(6), { data: new Float32Array(2), shape: [2] }, new BigInt64Array(1)]),
      'rank',
      'b',
      "the model: input 'b' must have 3 dimensions [N, M, ?]; got 1: [2]",
    );
    await rejectsInput(
      () => checkInputs(specs, [new Float32Array(6), new Float32Array(2), new BigInt64Array(1)]),
      'shape',
      'b',
      "the model: input 'b' has shape [N, M, ?], which a TypedArray alone does not settle: pass { data, shape }",
    );
    await rejectsInput(
      () => checkInputs(specs, [new Float32Array(6), { data: new Float32Array(2), shape: [2, 1, 1] }, new BigInt64Array(1)], { model: 'm' }),
      'shape',
      'c',
      "m: input 'c' has no known shape: pass { data, shape }",
    );
  });
});

describe('the artifact signature (lib/signature.ts)', () => {
  it('reads struct info annotations as TVMScript prints them', () => {
    assert.deepEqual(parseAnnotation('R.Tensor((n, 4), dtype="float32")'), [{ shape: ['n', 4], dtype: 'float32' }]);
    assert.deepEqual(parseAnnotation('R.Tensor((T.int64(2),), dtype="int64")'), [{ shape: [2], dtype: 'int64' }]);
    assert.deepEqual(parseAnnotation('R.Tensor((n * 2, m), dtype="float16")'), [{ shape: ['n * 2', 'm'], dtype: 'float16' }]);
    assert.deepEqual(parseAnnotation('R.Tensor(dtype="float32", ndim=2)'), [{ shape: [null, null], dtype: 'float32' }]);
    assert.deepEqual(parseAnnotation('R.Tensor(dtype="float32")'), [{ shape: null, dtype: 'float32' }]);
    assert.deepEqual(parseAnnotation('R.Tensor((2, 3))'), [{ shape: [2, 3], dtype: null }]);
    assert.deepEqual(parseAnnotation('T.Tuple(R.Tensor((n, T.int64(3)), dtype="float32"), R.Tuple(R.Tensor((1,), dtype="bool"), R.Object))'), [
      { shape: ['n', 3], dtype: 'float32' },
      { shape: [1], dtype: 'bool' },
      { shape: null, dtype: null },
    ]);
  });

  it('splits the constant pool even when strings hold ", " and an empty shape tuple is misprinted', () => {
    const stats =
      'Relax VM executable statistics:\n' +
      '  Constant pool (# 8): [float32, "ErrorContext(fn=main, loc=param[0], param=x, annotation=R.Tensor(dtype="float32", ndim=1)) ", ' +
      '"a message, with \\"quotes\\", ", shapetupl], shapetuple[1, 10], [16, 3], 7, int64]\n' +
      '  Globals (#1): [main]\n';
    const pool = parseConstantPool(stats);
    assert.ok(pool, 'parsed');
    assert.deepEqual(
      pool.map((c) => c.kind),
      ['dtype', 'string', 'string', 'shape', 'shape', 'other', 'other', 'dtype'],
    );
    assert.deepEqual(pool[3], { kind: 'shape', dims: [] });
    assert.deepEqual(pool[4], { kind: 'shape', dims: [1, 10] });
    assert.equal((pool[1] as { text: string }).text, 'ErrorContext(fn=main, loc=param[0], param=x, annotation=R.Tensor(dtype="float32", ndim=1)) ');
    assert.equal((pool[2] as { text: string }).text, 'a message, with \\"quotes\\", ');
    // No split into as many entries as the pool says: nothing is used.
    assert.equal(parseConstantPool(stats.replace('# 8', '# 30')), null);
    assert.equal(parseConstantPool('  Constant pool (# 0): []\n  Globals (#0): []\n')?.length, 0);
  });

  it('traces outputs through make_tuple and alloc_tensor when there is no return check', () => {
    const stats =
      '  Constant pool (# 5): [float32, "ErrorContext(fn=main, loc=param[0], param=x, annotation=R.Tensor((n, 4), dtype="float32")) ", shapetuple[4, 8], int64, uint8]\n  Globals (#1): [main]\n';
    const text = [
      '@main:',
      '  call  vm.builtin.alloc_shape_heap in: %vm, i1      dst: %1',
      '  call  vm.builtin.check_tensor_info in: %0, i2, c[0], c[1] dst: %void',
      '  call  vm.builtin.match_shape in: %0, %1, i2, i1, i0, i0, i4, c[1] dst: %void',
      '  call  vm.builtin.make_shape in: %1, i2, i1, i0, i0, i8 dst: %2',
      '  call  vm.builtin.alloc_tensor in: %3, i0, %2, c[3] dst: %4',
      '  call  vm.builtin.alloc_tensor in: %3, i0, c[2], c[0] dst: %5',
      '  call  some_kernel      in: %0, %4 dst: %6',
      '  call  vm.builtin.make_tuple in: %4, %5, %6, %0 dst: %7',
      '  ret   %7',
      '',
    ].join('\n');
    assert.deepEqual(readSignature(stats, text, 'main', 1), {
      inputs: [{ shape: ['n', 4], dtype: 'float32' }],
      outputs: [
        { shape: ['n', 8], dtype: 'int64' },
        { shape: [4, 8], dtype: 'float32' },
        { shape: null, dtype: null },
        { shape: ['n', 4], dtype: 'float32' },
      ],
    });
    // Branches: the last write before ret says nothing, so the outputs are unknown.
    assert.deepEqual(readSignature(stats, text.replace('  ret', '  If    %3, 2\n  ret'), 'main', 1).outputs, null);
    // Another function's contexts are not this one's.
    assert.deepEqual(readSignature(stats, text.replace('@main:', '@other:'), 'other', 1).inputs, [{ shape: null, dtype: null }]);
  });
});
