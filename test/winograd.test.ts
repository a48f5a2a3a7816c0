/**
 * scripts/winograd.py (part of `compile --conv-layout NCHWc`) through test/winograd_check.py:
 * the F(4x4, 3x3) and F(2x2, 3x3) matrices reproduce the direct correlation; a ResNet block's
 * 3x3 convolution becomes one Winograd kernel, with its bias, residual add and ReLU fused into
 * it: F(4x4) at 28x28, F(2x2) at 14x14 (the last tiles partly outside the map; also in a batch
 * of 2), direct at 6x6; the register-block choices follow the target's vector registers; the artifacts this
 * CPU can run match numpy.
 */
import assert from 'node:assert/strict';
import { cpuFlags } from '../bench/cpu';
import { pythonCheck } from './fixtures';

interface TargetReport {
  /** Per case (map size, batch), the output tile edge of each Winograd kernel. */
  tiles: Record<string, number[]>;
  fused: string[];
  reg_n: number[];
  oc_groups: number[];
  maxAbsDiff: Record<string, number>;
}

describe('Winograd convolutions (scripts/winograd.py)', function () {
  this.timeout(600_000);
  let report: { matrices_error: Record<string, number> } & Record<string, TargetReport>;

  before(() => {
    report = pythonCheck('winograd_check.py');
  });

  it("F(4x4, 3x3)'s and F(2x2, 3x3)'s transforms compute the 3x3 correlation of a tile", () => {
    assert.deepEqual(Object.keys(report.matrices_error).sort(), ['2', '4']);
    for (const [tile, error] of Object.entries(report.matrices_error)) assert.ok(error < 1e-12, `F(${tile}): max error ${error}`);
  });

  for (const target of ['x86-64-v3', 'x86-64-v4']) {
    it(`${target}: F(4x4) at 28x28 (49 tiles), F(2x2) at 14x14 (F(4x4) would have 16), direct at 6x6`, () => {
      assert.deepEqual(report[target].tiles, { 28: [4], 14: [2], 6: [], '14 batch 2': [2] });
    });

    it(`${target}: fuses the bias, the residual add and the ReLU into the Winograd kernel`, () => {
      assert.equal(report[target].fused.length, 3, `fused: ${report[target].fused}`);
    });
  }

  it("sizes the register block by the target's vector registers: 4-6 of 49 tiles on AVX2, 4-8 on AVX-512", () => {
    assert.deepEqual(report['x86-64-v3'].reg_n, [4, 5, 6]);
    assert.deepEqual(report['x86-64-v4'].reg_n, [4, 5, 6, 7, 8]);
  });

  it('gives AVX-512 register tiles of one or two output blocks, AVX2 of one', () => {
    assert.deepEqual(report['x86-64-v3'].oc_groups, [1]);
    assert.deepEqual(report['x86-64-v4'].oc_groups, [1, 2]);
  });

  const flags = new Set(cpuFlags());
  for (const [target, needs] of [
    ['x86-64-v3', 'avx2'],
    ['x86-64-v4', 'avx512f'],
  ]) {
    const runs = flags.has(needs);
    it(`the ${target} artifacts match numpy at 28x28, 14x14 and 14x14 in a batch of 2${runs ? '' : ` (skipped: this CPU has no ${needs})`}`, function () {
      if (!runs) this.skip();
      const diffs = report[target].maxAbsDiff;
      assert.deepEqual(Object.keys(diffs).sort(), ['14', '14 batch 2', '28']);
      for (const [name, diff] of Object.entries(diffs)) assert.ok(diff < 1e-4, `${name}: max |TVM - numpy| ${diff}`);
    });
  }
});
