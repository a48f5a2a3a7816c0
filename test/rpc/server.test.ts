/**
 * tvm-node's RPCServer, run in-process on 127.0.0.1 with port 0, against TVM's stock Python
 * client (tvm/.venv) and tvm-node's own client.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { outputsOf, Tensor, TvmError, TvmValueError, VirtualMachine } from '../../lib';
import { connect, type RPCSession } from '../../lib/rpc/client';
import { RPCServer, type RPCServerOptions } from '../../lib/rpc/server';
import { RPCCode } from '../../lib/rpc/wire';
import { assertMatches, fixture, fixtureFile, npy, repoRoot } from '../fixtures';
import {
  assertNumbersMatch,
  callFunc,
  clientHello,
  HOST,
  i32,
  killAllClients,
  nextEvent,
  RawPeer,
  rawExchange,
  runPython,
  sleep,
  spawnPython,
  waitUntil,
  watchedRawSession,
  withTimeout,
} from './peers';

/** Python: connect (params host, port, key, timeout). */
const PY_CONNECT = `
r = rpc.connect(A['host'], A['port'], key=A.get('key', ''), session_timeout=A.get('timeout', 0))
`;

/** Python: the full flow on session `r`: upload, load_module, relax VM, remote kernel. */
const PY_FLOW = `
def flow(r):
    r.upload(A['mlp'])
    r.upload(A['kernels'])
    m = r.load_module(os.path.basename(A['mlp']))
    vm = relax.VirtualMachine(m, r.cpu())
    x = tvm.runtime.tensor(np.load(A['x']), r.cpu())
    y = vm['main'](x).numpy()
    k = r.load_module(os.path.basename(A['kernels']))
    a = np.load(A['a'])
    ta = tvm.runtime.tensor(a, r.cpu())
    tb = tvm.runtime.tensor(np.zeros_like(a), r.cpu())
    k['add_one'](ta, tb)
    return dict(mlp=y.ravel().tolist(), add_one=tb.numpy().ravel().tolist())
`;

/** Parameters of PY_FLOW for server `port`. */
function flowParams(port: number, extra: Record<string, unknown> = {}) {
  const mlp = fixture('mlp');
  const kernels = fixture('kernels');
  return {
    host: HOST,
    port,
    mlp: mlp.path,
    kernels: kernels.path,
    x: fixtureFile(mlp.cases[0].inputs[0]),
    a: fixtureFile(kernels.functions!.add_one.cases[1].args![0]),
    ...extra,
  };
}

/** Asserts PY_FLOW's results equal the fixture references. */
function assertFlow(res: Record<string, unknown>, who: string): void {
  const mlp = fixture('mlp');
  const kernels = fixture('kernels');
  assert.ok(Array.isArray(res.mlp), `${who}: no mlp output in ${JSON.stringify(res).slice(0, 300)}`);
  assertNumbersMatch(res.mlp as number[], mlp.cases[0].outputs[0], mlp.tolerance);
  assertNumbersMatch(res.add_one as number[], kernels.functions!.add_one.cases[1].args![1], kernels.tolerance);
}

/** A quick, checked Node session: add_one on the peer equals the reference. */
async function goodNodeClient(port: number, opts: { key?: string } = {}): Promise<void> {
  const s = await withTimeout(connect(HOST, port, opts), 30000, 'good client connect');
  try {
    const fx = fixture('kernels');
    await withTimeout(s.upload(fx.path), 30000, 'good client upload');
    const mod = await s.loadModule(fx.file);
    const [inSpec, outSpec] = fx.functions!.add_one.cases[1].args!;
    const a = npy(inSpec);
    const A = await s.tensor(a.data as Float32Array, { shape: a.shape });
    const B = await s.tensor(new Float32Array(a.shape[0]));
    const addOne = mod.requireFunctionSync('add_one');
    await withTimeout(addOne.call(A, B), 30000, 'good client add_one');
    assertMatches(Tensor.fromSync(await B.toArray(), { shape: a.shape }), outSpec, fx.tolerance);
    // release every remote object, so that dispose() really ends the session
    for (const h of [A, B, addOne, mod]) h.disposeSync();
  } finally {
    await s.dispose();
  }
}

