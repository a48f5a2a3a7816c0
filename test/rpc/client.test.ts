/**
 * tvm-node's RPC client against TVM's own Python RPC server (python -m tvm.exec.rpc_server
 * from the pinned wheel).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { type Device, type Module, outputsOf, Tensor, TvmError, VirtualMachine } from '../../lib';
import { connect, type RPCSession } from '../../lib/rpc/client';
import { connectTracker, type TrackerClient } from '../../lib/rpc/tracker';
import { assertMatches, fixture, npy, repoRoot } from '../fixtures';
import { closedPort, HOST, type PyServer, startPythonServer, waitUntil, withTimeout } from './peers';

describe("RPC client against TVM's Python server", function () {
  this.timeout(180000);
  let server: PyServer;
  let session: RPCSession;

  before(async () => {
    fixture('mlp');
    server = await startPythonServer();
    session = await withTimeout(connect(HOST, server.port), 30000, 'connect');
  });

  after(async () => {
    await session?.dispose().catch(() => undefined);
    await server?.stop();
  });

  it("connects and names the peer's devices as remote devices", () => {
    const dev = session.cpu();
    assert.ok(dev.isRemote);
    assert.equal(dev.localType, 1);
    assert.equal(dev.sessionIndex, session.tableIndex);
    assert.equal(dev.deviceType, 1 + (session.tableIndex + 1) * 128);
  });

  it('uploads mlp.so and kernels.so and downloads the same bytes back', async () => {
    for (const name of ['mlp', 'kernels']) {
      const fx = fixture(name);
      await withTimeout(session.upload(fx.path), 60000, `upload ${fx.file}`);
      const back = await withTimeout(session.download(fx.file), 60000, `download ${fx.file}`);
      assert.ok(Buffer.isBuffer(back), 'download gives a Buffer');
      assert.ok(back.equals(fs.readFileSync(fx.path)), `${fx.file}: downloaded bytes differ`);
    }
    // and from bytes with an explicit target name
    const blob = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
    await session.upload(blob, 'blob.bin');
    assert.ok((await session.download('blob.bin')).equals(blob));
  });

  for (const [how, make] of [
    ['new VirtualMachine', async (mod: Module, devices: Device[]) => new VirtualMachine(mod, { devices })],
    ['VirtualMachine.create (set-up on the thread pool)', (mod: Module, devices: Device[]) => VirtualMachine.create(mod, { devices })],
  ] as const) {
    it(`runs mlp in a VirtualMachine over the remote module (${how}) and matches the reference`, async () => {
      const fx = fixture('mlp');
      const mod = await withTimeout(session.loadModule(fx.file), 60000, 'loadModule');
      const vm = await make(mod, [session.cpu()]);
      for (const c of fx.cases) {
        const host = npy(c.inputs[0]);
        const x = await session.tensor(host.data as Float32Array, { shape: host.shape, dtype: 'float32' });
        assert.ok(x.device.isRemote);
        const out = outputsOf<Tensor>(await withTimeout(vm.run(fx.function!, x), 60000, 'remote vm.run'));
        assert.equal(out.length, c.outputs.length);
        for (let i = 0; i < out.length; i++) {
          assert.ok(out[i].device.isRemote, 'the output stays on the peer');
          const data = await out[i].toArray();
          assertMatches(Tensor.fromSync(data, { shape: out[i].shape, dtype: out[i].dtype }), c.outputs[i], fx.tolerance);
        }
      }
      await vm.dispose();
      await mod.dispose();
    });
  }

  it('calls the remote kernel add_one on remote tensors', async () => {
    const fx = fixture('kernels');
    const mod: Module = await session.loadModule(fx.file);
    const addOne = mod.requireFunctionSync('add_one');
    for (const c of fx.functions!.add_one.cases) {
      const [inSpec, outSpec] = c.args!;
      const a = npy(inSpec);
      const n = a.shape[0];
      const A = await session.tensor(a.data as Float32Array, { shape: [n] });
      const B = await session.tensor(new Float32Array(n));
      await withTimeout(addOne.call(A, B), 30000, 'add_one');
      const got = (await B.toArray()) as Float32Array;
      assertMatches(Tensor.fromSync(got, { shape: [n] }), outSpec, fx.tolerance);
    }
  });

  for (const mib of [64, 256]) {
    it(`round-trips ${mib} MiB of float32 host -> remote tensor -> host`, async () => {
      const n = (mib * 1024 * 1024) / 4;
      const data = new Float32Array(n);
      for (let i = 0; i < n; i++) data[i] = (i % 65521) * 0.5 - 7;
      const t0 = performance.now();
      const remote = await withTimeout(session.tensor(data), 120000, `${mib} MiB upload`);
      const t1 = performance.now();
      const back = (await withTimeout(remote.toArray(), 120000, `${mib} MiB download`)) as Float32Array;
      const t2 = performance.now();
      assert.equal(back.length, n);
      assert.ok(Buffer.from(back.buffer, back.byteOffset, back.byteLength).equals(Buffer.from(data.buffer)), 'round-tripped data differ');
      const up = mib / ((t1 - t0) / 1000);
      const down = mib / ((t2 - t1) / 1000);
      console.log(`      ${mib} MiB vs TVM Python server: host->remote ${up.toFixed(0)} MiB/s, remote->host ${down.toFixed(0)} MiB/s`);
      remote.disposeSync();
    });
  }

  it('rejects a remote error with a TvmError and keeps the session working', async () => {
    await assert.rejects(session.loadModule('no-such-file.so'), (e: Error) => {
      assert.ok(e instanceof TvmError, `not a TvmError: ${e?.constructor?.name}: ${e.message}`);
      return true;
    });
    await assert.rejects(session.getFunction('no.such.function'), TvmError);
    // the same session still answers
    const x = await session.tensor(new Float32Array([1.5, -2, 3.25]));
    assert.deepEqual(Array.from((await x.toArray()) as Float32Array), [1.5, -2, 3.25]);
    const fx = fixture('kernels');
    const addOne = (await session.loadModule(fx.file)).requireFunctionSync('add_one');
    const [inSpec, outSpec] = fx.functions!.add_one.cases[1].args!;
    const a = npy(inSpec);
    const A = await session.tensor(a.data as Float32Array);
    const B = await session.tensor(new Float32Array(a.shape[0]));
    await addOne.call(A, B);
    assertMatches(Tensor.fromSync(await B.toArray(), { shape: a.shape }), outSpec, fx.tolerance);
  });

  it("removes a file from the work directory (listdir: TVM's server has none, as with TVM's own client)", async () => {
    const blob = Buffer.from('temporary');
    await session.upload(blob, 'to-remove.txt');
    assert.ok((await session.download('to-remove.txt')).equals(blob));
    await session.remove('to-remove.txt');
    await assert.rejects(session.download('to-remove.txt'), TvmError);
    // TVM's Python server registers no tvm.rpc.server.listdir (TVM's client fails the same way)
    await assert.rejects(session.listdir(), (e: Error) => e instanceof TvmError && /listdir/.test(e.message));
    // the session is unharmed
    assert.ok((await session.download('mlp.so')).equals(fs.readFileSync(fixture('mlp').path)));
  });

  it('rejects a wrong key with an error about the key mismatch', async () => {
    const keyed = await startPythonServer({ key: 'edge' });
    try {
      await assert.rejects(withTimeout(connect(HOST, keyed.port, { key: 'other' }), 30000, 'connect with a wrong key'), (e: Error) => {
        assert.match(e.message, /key|mismatch/i);
        return true;
      });
      // the right key works, and the connection computes
      const s = await withTimeout(connect(HOST, keyed.port, { key: 'edge' }), 30000, 'connect with the right key');
      const x = await s.tensor(new Float32Array([4, 5]));
      assert.deepEqual(Array.from((await x.toArray()) as Float32Array), [4, 5]);
      await s.dispose();
    } finally {
      await keyed.stop();
    }
  });

  it('rejects connecting to a closed port, without hanging', async () => {
    const port = await closedPort();
    const t0 = Date.now();
    await assert.rejects(withTimeout(connect(HOST, port), 30000, 'connect to a closed port'), (e: Error) => {
      assert.doesNotMatch(e.message, /timed out after/, 'connect hung');
      return true;
    });
    console.log(`      closed port rejected after ${Date.now() - t0} ms`);
  });

  it("dispose() after upload/download releases TVM's server (it serves one client at a time) for the next client", async () => {
    const own = await startPythonServer();
    // The first client runs in a child process that stays idle after dispose(), so no garbage
    // collection can release the session in dispose()'s place.
    const script = `
      const { connect } = require('./lib/rpc/client');
      (async () => {
        const s = await connect('${HOST}', ${own.port});
        await s.upload(Buffer.from('abc'), 'a.txt');
        const back = (await s.download('a.txt')).toString();
        await s.dispose();
        console.log(JSON.stringify({ closed: true, back }));
        setTimeout(() => process.exit(0), 30000);
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const child = spawn(process.execPath, ['--require', 'tsx/cjs', '-e', script], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
    let next: Promise<RPCSession> | undefined;
    try {
      const line = await withTimeout(
        new Promise<string>((resolve) => child.stdout!.on('data', (c: Buffer) => String(c).includes('closed') && resolve(String(c)))),
        30000,
        'the first client to close its session',
      );
      assert.equal(JSON.parse(line.trim().split('\n').pop()!).back, 'abc');
      next = connect(HOST, own.port);
      const t0 = Date.now();
      const s2 = await withTimeout(next, 4000, 'the next client to be served after the first one closed');
      console.log(`      next client served ${Date.now() - t0} ms after the first closed`);
      const x = await s2.tensor(new Float32Array([7, 8, 9]));
      assert.deepEqual(Array.from((await x.toArray()) as Float32Array), [7, 8, 9]);
      x.disposeSync();
      await s2.dispose();
    } finally {
      child.kill('SIGKILL');
      await own.stop();
      // a connect still waiting for the server fails now that it is gone
      await next?.then(
        (s) => s.dispose(),
        () => undefined,
      );
    }
  });
});

describe('TrackerClient disposal', () => {
  it('dispose(), disposeSync() and `using` close the tracker connection, idempotently', async () => {
    // A stand-in tracker: answers the magic, then counts closed connections.
    let closed = 0;
    const tracker = net.createServer((socket) => {
      socket.once('data', (d) => socket.write(d.subarray(0, 4)));
      socket.on('close', () => closed++);
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => tracker.listen(0, HOST, resolve));
    const port = (tracker.address() as net.AddressInfo).port;
    try {
      const a = await connectTracker(HOST, port);
      assert.equal(a.disposed, false);
      await a.dispose();
      await a[Symbol.asyncDispose]();
      assert.equal(a.disposed, true);
      const b = await connectTracker(HOST, port);
      b.disposeSync();
      b.disposeSync();
      let c: TrackerClient | undefined;
      {
        using t = await connectTracker(HOST, port);
        c = t;
      }
      assert.equal(c.disposed, true);
      await waitUntil(() => closed === 3, 5000, 'the tracker to see three connections closed');
    } finally {
      tracker.close();
    }
  });
});
