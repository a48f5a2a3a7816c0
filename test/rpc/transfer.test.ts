/**
 * Wire-speed tensor transfer (lib/rpc/tensor-stream.ts, lib/rpc/channel.ts) end to end:
 * `session.infer` through the inference channel, with tensors of every echo dtype from 1 byte
 * to 256 MiB, bit-exact; TVM's stock Python client on the same server (its large requests are
 * streamed into tensors too); full TVM mode; clients that die mid-transfer; the message limit
 * through the channel; a large transfer beside small inferences; channel token misuse; wrong
 * inputs. Real servers in this process on loopback, TVM's Python client from the pinned venv,
 * raw sockets speaking TVM's wire protocol.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { type Tensor, TvmError, TvmValueError } from '../../lib';
import { CHANNEL_KEY_PREFIX, InferenceChannel } from '../../lib/rpc/channel';
import { connect, type RPCSession } from '../../lib/rpc/client';
import { encodeInputs, type InferInput } from '../../lib/rpc/infer';
import { RPC_CODE_MISMATCH } from '../../lib/rpc/protocol';
import { RPCServer, type RPCServerOptions } from '../../lib/rpc/server';
import { setTransferCache, TensorStreamer } from '../../lib/rpc/tensor-stream';
import { decodeBlob, layoutBlob } from '../../lib/rpc/tni1';
import { RPCCode, type WireValue } from '../../lib/rpc/wire';
import { assertMatches, fixture, npy } from '../fixtures';
import { assertSameBytes, mappingRss, withBytes } from './bytes';
import {
  assertMlp,
  callFunc,
  clientHello,
  getGlobalFunc,
  HOST,
  killAllClients,
  nextEvent,
  PY_INFER,
  pyParams,
  RawPeer,
  runPython,
  sleep,
  waitUntil,
  withTimeout,
} from './peers';

const MiB = 2 ** 20;
const rssMiB = () => process.memoryUsage().rss / MiB;

/** A full GC (as test/soak.test.ts gets one): `global.gc` under --expose-gc, else through V8's flags. */
function collector(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return g;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

/** How far RSS (MiB) fell below `from`, once it fell by `by` or `ms` passed (large mappings are unmapped off the JS thread). */
async function rssDrop(from: number, by: number, ms: number): Promise<number> {
  const end = Date.now() + ms;
  while (from - rssMiB() <= by && Date.now() < end) await sleep(20);
  return from - rssMiB();
}

/** RSS in MiB once the garbage of JS (the socket's spent read buffers, above all) is collected. */
async function settledRssMiB(gc: () => void): Promise<number> {
  // Large mappings are unmapped on a thread of their own (native/host_buffer.cc): wait until
  // the reading stops falling, not just for the collector.
  let last = Number.POSITIVE_INFINITY;
  let stable = 0;
  for (let i = 0; i < 40 && stable < 3; i++) {
    gc();
    await sleep(100);
    const now = rssMiB();
    stable = last - now < 4 ? stable + 1 : 0;
    last = now;
  }
  return last;
}

// ---- echo inputs: random bytes of each dtype, with NaN payloads, -0 and infinities planted ----

const ECHO_DTYPES = ['float32', 'float16', 'int8', 'uint8', 'int64'] as const;
type EchoDType = (typeof ECHO_DTYPES)[number];
const ITEM: Record<EchoDType, number> = { float32: 4, float16: 2, int8: 1, uint8: 1, int64: 8 };
/** Bit patterns a float conversion would change: -0, quiet NaN with a payload, signalling NaN, negative NaN, +inf. */
const SPECIAL_F32 = [0x80000000, 0x7fc12345, 0x7f800001, 0xffffffff, 0x7f800000];
const SPECIAL_F16 = [0x8000, 0x7e01, 0x7c01, 0xfe00, 0x7c00];

/** Element counts per echo input. */
type EchoCounts = Record<EchoDType, number>;

/** Element counts with odd sizes whose bytes add up to exactly `total`. */
function spread(total: number): EchoCounts {
  const f32 = Math.floor(total / 4 / 4) - 1;
  const f16 = Math.floor(total / 4 / 2) - 1;
  const i8 = Math.floor(total / 8) - 3;
  const i64 = Math.floor(total / 4 / 8) - 1;
  return { float32: f32, float16: f16, int8: i8, int64: i64, uint8: total - 4 * f32 - 2 * f16 - i8 - 8 * i64 };
}

const totalBytes = (c: EchoCounts) => ECHO_DTYPES.reduce((n, d) => n + c[d] * ITEM[d], 0);

/** The echo model's inputs (random bytes, specials planted) and their bytes, for comparing. */
function echoInputs(counts: EchoCounts): { inputs: InferInput[]; bytes: Buffer[] } {
  const bytes = ECHO_DTYPES.map((d) => {
    const b = Buffer.from(new ArrayBuffer(counts[d] * ITEM[d]));
    // randomFillSync takes at most 2^31-1 bytes a call
    for (let at = 0; at < b.length; at += 1 << 30) randomFillSync(b, at, Math.min(1 << 30, b.length - at));
    return b;
  });
  const f32 = new Uint32Array(bytes[0].buffer, 0, counts.float32);
  for (let i = 0; i < Math.min(f32.length, SPECIAL_F32.length); i++) f32[i] = SPECIAL_F32[i];
  const f16 = new Uint16Array(bytes[1].buffer, 0, counts.float16);
  for (let i = 0; i < Math.min(f16.length, SPECIAL_F16.length); i++) f16[i] = SPECIAL_F16[i];
  const inputs: InferInput[] = [
    { data: new Float32Array(bytes[0].buffer), shape: [counts.float32] },
    { data: new Uint16Array(bytes[1].buffer), shape: [counts.float16], dtype: 'float16' },
    { data: new Int8Array(bytes[2].buffer), shape: [counts.int8] },
    { data: new Uint8Array(bytes[3].buffer), shape: [counts.uint8] },
    { data: new BigInt64Array(bytes[4].buffer), shape: [counts.int64] },
  ];
  return { inputs, bytes };
}

/** Asserts echo outputs are the inputs, bit for bit; disposes them. */
async function assertEchoed(outputs: Tensor[], counts: EchoCounts, bytes: Buffer[], what: string): Promise<void> {
  try {
    assert.deepEqual(
      outputs.map((t) => [t.dtype, t.shape]),
      ECHO_DTYPES.map((d) => [d, [counts[d]]]),
      what,
    );
    outputs.forEach((t, i) => withBytes(t, (b) => assertSameBytes(b, bytes[i], `${what}: y_${ECHO_DTYPES[i]}`)));
  } finally {
    await Promise.all(outputs.map((t) => t.dispose()));
  }
}

// ---- what the transfer path did: streams opened (in this process: server and client), channel calls ----

/** Bodies TensorStreamer took over (by packet code: CallFunc requests, Return replies) and declined. */
const streams = { opened: [] as Array<{ code: number; length: number }>, declined: [] as number[] };
/** Inferences that went through an inference channel. */
let channelCalls = 0;

function installSpies(): () => void {
  const open = TensorStreamer.prototype.open;
  TensorStreamer.prototype.open = function (prefix, length) {
    const stream = open.call(this, prefix, length);
    if (stream) streams.opened.push({ code: prefix.readInt32LE(0), length });
    else streams.declined.push(length);
    return stream;
  };
  const infer = InferenceChannel.prototype.infer;
  InferenceChannel.prototype.infer = function (model, inputs) {
    channelCalls++;
    return infer.call(this, model, inputs);
  };
  return () => {
    TensorStreamer.prototype.open = open;
    InferenceChannel.prototype.infer = infer;
  };
}

function resetSpies(): void {
  streams.opened.length = 0;
  streams.declined.length = 0;
  channelCalls = 0;
}

/** A raw connection with the handshake done and the session initialized (a channel's key is not echoed: pass the server's). */
async function openPeer(port: number, key = '', serverKey = key): Promise<RawPeer> {
  const peer = await RawPeer.open(port, key, serverKey);
  await peer.init();
  return peer;
}

/** A raw session's inference-channel token (tvm_node.open_channel). */
async function channelToken(owner: RawPeer): Promise<string> {
  const p = await owner.call('tvm_node.open_channel');
  assert.equal(p.code, RPCCode.Return);
  const token = p.values[1] as { kind: string; value: string };
  assert.equal(token.kind, 'str');
  assert.match(token.value, /^[0-9a-f]{32}$/);
  return token.value;
}

/**
 * The start of a tvm_node.infer request (CallFunc: handle, model name, TNI1 blob) whose one
 * input is float32[n], up to the first data byte; and the packet's whole length.
 */
function inferRequestStart(handle: bigint, model: string, n: number): { start: Buffer; packetBytes: number } {
  const { header, offsets, size } = layoutBlob([{ shape: [n], dtype: 'float32' }], [4 * n]);
  const name = Buffer.from(model);
  const head = Buffer.alloc(4 + 8 + 4 + 4 + 8);
  head.writeInt32LE(RPCCode.CallFunc, 0);
  head.writeBigUInt64LE(handle, 4);
  head.writeInt32LE(2, 12);
  head.writeInt32LE(8 /* RawStr */, 16);
  head.writeBigUInt64LE(BigInt(name.length), 20);
  const blobHead = Buffer.alloc(4 + 8 + 8);
  blobHead.writeInt32LE(9 /* ByteArrayPtr */, 0);
  blobHead.writeBigUInt64LE(BigInt(size), 4);
  blobHead.write('TNI1', 12, 'latin1');
  blobHead.writeUInt32LE(header.length, 16);
  const bodyBytes = head.length + name.length + 12 + size;
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(bodyBytes));
  const start = Buffer.concat([length, head, name, blobHead, header, Buffer.alloc(offsets[0] - 8 - header.length)]);
  return { start, packetBytes: 8 + bodyBytes };
}

