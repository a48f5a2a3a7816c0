/**
 * `tvm-node split` (lib/cli/split.ts + scripts/split_model.py) on real compiles
 * (test/split-fixtures.ts, cached): graph.json describes the split; the device stages, chained
 * by tensor names with tvm-node's own Model, reproduce onnxruntime's output of the unsplit
 * model; the server folder is a model repository whose encoded entry points (float16, int8)
 * equal the stage on the decoded inputs; the device codec computes what numpy would; bad
 * requests are one line each with the right exit status; --list-cuts lists the cut points.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { splitFixture, splitFixtureKey } from '../bench/split-fixtures';
import { fromFloat32, Model, outputsOf, readNpy, Tensor, toFloat32, VirtualMachine } from '../lib';
import { UsageError } from '../lib/cli/errors';
import { seededRandom } from '../lib/cli/inputs';
import { type CutList, formatCutList, formatSplitResult, parseCut, type SplitGraph, type SplitStage } from '../lib/cli/split';
import { ModelRepository } from '../lib/rpc/repository';
import { assertFailure, runCli, writeUnsupportedOpModel } from './cli-run';

const cli = (args: string[]) => runCli(args, { timeoutMs: 300_000 });
const hasCrossGxx = spawnSync('sh', ['-c', 'command -v aarch64-linux-gnu-g++'], { encoding: 'utf8' }).status === 0;
const readGraph = (dir: string): SplitGraph => JSON.parse(fs.readFileSync(path.join(dir, 'graph.json'), 'utf8'));
const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/** Largest |a - b|. */
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'lengths');
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

type Env = Map<string, { data: Float32Array; shape: number[] }>;

/** The reference inputs of a split, by graph input name. */
function referenceInputs(dir: string, g: SplitGraph): Env {
  return new Map(
    g.inputs.map((t, k) => {
      const a = readNpy(path.join(dir, g.reference.inputs[k]));
      return [t.name, { data: a.data as Float32Array, shape: a.shape }];
    }),
  );
}

/** Runs every device stage with Model, in order, feeding each the tensors it names; returns every tensor. */
async function runDeviceChain(dir: string, g: SplitGraph): Promise<Env> {
  const env = referenceInputs(dir, g);
  for (const stage of g.stages) {
    await using model = await Model.load(path.join(dir, stage.device.library));
    assert.deepEqual(
      model.inputNames,
      stage.inputs.map((t) => t.name),
    );
    assert.deepEqual(
      model.outputNames,
      stage.outputs.map((t) => t.name),
    );
    const outputs = await model.run(Object.fromEntries(stage.inputs.map((t) => [t.name, env.get(t.name)!])));
    for (const t of stage.outputs) {
      const out = outputs[t.name];
      env.set(t.name, { data: (await out.toArray()) as Float32Array, shape: [...(out.shape as number[])] });
      await out.dispose();
    }
  }
  return env;
}

/** numpy's round (half to even). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The codec's int8 encoding, as numpy computes it in float32. */
function quantize(x: Float32Array): { q: Int8Array; scale: number } {
  let peak = 0;
  for (const v of x) peak = Math.max(peak, Math.abs(v));
  const scale = Math.max(Math.fround(peak / 127), Math.fround(1e-30));
  const q = Int8Array.from(x, (v) => Math.min(127, Math.max(-127, roundHalfEven(Math.fround(v / scale)))));
  return { q, scale };
}

