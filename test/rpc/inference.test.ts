/**
 * tvm-node's RPCServer in inference-only mode (lib/rpc/inference-session.ts), run in-process
 * on 127.0.0.1 with port 0, against TVM's stock Python client (tvm/.venv), tvm-node's own
 * client and raw sockets speaking TVM's wire protocol. Only `tvm_node.infer`,
 * `tvm_node.models` and `tvm_node.end_session` are served; everything else is refused with
 * an exception the client raises, and the session goes on.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Tensor, TvmValueError, VirtualMachine } from '../../lib';
import { connect } from '../../lib/rpc/client';
import { encodeInputs } from '../../lib/rpc/infer';
import { RPCServer, type RPCServerOptions } from '../../lib/rpc/server';
import { encodePacket, RPC_PROTOCOL_VERSION, RPCCode } from '../../lib/rpc/wire';
import { assertMatches, fixture, npy } from '../fixtures';
import {
  assertMlp,
  assertNumbersMatch,
  callFunc,
  clientHello,
  getGlobalFunc,
  goodNodeClient,
  HOST,
  initServer,
  killAllClients,
  nextEvent,
  PY_INFER,
  pyParams,
  RawPeer,
  rawExchange,
  runPython,
  sleep,
  spawnPython,
  waitUntil,
  watchedRawSession,
  withTimeout,
} from './peers';

describe('RPCServer inference-only mode (in-process sessions, model repository)', function () {
  this.timeout(120000);
  const servers: RPCServer[] = [];
  let modelsDir: string;
  let server: RPCServer;
  let port: number;

  async function start(opts: RPCServerOptions = {}): Promise<{ server: RPCServer; port: number }> {
    const s = new RPCServer({ host: HOST, port: 0, inferenceOnly: true, modelsDir, ...opts });
    servers.push(s);
    const addr = await withTimeout(s.listen(), 10000, 'listen');
    return { server: s, port: addr.port };
  }

  before(async () => {
    const mlp = fixture('mlp');
    const conv = fixture('conv');
    modelsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-inference-test-'));
    fs.copyFileSync(mlp.path, path.join(modelsDir, 'mlp.so'));
    fs.copyFileSync(conv.path, path.join(modelsDir, 'conv.so'));
    const x = mlp.cases[0].inputs[0];
    fs.writeFileSync(path.join(modelsDir, 'mlp.json'), JSON.stringify({ inputs: [{ name: x.name, shape: x.shape, dtype: x.dtype }] }));
    ({ server, port } = await start({ maxMessageBytes: 1 << 20, stallTimeoutMs: 1000 }));
  });

  after(async () => {
    killAllClients();
    await Promise.all(servers.map((s) => withTimeout(s.close(1000), 10000, 'server close').catch(() => undefined)));
    fs.rmSync(modelsDir, { recursive: true, force: true });
  });

  describe('stock Python client (tvm.rpc.connect)', () => {
    it('infers mlp and conv with reference results; tvm_node.models lists both', async () => {
      const res = await runPython(
        PY_INFER +
          `
out(models=json.loads(r.get_function('tvm_node.models')()),
    mlp=infer(r, 'mlp', np.load(A['mlp_x'])),
    conv=infer(r, 'conv', np.load(A['conv_x'])))
`,
        pyParams(port),
      );
      assertMlp(res.mlp, 'python mlp');
      const conv = fixture('conv');
      assertNumbersMatch(res.conv as number[], conv.cases[0].outputs[0], conv.tolerance);
      const models = res.models as Array<{ name: string; inputs?: unknown; function: string; device: string }>;
      assert.deepEqual(
        models.map((m) => m.name),
        ['conv', 'mlp'],
      );
      assert.deepEqual(models[1].inputs, [{ name: 'x', shape: [4, 16], dtype: 'float32' }]);
      assert.equal(models[0].inputs, undefined);
      assert.equal(models[1].function, 'main');
      assert.equal(models[1].device, 'cpu');
    });

    it('refuses upload, other global functions, device memory, load_module and session constructors; the session goes on', async () => {
      const res = await runPython(
        PY_INFER +
          `
x = np.load(A['mlp_x'])
def after(name, fn):
    out(**{name: err_text(fn), name + '_then': infer(r, 'mlp', x)})
after('upload', lambda: r.upload(bytearray(b'x'), 'a.so'))
after('ffi', lambda: r.get_function('runtime.GetFFIVersion'))
after('tensor', lambda: tvm.runtime.tensor(x, r.cpu()))
after('load', lambda: r.load_module('mlp.so'))
after('ctor', lambda: rpc.connect(A['host'], A['port'], session_constructor_args=['rpc.LocalSession']))
f = r.get_function('tvm_node.infer')
after('nosuch', lambda: f('nosuch', pack([x])))
after('badname', lambda: f('../mlp', pack([x])))
after('badblob', lambda: f('mlp', bytearray(b'xxxx1234')))
after('badargs', lambda: f(1, 2))
`,
        pyParams(port),
      );
      const served = 'tvm_node.infer, tvm_node.models, tvm_node.end_session, tvm_node.open_channel';
      for (const k of ['upload', 'ffi', 'tensor', 'load', 'ctor']) {
        assert.ok(typeof res[k] === 'string', `${k} was not refused`);
        assert.match(res[k], /PermissionError: inference-only server: /, `${k}: ${res[k]}`);
        assertMlp(res[`${k}_then`], `infer after the ${k} refusal`);
      }
      assert.ok(res.upload.includes(`'tvm.rpc.server.upload' is not served (it serves ${served})`), res.upload);
      assert.ok(res.ffi.includes(`'runtime.GetFFIVersion' is not served (it serves ${served})`), res.ffi);
      assert.ok(res.tensor.includes(`DevAllocDataWithScope is not served (only ${served})`), res.tensor);
      assert.ok(res.load.includes(`'tvm.rpc.server.load_module' is not served`), res.load);
      assert.ok(res.ctor.includes('custom session constructors are not served'), res.ctor);
      // bad requests to tvm_node.infer itself: errors the client raises, then it goes on
      const bad: Record<string, string> = {
        nosuch: "ValueError: no model 'nosuch' in the repository",
        badname: "ValueError: bad model name '../mlp'",
        badblob: 'ValueError: bad tensor blob: it does not start with "TNI1"',
        badargs: 'ValueError: tvm_node.infer takes (model: str, request: bytes)',
      };
      for (const [k, text] of Object.entries(bad)) {
        assert.ok(typeof res[k] === 'string' && res[k].endsWith(`\n${text}`), `${k}: ${res[k]}`);
        assertMlp(res[`${k}_then`], `infer after ${k}`);
      }
    });
  });

  describe('tvm-node client', () => {
    it('infer() matches the reference, models() lists the repository, dispose() ends the session', async () => {
      const fx = fixture('mlp');
      const started = nextEvent(server, 'session');
      const s = await withTimeout(connect(HOST, port), 30000, 'connect');
      const [id, addr, pid] = await started;
      assert.equal(addr, HOST);
      assert.equal(pid, undefined);
      const ended = nextEvent(server, 'sessionEnd', 5000, (endId) => endId === id);
      try {
        const x = npy(fx.cases[0].inputs[0]);
        const [y] = await s.infer('mlp', [{ data: x.data as Float32Array, shape: x.shape }]);
        assert.deepEqual(y.shape, [4, 8]);
        assertMatches(y, fx.cases[0].outputs[0], fx.tolerance);
        const models = await s.models();
        assert.deepEqual(
          models.map((m) => m.name),
          ['conv', 'mlp'],
        );
        assert.equal(models[1].bytes, fs.statSync(fx.path).size);
        assert.deepEqual(models[1].inputs, [{ name: 'x', shape: [4, 16], dtype: 'float32' }]);
        // a second infer in the same session (one request each)
        const [y2] = await s.infer('mlp', [{ data: x.data as Float32Array, shape: x.shape }]);
        assertMatches(y2, fx.cases[0].outputs[0], fx.tolerance);
      } finally {
        await s.dispose();
      }
      const [, end] = await ended;
      assert.equal(end, 'closed');
    });

    it('inferReply() says how long the server took; the empty model name is a ping; chains need named models', async () => {
      const fx = fixture('mlp');
      const s = await withTimeout(connect(HOST, port), 30000, 'connect');
      try {
        const x = npy(fx.cases[0].inputs[0]);
        const reply = await s.inferReply('mlp', [{ data: x.data as Float32Array, shape: x.shape }]);
        assertMatches(reply.outputs[0], fx.cases[0].outputs[0], fx.tolerance);
        reply.outputs[0].disposeSync();
        assert.ok(reply.server, 'a tvm-node server reports its timing');
        assert.ok(reply.server.runUs > 0 && reply.server.totalUs >= reply.server.runUs, JSON.stringify(reply.server));
        const ping = await s.inferReply('', []);
        assert.deepEqual(ping.outputs, []);
        // A ping with a payload: read and dropped (clients measure bandwidth with it).
        const payload = await s.inferReply('', [{ data: new Uint8Array(200_000).fill(7), shape: [200_000], dtype: 'uint8' }]);
        assert.deepEqual(payload.outputs, []);
        await assert.rejects(s.inferReply('mlp|nothing', [{ data: x.data as Float32Array, shape: x.shape }]), /nothing/);
        await assert.rejects(s.inferReply(Array(17).fill('mlp').join('|'), []), /a chain of 17 models: at most 16 may run in one request/);
        // mlp's manifest names its input only: it cannot take part in a chain.
        await assert.rejects(
          s.inferReply('mlp|mlp', [{ data: x.data as Float32Array, shape: x.shape }]),
          /cannot be chained: its manifest does not name all its inputs and outputs/,
        );
        const [again] = await s.infer('mlp', [{ data: x.data as Float32Array, shape: x.shape }]);
        assertMatches(again, fx.cases[0].outputs[0], fx.tolerance);
      } finally {
        await s.dispose();
      }
    });
  });

  describe('shared model cache', () => {
    it('3 sessions in a row (Node, Python, Node) load mlp once', async () => {
      const { server: s, port: p } = await start();
      const repo = s.repository!;
      assert.ok(repo);
      assert.deepEqual(repo.stats, { loads: 0, hits: 0, evictions: 0 });
      await goodNodeClient(p);
      assert.equal(repo.stats.loads, 1);
      const res = await runPython(PY_INFER + `out(mlp=infer(r, 'mlp', np.load(A['mlp_x'])))\n`, pyParams(p));
      assertMlp(res.mlp, 'python, second session');
      await goodNodeClient(p);
      assert.equal(repo.stats.loads, 1, 'mlp was loaded more than once');
      assert.equal(repo.stats.hits, 2);
      assert.deepEqual(repo.loaded, ['mlp']);
    });
  });

  describe('concurrency', () => {
    it('serves 8 tvm-node clients at once, each with its own input and the right output', async () => {
      const fx = fixture('mlp');
      const x0 = npy(fx.cases[0].inputs[0]);
      const inputs = Array.from({ length: 8 }, (_, i) =>
        Float32Array.from(x0.data as Float32Array, (v, j) => (i === 0 ? v : v * (1 + 0.25 * i) - 0.1 * i + 0.01 * (j % 7))),
      );
      // references: the same model run locally (itself checked against numpy in vm.test.ts)
      const local = await VirtualMachine.load(fx.path);
      const refs: Float32Array[] = [];
      for (const x of inputs) refs.push(((await local.run('main', Tensor.fromSync(x, { shape: x0.shape }))) as Tensor).toArraySync() as Float32Array);
      await local.dispose();
      // The clients run in this process, whose libuv pool also runs the server's inferences:
      // lib/scheduling.ts keeps their blocked requests from taking every pool thread.
      let most = 0;
      const count = () => (most = Math.max(most, server.activeSessions));
      server.on('session', count);
      let outs: Array<{ shape: number[]; dtype: string; data: number[] }>;
      try {
        outs = await withTimeout(
          Promise.all(
            inputs.map(async (x) => {
              const s = await connect(HOST, port);
              try {
                const [y] = await s.infer('mlp', [{ data: x, shape: x0.shape }]);
                await sleep(300); // hold the session, so that they overlap
                return { shape: y.shape, dtype: y.dtype, data: Array.from(y.toArraySync() as Float32Array) };
              } finally {
                await s.dispose();
              }
            }),
          ),
          60000,
          '8 concurrent clients',
        );
      } finally {
        server.off('session', count);
      }
      assert.equal(outs.length, 8);
      assertMatches(Tensor.fromSync(Float32Array.from(outs[0].data), { shape: outs[0].shape }), fx.cases[0].outputs[0], fx.tolerance);
      outs.forEach((y, i) => {
        assert.deepEqual(y.shape, [4, 8]);
        assert.equal(y.dtype, 'float32');
        assert.equal(y.data.length, refs[i].length);
        for (let j = 0; j < y.data.length; j++)
          assert.ok(Math.abs(y.data[j] - refs[i][j]) <= 1e-5 + 1e-5 * Math.abs(refs[i][j]), `client ${i} [${j}]: ${y.data[j]} vs ${refs[i][j]}`);
      });
      assert.notDeepEqual(outs[1].data, outs[2].data);
      assert.ok(most >= 2, `at most ${most} sessions at once`);
      await waitUntil(() => server.activeSessions === 0, 10000, 'all sessions to end');
    });

    it('serves a second client while a first holds its session open', async () => {
      const a = spawnPython(
        PY_INFER + `out(first=infer(r, 'mlp', np.load(A['mlp_x'])))\nsys.stdin.readline()\nout(second=infer(r, 'mlp', np.load(A['mlp_x'])))\n`,
        pyParams(port),
      );
      const first = await a.waitFor('first', 30000);
      assertMlp(first.first, 'client A, first');
      assert.equal(server.activeSessions, 1);
      await goodNodeClient(port);
      assert.equal(server.activeSessions, 1, "client A's session did not stay open");
      a.send('go');
      const ra = await a.done(30000);
      assert.equal(ra.code, 0, ra.stderr.slice(-3000));
      assertMlp(Object.assign({}, ...ra.results).second, 'client A, second');
    });
  });

  describe('maxMessageBytes', () => {
    it('an oversized infer request raises RPCMessageTooLarge; the same session then infers correctly', async () => {
      const res = await runPython(
        PY_INFER +
          `
big = np.ones((4, 128 * 1024), dtype='float32')
assert big.nbytes == 2 * 1024 * 1024
out(err=err_text(lambda: infer(r, 'mlp', big)), mlp=infer(r, 'mlp', np.load(A['mlp_x'])))
`,
        pyParams(port),
      );
      assert.ok(typeof res.err === 'string', 'a 2 MiB request was accepted under a 1 MiB limit');
      assert.match(res.err, /RPCMessageTooLarge/);
      assert.match(res.err, /exceeds the server's limit of 1048576 bytes/);
      assertMlp(res.mlp, 'infer after the oversized request');
    });
  });

  describe('bad bytes (each followed by a good client)', () => {
    afterEach(async () => {
      await waitUntil(() => server.activeSessions === 0, 10000, 'the bad session to end');
      await goodNodeClient(port);
      await waitUntil(() => server.activeSessions === 0, 10000, 'the good session to end');
    });

    it('garbage after a valid handshake: exception replies, only that session affected', async () => {
      // a plausible packet with an unknown code and junk, then a CallFunc with a truncated body
      const peer = await RawPeer.open(port);
      await peer.init();
      peer.send(encodePacket(99 as RPCCode, [Buffer.alloc(16, 0xee)]));
      assert.equal(
        await peer.exception(),
        'PermissionError: inference-only server: code 99 is not served (only tvm_node.infer, tvm_node.models, tvm_node.end_session, tvm_node.open_channel)',
      );
      peer.send(encodePacket(RPCCode.CallFunc, [Buffer.from([1, 2, 3])]));
      assert.match(await peer.exception(), /^ValueError: truncated packet/);
      peer.send(callFunc(0xdeadn, []));
      assert.equal(await peer.exception(), 'PermissionError: inference-only server: no function with handle 0xdead');
      // the session still serves
      assert.deepEqual(await peer.modelNames(await peer.handle('tvm_node.models')), ['conv', 'mlp']);
      peer.destroy();

      // random bytes: their length prefix is far over the limit
      const junk = Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 97 + 13) & 0xff));
      const claimed = junk.readBigUInt64LE(0);
      const peer2 = await RawPeer.open(port);
      peer2.send(junk);
      assert.equal(await peer2.exception(), `RPCMessageTooLarge: RPC message of ${claimed} bytes exceeds the server's limit of 1048576 bytes`);
      peer2.destroy();
    });

    it('a packet claiming 2^62 bytes: RPCMessageTooLarge, nothing allocated', async () => {
      const rss0 = process.memoryUsage().rss;
      const peer = await RawPeer.open(port);
      await peer.init();
      // the header, then 32 MiB of its "body": skipped as it streams by, never kept
      const huge = Buffer.alloc(12);
      huge.writeBigUInt64LE(2n ** 62n);
      huge.writeInt32LE(RPCCode.CallFunc, 8);
      peer.send(huge);
      assert.equal(await peer.exception(), `RPCMessageTooLarge: RPC message of ${2n ** 62n} bytes exceeds the server's limit of 1048576 bytes`);
      const chunk = Buffer.alloc(1 << 20, 0x5a);
      for (let i = 0; i < 32; i++) {
        if (!peer.sock.write(chunk)) await withTimeout(new Promise((r) => peer.sock.once('drain', r)), 10000, 'the server to take the skipped body');
      }
      const growth = process.memoryUsage().rss - rss0;
      assert.ok(growth < 100 * 2 ** 20, `rss grew by ${(growth / 2 ** 20).toFixed(0)} MiB`);
      assert.equal(peer.sock.destroyed, false, 'the server hung up instead of skipping');
      peer.destroy();
    });

    it('a request before InitServer gets an exception reply', async () => {
      const peer = await RawPeer.open(port);
      peer.send(getGlobalFunc('tvm_node.infer'));
      assert.equal(await peer.exception(), 'ValueError: the session was not initialized (InitServer first)');
      // then initialized, it serves
      await peer.init();
      assert.deepEqual(await peer.modelNames(await peer.handle('tvm_node.models')), ['conv', 'mlp']);
      peer.destroy();
    });

    it('a truncated packet, then close', async () => {
      const { peer, ended } = await watchedRawSession(server, port, 10000);
      await peer.init();
      const whole = callFunc(await peer.handle('tvm_node.models'), []);
      peer.sock.end(whole.subarray(0, whole.length - 5));
      const [, end] = await ended;
      assert.equal(end, 'closed');
      await peer.closed;
    });

    it('a wrong protocol version in InitServer', async () => {
      const peer = await RawPeer.open(port);
      peer.send(initServer('0.7.0'));
      assert.equal(await peer.exception(), `ValueError: client protocol 0.7.0 does not match the server's ${RPC_PROTOCOL_VERSION}`);
      // not initialized by it
      peer.send(getGlobalFunc('tvm_node.models'));
      assert.equal(await peer.exception(), 'ValueError: the session was not initialized (InitServer first)');
      peer.destroy();
    });

    it('RPC bytes sent before the handshake is answered: refused without a reply', async () => {
      // TVM's clients wait for the server's answer before their first packet; the server reads
      // exactly the handshake and refuses a client that runs ahead of it.
      const refused = nextEvent(server, 'refused');
      const { reply } = await rawExchange(port, Buffer.concat([clientHello(''), initServer()]), { end: true });
      assert.equal(reply.length, 0);
      assert.equal((await refused)[0], 'data before the handshake was answered');
    });
  });

  describe('a client that never reads', () => {
    it('loses its session after stallTimeoutMs while a good client is served; rss stays bounded', async () => {
      const rss0 = process.memoryUsage().rss;
      const { peer, ended } = await watchedRawSession(server, port, 30000);
      await peer.init();
      const models = await peer.handle('tvm_node.models');
      const infer = await peer.handle('tvm_node.infer');
      // from now on nothing is read: stop the socket and drop what comes
      peer.sock.pause();
      peer.sock.removeAllListeners('data');
      const conv = npy(fixture('conv').cases[0].inputs[0]);
      const convReq = callFunc(infer, [
        { kind: 'str', value: 'conv' },
        { kind: 'bytes', value: encodeInputs([{ data: conv.data as Float32Array, shape: conv.shape }]) },
      ]);
      // ~500 bytes of reply per models call: 40000 calls are ~20 MB of replies, far more than
      // the socket buffers hold; interleaved with some conv inferences
      const modelsReq = callFunc(models, []);
      const batch = Buffer.concat([convReq, ...Array.from({ length: 400 }, () => modelsReq)]);
      for (let i = 0; i < 100; i++) peer.sock.write(batch);
      const t0 = Date.now();
      // meanwhile a good client is served
      await goodNodeClient(port);
      const [, end] = await ended;
      assert.equal(end, 'closed');
      const took = Date.now() - t0;
      assert.ok(took >= 900 && took < 20000, `the stalled session ended after ${took} ms (stallTimeoutMs 1000)`);
      // the server hung up: reading again (and dropping what was left) ends in 'close'
      peer.sock.resume();
      await withTimeout(peer.closed, 10000, 'the server to hang up on the stalled client');
      const growth = process.memoryUsage().rss - rss0;
      assert.ok(growth < 100 * 2 ** 20, `rss grew by ${(growth / 2 ** 20).toFixed(0)} MiB`);
      peer.destroy();
      await goodNodeClient(port);
      await waitUntil(() => server.activeSessions === 0, 10000, 'all sessions to end');
    });
  });

  describe('binding and options', () => {
    it('inferenceOnly may listen on 0.0.0.0 without trustRemoteClients', async () => {
      const s = new RPCServer({ host: '0.0.0.0', port: 0, inferenceOnly: true, modelsDir });
      const addr = await withTimeout(s.listen(), 10000, 'listen on 0.0.0.0');
      try {
        assert.equal(addr.address, '0.0.0.0');
        assert.ok(addr.port > 0);
        await goodNodeClient(addr.port);
      } finally {
        await withTimeout(s.close(1000), 10000, 'close');
      }
    });

    it('inferenceOnly without modelsDir is a TvmValueError naming modelsDir', () => {
      assert.throws(
        () => new RPCServer({ port: 0, inferenceOnly: true }),
        (e: Error) => e instanceof TvmValueError && /modelsDir/.test(e.message),
      );
    });
  });

  describe('session timeout', () => {
    it('a Python session that outlives sessionTimeout gets RPCSessionTimeoutError on its next call', async () => {
      const { server: s, port: p } = await start({ sessionTimeout: 1 });
      const ended = nextEvent(s, 'sessionEnd', 30000);
      const res = await runPython(
        PY_INFER +
          `
first = infer(r, 'mlp', np.load(A['mlp_x']))
time.sleep(2.5)
out(first=first, err=err_text(lambda: infer(r, 'mlp', np.load(A['mlp_x']))))
`,
        pyParams(p),
        60000,
      );
      assertMlp(res.first, 'infer before the timeout');
      assert.ok(typeof res.err === 'string', 'the call after the timeout succeeded');
      assert.match(res.err, /RPCSessionTimeoutError/);
      assert.match(res.err, /Your 1s session has expired/);
      await ended;
      assert.equal(s.activeSessions, 0);
      await goodNodeClient(p);
    });
  });
});
