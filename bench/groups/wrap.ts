/**
 * The `wrap` group: Tensor.wrap of aligned memory (zero-copy) vs making a TypedArray view,
 * per size.
 */
import { Tensor } from '../../lib';
import { type Ctx, formatBytes } from '../context';
import { type Contender, hrtimeLoop, makeCase, measure, type RoundFn } from '../measure';

export async function benchWrap(ctx: Ctx): Promise<void> {
  // Tensor memory is 64-byte aligned; its hostView is aligned memory JS owns a view of.
  const backing = ctx.copySizes.map((bytes) => ({ bytes, tensor: Tensor.empty([bytes / 4], 'float32') }));
  const views = backing.map((b) => b.tensor.hostView() as Float32Array);
  views.forEach((v) => {
    const w = Tensor.wrap(v);
    if (!w.sharesMemory) throw new Error(`Tensor.wrap copied ${formatBytes(v.byteLength)} of aligned memory`);
    w.disposeSync();
  });
  const wrapOf = (v: Float32Array): RoundFn => hrtimeLoop(() => Tensor.wrap(v).disposeSync());
  let sink = 0;
  const viewOf = (v: Float32Array): RoundFn => hrtimeLoop(() => (sink += new Float32Array(v.buffer, v.byteOffset, v.length).length));
  const smallest = views[0];
  for (let i = 0; i < views.length; i++) {
    const v = views[i];
    const size = formatBytes(v.byteLength);
    ctx.log(`wrap: ${size}`);
    const contenders: Contender[] = [
      { key: 'node', name: 'Tensor.wrap(view).dispose()', round: wrapOf(v) },
      { key: 'view', name: 'new Float32Array(buffer, offset, length)', round: viewOf(v) },
    ];
    if (i > 0) contenders.push({ key: 'small', name: `Tensor.wrap(${formatBytes(smallest.byteLength)} view).dispose()`, round: wrapOf(smallest) });
    const t = await measure(contenders, ctx.rounds, ctx.roundMs);
    ctx.cases.push(
      makeCase('wrap', `Tensor.wrap ${size}, vs a TypedArray view`, 'ns/wrap', t.node, t.view, {
        bytes: v.byteLength,
        note: 'zero-copy both; the ratio is the cost of a TVM tensor over a JS view',
      }),
    );
    if (t.small) {
      ctx.cases.push(
        makeCase('wrap', `Tensor.wrap ${size}, vs Tensor.wrap ${formatBytes(smallest.byteLength)}`, 'ns/wrap', t.node, t.small, {
          bytes: v.byteLength,
          goal: '~1 (size-independent)',
        }),
      );
    }
  }
  if (sink === 0) throw new Error('unreachable');
  for (const b of backing) b.tensor.disposeSync();
}