describe('tvm-node split', function () {
  this.timeout(900_000);
  let branchy: string;
  let tiny: string;
  let tmp: string;

  before(async () => {
    branchy = await splitFixture('branchy');
    tiny = await splitFixture('mobilenet_v2_tiny');
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-split-test-'));
    console.log(`      fixtures: .cache/split/${path.basename(branchy)} (branchy), .cache/split/${path.basename(tiny)} (mobilenet_v2_tiny)`);
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  describe('graph.json', () => {
    it('branchy: source, targets, inputs, outputs, two cuts in graph order and four stages, two of them parallel in segment 1', () => {
      const g = readGraph(branchy);
      assert.equal(g.format, 'tvm-node-split/1');
      assert.equal(g.name, 'branchy');
      assert.deepEqual(g.source, { file: 'branchy.onnx', sha256: sha256(path.join(branchy, 'source', 'branchy.onnx')) });
      assert.match(g.tvm_version, /^0\.27\./);
      assert.equal(g.device_target.kind, 'llvm');
      assert.deepEqual(g.server_target, g.device_target);
      assert.deepEqual(g.inputs, [{ name: 'input', shape: [1, 3, 32, 32], dtype: 'float32' }]);
      assert.deepEqual(g.outputs, [{ name: 'logits', shape: [1, 10], dtype: 'float32' }]);
      assert.deepEqual(
        g.cuts.map((c) => c.tensors.map((t) => t.name)),
        [['stem'], ['a_out', 'b_out']],
      );
      const [c0, c1] = g.cuts;
      assert.deepEqual(c0.tensors, [{ name: 'stem', shape: [1, 8, 32, 32], dtype: 'float32', bytes: 32768 }]);
      assert.equal(c1.bytes, 65536);
      assert.deepEqual(
        Object.fromEntries(Object.entries(c1.encodings).map(([k, e]) => [k, e.bytes])),
        { float32: 65536, float16: 32768, int8: 2 * (8192 + 4) },
        'int8: one byte a value and a float32 scale per tensor',
      );
      for (const c of g.cuts) {
        const { float32, float16, int8 } = c.encodings;
        assert.ok(float32.max_abs_error! < 1e-4, `float32 chain error ${float32.max_abs_error}`);
        assert.ok(float16!.max_abs_error! < 1e-2, `float16 error ${float16!.max_abs_error}`);
        assert.ok(int8!.max_abs_error! < 0.1 && int8!.max_abs_error! > float16!.max_abs_error!, `int8 error ${int8!.max_abs_error}`);
      }
      assert.deepEqual(
        g.stages.map((s) => [s.name, s.segment, s.inputs.map((t) => t.name), s.outputs.map((t) => t.name)]),
        [
          ['s0', 0, ['input'], ['stem']],
          ['s1', 1, ['stem'], ['a_out']],
          ['s2', 1, ['stem'], ['b_out']],
          ['s3', 2, ['a_out', 'b_out'], ['logits']],
        ],
      );
      for (const s of g.stages) {
        assert.equal(s.remote, true);
        assert.deepEqual(s.device, { library: `device/${s.name}.so`, manifest: `device/${s.name}.json`, content_hash: s.device.content_hash });
        assert.deepEqual(s.server.model, `branchy.${s.name}`);
        assert.deepEqual(s.server.encoded, { float16: `branchy.${s.name}.f16`, int8: `branchy.${s.name}.i8` });
        assert.match(s.server.content_hash, /^[0-9a-f]{64}$/);
        assert.equal(s.server.content_hash, s.device.content_hash, 'equal targets: one compile serves both sides');
        for (const f of [s.device.library, s.device.manifest]) assert.ok(fs.existsSync(path.join(branchy, f)), f);
        assert.equal(fs.statSync(path.join(branchy, s.device.library)).ino, fs.statSync(path.join(branchy, 'server', `${s.server.model}.so`)).ino, 'hard link');
      }
      assert.deepEqual(g.codec, { library: 'device/codec.so' });
      assert.ok(fs.existsSync(path.join(branchy, g.codec.library)));
      assert.equal(g.repository, 'server');
      assert.deepEqual(g.reference.inputs, ['reference/input.0.npy']);
      assert.deepEqual(g.reference.outputs, ['reference/output.0.npy']);
      assert.match(g.reference.by, /^onnxruntime \d/);
      assert.match(g.check.by!, /^device libraries/);
      assert.match(g.content_hash, /^[0-9a-f]{64}$/);
    });

    it('mobilenet_v2_tiny: one mid-network cut, two stages', () => {
      const g = readGraph(tiny);
      assert.deepEqual(
        g.cuts.map((c) => c.tensors.map((t) => [t.name, t.shape])),
        [[['add_36', [1, 8, 16, 16]]]],
      );
      assert.deepEqual(
        g.stages.map((s) => [s.name, s.segment, s.inputs.map((t) => t.name), s.outputs.map((t) => t.name)]),
        [
          ['s0', 0, ['input'], ['add_36']],
          ['s1', 1, ['add_36'], ['logits']],
        ],
      );
    });

    it('the fixtures are cached by a key over their recipe and cuts', () => {
      assert.equal(path.basename(branchy), splitFixtureKey('branchy'));
      assert.notEqual(splitFixtureKey('branchy'), splitFixtureKey('branchy', ['stem', 'a_out,b_out']));
    });
  });

  describe('the device stages, chained by tensor names with Model, equal onnxruntime on the unsplit model', () => {
    for (const which of ['branchy', 'mobilenet_v2_tiny'] as const) {
      it(which, async () => {
        const dir = which === 'branchy' ? branchy : tiny;
        const g = readGraph(dir);
        const env = await runDeviceChain(dir, g);
        g.outputs.forEach((t, k) => {
          const want = readNpy(path.join(dir, g.reference.outputs[k]));
          const got = env.get(t.name)!;
          assert.deepEqual(got.shape, want.shape);
          const d = maxDiff(got.data, want.data as Float32Array);
          assert.ok(d <= 1e-4, `${t.name}: max |diff| ${d}`);
        });
      });
    }
  });

  describe('the server folder is a model repository', () => {
    let repo: ModelRepository;
    let g: SplitGraph;
    let env: Env;
    before(async () => {
      g = readGraph(branchy);
      env = await runDeviceChain(branchy, g);
      repo = new ModelRepository(path.join(branchy, 'server'));
    });
    after(() => repo.dispose());

    it('lists every stage and its encoded variants, with valid manifests', () => {
      repo.check();
      const names = repo.list().map((m) => m.name);
      const want = g.stages.flatMap((s) => [s.server.model, ...Object.values(s.server.encoded)]);
      assert.deepEqual([...names].sort(), [...want].sort());
      const i8 = repo.info('branchy.s3.i8');
      assert.equal(i8.function, 'main_i8');
      assert.deepEqual(
        i8.inputs!.map((t) => [t.name, t.dtype, t.shape]),
        [
          ['a_out', 'int8', [1, 8, 32, 32]],
          ['a_out.scale', 'float32', [1]],
          ['b_out', 'int8', [1, 8, 32, 32]],
          ['b_out.scale', 'float32', [1]],
        ],
      );
    });

    /** Runs a repository model on host arrays; returns its outputs as float32. */
    async function serve(name: string, inputs: Array<{ data: ArrayBufferView; shape: number[]; dtype: string }>): Promise<Float32Array[]> {
      const m = await repo.get(name);
      assert.deepEqual(
        m.inputs.map((t) => t.dtype),
        inputs.map((t) => t.dtype),
        `${name}: input dtypes`,
      );
      const tensors = await Promise.all(inputs.map((t) => Tensor.from(t.data as Float32Array, { shape: t.shape, dtype: t.dtype as 'float32' })));
      try {
        const outs = outputsOf<Tensor>(await m.vm.run(m.info.function, ...tensors));
        const arrays = await Promise.all(outs.map((o) => o.toFloat32Array()));
        await Promise.all(outs.map((o) => o.dispose()));
        return arrays;
      } finally {
        await Promise.all(tensors.map((t) => t.dispose()));
      }
    }

    it('BASE.s1, BASE.s1.f16 and BASE.s1.i8 serve the stage: the encoded ones equal it on the decoded input, and stay near it', async () => {
      const stage = g.stages.find((s) => s.name === 's1') as SplitStage;
      const x = env.get('stem')!;
      const [exact] = await serve(stage.server.model, [{ ...x, dtype: 'float32' }]);
      const cut = g.cuts[0];

      const half = fromFloat32(x.data, 'float16');
      const [f16] = await serve(stage.server.encoded.float16!, [{ data: half, shape: x.shape, dtype: 'float16' }]);
      const [onDecodedHalf] = await serve(stage.server.model, [{ data: toFloat32(half, 'float16'), shape: x.shape, dtype: 'float32' }]);
      assert.ok(maxDiff(f16, onDecodedHalf) <= 1e-5, 'main_f16 = main(float32(x16))');

      const { q, scale } = quantize(x.data);
      const [i8] = await serve(stage.server.encoded.int8!, [
        { data: q, shape: x.shape, dtype: 'int8' },
        { data: Float32Array.of(scale), shape: [1], dtype: 'float32' },
      ]);
      const decoded = Float32Array.from(q, (v) => Math.fround(v * scale));
      const [onDecodedInt8] = await serve(stage.server.model, [{ data: decoded, shape: x.shape, dtype: 'float32' }]);
      assert.ok(maxDiff(i8, onDecodedInt8) <= 1e-5, 'main_i8 = main(float32(q) * scale)');

      // Near the float32 stage: within what float16's 11 bits and int8's 1/127 steps allow for
      // activations of this size (the errors the cut costs at the model's outputs are smaller:
      // the head averages them out).
      const peak = exact.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      const d16 = maxDiff(f16, exact);
      const d8 = maxDiff(i8, exact);
      assert.ok(d16 <= 4e-3 * peak && d16 > 0, `float16: stage error ${d16} (outputs up to ${peak})`);
      assert.ok(d8 <= 6e-2 * peak && d8 > d16, `int8: stage error ${d8} (outputs up to ${peak})`);
      console.log(
        `      s1 outputs (up to ${peak.toFixed(2)}) vs float32: float16 ${d16.toExponential(1)}, int8 ${d8.toExponential(1)}; ` +
          `the cut's error at the model's outputs: float16 ${cut.encodings.float16!.max_abs_error!.toExponential(1)}, int8 ${cut.encodings.int8!.max_abs_error!.toExponential(1)}`,
      );
    });
  });

  describe('the device codec (device/codec.so)', () => {
    let vm: VirtualMachine;
    before(async () => {
      vm = await VirtualMachine.load(path.join(branchy, 'device', 'codec.so'));
    });
    after(() => vm.dispose());

    // A cut tensor (rank 4) and a small matrix of another shape: the functions take any sizes.
    const cases = () => {
      const r = seededRandom(7);
      const values = (n: number) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * 4);
      return [
        { shape: [1, 8, 32, 32], data: values(8192) },
        { shape: [5, 7], data: values(35) },
      ];
    };

    it('has encode/decode for float16 and int8 at every rank 1..6', () => {
      const names = new Set(vm.functions().map((f) => f.name));
      for (let r = 1; r <= 6; r++) for (const f of ['encode_f16', 'decode_f16', 'encode_i8', 'decode_i8']) assert.ok(names.has(`${f}_r${r}`), `${f}_r${r}`);
    });

    it('encode_f16 / decode_f16 round to float16 as numpy does', async () => {
      for (const { shape, data } of cases()) {
        await using x = await Tensor.from(data, { shape });
        await using h = (await vm.run(`encode_f16_r${shape.length}`, x)) as Tensor;
        assert.equal(h.dtype, 'float16');
        assert.deepEqual(h.shape, shape);
        assert.deepEqual(await h.toArray(), fromFloat32(data, 'float16'));
        await using back = (await vm.run(`decode_f16_r${shape.length}`, h)) as Tensor;
        assert.deepEqual(await back.toArray(), toFloat32(fromFloat32(data, 'float16'), 'float16'));
      }
    });

    it('encode_i8 / decode_i8: per-tensor scale max|x|/127, q = round(x/scale) clipped to ±127', async () => {
      for (const { shape, data } of cases()) {
        await using x = await Tensor.from(data, { shape });
        const [q, scale] = outputsOf<Tensor>(await vm.run(`encode_i8_r${shape.length}`, x));
        try {
          const want = quantize(data);
          assert.equal(q.dtype, 'int8');
          assert.deepEqual(scale.shape, [1]);
          assert.equal(((await scale.toArray()) as Float32Array)[0], want.scale);
          assert.deepEqual(await q.toArray(), want.q);
          await using back = (await vm.run(`decode_i8_r${shape.length}`, q, scale)) as Tensor;
          assert.deepEqual(
            await back.toArray(),
            Float32Array.from(want.q, (v) => v * want.scale),
          );
        } finally {
          await Promise.all([q.dispose(), scale.dispose()]);
        }
      }
    });
  });

  it(`from the CLI for an aarch64 device and this machine as server: one compile per side, checked with the server's libraries${hasCrossGxx ? '' : ' (skipped: aarch64-linux-gnu-g++ is not installed)'}`, function () {
    if (!hasCrossGxx) this.skip();
    const out = path.join(tmp, 'cross');
    const r = cli(['split', path.join(branchy, 'source', 'branchy.onnx'), '--cut', 'stem', '-o', out, '--device-target', 'aarch64', '--name', 'edge']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '', 'no output on stderr when it is not a terminal');
    assert.match(r.stdout, /^split .*branchy\.onnx at 1 cut into 2 stages in [\d.]+ s: /);
    assert.match(r.stdout, /\n {2}serve {4}tvm-node rpc-server --models \S+\/server\n/);
    const g = readGraph(out);
    assert.equal(g.device_target.mtriple, 'aarch64-linux-gnu');
    assert.notEqual(g.server_target.mtriple, 'aarch64-linux-gnu');
    assert.match(g.check.by!, /^server libraries/);
    assert.deepEqual(
      g.stages.map((s) => s.server.model),
      ['edge.s0', 'edge.s1'],
    );
    const machine = (f: string) => fs.readFileSync(path.join(out, f)).readUInt16LE(18);
    assert.equal(machine('device/s0.so'), 183, 'EM_AARCH64');
    assert.equal(machine('device/codec.so'), 183, 'EM_AARCH64');
    assert.notEqual(machine('server/edge.s1.so'), 183);
    assert.ok(g.cuts[0].encodings.int8!.max_abs_error! > 0);
  });

  describe('--list-cuts', () => {
    const onnx = () => path.join(branchy, 'source', 'branchy.onnx');

    it('lists the stem output (not a branch) with its shape, bytes and op, and how to cut at several tensors', () => {
      const r = cli(['split', onnx(), '--list-cuts']);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, '');
      assert.match(r.stdout, /^branchy\.onnx: 4 single-tensor cut points/);
      assert.match(r.stdout, /\n {2}0 +stem +Conv +\[1, 8, 32, 32\] +float32 +32\.0 KiB\n/);
      assert.doesNotMatch(r.stdout, /a_out/);
      assert.match(r.stdout, /--cut A,B/);
    });

    it('--json: the cut points in graph order', () => {
      const r = cli(['split', onnx(), '--list-cuts', '--json']);
      assert.equal(r.status, 0, r.stderr);
      const list = JSON.parse(r.stdout) as CutList;
      assert.deepEqual(
        list.cuts.map((c) => [c.name, c.op, c.bytes]),
        [
          ['stem', 'Conv', 32768],
          ['sum', 'Add', 32768],
          ['pool', 'GlobalAveragePool', 32],
          ['flat', 'Flatten', 32],
        ],
      );
      assert.match(formatCutList(list), /^branchy\.onnx: 4 single-tensor cut points \(input float32\[1, 3, 32, 32\] -> logits float32\[1, 10\]\)\n/);
    });
  });

  describe('bad requests: one line and a hint, exit 1 (failure) or 2 (usage)', () => {
    const onnx = () => path.join(branchy, 'source', 'branchy.onnx');
    const out = () => path.join(tmp, 'out');

    it('a tensor the model does not have: close names, and --list-cuts', () => {
      const r = cli(['split', onnx(), '--cut', 'stme', '-o', out()]);
      assertFailure(r, 2, /^usage$/, /--cut stme: the model has no tensor 'stme'; close names: stem/);
      assert.match(r.stderr, /hint: .*--list-cuts/);
    });

    it('a cut that does not separate the graph names the tensor that goes around it', () => {
      const r = cli(['split', onnx(), '--cut', 'stem', '--cut', 'a_out', '-o', out()]);
      assertFailure(r, 2, /^usage$/, /--cut a_out does not separate the graph: 'stem' of cut 0 \(stem\) reaches past it .*'b_out'/);
      assertFailure(
        cli(['split', onnx(), '--cut', 'b_out', '-o', out()]),
        2,
        /^usage$/,
        /--cut b_out does not separate the graph: graph input 'input' .*'a_out'/,
      );
    });

    it('a missing model file, no -o, no --cut', () => {
      assertFailure(cli(['split', path.join(tmp, 'nope.onnx'), '--cut', 'x', '-o', out()]), 1, /^FileNotFoundError$/, /nope\.onnx: no such file/);
      assertFailure(cli(['split', onnx(), '--cut', 'stem']), 2, /^usage$/, /give -o DIR/);
      assertFailure(cli(['split', onnx(), '-o', out()]), 2, /^usage$/, /give at least one --cut/);
      assertFailure(cli(['split', onnx(), '--cut', ',', '-o', out()]), 2, /^usage$/, /--cut ',': no tensor names/);
      assert.ok(!fs.existsSync(out()), 'nothing written');
    });

    it('an operator the ONNX frontend does not have, named with its stage', () => {
      const file = path.join(tmp, 'unknown_op.onnx');
      writeUnsupportedOpModel(file);
      assertFailure(
        cli(['split', file, '--cut', 'y', '-o', out()]),
        1,
        /^UnsupportedOperator$/,
        /unknown_op\.onnx: operator\(s\) not supported by TVM 0\.27.*: FancyNewOp \(stage s1\)$/,
      );
    });
  });

  describe('the CLI helpers', () => {
    it('parseCut: names joined by commas', () => {
      assert.deepEqual(parseCut('a_out, b_out'), ['a_out', 'b_out']);
      assert.throws(() => parseCut(' , '), UsageError);
    });

    it('formatSplitResult: stages, cuts with bytes and errors per encoding, and how to serve the repository', () => {
      const text = formatSplitResult({ dir: branchy, graph: readGraph(branchy), seconds: 1, stages: {} }, 'branchy.onnx');
      assert.match(text, /^split branchy\.onnx at 2 cuts into 4 stages in 1\.0 s: /);
      assert.match(text, /\n {4}s2 {2}segment 1 {2}stem float32\[1, 8, 32, 32\] -> b_out float32\[1, 8, 32, 32\]\n/);
      assert.match(text, /\n {6}int8 +16\.0 KiB {2}max error \d\.\de-\d+\n/);
      assert.match(text, new RegExp(`serve {4}tvm-node rpc-server --models ${path.relative(process.cwd(), branchy).replace(/[.]/g, '\\.')}/server\\n`));
    });
  });
});
