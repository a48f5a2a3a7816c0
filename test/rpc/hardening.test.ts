/**
 * The RPC server against hostile and careless clients (issue 8): request amplification
 * through overlapping TNI1 entries, malformed TNI1 headers, idle and half-open connections,
 * half-sent packets, session timeouts past setTimeout's range, the shutdown deadline, and a
 * soak of 16 stock Python clients. Real servers on loopback, TVM's own Python client from
 * the pinned wheel, raw sockets speaking TVM's wire protocol.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { TvmValueError } from '../../lib';
import { confine } from '../../lib/rpc/confine';
import { encodeInputs } from '../../lib/rpc/infer';
import { RPCServer, type RPCServerOptions } from '../../lib/rpc/server';
import { decodeBlob, encodeBlob } from '../../lib/rpc/tni1';
import { RPCCode } from '../../lib/rpc/wire';
import { fixture, fixtureFile, npy, repoRoot } from '../fixtures';
import {
  assertMlp,
  assertNumbersMatch,
  callFunc,
  closedPort,
  goodNodeClient,
  HOST,
  killAllClients,
  nextEvent,
  PY_INFER,
  pyParams,
  RawPeer,
  runPython,
  spawnPython,
  waitUntil,
  watchedRawSession,
  withTimeout,
} from './peers';

/** A TNI1 blob with a hand-written header over `data` bytes. */
function blob(header: unknown, data = Buffer.alloc(0)): Buffer {
  const h = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(h.length);
  return Buffer.concat([Buffer.from('TNI1'), len, h, data]);
}

/** Calls tvm_node.infer(model, request) on a raw peer; the reply packet. */
async function rawInfer(peer: RawPeer, handle: bigint, model: string, request: Buffer) {
  peer.send(
    callFunc(handle, [
      { kind: 'str', value: model },
      { kind: 'bytes', value: request },
    ]),
  );
  return peer.packet(30000);
}

/** `n` raw sessions opened one after another (each must see its own 'session' event). */
async function rawSessions(server: RPCServer, port: number, n: number, endMs: number) {
  const out: Awaited<ReturnType<typeof watchedRawSession>>[] = [];
  for (let i = 0; i < n; i++) out.push(await watchedRawSession(server, port, endMs));
  return out;
}

const rssMiB = () => process.memoryUsage().rss / 2 ** 20;