/** Float32 values k/256 (exact, so x + 1 is exact in float32 and in double). */
function exactFloats(n: number): Float32Array {
  const x = new Float32Array(n);
  const words = new Uint32Array(x.buffer);
  randomFillSync(words);
  for (let i = 0; i < n; i++) x[i] = ((words[i] & 0xfffff) - 0x80000) / 256;
  return x;
}

/** Asserts a tensor is float32 `x + 1`, bit for bit. */
function assertAddOne(y: Tensor, x: Float32Array, what: string): void {
  assert.equal(y.dtype, 'float32', what);
  assert.deepEqual(y.shape, [x.length], what);
  const want = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) want[i] = x[i] + 1;
  withBytes(y, (b) => assertSameBytes(b, Buffer.from(want.buffer), what));
}

/** The float32 values of a raw Return packet's TNI1 blob. */
function blobFloats(p: { code: number; values: WireValue[] }): Float32Array {
  assert.equal(p.code, RPCCode.Return, `expected a Return, got ${JSON.stringify(p.values, (_, v) => (typeof v === 'bigint' ? String(v) : v))}`);
  const [t] = decodeBlob((p.values[1] as { value: Buffer }).value);
  assert.equal(t.dtype, 'float32');
  return new Float32Array(Uint8Array.from(t.bytes).buffer);
}

