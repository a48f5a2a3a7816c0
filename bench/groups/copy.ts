/**
 * The `copy` group: host copies into / out of a CPU tensor vs TypedArray.set and
 * Buffer.copy, per size.
 */
import { Tensor } from '../../lib';
import { type Ctx, formatBytes } from '../context';
import { hrtimeLoop, makeCase, measure } from '../measure';

function filled(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = i % 251;
  return a;
}

export async function benchCopies(ctx: Ctx): Promise<void> {
  for (const bytes of ctx.copySizes) {
    const n = bytes / 4;
    const size = formatBytes(bytes);
    const src = filled(n);
    const dst = new Float32Array(n);
    const srcBuf = Buffer.from(src.buffer, src.byteOffset, src.byteLength);
    const dstBuf = Buffer.from(dst.buffer, dst.byteOffset, dst.byteLength);
    const t = Tensor.empty([n], 'float32');

    ctx.log(`copy: into a tensor, ${size}`);
    const into = await measure(
      [
        { key: 'node', name: 'tensor.copyFrom(Float32Array)', round: hrtimeLoop(() => t.copyFromSync(src)) },
        { key: 'set', name: 'Float32Array.set', round: hrtimeLoop(() => dst.set(src)) },
        { key: 'buf', name: 'Buffer.copy', round: hrtimeLoop(() => srcBuf.copy(dstBuf)) },
        { key: 'raw', name: 'tensor.handle.copyFromBytes(Float32Array)', round: hrtimeLoop(() => t.handle.copyFromBytes(src)) },
      ],
      ctx.rounds,
      ctx.roundMs,
    );
    ctx.cases.push(makeCase('copy', `host -> tensor ${size}, vs TypedArray.set`, 'GB/s', into.node, into.set, { bytes, goal: '>= 0.8' }));
    ctx.cases.push(makeCase('copy', `host -> tensor ${size}, vs Buffer.copy`, 'GB/s', into.node, into.buf, { bytes, goal: '>= 0.8' }));
    ctx.cases.push(
      makeCase('copy', `host -> tensor ${size}, copyFrom vs native handle.copyFromBytes`, 'GB/s', into.node, into.raw, {
        bytes,
        note: "diagnostic: the share of lib/'s Tensor.copyFrom in a copy",
      }),
    );

    ctx.log(`copy: out of a tensor, ${size}`);
    const out = await measure(
      [
        { key: 'node', name: 'tensor.handle.copyToBytes(Float32Array)', round: hrtimeLoop(() => t.handle.copyToBytes(dst)) },
        { key: 'set', name: 'Float32Array.set', round: hrtimeLoop(() => dst.set(src)) },
        { key: 'buf', name: 'Buffer.copy', round: hrtimeLoop(() => srcBuf.copy(dstBuf)) },
      ],
      ctx.rounds,
      ctx.roundMs,
    );
    ctx.cases.push(makeCase('copy', `tensor -> host ${size} (preallocated), vs TypedArray.set`, 'GB/s', out.node, out.set, { bytes, goal: '>= 0.8' }));
    ctx.cases.push(makeCase('copy', `tensor -> host ${size} (preallocated), vs Buffer.copy`, 'GB/s', out.node, out.buf, { bytes, goal: '>= 0.8' }));

    ctx.log(`copy: tensor.toArraySync(), ${size}`);
    let sink = 0;
    const alloc = await measure(
      [
        { key: 'node', name: 'tensor.toArraySync()', round: hrtimeLoop(() => (sink += t.toArraySync().length)) },
        { key: 'slice', name: 'Float32Array.slice()', round: hrtimeLoop(() => (sink += src.slice().length)) },
      ],
      ctx.rounds,
      ctx.roundMs,
    );
    if (sink === 0) throw new Error('unreachable');
    ctx.cases.push(
      makeCase('copy', `tensor -> new array ${size}, toArraySync() vs slice()`, 'GB/s', alloc.node, alloc.slice, {
        bytes,
        goal: '>= 0.8',
        note: 'both allocate the result',
      }),
    );
    t.disposeSync();
  }
}