/** Runs mlp on the peer with a VM over the remote module; returns the output on the host. */
async function remoteMlp(s: RPCSession, x: Float32Array, shape: number[]): Promise<Tensor> {
  const fx = fixture('mlp');
  const mod = await s.loadModule(fx.file);
  const vm = new VirtualMachine(mod, { devices: [s.cpu()] });
  const rx = await s.tensor(x, { shape });
  const out = outputsOf<Tensor>(await withTimeout(vm.run('main', rx), 60000, 'remote mlp'))[0];
  const host = Tensor.fromSync(await out.toArray(), { shape: out.shape, dtype: out.dtype });
  out.disposeSync();
  rx.disposeSync();
  await vm.dispose();
  mod.disposeSync();
  return host;
}

/** Whether `pid` is a live session process forked by this process. */
function isSessionWorker(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return ppid === process.pid && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('session-worker');
  } catch {
    return false; // gone
  }
}

describe('RPCServer (tvm-node) with stock TVM and tvm-node clients', function () {
  this.timeout(180000);
  const servers: RPCServer[] = [];
  const roots: string[] = [];
  let server: RPCServer;
  let port: number;
  let workRoot: string;

  function newRoot(): string {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-rpc-test-'));
    roots.push(d);
    return d;
  }

  async function start(opts: RPCServerOptions = {}): Promise<{ server: RPCServer; port: number; workRoot: string }> {
    const root = opts.workRoot ?? newRoot();
    const s = new RPCServer({ host: HOST, port: 0, workRoot: root, ...opts });
    servers.push(s);
    const addr = await withTimeout(s.listen(), 10000, 'listen');
    return { server: s, port: addr.port, workRoot: root };
  }

  before(async () => {
    fixture('mlp');
    ({ server, port, workRoot } = await start({ handshakeTimeoutMs: 1000 }));
  });

  after(async () => {
    killAllClients();
    // close() is bounded: see the 'close() resolves after sessions that already ended' test.
    await Promise.all(servers.map((s) => withTimeout(s.close(1000), 10000, 'server close').catch(() => undefined)));
    for (const d of roots) fs.rmSync(d, { recursive: true, force: true });
  });

  describe('stock Python client (tvm.rpc.connect)', () => {
    it('uploads, loads, runs a relax VM and a remote kernel with reference results', async () => {
      const res = await runPython(PY_CONNECT + PY_FLOW + `out(**flow(r))\n`, flowParams(port));
      assertFlow(res, 'python');
    });

    it('time_evaluator on a remote function returns a positive mean', async () => {
      const res = await runPython(
        PY_CONNECT +
          PY_FLOW +
          `
res = flow(r)
k = r.load_module('kernels.so')
a = np.load(A['a'])
ta = tvm.runtime.tensor(a, r.cpu())
tb = tvm.runtime.tensor(np.zeros_like(a), r.cpu())
f = k.time_evaluator('add_one', r.cpu(), number=3)
t = f(ta, tb)
out(mean=t.mean, results=list(t.results), add_one=tb.numpy().ravel().tolist(), mlp=res['mlp'])
`,
        flowParams(port),
      );
      assert.ok(typeof res.mean === 'number' && res.mean > 0, `mean ${res.mean}`);
      assert.ok((res.results as number[]).every((t) => t > 0));
      assertFlow(res, 'python');
    });

    it('raises server-side errors as Python exceptions and keeps the connection working', async () => {
      const res = await runPython(
        PY_CONNECT +
          PY_FLOW +
          `
e1 = err_text(lambda: r.load_module('no-such-file.so'))
e2 = err_text(lambda: r.download('no-such-file.bin'))
e3 = err_text(lambda: r.get_function('no.such.function'))
e4 = err_text(lambda: r.get_function('tvm.rpc.server.download_linked_module')('x.tar'))
out(e1=e1, e2=e2, e3=e3, e4=e4, **flow(r))
`,
        flowParams(port),
      );
      for (const k of ['e1', 'e2', 'e3', 'e4']) assert.ok(typeof res[k] === 'string' && res[k].length > 0, `${k} did not raise`);
      assert.match(res.e1, /no-such-file/);
      assertFlow(res, 'python after errors');
    });
  });

  describe('tvm-node client', () => {
    it('uploads, lists, runs, downloads and removes', async () => {
      const s = await withTimeout(connect(HOST, port), 30000, 'connect');
      try {
        const mlp = fixture('mlp');
        const kernels = fixture('kernels');
        await s.upload(mlp.path);
        await s.upload(kernels.path);
        await s.upload(Buffer.from('note'), 'note.txt');
        assert.deepEqual((await s.listdir()).sort(), ['kernels.so', 'mlp.so', 'note.txt']);
        assert.ok((await s.download('mlp.so')).equals(fs.readFileSync(mlp.path)));
        const x = npy(mlp.cases[0].inputs[0]);
        assertMatches(await remoteMlp(s, x.data as Float32Array, x.shape), mlp.cases[0].outputs[0], mlp.tolerance);
        await s.remove('note.txt');
        assert.deepEqual((await s.listdir()).sort(), ['kernels.so', 'mlp.so']);
        await assert.rejects(s.download('note.txt'), TvmError);
        await assert.rejects(s.loadModule('note.txt'), TvmError);
        // still serving after the errors
        assertMatches(await remoteMlp(s, x.data as Float32Array, x.shape), mlp.cases[0].outputs[0], mlp.tolerance);
      } finally {
        await s.dispose();
      }
    });

    it('session.dispose() ends the session on the server even while remote objects are still referenced; they fail from then on', async () => {
      const started = nextEvent(server, 'session');
      const s = await withTimeout(connect(HOST, port), 30000, 'connect');
      const [id] = await started;
      const x = await s.tensor(new Float32Array([1, 2, 3]));
      assert.deepEqual(Array.from((await x.toArray()) as Float32Array), [1, 2, 3]);
      const ended = nextEvent(server, 'sessionEnd', 5000, (endId) => endId === id);
      await s.dispose();
      await ended.catch((e: Error) => {
        x.disposeSync(); // let the session go, so the other tests are not disturbed
        throw new Error(`${e.message}: the session outlived dispose() while a remote tensor was alive`);
      });
      // the tensor outlived its session: using it fails (no hang, no crash)
      await assert.rejects(withTimeout(x.toArray(), 15000, 'use of a remote tensor after dispose()'), (e: Error) => !/timed out after/.test(e.message));
      x.disposeSync();
    });

    it('session.dispose() ends the session on the server after upload/download/listdir (nothing left to dispose)', async () => {
      // The client runs in a child process that stays idle after dispose(), so that no garbage
      // collection can end the session in its place.
      const script = `
        const { connect } = require('./lib/rpc/client');
        (async () => {
          const s = await connect('${HOST}', ${port});
          await s.upload(Buffer.from('abc'), 'a.txt');
          const back = (await s.download('a.txt')).toString();
          const ls = await s.listdir();
          await s.dispose();
          console.log(JSON.stringify({ closed: true, back, ls }));
          setTimeout(() => process.exit(0), 6000);
        })().catch((e) => { console.error(e); process.exit(1); });`;
      const started = nextEvent(server, 'session');
      const child = spawn(process.execPath, ['--require', 'tsx/cjs', '-e', script], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
      try {
        const [id] = await started;
        const ended = nextEvent(server, 'sessionEnd', 20000, (endId) => endId === id);
        const line = await withTimeout(
          new Promise<string>((resolve) => child.stdout!.on('data', (c: Buffer) => String(c).includes('closed') && resolve(String(c)))),
          30000,
          'the child client to close its session',
        );
        const closedAt = Date.now();
        const res = JSON.parse(line.trim().split('\n').pop()!);
        assert.equal(res.back, 'abc');
        assert.deepEqual(res.ls, ['a.txt']);
        await ended;
        const took = Date.now() - closedAt;
        assert.ok(took < 3000, `the session ended ${took} ms after dispose() (when the client process exited), not at dispose()`);
      } finally {
        child.kill('SIGKILL');
      }
    });

    for (const mib of [64, 256]) {
      it(`round-trips ${mib} MiB of float32 host -> remote tensor -> host`, async () => {
        const s = await withTimeout(connect(HOST, port), 30000, 'connect');
        try {
          const n = (mib * 1024 * 1024) / 4;
          const data = new Float32Array(n);
          for (let i = 0; i < n; i++) data[i] = (i % 65521) * 0.5 - 7;
          const t0 = performance.now();
          const remote = await withTimeout(s.tensor(data), 120000, `${mib} MiB upload`);
          const t1 = performance.now();
          const back = (await withTimeout(remote.toArray(), 120000, `${mib} MiB download`)) as Float32Array;
          const t2 = performance.now();
          remote.disposeSync();
          assert.ok(Buffer.from(back.buffer, back.byteOffset, back.byteLength).equals(Buffer.from(data.buffer)), 'round-tripped data differ');
          console.log(
            `      ${mib} MiB vs tvm-node server: host->remote ${(mib / ((t1 - t0) / 1000)).toFixed(0)} MiB/s, remote->host ${(mib / ((t2 - t1) / 1000)).toFixed(0)} MiB/s`,
          );
        } finally {
          await s.dispose();
        }
      });
    }

    it('serves 6 tvm-node clients at once, each with its own input and the right output', async () => {
      const fx = fixture('mlp');
      const x0 = npy(fx.cases[0].inputs[0]);
      const inputs = Array.from({ length: 6 }, (_, i) =>
        Float32Array.from(x0.data as Float32Array, (v, j) => (i === 0 ? v : v * (1 + 0.25 * i) - 0.1 * i + 0.01 * (j % 7))),
      );
      // references for the other inputs: the same model run locally (itself checked against numpy in vm.test.ts)
      const local = await VirtualMachine.load(fx.path);
      const refs: Float32Array[] = [];
      for (const x of inputs) refs.push(((await local.run('main', Tensor.fromSync(x, { shape: x0.shape }))) as Tensor).toArraySync() as Float32Array);
      await local.dispose();
      const t0 = Date.now();
      const outs = await withTimeout(
        Promise.all(
          inputs.map(async (x) => {
            const s = await connect(HOST, port);
            try {
              await s.upload(fx.path);
              return await remoteMlp(s, x, x0.shape);
            } finally {
              await s.dispose();
            }
          }),
        ),
        150000,
        '6 concurrent sessions',
      );
      console.log(`      6 concurrent sessions done in ${Date.now() - t0} ms`);
      assertMatches(outs[0], fx.cases[0].outputs[0], fx.tolerance);
      outs.forEach((o, i) => {
        const got = o.toArraySync() as Float32Array;
        assert.equal(got.length, refs[i].length);
        for (let j = 0; j < got.length; j++)
          assert.ok(Math.abs(got[j] - refs[i][j]) <= 1e-5 + 1e-5 * Math.abs(refs[i][j]), `client ${i} [${j}]: ${got[j]} vs ${refs[i][j]}`);
      });
      // distinct inputs gave distinct outputs (each session computed its own)
      assert.notDeepEqual(Array.from(outs[1].toArraySync() as Float32Array), Array.from(outs[2].toArraySync() as Float32Array));
    });
  });

  describe('concurrency', () => {
    it("serves a second client while a first holds its session open (TVM's server cannot)", async () => {
      let most = 0;
      const count = () => (most = Math.max(most, server.activeSessions));
      server.on('session', count);
      const a = spawnPython(PY_CONNECT + `out(connected=True)\nsys.stdin.readline()\n` + PY_FLOW + `out(**flow(r))\n`, flowParams(port));
      await a.waitFor('connected', 30000);
      assert.ok(server.activeSessions >= 1);
      const b = await runPython(PY_CONNECT + PY_FLOW + `out(**flow(r))\n`, flowParams(port), 60000).finally(() => server.off('session', count));
      assertFlow(b, 'client B');
      assert.ok(most >= 2, `at most ${most} sessions at once`);
      a.send('go');
      const ra = await a.done(60000);
      assert.equal(ra.code, 0, ra.stderr.slice(-3000));
      assertFlow(Object.assign({}, ...ra.results), 'client A');
    });
  });

  describe('path confinement', () => {
    it('refuses paths outside the work directory and writes nothing outside', async () => {
      const { port: p, workRoot: root } = await start();
      const sentinel = path.join(root, 'sentinel.txt');
      fs.writeFileSync(sentinel, 'keep me');
      const res = await runPython(
        PY_CONNECT +
          `
wp = r.get_function('tvm.rpc.server.workpath')
out(
  up=err_text(lambda: wp('../../etc/passwd')),
  abs=err_text(lambda: wp('/etc/passwd')),
  upload=err_text(lambda: r.upload(bytearray(b'owned'), '../x')),
  upload_abs=err_text(lambda: r.upload(bytearray(b'owned'), os.path.join(A['root'], 'y'))),
  download=err_text(lambda: r.download('/etc/passwd')),
  download_up=err_text(lambda: r.download('../../../../../../etc/passwd')),
  remove=err_text(lambda: r.remove('../sentinel.txt')),
  listdir=err_text(lambda: r.listdir('..')),
  load=err_text(lambda: r.load_module('../sentinel.txt')),
)
r.upload(bytearray(b'fine'), 'fine.txt')
out(inside=wp('fine.txt'), fine=r.download('fine.txt').decode(), ls=r.listdir('.'))
`,
        { host: HOST, port: p, root },
      );
      for (const k of ['up', 'abs', 'upload', 'upload_abs', 'download', 'download_up', 'remove', 'listdir', 'load']) {
        assert.ok(typeof res[k] === 'string', `${k} did not raise`);
      }
      assert.match(res.up, /outside|work directory/);
      assert.doesNotMatch(res.download, /root:/, 'leaked /etc/passwd contents');
      assert.ok(!fs.existsSync(path.join(root, 'x')), 'upload ../x wrote outside the work directory');
      assert.ok(!fs.existsSync(path.join(root, 'y')), 'upload to an absolute path wrote outside');
      assert.equal(fs.readFileSync(sentinel, 'utf8'), 'keep me');
      assert.equal(res.fine, 'fine');
      assert.equal(res.ls, 'fine.txt');
      assert.ok(String(res.inside).startsWith(root + path.sep), `${res.inside} not under ${root}`);
    });
  });

  describe('faults (each followed by a good client)', () => {
    it('wrong magic', async () => {
      const refused = nextEvent(server, 'refused');
      const { reply } = await rawExchange(port, Buffer.from('GET / HTTP'.slice(0, 8)));
      assert.equal(reply.length, 0);
      assert.match(String((await refused)[0]), /magic/);
      await goodNodeClient(port);
    });

    it('truncated handshake, then close', async () => {
      const refused = nextEvent(server, 'refused');
      const hello = clientHello('');
      await rawExchange(port, hello.subarray(0, hello.length - 3), { end: true });
      assert.match(String((await refused)[0]), /closed|handshake/);
      await goodNodeClient(port);
    });

    it('oversized key length', async () => {
      const refused = nextEvent(server, 'refused');
      const t0 = Date.now();
      const { reply } = await rawExchange(port, i32(0xff271, 1e9));
      assert.equal(reply.length, 0);
      assert.ok(Date.now() - t0 < 900, 'closed only at the handshake timeout');
      assert.match(String((await refused)[0]), /out of range|length/);
      await goodNodeClient(port);
    });

    it('a client that never sends anything (handshake timeout)', async () => {
      const refused = nextEvent(server, 'refused');
      const t0 = Date.now();
      await rawExchange(port, Buffer.alloc(0), { ms: 10000 });
      const took = Date.now() - t0;
      assert.ok(took >= 900 && took < 5000, `closed after ${took} ms (handshakeTimeoutMs 1000)`);
      assert.match(String((await refused)[0]), /no handshake/);
      await goodNodeClient(port);
    });

    it('garbage right after a valid handshake ends only that session', async () => {
      for (const garbage of [
        // a plausible packet: length 16, then an unknown RPC code and junk
        Buffer.concat([Buffer.from([16, 0, 0, 0, 0, 0, 0, 0]), Buffer.alloc(16, 0xee)]),
        // random bytes (the length prefix is huge): the session ends when the client goes
        Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 97 + 13) & 0xff)),
      ]) {
        let sid: unknown;
        const started = nextEvent(server, 'session').then((args) => {
          sid = args[0];
          return args;
        });
        const ended = nextEvent(server, 'sessionEnd', 30000, (id) => id === sid);
        const sock = net.connect(port, HOST);
        sock.on('error', () => undefined);
        const reply = await withTimeout(
          new Promise<Buffer>((resolve) => {
            let buf = Buffer.alloc(0);
            sock.on('connect', () => sock.write(clientHello('')));
            sock.on('data', (c) => {
              buf = Buffer.concat([buf, c]);
              if (buf.length >= 8 && buf.length >= 8 + buf.readInt32LE(4)) resolve(buf);
            });
          }),
          15000,
          'handshake reply',
        );
        assert.equal(reply.readInt32LE(0), 0xff271);
        assert.equal(reply.subarray(8).toString(), 'server:');
        await started;
        sock.write(garbage);
        const closedByServer = new Promise<void>((resolve) => sock.once('close', () => resolve()));
        // give the session a moment to fail on its own, then hang up
        await Promise.race([closedByServer, sleep(2000)]);
        sock.destroy();
        await ended;
        await goodNodeClient(port);
      }
    });

    it('a client vanishing in the middle of a 64 MiB upload ends only its session', async () => {
      const { peer: raw, ended } = await watchedRawSession(server, port);
      await raw.init();
      const upload = await raw.handle('tvm.rpc.server.upload');
      const packet = callFunc(upload, [
        { kind: 'str', value: 'half.bin' },
        { kind: 'bytes', value: Buffer.alloc(64 * 2 ** 20, 7) },
      ]);
      // The announced length, the call and a fifth of the data; then the connection drops.
      await new Promise<void>((resolve) => raw.sock.write(packet.subarray(0, 13 * 2 ** 20), () => resolve()));
      raw.destroy();
      await ended;
      assert.equal(server.activeSessions, 0);
      await goodNodeClient(port);
    });

    it('a Python client killed (SIGKILL) mid-session', async () => {
      const started = nextEvent(server, 'session', 30000);
      const c = spawnPython(
        PY_CONNECT +
          `
out(connected=True)
a = np.ones(8 * 1024 * 1024, dtype='float32')
while True:
    t = tvm.runtime.tensor(a, r.cpu())
    t.numpy()
`,
        { host: HOST, port },
      );
      await c.waitFor('connected', 30000);
      const [id] = await started;
      const ended = nextEvent(server, 'sessionEnd', 30000, (endId) => endId === id);
      await sleep(300);
      c.kill('SIGKILL');
      await ended;
      await goodNodeClient(port);
    });

    it('a session process killed: its client gets an error, others go on', async () => {
      const started = nextEvent(server, 'session', 30000);
      const c = spawnPython(
        PY_CONNECT +
          PY_FLOW +
          `
out(connected=True)
sys.stdin.readline()
out(error=err_text(lambda: flow(r)))
`,
        flowParams(port),
      );
      await c.waitFor('connected', 30000);
      const [id, , pid] = await started;
      assert.ok(typeof pid === 'number' && isSessionWorker(pid), `the 'session' event names the session's process (${pid})`);
      const ended = nextEvent(server, 'sessionEnd', 30000, (endId) => endId === id);
      process.kill(pid, 'SIGKILL');
      const [, code] = await ended;
      assert.equal(code, 'SIGKILL');
      c.send('go');
      const r = await c.done(60000);
      const res = Object.assign({}, ...r.results);
      assert.ok(typeof res.error === 'string' && res.error.length > 0, `the client saw no error: ${r.stdout} ${r.stderr.slice(-2000)}`);
      await goodNodeClient(port);
    });
  });

  describe("limits (checked before TVM's loop sees a packet)", () => {
    const MiB = 2 ** 20;

    it('a message over maxMessageBytes and an upload over maxUploadBytes are refused with clear errors; the session goes on', async () => {
      const { port: p } = await start({ maxMessageBytes: 4 * MiB, maxUploadBytes: 6 * MiB });
      const res = await runPython(
        PY_CONNECT +
          PY_FLOW +
          `
e_big = err_text(lambda: tvm.runtime.tensor(np.ones(2 * 2**20, 'float32'), r.cpu()))
r.upload(bytearray(3 * 2**20), 'a.bin')
r.upload(bytearray(2 * 2**20), 'b.bin')
e_up = err_text(lambda: r.upload(bytearray(2 * 2**20), 'c.bin'))
r.upload(bytearray(1 * 2**20), 'a.bin')  # replacing a file frees its share
out(e_big=e_big, e_up=e_up, a=len(r.download('a.bin')), **flow(r))
`,
        flowParams(p),
      );
      assert.match(res.e_big, /RPCMessageTooLarge: RPC message of \d+ bytes exceeds the server's limit of 4194304 bytes/);
      assert.match(
        res.e_up,
        /upload of 'c.bin' \(2097152 bytes\) would take this session's uploads to 7340032 bytes, over the server's limit of 6291456 bytes/,
      );
      assert.equal(res.a, MiB);
      assertFlow(res, 'python after refusals');
    });

    it('a packet announcing 2^62 bytes gets an error reply and is skipped, not allocated', async () => {
      const raw = await RawPeer.open(port);
      try {
        await raw.init();
        const head = Buffer.alloc(8);
        head.writeBigUInt64LE(2n ** 62n);
        raw.send(Buffer.concat([head, Buffer.alloc(4096, 0xab)]));
        assert.match(await raw.exception(), /^RPCMessageTooLarge: RPC message of 4611686018427387904 bytes exceeds/);
      } finally {
        raw.destroy();
      }
      await goodNodeClient(port);
    });

    it('a client that stops reading its replies loses its session after the stall timeout; others are served meanwhile', async () => {
      const { server: s, port: p } = await start({ stallTimeoutMs: 1000 });
      const { peer: raw, ended } = await watchedRawSession(s, p, 60000);
      await raw.init();
      const upload = await raw.handle('tvm.rpc.server.upload');
      raw.send(
        callFunc(upload, [
          { kind: 'str', value: 'big.bin' },
          { kind: 'bytes', value: Buffer.alloc(4 * MiB, 1) },
        ]),
      );
      assert.equal((await raw.packet(30000)).code, RPCCode.Return);
      const download = await raw.handle('tvm.rpc.server.download');
      // Ask for 4 MiB twenty times and never read: the replies back up to the server.
      raw.sock.pause();
      for (let i = 0; i < 20; i++) raw.send(callFunc(download, [{ kind: 'str', value: 'big.bin' }]));
      await goodNodeClient(p);
      await ended;
      raw.destroy();
      assert.equal(s.activeSessions, 0);
    });
  });

  describe('key', () => {
    it("a server with key 'edge' refuses 'other' and accepts 'edge'", async () => {
      const { server: s, port: p } = await start({ key: 'edge' });
      const refused = nextEvent(s, 'refused');
      const bad = await runPython(`out(err=err_text(lambda: rpc.connect(A['host'], A['port'], key='other')))\n`, { host: HOST, port: p });
      assert.ok(typeof bad.err === 'string', 'wrong key connected');
      assert.match(String((await refused)[0]), /key mismatch/);
      await assert.rejects(withTimeout(connect(HOST, p, { key: 'other' }), 30000, 'node connect, wrong key'), /key|mismatch/i);
      await assert.rejects(withTimeout(connect(HOST, p), 30000, 'node connect, no key'), /key|mismatch/i);
      const good = await runPython(PY_CONNECT + PY_FLOW + `out(**flow(r))\n`, flowParams(p, { key: 'edge' }));
      assertFlow(good, "python with key 'edge'");
      await goodNodeClient(p, { key: 'edge' });
    });
  });

  describe('maxSessions', () => {
    it('a second client while the first is open gets RPCServerBusy', async () => {
      const { server: s, port: p } = await start({ maxSessions: 1 });
      const a = spawnPython(PY_CONNECT + `out(connected=True)\nsys.stdin.readline()\n` + PY_FLOW + `out(**flow(r))\n`, flowParams(p));
      await a.waitFor('connected', 30000);
      assert.equal(s.activeSessions, 1);
      const b = await runPython(
        `
def go():
    ` +
          PY_CONNECT.trim() +
          `
    r.get_function('tvm.rpc.server.workpath')('a')
out(err=err_text(go))
`,
        { host: HOST, port: p },
      );
      const nodeErr = await withTimeout(connect(HOST, p), 30000, 'node connect while busy').then(
        () => 'connected',
        (e: Error) => e.message,
      );
      a.send('go');
      const ra = await a.done(60000);
      assert.equal(ra.code, 0, ra.stderr.slice(-3000));
      assertFlow(Object.assign({}, ...ra.results), 'client A');
      await waitUntil(() => s.activeSessions === 0, 10000, 'session A to end');
      await goodNodeClient(p);
      // the refused clients were told why
      assert.ok(typeof b.err === 'string', 'second (python) session was served');
      assert.notEqual(nodeErr, 'connected', 'second (node) session was served');
      assert.ok(
        /RPCServerBusy/.test(b.err) && /RPCServerBusy/.test(nodeErr),
        `refusals without RPCServerBusy:\n  python: ${b.err}\n  node: ${nodeErr.split('\n')[0]}`,
      );
    });
  });

  describe('session timeout', () => {
    it("a call after the client's session_timeout gets RPCSessionTimeoutError; the server keeps serving", async () => {
      let sid: unknown;
      void nextEvent(server, 'session', 30000).then(
        ([id]) => (sid = id),
        () => undefined,
      );
      const ended = nextEvent(server, 'sessionEnd', 30000, (id) => id === sid);
      const res = await runPython(
        PY_CONNECT +
          `
first = r.get_function('tvm.rpc.server.workpath')('a')
time.sleep(2.5)
out(first=first, err=err_text(lambda: r.get_function('tvm.rpc.server.workpath')('b')))
`,
        { host: HOST, port, timeout: 1 },
        60000,
      );
      assert.ok(String(res.first).endsWith('/a'));
      assert.ok(typeof res.err === 'string', 'the call after the timeout succeeded');
      assert.match(res.err, /RPCSessionTimeoutError/);
      await ended;
      await goodNodeClient(port);
    });

    it("the server's sessionTimeout bounds a session too", async () => {
      const { server: s, port: p } = await start({ sessionTimeout: 1 });
      const s1 = await connect(HOST, p);
      const x = await s1.tensor(new Float32Array([1, 2, 3]));
      assert.deepEqual(Array.from((await x.toArray()) as Float32Array), [1, 2, 3]);
      await waitUntil(() => s.activeSessions === 0, 10000, 'the session to time out');
      await assert.rejects(withTimeout(x.toArray(), 15000, 'call after the timeout'), /RPCSessionTimeoutError|closed|connection|socket|RPC/i);
      await s1.dispose().catch(() => undefined);
    });
  });

  describe('binding', () => {
    it('refuses 0.0.0.0 without trustRemoteClients; listens with it', async () => {
      assert.throws(() => new RPCServer({ host: '0.0.0.0', port: 0 }), TvmValueError);
      const s = new RPCServer({ host: '0.0.0.0', port: 0, trustRemoteClients: true, workRoot: newRoot() });
      const addr = await withTimeout(s.listen(), 10000, 'listen on 0.0.0.0');
      assert.equal(addr.address, '0.0.0.0');
      assert.ok(addr.port > 0);
      await withTimeout(s.close(1000), 10000, 'close');
    });
  });

  describe('close', () => {
    it('close(deadline) ends an open session and removes its work directory', async () => {
      const { server: s, port: p, workRoot: root } = await start();
      const c = spawnPython(
        PY_CONNECT +
          `
r.upload(bytearray(b'data'), 'held.bin')
out(connected=True)
sys.stdin.readline()
out(error=err_text(lambda: r.download('held.bin')))
`,
        { host: HOST, port: p },
      );
      await c.waitFor('connected', 30000);
      const dirs = fs.readdirSync(root);
      assert.equal(dirs.length, 1);
      assert.ok(fs.existsSync(path.join(root, dirs[0], 'held.bin')));
      const ended = nextEvent(s, 'sessionEnd', 15000);
      const t0 = Date.now();
      await withTimeout(s.close(500), 10000, 'close(500) with an open session');
      assert.ok(Date.now() - t0 < 5000);
      await ended;
      assert.deepEqual(fs.readdirSync(root), [], 'work directory left behind');
      assert.equal(s.activeSessions, 0);
      c.send('go');
      const r = await c.done(30000);
      const res = Object.assign({}, ...r.results);
      assert.ok(typeof res.error === 'string', 'the session survived close()');
      // no new connections
      await assert.rejects(withTimeout(connect(HOST, p), 15000, 'connect after close'));
    });

    it('close() resolves after sessions that already ended', async () => {
      const { server: s, port: p, workRoot: root } = await start();
      await goodNodeClient(p);
      await waitUntil(() => s.activeSessions === 0, 10000, 'the session to end');
      await withTimeout(s.close(1000), 10000, 'close() with no open session after one ended');
      assert.deepEqual(fs.readdirSync(root), []);
    });
  });

  describe('disposal', () => {
    it('session `await using` ends the session; server dispose() and `await using` stop it as close() does (idempotent)', async () => {
      const { server: s, port: p, workRoot: root } = await start({ prestartSessions: 0 });
      let session: RPCSession | undefined;
      {
        await using sess = await withTimeout(connect(HOST, p), 30000, 'connect');
        session = sess;
        assert.deepEqual(await withTimeout(sess.listdir(), 30000, 'listdir'), []);
      }
      assert.equal(session.disposed, true);
      await waitUntil(() => s.activeSessions === 0, 10000, 'the session to end');
      await withTimeout(s.dispose(), 10000, 'dispose()');
      await withTimeout(s[Symbol.asyncDispose](), 10000, 'dispose() again');
      assert.deepEqual(fs.readdirSync(root), []);
      await assert.rejects(withTimeout(connect(HOST, p), 15000, 'connect after dispose'));

      let port2 = 0;
      {
        await using s2 = new RPCServer({ host: HOST, port: 0, workRoot: newRoot(), prestartSessions: 0 });
        port2 = (await withTimeout(s2.listen(), 10000, 'listen')).port;
      }
      await assert.rejects(withTimeout(connect(HOST, port2), 15000, 'connect after `await using`'));
    });
  });

  describe('afterwards', () => {
    it('the shared server is still serving and has no leftover sessions', async () => {
      await goodNodeClient(port);
      // (sessions may linger until GC after dispose(): see the session.dispose() tests above)
      await sleep(500);
      assert.equal(fs.readdirSync(workRoot).length, server.activeSessions, 'work directories of ended sessions were left behind');
    });
  });
});
