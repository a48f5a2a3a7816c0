/**
 * Loading a model costs its weights once (issue 13): native/library_load.cc reads the Relax VM
 * constants embedded in a `tvm-node compile` artifact straight from the file into their
 * tensors, where TVM's own loader holds them three more times while loading (the blob's
 * mapped pages, a std::string and an ffi::Bytes copy of it).
 *
 * Measured by bench/load-memory.ts in fresh child processes on a ResNet-18 with random
 * weights (45 MiB; built by scripts/resnet_onnx.py and compiled by the pinned TVM, cached by
 * content hash in .cache/mem/).
 */
import assert from 'node:assert/strict';
import { type LoadMemory, measureLoad, median, memoryModel } from '../bench/load-memory';
import { loadModuleSync } from '../lib';

const RUNS = 3;

describe('load memory (issue 13)', function () {
  this.timeout(600_000);
  let model: ReturnType<typeof memoryModel>;
  let lean: LoadMemory[];
  let stock: LoadMemory;
  const m = (k: 'base' | 'peak' | 'loaded') => median(lean.map((r) => r[k]));

  before(() => {
    model = memoryModel('resnet18');
    lean = Array.from({ length: RUNS }, () => measureLoad('tvm-node', model.so));
    stock = measureLoad('tvm-node (TVM loader)', model.so);
    const show = (r: { base: number; peak: number; loaded: number }) =>
      `before ${r.base.toFixed(0)}, peak ${r.peak.toFixed(0)}, after load ${r.loaded.toFixed(0)} MiB (peak / after ${(r.peak / r.loaded).toFixed(2)})`;
    console.log(
      `      ${model.weightsMiB.toFixed(0)} MiB of weights; tvm-node: ${show({ base: m('base'), peak: m('peak'), loaded: m('loaded') })}; TVM's loader: ${show(stock)}`,
    );
  });

  it('peaks at most 1.3x the RSS after load', () => {
    const ratio = median(lean.map((r) => r.peak / r.loaded));
    assert.ok(ratio <= 1.3, `peak / after load = ${ratio.toFixed(2)}`);
  });

  it('adds the weights once while loading, and keeps them once', () => {
    const w = model.weightsMiB;
    const rise = m('peak') - m('base');
    const kept = m('loaded') - m('base');
    // TVM's loader rises by ~4x the weights and keeps ~2x (the tensors and the blob's mapped pages).
    assert.ok(rise <= 1.15 * w + 16, `peak - before load = ${rise.toFixed(0)} MiB for ${w.toFixed(0)} MiB of weights`);
    assert.ok(kept >= 0.9 * w && kept <= 1.1 * w + 16, `after load - before load = ${kept.toFixed(0)} MiB for ${w.toFixed(0)} MiB of weights`);
    assert.ok(m('peak') < stock.peak - 1.5 * w, `peak ${m('peak').toFixed(0)} MiB vs TVM's loader's ${stock.peak.toFixed(0)} MiB`);
  });

  it("gives outputs bit-identical to TVM's loader", () => {
    for (const r of lean) assert.equal(r.outputHash, stock.outputHash);
  });

  it("makes the module tree TVM's loader makes: the executable importing the library", () => {
    using mod = loadModuleSync(model.so);
    assert.equal(mod.typeKey, 'relax.VMExecutable');
    assert.deepEqual(
      mod.imports.map((i) => i.typeKey),
      ['library'],
    );
    for (const i of mod.imports) i.disposeSync();
  });
});