describe('tensor transfer through the inference channel (lib/rpc/tensor-stream.ts, lib/rpc/channel.ts)', function () {
  this.timeout(60000);
  const servers: RPCServer[] = [];
  const roots: string[] = [];
  let modelsDir: string;
  let server: RPCServer;
  let port: number;
  let restoreSpies: () => void;

  async function start(opts: RPCServerOptions = {}): Promise<{ server: RPCServer; port: number }> {
    const s = new RPCServer({ host: HOST, port: 0, inferenceOnly: true, modelsDir, ...opts });
    servers.push(s);
    const addr = await withTimeout(s.listen(), 10000, 'listen');
    return { server: s, port: addr.port };
  }

  /** A session on `p`, its server-side id, and the id its inference channel reports once opened. */
  async function session(s: RPCServer, p: number): Promise<{ session: RPCSession; id: number; channel: Promise<unknown[]> }> {
    const started = nextEvent(s, 'session');
    const sess = await withTimeout(connect(HOST, p), 30000, 'connect');
    const [id] = (await started) as [number];
    const channel = nextEvent(s, 'channel', 30000, (cid) => cid === id);
    channel.catch(() => undefined);
    return { session: sess, id, channel };
  }

  before(async () => {
    modelsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-transfer-test-'));
    roots.push(modelsDir);
    for (const name of ['addone', 'echo', 'mlp']) {
      const f = fixture(name);
      fs.copyFileSync(f.path, path.join(modelsDir, `${name}.so`));
      fs.copyFileSync(f.path.replace(/\.so$/, '.json'), path.join(modelsDir, `${name}.json`));
    }
    ({ server, port } = await start());
    restoreSpies = installSpies();
  });

  beforeEach(resetSpies);

  after(async () => {
    restoreSpies?.();
    killAllClients();
    await Promise.all(servers.map((s) => withTimeout(s.close(1000), 10000, 'server close').catch(() => undefined)));
    for (const d of roots) fs.rmSync(d, { recursive: true, force: true });
  });

  describe('session.infer (echo), bit-exact', () => {
    const cases: Array<[string, EchoCounts]> = [
      ['1 B (one uint8, the other inputs empty)', { float32: 0, float16: 0, int8: 0, uint8: 1, int64: 0 }],
      ['1 MiB spread across the five dtypes', spread(MiB)],
      ['64 MiB spread across the five dtypes', spread(64 * MiB)],
      ['256 MiB, nearly all in float32', { float32: 64 * 2 ** 20 - 1024, float16: 513, int8: 1001, int64: 127, uint8: 4096 - 1026 - 1001 - 1016 }],
    ];
    for (const [title, counts] of cases) {
      it(`${title}: through the channel, every bit back`, async () => {
        const total = totalBytes(counts);
        assert.equal(total, title.startsWith('1 B') ? 1 : Number(title.split(' ')[0]) * MiB);
        const { session: s, channel } = await session(server, port);
        try {
          const { inputs, bytes } = echoInputs(counts);
          const outputs = await withTimeout(s.infer('echo', inputs), 30000, `echo ${title}`);
          await assertEchoed(outputs, counts, bytes, title);
          await withTimeout(channel, 1000, 'the channel event');
          assert.equal(channelCalls, 1, 'the inference did not go through the channel');
          if (total < 64 * 1024) assert.deepEqual(streams.opened, [], 'a small request was streamed');
          else {
            // the server streamed the request into tensors, the client streamed the reply into its outputs
            assert.deepEqual(
              streams.opened.map((o) => o.code),
              [RPCCode.CallFunc, RPCCode.Return],
            );
            assert.ok(
              streams.opened.every((o) => o.length > total),
              JSON.stringify(streams.opened),
            );
          }
        } finally {
          await s.dispose();
        }
      });
    }
  });

  describe('stock Python client (tvm.rpc.connect + scripts/tni1.py)', () => {
    it('echo 1 MiB and 64 MiB bit-exact; the server streams its requests into tensors', async () => {
      const totals = [MiB, 64 * MiB];
      const res = await runPython(
        PY_INFER +
          `
import hashlib
f = r.get_function('tvm_node.infer')
rng = np.random.default_rng(7)
DT = ['float32', 'float16', 'int8', 'uint8', 'int64']
for total, counts in zip(A['totals'], A['counts']):
    xs = []
    for dt, n in zip(DT, counts):
        raw = rng.integers(0, 256, size=n * np.dtype(dt).itemsize, dtype=np.uint8)
        special = {'float32': np.array(A['f32'], '<u4'), 'float16': np.array(A['f16'], '<u2')}.get(dt)
        if special is not None:
            raw[:special.nbytes] = special.view(np.uint8)
        xs.append(raw.view(dt))
    ys = unpack(f('echo', pack(xs)))
    out(**{str(total): dict(
        same=[x.tobytes() == y.tobytes() for x, y in zip(xs, ys)],
        dtypes=[str(y.dtype) for y in ys],
        shapes=[list(y.shape) for y in ys],
        nan32=int(np.isnan(xs[0]).sum()),
        sent=[hashlib.sha256(x.tobytes()).hexdigest() for x in xs],
        got=[hashlib.sha256(y.tobytes()).hexdigest() for y in ys])})
`,
        pyParams(port, { totals, counts: totals.map((t) => ECHO_DTYPES.map((d) => spread(t)[d])), f32: SPECIAL_F32, f16: SPECIAL_F16 }),
      );
      for (const total of totals) {
        const r = res[String(total)];
        const counts = spread(total);
        assert.deepEqual(r.dtypes, [...ECHO_DTYPES], `${total}`);
        assert.deepEqual(
          r.shapes,
          ECHO_DTYPES.map((d) => [counts[d]]),
        );
        assert.deepEqual(r.got, r.sent, `${total} bytes: the outputs' bytes differ from the inputs'`);
        assert.deepEqual(r.same, [true, true, true, true, true]);
        assert.ok(r.nan32 >= 3, `only ${r.nan32} NaNs in the float32 input`);
      }
      // both requests were streamed into tensors by the server (the replies went to Python)
      const requests = streams.opened.filter((o) => o.code === RPCCode.CallFunc).map((o) => o.length);
      assert.equal(requests.length, 2, JSON.stringify(streams));
      assert.ok(requests[0] > MiB && requests[1] > 64 * MiB, JSON.stringify(requests));
      assert.equal(channelCalls, 0);
    });
  });

  describe('full TVM mode', () => {
    it("session.infer goes through a channel served by the server process (bit-exact); a stock Python client's session works", async () => {
      const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tvm-node-transfer-full-'));
      roots.push(root);
      const full = new RPCServer({ host: HOST, port: 0, modelsDir, workRoot: root, prestartSessions: 1 });
      servers.push(full);
      const fullPort = (await withTimeout(full.listen(), 10000, 'listen')).port;
      const { session: s, channel } = await session(full, fullPort);
      try {
        for (const total of [MiB, 16 * MiB]) {
          const counts = spread(total);
          const { inputs, bytes } = echoInputs(counts);
          await assertEchoed(await withTimeout(s.infer('echo', inputs), 30000, 'echo, full mode'), counts, bytes, `full mode, ${total} bytes`);
        }
        await withTimeout(channel, 1000, 'the channel event (full mode)');
        assert.equal(channelCalls, 2);
        assert.deepEqual(
          streams.opened.map((o) => o.code),
          [RPCCode.CallFunc, RPCCode.Return, RPCCode.CallFunc, RPCCode.Return],
        );
      } finally {
        await s.dispose();
      }
      const res = await runPython(
        PY_INFER +
          `
f = r.get_function('tvm_node.infer')
xs = [np.frombuffer(bytes(range(256)) * 4, dt) for dt in ['float32', 'float16', 'int8', 'uint8', 'int64']]
ys = unpack(f('echo', pack(xs)))
out(same=[x.tobytes() == y.tobytes() for x, y in zip(xs, ys)], mlp=infer(r, 'mlp', np.load(A['mlp_x'])),
    upload=err_text(lambda: r.upload(bytearray(b'abc'), 'a.bin')), download=bytes(r.download('a.bin')).decode())
`,
        pyParams(fullPort),
      );
      assert.deepEqual(res.same, [true, true, true, true, true]);
      assert.equal(res.upload, null, `upload failed in full mode: ${res.upload}`);
      assert.equal(res.download, 'abc');
      assertMlp(res.mlp, 'python, full mode');
    });
  });

  describe('a client that dies mid-transfer', () => {
    it('half of a 128 MiB request on a session, then on a channel: pendingBytes back to 0, rss falls by 48+ MiB with no GC and ends within 48 MiB, another session served meanwhile', async () => {
      // The 256 MiB transfer cache would keep the request's tensor mapped: none here.
      setTransferCache(0);
      const gc = collector();
      const fx = fixture('mlp');
      const x = npy(fx.cases[0].inputs[0]);
      const other = await connect(HOST, port);
      const check = async (when: string) => {
        const [y] = await withTimeout(other.infer('mlp', [{ data: x.data as Float32Array, shape: x.shape }]), 10000, `mlp ${when}`);
        assertMatches(y, fx.cases[0].outputs[0], fx.tolerance);
        await y.dispose();
      };
      try {
        await check('before');
        const n = 32 * MiB; // float32: 128 MiB
        const piece = Buffer.alloc(MiB, 0x3f);
        for (const via of ['session', 'channel'] as const) {
          const owner = await openPeer(port);
          const sender = via === 'session' ? owner : await openPeer(port, CHANNEL_KEY_PREFIX + (await channelToken(owner)), '');
          const handle = await sender.handle('tvm_node.infer');
          const { start: head, packetBytes } = inferRequestStart(handle, 'addone', n);
          assert.ok(packetBytes > 128 * MiB);
          const rss0 = await settledRssMiB(gc);
          await sender.sendAll(head);
          for (let i = 0; i < 64; i++) await sender.sendAll(piece);
          await waitUntil(() => server.pendingBytes >= 64 * MiB, 20000, `the server to hold half the request (${via})`);
          const held = rssMiB();
          // The request's tensor memory itself (its huge-page-advised mapping is exactly its size), apart from what the allocator does elsewhere meanwhile.
          const tensorHeld = mappingRss(4 * n) / MiB;
          assert.ok(tensorHeld > 48, `${via}: the request's tensor holds only ${tensorHeld.toFixed(0)} MiB while 64 MiB of it arrived`);
          assert.ok(
            streams.opened.some((o) => o.code === RPCCode.CallFunc && o.length === packetBytes - 8),
            `${via}: the request was not streamed into a tensor`,
          );
          await check(`while half a request is held (${via})`);
          sender.destroy();
          await waitUntil(() => server.pendingBytes === 0, 10000, `pendingBytes to return to 0 (${via})`);
          await check(`after the client died (${via})`);
          // The tensor's pages go back when the session ends (unmapped on a thread of their own), not at some garbage collection ...
          const dropped = await rssDrop(held, 48, 5000);
          assert.ok(
            dropped > 48,
            `${via}: rss fell by only ${dropped.toFixed(0)} MiB within 5 s of the client dying (it held ${(held - rss0).toFixed(0)} MiB more)`,
          );
          // ... and once JS garbage is collected, what is left is at most the socket's spent read
          // buffers, which the allocator may keep (seen: up to ~32 MiB), never the 64 MiB tensor.
          const left = (await settledRssMiB(gc)) - rss0;
          assert.ok(left < 48, `${via}: rss is ${left.toFixed(0)} MiB above where it was (it held ${(held - rss0).toFixed(0)} MiB more)`);
          owner.destroy();
        }
      } finally {
        setTransferCache(256 * MiB);
        await other.dispose();
      }
    });
  });

  describe('maxMessageBytes', () => {
    let small: RPCServer;
    let smallPort: number;
    before(async () => ({ server: small, port: smallPort } = await start({ maxMessageBytes: MiB })));

    it('session.infer with an input over the limit: RPCMessageTooLarge, nothing allocated; the channel then infers correctly', async () => {
      // A rejection nobody handles is recorded here (mocha's own listener would blame whichever test runs then).
      const unhandled: unknown[] = [];
      const onUnhandled = (reason: unknown) => unhandled.push(reason);
      const listeners = process.listeners('unhandledRejection');
      process.removeAllListeners('unhandledRejection');
      process.on('unhandledRejection', onUnhandled);
      const { session: s, channel } = await session(small, smallPort);
      try {
        const good = exactFloats(1000);
        const [y0] = await s.infer('addone', [{ data: good, shape: [1000] }]);
        assertAddOne(y0, good, 'before');
        await y0.dispose();
        await withTimeout(channel, 1000, 'the channel event');
        for (const mib of [2, 16]) {
          const big = new Float32Array((mib * MiB) / 4);
          await assert.rejects(
            withTimeout(s.infer('addone', [{ data: big, shape: [big.length] }]), 20000, `${mib} MiB over a 1 MiB limit`),
            (e: Error) =>
              e instanceof TvmError &&
              e.kind === 'RPCMessageTooLarge' &&
              /RPC message of \d+ bytes exceeds the server's limit of 1048576 bytes/.test(e.message),
          );
          // refused at its header: nothing held for it, no tensor made for it (below)
          assert.equal(small.pendingBytes, 0);
          const [y] = await withTimeout(s.infer('addone', [{ data: good, shape: [1000] }]), 10000, `infer after the ${mib} MiB refusal`);
          assertAddOne(y, good, `after the ${mib} MiB refusal`);
          await y.dispose();
        }
        await sleep(50); // let a rejection nobody handles surface
        assert.equal(channelCalls, 5, 'not every inference went through the channel');
        assert.deepEqual(
          streams.opened.filter((o) => o.length > MiB),
          [],
          'the server streamed (allocated for) a request over its limit',
        );
        assert.deepEqual(
          unhandled.map((e) => String(e)),
          [],
          'the refusal left a promise rejection unhandled (InferenceChannel.infer awaits the write before it attaches to the reply)',
        );
      } finally {
        process.off('unhandledRejection', onUnhandled);
        for (const l of listeners) process.on('unhandledRejection', l);
        await s.dispose();
      }
    });

    it('raw, on a channel: an oversized tvm_node.infer request is refused before allocation; the channel then serves', async () => {
      const owner = await openPeer(smallPort);
      const ch = await openPeer(smallPort, CHANNEL_KEY_PREFIX + (await channelToken(owner)), '');
      try {
        const handle = await ch.handle('tvm_node.infer');
        // a whole 4 MiB request: refused at its header, its body skipped
        const big = new Float32Array(MiB);
        ch.send(
          callFunc(handle, [
            { kind: 'str', value: 'addone' },
            { kind: 'bytes', value: encodeInputs([{ data: big, shape: [big.length] }]) },
          ]),
        );
        assert.match(await ch.exception(), /^RPCMessageTooLarge: RPC message of 4194\d{3} bytes exceeds the server's limit of 1048576 bytes$/);
        assert.deepEqual(streams.opened, []);
        const x = exactFloats(4096);
        ch.send(
          callFunc(handle, [
            { kind: 'str', value: 'addone' },
            { kind: 'bytes', value: encodeInputs([{ data: x, shape: [x.length] }]) },
          ]),
        );
        const y = blobFloats(await ch.packet());
        assert.deepEqual(Buffer.from(y.buffer), Buffer.from(Float32Array.from(x, (v) => v + 1).buffer));
        // a request whose header claims a 1 TiB tensor: refused at once, nothing allocated
        const rss0 = rssMiB();
        const { start } = inferRequestStart(handle, 'addone', 2 ** 38);
        ch.send(start);
        assert.match(await ch.exception(), /^RPCMessageTooLarge: RPC message of 1099511\d+ bytes exceeds the server's limit of 1048576 bytes$/);
        assert.ok(rssMiB() - rss0 < 16, `rss grew by ${(rssMiB() - rss0).toFixed(0)} MiB`);
        assert.equal(small.pendingBytes, 0);
        assert.deepEqual(streams.opened, []);
      } finally {
        ch.destroy();
        owner.destroy();
      }
    });
  });

  describe('concurrency', () => {
    it('session A moves 256 MiB through addone while session B runs 20 mlp inferences; both right', async () => {
      const fx = fixture('mlp');
      const xm = npy(fx.cases[0].inputs[0]);
      const a = await connect(HOST, port);
      const b = await connect(HOST, port);
      try {
        // both channels open first, so that the transfers overlap
        const warm = await Promise.all([
          a.infer('addone', [{ data: exactFloats(16), shape: [16] }]),
          b.infer('mlp', [{ data: xm.data as Float32Array, shape: xm.shape }]),
        ]);
        await Promise.all(warm.flat().map((t) => t.dispose()));
        const x = exactFloats(64 * MiB);
        let aDone = 0;
        const bTimes: number[] = [];
        const t0 = performance.now();
        const ra = a.infer('addone', [{ data: x, shape: [x.length] }]).then((out) => {
          aDone = performance.now() - t0;
          return out;
        });
        const rb = (async () => {
          for (let i = 0; i < 20; i++) {
            const [y] = await b.infer('mlp', [{ data: xm.data as Float32Array, shape: xm.shape }]);
            assertMatches(y, fx.cases[0].outputs[0], fx.tolerance);
            await y.dispose();
            bTimes.push(performance.now() - t0);
          }
        })();
        const [[ya]] = await withTimeout(Promise.all([ra, rb]), 40000, 'the two sessions');
        try {
          assertAddOne(ya, x, 'session A, 256 MiB');
        } finally {
          await ya.dispose();
        }
        assert.equal(bTimes.length, 20);
        assert.ok(
          bTimes.filter((t) => t < aDone).length >= 10,
          `session B waited for A's transfer: A took ${aDone.toFixed(0)} ms; B's inferences ended at ${bTimes.map((t) => t.toFixed(0)).join(', ')} ms`,
        );
        assert.equal(channelCalls, 23);
      } finally {
        await Promise.all([a.dispose(), b.dispose()]);
      }
    });
  });

  describe('a slow reader', () => {
    it('reading a 12 MiB reply slowly but steadily (for several times stallTimeoutMs) gets all of it, bit-exact', async () => {
      const { port: slowPort } = await start({ stallTimeoutMs: 1000 });
      const peer = await openPeer(slowPort);
      try {
        const { inputs, bytes } = echoInputs({ float32: 3, float16: 0, int8: 0, uint8: 12 * MiB, int64: 1 });
        const handle = await peer.handle('tvm_node.infer');
        peer.send(
          callFunc(handle, [
            { kind: 'str', value: 'echo' },
            { kind: 'bytes', value: encodeInputs(inputs) },
          ]),
        );
        // 12 ms between reads: the reply takes about 2.5 s to read (2.5x the limit), a 1 MiB slice ~0.2 s (a wide margin under load)
        peer.sock.on('data', () => {
          peer.sock.pause();
          setTimeout(() => peer.sock.resume(), 12);
        });
        const t0 = Date.now();
        const reply = await peer.packet(20000).catch((e: Error) => {
          throw new Error(`${e.message} after ${Date.now() - t0} ms: the server gave up on a client that was reading its reply`);
        });
        assert.equal(reply.code, RPCCode.Return);
        const got = decodeBlob((reply.values[1] as { value: Buffer }).value);
        got.forEach((t, i) => assertSameBytes(t.bytes, bytes[i], `y_${ECHO_DTYPES[i]}`));
      } finally {
        peer.destroy();
      }
    });
  });

  describe('channel tokens', () => {
    /** Sockets of this process that are not destroyed (the server runs here: its side of each connection too). */
    const serverSockets = () =>
      (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles().filter((h): h is net.Socket => h instanceof net.Socket && !h.destroyed);
    /** The server's side of the connection from local port `clientPort`. */
    const serverSideOf = (clientPort: number) => serverSockets().filter((h) => h.remotePort === clientPort && h.localPort === port);
    /**
     * Closes a refused connection, and the server's side of it: the first test of this group
     * checks the server lets go of it by itself; here it must not outlive the test either way.
     */
    const dropRefused = (peer: RawPeer) => {
      const clientPort = peer.sock.localPort!;
      peer.destroy();
      setTimeout(() => {
        for (const s of serverSideOf(clientPort)) s.destroy();
      }, 100);
    };

    it('a handshake with an unknown token is refused (and its connection let go)', async () => {
      const refused = nextEvent(server, 'refused');
      const sock = net.connect(port, HOST);
      sock.on('error', () => undefined);
      await new Promise((r) => sock.once('connect', r));
      const clientPort = sock.localPort!;
      const reply = new Promise<Buffer>((resolve) => {
        const got: Buffer[] = [];
        sock.on('data', (c) => got.push(c)).on('close', () => resolve(Buffer.concat(got)));
      });
      sock.write(clientHello(CHANNEL_KEY_PREFIX + randomBytes(16).toString('hex')));
      const bytes = await withTimeout(reply, 10000, 'the server to refuse and close');
      assert.equal(bytes.length, 4);
      assert.equal(bytes.readInt32LE(0), RPC_CODE_MISMATCH);
      assert.match(String((await refused)[0]), /^inference channel with an unknown token from 127\.0\.0\.1$/);
      // The client has closed its end: the server must let go of its socket, as it does for a key mismatch.
      try {
        await waitUntil(() => serverSideOf(clientPort).length === 0, 5000, "the server to release a refused channel's socket");
      } finally {
        for (const s of serverSideOf(clientPort)) s.destroy(); // so a leak does not outlive this test
      }
    });

    it('a second channel with a token in use is refused; the first goes on; it ends with its session', async () => {
      const started = nextEvent(server, 'session');
      const owner = await openPeer(port);
      const [ownerId] = await started;
      const token = await channelToken(owner);
      const first = await openPeer(port, CHANNEL_KEY_PREFIX + token, '');
      const x = exactFloats(100);
      const inferOn = async (p: RawPeer) => {
        const y = blobFloats(
          await p.call('tvm_node.infer', [
            { kind: 'str', value: 'addone' },
            { kind: 'bytes', value: encodeInputs([{ data: x, shape: [100] }]) },
          ]),
        );
        assert.deepEqual(Buffer.from(y.buffer), Buffer.from(Float32Array.from(x, (v) => v + 1).buffer));
      };
      try {
        await inferOn(first);
        const refused = nextEvent(server, 'refused');
        const { code, peer: second } = await RawPeer.handshake(port, CHANNEL_KEY_PREFIX + token);
        dropRefused(second);
        assert.equal(code, RPC_CODE_MISMATCH);
        assert.match(String((await refused)[0]), /^inference channel with a token already in use from 127\.0\.0\.1$/);
        await inferOn(first);
        // a channel cannot hand out tokens
        first.send(getGlobalFunc('tvm_node.open_channel'));
        assert.match(await first.exception(), /^PermissionError: inference-only server: 'tvm_node.open_channel' is not served/);
        // the owner ends its session (what RPCSession.dispose() does): the channel is ended, with the reason
        const ended = nextEvent(server, 'sessionEnd', 10000, (id) => id === ownerId);
        const end = await owner.call('tvm_node.end_session');
        assert.equal(end.code, RPCCode.Return);
        await withTimeout(ended, 10000, 'the owner session to end');
        assert.equal(await first.exception(), 'RPCSessionClosed: the session this inference channel belongs to has ended');
        await withTimeout(first.closed, 10000, 'the server to close the channel');
        // and the token is dead
        const { code: late, peer: third } = await RawPeer.handshake(port, CHANNEL_KEY_PREFIX + token);
        dropRefused(third);
        assert.equal(late, RPC_CODE_MISMATCH);
      } finally {
        first.destroy();
        owner.destroy();
      }
    });

    it('RPCSession.dispose() ends its channel', async () => {
      const earlier = new Set(serverSockets());
      const { session: s, id, channel } = await session(server, port);
      const x = exactFloats(10);
      const [y] = await s.infer('addone', [{ data: x, shape: [10] }]);
      assertAddOne(y, x, 'addone');
      await y.dispose();
      await withTimeout(channel, 1000, 'the channel event');
      // the session's socket and its channel's, on the server's side
      const open = () => serverSockets().filter((h) => h.localPort === port && !earlier.has(h)).length;
      assert.equal(open(), 2);
      const ended = nextEvent(server, 'sessionEnd', 10000, (sid) => sid === id);
      await s.dispose();
      await ended;
      await waitUntil(() => open() === 0, 10000, "the server to close the session's channel");
    });
  });

  describe('wrong inputs through the channel', () => {
    it('a wrong dtype, rank or count raises a TvmError naming the input; the next call on the session works', async () => {
      const { session: s, channel } = await session(server, port);
      const x = exactFloats(1000);
      const bad: Array<[string, InferInput[], RegExp]> = [
        ['int32 for float32', [{ data: new Int32Array(1000), shape: [1000] }], /^ValueError: model 'addone': input 'x' must be float32; got int32 data$/],
        [
          'int32, 4 MiB (streamed)',
          [{ data: new Int32Array(MiB), shape: [MiB] }],
          /^ValueError: model 'addone': input 'x' must be float32; got an int32 Tensor$/,
        ],
        ['rank 2', [{ data: x, shape: [10, 100] }], /^ValueError: model 'addone': input 'x' must have 1 dimension \[n\]; got 2: \[10, 100\]$/],
        [
          'two inputs',
          [
            { data: x, shape: [1000] },
            { data: x, shape: [1000] },
          ],
          /^ValueError: model 'addone' takes 1 input; the request has 2$/,
        ],
      ];
      try {
        for (const [what, inputs, want] of bad) {
          await assert.rejects(withTimeout(s.infer('addone', inputs), 20000, what), (e: Error) => e instanceof TvmValueError && want.test(e.message), what);
          const [y] = await withTimeout(s.infer('addone', [{ data: x, shape: [1000] }]), 10000, `infer after ${what}`);
          assertAddOne(y, x, `after ${what}`);
          await y.dispose();
        }
        await withTimeout(channel, 1000, 'the channel event');
        assert.equal(channelCalls, 2 * bad.length);
      } finally {
        await s.dispose();
      }
    });
  });
});
