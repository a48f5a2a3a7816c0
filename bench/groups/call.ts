/**
 * The `call` group: one call of the `nop` TIR kernel, and of a cheap global function, from
 * Node vs from Python through the pinned TVM (bench/peer.py); diagnostics split the cost of
 * lib/'s wrappers and of the async thread hop.
 */
import { randomFill } from 'node:crypto';
import { loadModuleSync, type PackedFunc, requireGlobalFunc, Tensor } from '../../lib';
import type { Ctx } from '../context';
import { fixture } from '../fixtures';
import { hrtimeLoop, makeCase, measure, sequential } from '../measure';

export async function benchCalls(ctx: Ctx): Promise<void> {
  const fx = fixture('kernels');
  const mod = loadModuleSync(fx.path);
  const nop = mod.requireFunctionSync('nop');
  const arg = Tensor.fromSync(new Float32Array(1));
  nop.callSync(arg);
  await ctx.peer.request({ op: 'kernel', id: 'nop', path: fx.path, func: 'nop' });
  ctx.log('call: nop kernel');
  const t1 = await measure(
    [
      { key: 'node', name: 'PackedFunc.callSync', round: hrtimeLoop(() => nop.callSync(arg)) },
      ctx.peer.contender('py', `${ctx.pyName}: f(tensor)`, 'nop'),
      // Diagnostic: the addon's own call with the native tensor, bypassing lib/'s wrappers.
      { key: 'raw', name: 'nop.handle.call(tensor.handle)', round: hrtimeLoop(() => nop.handle.call(arg.handle)) },
    ],
    ctx.rounds,
    ctx.roundMs,
  );
  ctx.cases.push(makeCase('call', 'nop kernel, float32[1] arg', 'ns/call', t1.node, t1.py, { goal: '>= 1' }));
  ctx.cases.push(
    makeCase('call', 'nop kernel: PackedFunc.callSync(Tensor) vs native handle.call(NativeTensor)', 'ns/call', t1.node, t1.raw, {
      note: "diagnostic: the share of lib/'s Tensor/PackedFunc wrappers in a call",
    }),
  );
  ctx.cases.push(
    makeCase('call', 'nop kernel: native handle.call(NativeTensor) vs Python', 'ns/call', t1.raw, t1.py, {
      note: 'diagnostic: the addon alone against Python',
    }),
  );

  // The async form: one call in flight, against a bare round trip through the libuv pool.
  ctx.log('call: nop kernel, call (async)');
  const small = Buffer.alloc(16);
  const ta = await measure(
    [
      { key: 'node', name: 'await PackedFunc.call', round: sequential(() => nop.call(arg)) },
      {
        key: 'uv',
        name: 'await crypto.randomFill(16 B)',
        round: sequential(() => new Promise((resolve, reject) => randomFill(small, (err) => (err ? reject(err) : resolve(null))))),
      },
    ],
    ctx.rounds,
    ctx.roundMs,
  );
  ctx.cases.push(
    makeCase('call', 'nop kernel, async call (1 in flight) vs a bare libuv pool round trip', 'ns/call', ta.node, ta.uv, {
      note: 'diagnostic: how much of an async call is the thread hop itself',
    }),
  );

  // A cheap global function of the runtime, with a string argument on both sides.
  const enabled: PackedFunc = requireGlobalFunc('runtime.RuntimeEnabled');
  await ctx.peer.request({ op: 'global', id: 'enabled', name: 'runtime.RuntimeEnabled', args: ['cpu'] });
  ctx.log('call: runtime.RuntimeEnabled');
  const t2 = await measure(
    [
      { key: 'node', name: 'PackedFunc.callSync', round: hrtimeLoop(() => enabled.callSync('cpu')) },
      ctx.peer.contender('py', `${ctx.pyName}: f("cpu")`, 'enabled'),
    ],
    ctx.rounds,
    ctx.roundMs,
  );
  ctx.cases.push(makeCase('call', 'global runtime.RuntimeEnabled("cpu")', 'ns/call', t2.node, t2.py, { goal: '>= 1' }));
  enabled.disposeSync();
  nop.disposeSync();
  arg.disposeSync();
  mod.disposeSync();
}