describe('RPC server hardening (hostile clients, limits, timeouts)', function () {
  this.timeout(180000);
  const servers: RPCServer[] = [];
  let modelsDir: string;

  async function start(opts: RPCServerOptions = {}): Promise<{ server: RPCServer; port: number }> {
    const s = new RPCServer({ host: HOST, port: 0, inferenceOnly: true, modelsDir, ...opts });
    servers.push(s);
    const addr = await withTimeout(s.listen(), 10000, 'listen');
    return { server: s, port: addr.port };
  }

  before(() => {
    const mlp = fixture('mlp');
    modelsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-hardening-test-'));
    fs.copyFileSync(mlp.path, path.join(modelsDir, 'mlp.so'));
    fs.copyFileSync(fixture('multi_out').path, path.join(modelsDir, 'multi_out.so'));
    const x = mlp.cases[0].inputs[0];
    fs.writeFileSync(path.join(modelsDir, 'mlp.json'), JSON.stringify({ inputs: [{ name: x.name, shape: x.shape, dtype: x.dtype }] }));
  });

  after(async () => {
    killAllClients();
    await Promise.all(servers.map((s) => withTimeout(s.close(1000), 10000, 'server close').catch(() => undefined)));
    fs.rmSync(modelsDir, { recursive: true, force: true });
  });

  describe('TNI1 requests (inference-only)', () => {
    let port: number;
    let server: RPCServer;
    before(async () => ({ server, port } = await start({ maxMessageBytes: 64 << 20 })));

    it('128 entries over the same 8 MiB: refused by the tensor count before any copy; rss stays flat', async () => {
      const data = Buffer.alloc(8 << 20, 1);
      const entry = { shape: [2 << 20], dtype: 'float32', offset: 0, nbytes: 8 << 20 };
      const request = blob({ tensors: Array.from({ length: 128 }, () => entry) }, data);
      const peer = await RawPeer.open(port);
      await peer.init();
      const infer = await peer.handle('tvm_node.infer');
      const rss0 = rssMiB();
      const p = await rawInfer(peer, infer, 'mlp', request);
      assert.equal(p.code, RPCCode.Exception);
      assert.equal((p.values[0] as { value: string }).value, "ValueError: model 'mlp' takes 1 input; the request has 128");
      const growth = rssMiB() - rss0;
      // the request itself (8 MiB, held while it is read) is all the server may keep
      assert.ok(growth < 48, `rss grew by ${growth.toFixed(0)} MiB for an 8 MiB request`);
      // the same session then infers correctly
      const x = npy(fixture('mlp').cases[0].inputs[0]);
      const ok = await rawInfer(peer, infer, 'mlp', encodeInputs([{ data: x.data as Float32Array, shape: x.shape }]));
      assert.equal(ok.code, RPCCode.Return);
      const [y] = decodeBlob((ok.values[1] as { value: Buffer }).value);
      assertNumbersMatch(Array.from(new Float32Array(Uint8Array.from(y.bytes).buffer)), fixture('mlp').cases[0].outputs[0], fixture('mlp').tolerance);
      peer.destroy();
    });

    it('overlapping entries and entries outside the blob are refused (decoder)', () => {
      const data = Buffer.alloc(256);
      const e = (offset: number, n: number) => ({ shape: [n], dtype: 'float32', offset, nbytes: n * 4 });
      assert.throws(() => decodeBlob(blob({ tensors: [e(0, 32), e(64, 32)] }, data)), /bad tensor blob: tensors 0 and 1 overlap/);
      assert.throws(() => decodeBlob(blob({ tensors: [e(128, 16), e(0, 40)] }, data)), /bad tensor blob: tensors 1 and 0 overlap/);
      assert.throws(() => decodeBlob(blob({ tensors: [e(192, 32)] }, data)), /lie outside the 256 data bytes/);
      // adjacent, not overlapping: accepted, as views of the blob (no copy)
      const b = blob({ tensors: [e(0, 32), e(128, 32)] }, data);
      const [t0, t1] = decodeBlob(b);
      assert.equal(t0.bytes.buffer, b.buffer);
      assert.equal(t1.bytes.byteOffset - t0.bytes.byteOffset, 128);
    });

    it('malformed headers each get a "bad tensor blob" ValueError; the session goes on', async () => {
      const peer = await RawPeer.open(port);
      await peer.init();
      const infer = await peer.handle('tvm_node.infer');
      const cases: Array<[Buffer, RegExp]> = [
        [blob('null'), /must be an object with a "tensors" array/],
        [blob({}), /must be an object with a "tensors" array/],
        [blob({ tensors: 5 }), /must be an object with a "tensors" array/],
        [blob('{"tensors": [1'), /the header is not JSON/],
        [blob({ tensors: [null] }), /model 'mlp' takes 1 input|tensor 0 is not an object/],
        [blob({ tensors: [{ shape: 'abc', dtype: 'float32', offset: 0, nbytes: 0 }] }), /"shape" must be an array/],
        [blob({ tensors: [{ shape: [4, -16], dtype: 'float32', offset: 0, nbytes: 0 }] }), /"shape" must be an array/],
        [blob({ tensors: [{ shape: [4, 16], dtype: 'float99', offset: 0, nbytes: 256 }] }), /unsupported dtype 'float99'/],
        [blob({ tensors: [{ shape: [4, 16], dtype: 7, offset: 0, nbytes: 256 }] }), /"dtype" must be a string/],
        [blob({ tensors: [{ shape: [4, 16], dtype: 'float32', offset: -64, nbytes: 256 }] }), /"offset" and "nbytes" must be whole numbers/],
        [blob({ tensors: [{ shape: [4, 16], dtype: 'float32', offset: 0, nbytes: 1e300 }] }), /"offset" and "nbytes" must be whole numbers/],
        [blob({ tensors: [{ shape: [2 ** 40, 2 ** 40], dtype: 'float32', offset: 0, nbytes: 0 }] }), /do not hold shape/],
        [blob({ tensors: [{ shape: [4, 16], dtype: 'float32', offset: 0, nbytes: 256 }] }), /lie outside the 0 data bytes/],
        [Buffer.from('TNI1'), /does not start with "TNI1"/],
        [Buffer.from('XXXXabcd'), /does not start with "TNI1"/],
        [Buffer.concat([Buffer.from('TNI1'), Buffer.from([255, 255, 255, 255])]), /the header claims 4294967295 bytes/],
      ];
      for (const [request, want] of cases) {
        const p = await rawInfer(peer, infer, 'mlp', request);
        assert.equal(p.code, RPCCode.Exception, `accepted: ${request.subarray(8).toString()}`);
        const msg = (p.values[0] as { value: string }).value;
        assert.match(msg, /^ValueError: /, msg);
        assert.match(msg, want);
      }
      assert.deepEqual(await peer.modelNames(await peer.handle('tvm_node.models')), ['mlp', 'multi_out']);
      peer.destroy();
      await goodNodeClient(port);
    });

    it('tvm_node.models shows names, shapes, dtypes and sizes, never server paths', async () => {
      const res = await runPython(PY_INFER + `out(models=json.loads(r.get_function("tvm_node.models")()))`, pyParams(port));
      const models = res.models as Array<Record<string, unknown>>;
      assert.deepEqual(
        models.map((m) => m.name),
        ['mlp', 'multi_out'],
      );
      assert.deepEqual((models[0].inputs as unknown[])[0], { name: 'x', shape: [4, 16], dtype: 'float32' });
      assert.ok(typeof models[0].bytes === 'number' && (models[0].bytes as number) > 0);
      const text = JSON.stringify(models);
      assert.ok(!text.includes(modelsDir) && !text.includes('/'), `paths in ${text}`);
      await waitUntil(() => server.activeSessions === 0, 10000, 'sessions to end');
    });
  });

  describe('idle and half-open connections', () => {
    it('16 handshake-only sockets are ended by the idle timeout; a client then gets served (inference-only)', async () => {
      const { server, port } = await start({ idleTimeoutMs: 1000, maxSessions: 16 });
      const idle = await Promise.all(Array.from({ length: 16 }, () => RawPeer.open(port)));
      await waitUntil(() => server.activeSessions === 16, 10000, '16 sessions');
      const t0 = Date.now();
      const messages = await Promise.all(idle.map((p) => p.exception(15000)));
      for (const m of messages) assert.equal(m, 'RPCSessionTimeoutError: the session sent no request for 1 s; the server ended it (connect again)');
      await Promise.all(idle.map((p) => withTimeout(p.closed, 10000, 'server hang-up')));
      assert.ok(Date.now() - t0 < 8000, `idle sessions lasted ${Date.now() - t0} ms`);
      await waitUntil(() => server.activeSessions === 0, 10000, 'sessions to end');
      await goodNodeClient(port);
    });

    it('a stock client idle past the timeout raises RPCSessionTimeoutError on its next call (both modes)', async () => {
      for (const inferenceOnly of [true, false]) {
        const { port } = await start({ idleTimeoutMs: 1500, inferenceOnly, prestartSessions: 1 });
        const res = await runPython(
          PY_INFER +
            `
first = infer(r, 'mlp', np.load(A['mlp_x']))
time.sleep(0.5)
second = infer(r, 'mlp', np.load(A['mlp_x']))
time.sleep(3.5)
out(first=first, second=second, err=err_text(lambda: infer(r, 'mlp', np.load(A['mlp_x']))))
`,
          pyParams(port),
        );
        assertMlp(res.first, `${inferenceOnly ? 'inference-only' : 'full'}: first`);
        assertMlp(res.second, `${inferenceOnly ? 'inference-only' : 'full'}: within the idle limit`);
        assert.match(String(res.err), /RPCSessionTimeoutError.*sent no request for 1.5 s/, `${inferenceOnly ? 'inference-only' : 'full'}: ${res.err}`);
      }
    });

    it('one address may hold only maxSessionsPerAddress sessions; others get RPCServerBusy', async () => {
      const { server, port } = await start({ maxSessions: 8, maxSessionsPerAddress: 2 });
      const held = [await RawPeer.open(port), await RawPeer.open(port)];
      const refused = nextEvent(server, 'refused');
      const third = await RawPeer.open(port);
      assert.match(await third.exception(), /^RPCServerBusy: 127\.0\.0\.1 already holds 2 sessions, the most one address may hold; try again later$/);
      assert.match(String((await refused)[0]), /already holds 2 sessions/);
      held[0].destroy();
      await waitUntil(() => server.activeSessions === 1, 10000, 'a session to end');
      await goodNodeClient(port);
      held[1].destroy();
    });
  });

  describe('half-sent packets', () => {
    it('a packet that stops one byte short ends its session after readTimeoutMs; bytes held go back to 0', async () => {
      const { server, port } = await start({ readTimeoutMs: 1000, maxMessageBytes: 64 << 20 });
      const peers = await rawSessions(server, port, 4, 30000);
      const body = Buffer.alloc(16 << 20, 7);
      const t0 = Date.now();
      for (const { peer } of peers) {
        const head = Buffer.alloc(12);
        head.writeBigUInt64LE(BigInt(4 + body.length + 1));
        head.writeInt32LE(RPCCode.CallFunc, 8);
        peer.send(Buffer.concat([head, body]));
      }
      await waitUntil(() => server.pendingBytes >= 4 * body.length, 20000, 'the server to hold the partial packets');
      const messages = await Promise.all(peers.map(({ peer }) => peer.exception(20000)));
      for (const m of messages) assert.equal(m, 'RPCSessionTimeoutError: the rest of the request did not arrive within 1 s; the server ended the session');
      await Promise.all(peers.map(({ ended }) => ended));
      assert.ok(Date.now() - t0 < 15000, `took ${Date.now() - t0} ms`);
      assert.equal(server.pendingBytes, 0);
      await goodNodeClient(port);
    });

    it('4 clients x 128 MiB half-sent: rss rises, and falls back when their sessions end (no GC needed)', async () => {
      const { server, port } = await start({ readTimeoutMs: 1500, maxMessageBytes: 256 << 20 });
      const rss0 = rssMiB();
      const peers = await rawSessions(server, port, 4, 60000);
      const piece = Buffer.alloc(1 << 20, 9);
      for (const { peer } of peers) {
        const head = Buffer.alloc(12);
        head.writeBigUInt64LE(BigInt(256 << 20));
        head.writeInt32LE(RPCCode.CallFunc, 8);
        peer.send(head);
      }
      // interleaved, so no session sits longer than the read timeout between its pieces
      for (let i = 0; i < 128; i++) {
        for (const { peer } of peers) if (!peer.sock.write(piece)) await new Promise((r) => peer.sock.once('drain', r));
      }
      await waitUntil(() => server.pendingBytes >= 4 * (128 << 20), 20000, 'the server to hold 4 x 128 MiB');
      const rssHeld = rssMiB();
      assert.ok(rssHeld - rss0 > 400, `rss rose by only ${(rssHeld - rss0).toFixed(0)} MiB while holding 512 MiB`);
      await Promise.all(peers.map(({ ended }) => ended));
      assert.equal(server.pendingBytes, 0);
      const rssAfter = rssMiB();
      assert.ok(rssAfter - rss0 < 100, `rss after the sessions ended: ${rssAfter.toFixed(0)} MiB (before ${rss0.toFixed(0)}, held ${rssHeld.toFixed(0)})`);
    });

    it('bytes held for incomplete requests are bounded server-wide (maxPendingBytes): the session over it gets RPCServerBusy', async () => {
      const { server, port } = await start({ maxPendingBytes: 24 << 20, maxMessageBytes: 64 << 20 });
      const first = await watchedRawSession(server, port, 30000);
      const second = await watchedRawSession(server, port, 30000);
      const partial = (n: number) => {
        const head = Buffer.alloc(12);
        head.writeBigUInt64LE(BigInt(32 << 20));
        head.writeInt32LE(RPCCode.CallFunc, 8);
        return Buffer.concat([head, Buffer.alloc(n, 1)]);
      };
      // 15 of 32 MiB: under half, held as pieces (15 MiB)
      first.peer.send(partial(15 << 20));
      await waitUntil(() => server.pendingBytes >= 15 << 20, 20000, 'the first partial packet');
      second.peer.send(partial(15 << 20));
      assert.match(await second.peer.exception(20000), /^RPCServerBusy: the server already holds \d+ bytes of incomplete requests \(its limit is 25165824\)$/);
      await second.ended;
      assert.equal(first.peer.sock.destroyed, false);
      first.peer.destroy();
      await first.ended;
      assert.equal(server.pendingBytes, 0);
      await goodNodeClient(port);
    });
  });

  describe('session timeouts beyond setTimeout (~24.8 days)', () => {
    it('a client session_timeout and a server sessionTimeout of 30 days work in both modes', async () => {
      for (const inferenceOnly of [true, false]) {
        const { port } = await start({ sessionTimeout: 2592000, inferenceOnly, prestartSessions: 1 });
        const res = await runPython(
          PY_INFER +
            `
first = infer(r, 'mlp', np.load(A['mlp_x']))
time.sleep(0.3)
out(first=first, second=infer(r, 'mlp', np.load(A['mlp_x'])))
`,
          pyParams(port, { timeout: 2592000 }),
        );
        assertMlp(res.first, `${inferenceOnly ? 'inference-only' : 'full'} first`);
        assertMlp(res.second, `${inferenceOnly ? 'inference-only' : 'full'} second`);
      }
    });

    it('options out of range are refused at construction, naming the option', () => {
      const bad: Array<[RPCServerOptions, RegExp]> = [
        [{ sessionTimeout: 2e9 }, /sessionTimeout must be a number from 0\.001 to 1000000000, got 2000000000/],
        [{ sessionTimeout: NaN }, /sessionTimeout must be/],
        [{ idleTimeoutMs: -1 }, /idleTimeoutMs must be/],
        [{ maxSessions: 0 }, /maxSessions must be a whole number >= 1, got 0/],
        [{ maxSessions: 2.5 }, /maxSessions must be a whole number/],
        [{ maxPendingBytes: Infinity }, /maxPendingBytes must be/],
        [{ port: 70000 }, /port must be a whole number from 0 to 65535, got 70000/],
      ];
      for (const [opts, want] of bad) {
        assert.throws(
          () => new RPCServer({ port: 0, inferenceOnly: true, modelsDir, ...opts }),
          (e: Error) => e instanceof TvmValueError && want.test(e.message),
          JSON.stringify(opts),
        );
      }
    });
  });

  describe('shutdown deadline', () => {
    it('sessions still open at the deadline raise RPCServerShutdown on their next call (both modes)', async () => {
      for (const inferenceOnly of [true, false]) {
        const { server, port } = await start({ inferenceOnly, prestartSessions: 1 });
        const client = spawnPython(
          PY_INFER +
            `
out(first=infer(r, 'mlp', np.load(A['mlp_x'])))
sys.stdin.readline()
out(err=err_text(lambda: infer(r, 'mlp', np.load(A['mlp_x']))))
`,
          pyParams(port),
        );
        assertMlp((await client.waitFor('first')).first, 'before shutdown');
        await withTimeout(server.close(300), 15000, 'close');
        client.send('go');
        const { err } = await client.waitFor('err');
        assert.match(
          String(err),
          /RPCServerShutdown: the server is shutting down and ended this session after 0.3 s/,
          `${inferenceOnly ? 'inference-only' : 'full'}: ${err}`,
        );
        await client.done();
      }
    });
  });

  describe('soak', () => {
    it('16 stock Python clients x 200 inferences at once: 0 errors, every answer right', async function () {
      this.timeout(300000);
      const { server, port } = await start();
      const fx = fixture('mlp');
      const res = await runPython(
        `
import multiprocessing as mp
sys.path.insert(0, os.path.join(os.getcwd(), 'scripts'))
from tni1 import pack, unpack
def client(i):
    r = rpc.connect(A['host'], A['port'])
    f = r.get_function("tvm_node.infer")
    x = np.load(A['mlp_x'])
    want = np.load(A['mlp_y'])
    errors = 0
    for _ in range(200):
        try:
            (y,) = unpack(f("mlp", pack([x])))
            if not np.allclose(y, want, rtol=1e-4, atol=1e-5): errors += 1
        except Exception as e:
            errors += 1
    return errors
with mp.get_context("fork").Pool(16) as pool:
    out(errors=pool.map(client, range(16)))
`,
        { ...pyParams(port), mlp_y: fixtureFile(fx.cases[0].outputs[0]) },
        280000,
      );
      assert.deepEqual(res.errors, Array(16).fill(0));
      await waitUntil(() => server.activeSessions === 0, 20000, 'sessions to end');
    });
  });
});

