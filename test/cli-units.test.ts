/**
 * Unit tests of the CLI's parsers and formatting (no model, no subprocess): `--input`
 * names with `/` (ONNX input names), and numbers printed with all their integer digits.
 */
import assert from 'node:assert/strict';
import { UsageError } from '../lib/cli/errors';
import { bindInputs, parseDTypeSpec, parseInputSpec, parseShapeSpec } from '../lib/cli/inputs';
import { formatNumber } from '../lib/cli/stats';

describe('CLI units', () => {
  describe('--input NAME=FILE', () => {
    it('takes names with / (ONNX input names), : and .', () => {
      assert.deepEqual(parseInputSpec('gpu_0/data_0=x.npy'), { name: 'gpu_0/data_0', file: 'x.npy' });
      assert.deepEqual(parseInputSpec('gpu_0/data_0=inputs/x.npy'), { name: 'gpu_0/data_0', file: 'inputs/x.npy' });
      assert.deepEqual(parseInputSpec('input.1=x.npy'), { name: 'input.1', file: 'x.npy' });
      assert.deepEqual(parseInputSpec('onnx::Conv_0=x.npy'), { name: 'onnx::Conv_0', file: 'x.npy' });
      assert.deepEqual(parseInputSpec('0=x.npy'), { name: '0', file: 'x.npy' });
      assert.deepEqual(parseShapeSpec('gpu_0/data_0=1x3x224x224'), { name: 'gpu_0/data_0', shape: [1, 3, 224, 224] });
      assert.deepEqual(parseDTypeSpec('gpu_0/data_0=float16'), { name: 'gpu_0/data_0', dtype: 'float16' });
    });

    it('splits at the last = whose left side is a name: a file name may contain =', () => {
      assert.deepEqual(parseInputSpec('x=a=b.npy'), { name: 'x', file: 'a=b.npy' });
      assert.deepEqual(parseInputSpec('gpu_0/data_0=dir/a=b.npy'), { name: 'gpu_0/data_0', file: 'dir/a=b.npy' });
      assert.deepEqual(parseInputSpec('x==b.npy'), { name: 'x', file: '=b.npy' });
    });

    it('reads paths (no =, or a left side that starts like a path) as files', () => {
      assert.deepEqual(parseInputSpec('in.npy'), { file: 'in.npy' });
      assert.deepEqual(parseInputSpec('inputs/x.npy'), { file: 'inputs/x.npy' });
      assert.deepEqual(parseInputSpec('./a=b.npy'), { file: './a=b.npy' });
      assert.deepEqual(parseInputSpec('../data/a=b.npy'), { file: '../data/a=b.npy' });
      assert.deepEqual(parseInputSpec('/abs/a=b.npy'), { file: '/abs/a=b.npy' });
      assert.deepEqual(parseInputSpec('~/a=b.npy'), { file: '~/a=b.npy' });
      assert.deepEqual(parseInputSpec('my file=x.npy'), { file: 'my file=x.npy' });
    });

    it('refuses an empty name, an empty file and an empty spec as usage errors', () => {
      const usage = (re: RegExp) => (e: unknown) => e instanceof UsageError && e.kind === 'usage' && re.test(e.message);
      assert.throws(() => parseInputSpec('=x.npy'), usage(/^empty name before '='$/));
      assert.throws(() => parseInputSpec('gpu_0/data_0='), usage(/^nothing after '='$/));
      assert.throws(() => parseInputSpec(''), usage(/^empty value$/));
    });

    it('binds a name with / to the parameter of that name; an unknown one hints at ./ for files', () => {
      const fn = { name: 'main', params: ['gpu_0/data_0', 'mask'] };
      const bound = bindInputs(fn, [parseInputSpec('mask=m.npy'), parseInputSpec('gpu_0/data_0=x.npy')]);
      assert.deepEqual(bound, [
        { name: 'gpu_0/data_0', source: { kind: 'file', file: 'x.npy' } },
        { name: 'mask', source: { kind: 'file', file: 'm.npy' } },
      ]);
      assert.throws(
        () => bindInputs(fn, [parseInputSpec('data/a=b.npy'), parseInputSpec('m.npy')]),
        (e: unknown) =>
          e instanceof UsageError &&
          /^--input names 'data\/a', which is not a parameter of main\(gpu_0\/data_0, mask\)$/.test(e.message) &&
          /write \.\/data\/a=\.\.\./.test(e.hint ?? ''),
      );
    });
  });

  describe('formatNumber', () => {
    it('keeps every integer digit (a ~2000 ms run is not "2 ms")', () => {
      assert.equal(formatNumber(2000.4, 4), '2000');
      assert.equal(formatNumber(2000.4), '2000.4');
      assert.equal(formatNumber(1999.96, 4), '2000');
      assert.equal(formatNumber(100000.4), '100000');
      assert.equal(formatNumber(10, 1), '10');
      assert.equal(formatNumber(-2000.4, 4), '-2000');
      assert.equal(formatNumber(120.5, 3), '121');
    });

    it('rounds numbers with more integer digits than asked to whole numbers', () => {
      assert.equal(formatNumber(123456.7, 4), '123457');
      assert.equal(formatNumber(9999.6, 4), '10000');
      assert.equal(formatNumber(20000.4, 4), '20000');
    });

    it('drops only trailing fractional zeros', () => {
      assert.equal(formatNumber(0.1234567891), '0.123457');
      assert.equal(formatNumber(1.25, 4), '1.25');
      assert.equal(formatNumber(100.0001, 4), '100');
      assert.equal(formatNumber(0.5, 1), '0.5');
      assert.equal(formatNumber(0.00012345678, 4), '0.0001235');
    });

    it('writes integers as they are, very small and very large numbers with an exponent', () => {
      assert.equal(formatNumber(42), '42');
      assert.equal(formatNumber(2000), '2000');
      assert.equal(formatNumber(1.5e-7), '1.5e-7');
      assert.equal(formatNumber(1e-7), '1e-7');
      assert.equal(formatNumber(1.5e20, 4), '1.5e+20');
      assert.equal(formatNumber(NaN), 'NaN');
      assert.equal(formatNumber(-Infinity), '-Infinity');
    });
  });
});
