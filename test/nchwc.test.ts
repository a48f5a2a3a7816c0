/**
 * scripts/nchwc.py (`compile --conv-layout NCHWc`) against the target's vector registers,
 * through test/nchwc_check.py: a 64 -> 1000 1x1 convolution (SqueezeNet's classifier) is
 * computed padded to a multiple of two vectors of float32 (1008 on AVX2, 1024 on AVX-512)
 * and sliced back; AVX-512's template pairs channel blocks in a tile (twice the design
 * spaces); the artifact this CPU can run matches numpy.
 */
import assert from 'node:assert/strict';
import { cpuFlags } from '../bench/cpu';
import { pythonCheck } from './fixtures';

interface TargetReport {
  kernels: number;
  channels: number;
  spaces: number;
  maxAbsDiff?: number;
}

describe('blocked convolutions per vector unit (scripts/nchwc.py)', function () {
  this.timeout(600_000);
  let report: Record<string, TargetReport>;

  before(() => {
    report = pythonCheck('nchwc_check.py');
  });

  it('pads 1000 output channels to 1008 for AVX2 and 1024 for AVX-512, in one convolution kernel', () => {
    assert.deepEqual(Object.fromEntries(Object.entries(report).map(([target, r]) => [target, [r.kernels, r.channels]])), {
      'x86-64-v3': [1, 1008],
      'x86-64-v4': [1, 1024],
    });
  });

  it('gives AVX-512 tiles of one or two channel blocks, AVX2 of one', () => {
    assert.equal(report['x86-64-v3'].spaces, 2, 'kernel-column unrolling x (one block)');
    assert.equal(report['x86-64-v4'].spaces, 4, 'kernel-column unrolling x (one or two blocks)');
  });

  const flags = new Set(cpuFlags());
  for (const [target, needs] of [
    ['x86-64-v3', 'avx2'],
    ['x86-64-v4', 'avx512f'],
  ]) {
    const runs = flags.has(needs);
    it(`the ${target} artifact matches numpy${runs ? '' : ` (skipped: this CPU has no ${needs})`}`, function () {
      if (!runs) this.skip();
      const diff = report[target].maxAbsDiff;
      assert.ok(diff !== undefined && diff < 1e-4, `max |TVM - numpy| ${diff}`);
    });
  }
});