describe('TNI1 codec', () => {
  it('round-trips tensors of several dtypes; views keep the data', () => {
    const a = new Float32Array([1, 2, 3, 4, 5, 6]);
    const b = new Int8Array([-1, 2, -3]);
    const c = new BigInt64Array([1n, -2n]);
    const out = decodeBlob(
      encodeBlob([
        { data: a, shape: [2, 3], dtype: 'float32' },
        { data: b, shape: [3], dtype: 'int8' },
        { data: c, shape: [2], dtype: 'int64' },
      ]),
    );
    assert.deepEqual(
      out.map((t) => [t.shape, t.dtype]),
      [
        [[2, 3], 'float32'],
        [[3], 'int8'],
        [[2], 'int64'],
      ],
    );
    assert.deepEqual(Array.from(new Float32Array(Uint8Array.from(out[0].bytes).buffer)), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(Array.from(new Int8Array(Uint8Array.from(out[1].bytes).buffer)), [-1, 2, -3]);
    assert.deepEqual(Array.from(new BigInt64Array(Uint8Array.from(out[2].bytes).buffer)), [1n, -2n]);
  });

  it('checkCount sees the count before any entry is read', () => {
    const request = blob({ tensors: [1, 2, 3] });
    assert.throws(
      () =>
        decodeBlob(request, {
          checkCount: (n) => {
            throw new Error(`count ${n}`);
          },
        }),
      /count 3/,
    );
  });
});

describe('rpc-server start-up failures (CLI)', function () {
  this.timeout(120000);
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-startup-test-'));
    fs.copyFileSync(fixture('mlp').path, path.join(dir, 'mlp.so'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** Runs `tvm-node rpc-server ...args`; it must exit by itself (a server left running fails the test). */
  function rpcServer(...args: string[]) {
    const r = spawnSync(process.execPath, ['--require', 'tsx/cjs', 'lib/cli.ts', 'rpc-server', '--port', '0', ...args], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 60000,
    });
    assert.equal(r.error, undefined, `still running after 60 s: ${r.stdout}${r.stderr}`);
    return { status: r.status, lines: r.stderr.trim().split('\n'), stdout: r.stdout };
  }

  it('a malformed manifest: exit 1, one line naming the file, a hint about manifests', () => {
    fs.writeFileSync(path.join(dir, 'mlp.json'), '{ inputs: oops }');
    try {
      const r = rpcServer('--models', dir, '--inference-only');
      assert.equal(r.status, 1, r.lines.join('\n'));
      assert.equal(r.lines.length, 2, r.lines.join('\n'));
      assert.ok(r.lines[0].startsWith('tvm-node: ') && r.lines[0].includes(path.join(dir, 'mlp.json')), r.lines[0]);
      assert.match(r.lines[1], /^hint: .*manifest/);
      assert.doesNotMatch(r.stdout, /listening/);
    } finally {
      fs.rmSync(path.join(dir, 'mlp.json'));
    }
  });

  it('--models naming a missing folder: exit 1 naming it', () => {
    const missing = path.join(dir, 'nope');
    const r = rpcServer('--models', missing);
    assert.equal(r.status, 1, r.lines.join('\n'));
    assert.ok(r.lines[0].includes(missing), r.lines[0]);
    assert.match(r.lines[1], /^hint: give --models an existing folder/);
  });

  it('a port already in use: exit 1, "the address is in use", a hint about --port', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, HOST, resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const r = rpcServer('--models', dir, '--port', String(port));
      assert.equal(r.status, 1, r.lines.join('\n'));
      assert.equal(r.lines[0], `tvm-node: cannot listen on 127.0.0.1:${port}: the address is in use [RuntimeError]`);
      assert.match(r.lines[1], /^hint: choose another --port/);
    } finally {
      blocker.close();
    }
  });

  it('an unreachable tracker: exit 1 naming the tracker address', async () => {
    const port = await closedPort();
    const r = rpcServer('--tracker', `127.0.0.1:${port}`);
    assert.equal(r.status, 1, r.lines.join('\n'));
    assert.match(r.lines[0], new RegExp(`^tvm-node: cannot register with the tracker at 127\\.0\\.0\\.1:${port}: `));
    assert.match(r.lines[1], /^hint: check --tracker/);
  });

  it('--session-timeout beyond what timers can wait is a usage error (exit 2)', () => {
    const r = rpcServer('--session-timeout', '99999999999');
    assert.equal(r.status, 2, r.lines.join('\n'));
    assert.match(r.lines[0], /--session-timeout '99999999999': more than 1e9 seconds/);
  });
});

describe('full-mode path confinement', () => {
  it('a symlink in the work directory cannot lead out of it', () => {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-confine-test-'));
    try {
      fs.symlinkSync('/etc', path.join(work, 'out'));
      fs.symlinkSync('/etc/passwd', path.join(work, 'pw'));
      fs.mkdirSync(path.join(work, 'sub'));
      assert.throws(() => confine(work, 'out/passwd'), /outside the session's work directory/);
      assert.throws(() => confine(work, 'pw'), /outside the session's work directory/);
      assert.throws(() => confine(work, 'out/new-file'), /outside the session's work directory/);
      assert.equal(confine(work, 'sub/model.so'), path.join(work, 'sub', 'model.so'));
      assert.equal(confine(work, 'model.so'), path.join(work, 'model.so'));
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  });
});
