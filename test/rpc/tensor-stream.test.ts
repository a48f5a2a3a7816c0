/**
 * lib/rpc/tensor-stream.ts at the unit level, no server: tvm_node.infer packets (built by hand
 * in the buffered path's layout, and sent by writeTensorPacket through a real socket pair) fed
 * to a PacketReader with a TensorStreamer, split at every kind of chunk boundary. Streamed
 * tensors must hold exactly the bytes sent; packets the streamer must decline arrive whole, byte
 * for byte; a stream that is aborted mid-packet gives its tensors' memory back.
 */
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import net from 'node:net';
import { Tensor } from '../../lib';
import { type DType, HOST_ARRAY } from '../../lib/dtype';
import { STREAM_PREFIX_BYTES, type StreamedPacket, setTransferCache, TensorStreamer, writeTensorPacket } from '../../lib/rpc/tensor-stream';
import { decodeBlob, encodeBlob, type HostTensor } from '../../lib/rpc/tni1';
import { type BodyStream, ByteBudget, encodePacket, encodeValues, PacketReader, RPCCode, TypeIndex, WireDecoder, WireError } from '../../lib/rpc/wire';
import { assertSameBytes, i32, mappingRss, prng, split, u64, withBytes } from './bytes';
import { HOST, waitUntil, withTimeout } from './peers';

const KiB = 1024;
const MiB = 1024 * KiB;

// ---- bytes ----

/** Named ways to cut a stream. */
function chunkings(): Array<[string, (b: Buffer) => Buffer[]]> {
  const out: Array<[string, (b: Buffer) => Buffer[]]> = [
    ['one chunk', (b) => [b]],
    ['1 byte', (b) => split(b, () => 1)],
    ['7 bytes', (b) => split(b, () => 7)],
    ['333 bytes', (b) => split(b, () => 333)],
    ['4099 bytes', (b) => split(b, () => 4099)],
    ['64 KiB', (b) => split(b, () => 64 * KiB)],
    ['64 KiB + 1', (b) => split(b, () => 64 * KiB + 1)],
  ];
  for (const seed of [1, 2, 3]) {
    out.push([
      `random (seed ${seed})`,
      (b) => {
        const rand = prng(seed);
        return split(b, () => (rand() < 0.3 ? 1 + Math.floor(rand() * 16) : 1 + Math.floor(rand() * 150000)));
      },
    ]);
  }
  return out;
}

// ---- tensors and packets ----

/** Host data of `dtype`: random bytes (NaN payloads, -0 and all), a TypedArray over its own buffer. */
function randomData(dtype: DType, n: number): HostTensor {
  const Ctor = HOST_ARRAY[dtype];
  const data = new Ctor(n);
  const bytes = new Uint8Array(data.buffer);
  randomFillSync(bytes);
  if (dtype === 'bool') for (let i = 0; i < n; i++) bytes[i] &= 1;
  if (dtype === 'float32' && n >= 3) new Uint32Array(data.buffer).set([0x80000000, 0x7fc0dead, 0x7f800001]);
  return { data, shape: [n], dtype };
}

/** The tensors of the main request: several dtypes, odd sizes, an empty one, one over 64 KiB. */
function requestTensors(): HostTensor[] {
  return [
    randomData('float32', 30001),
    randomData('float16', 777),
    randomData('int8', 4099),
    randomData('uint8', 1),
    randomData('int64', 0),
    randomData('float64', 1234),
    randomData('bfloat16', 513),
    randomData('int32', 999),
    randomData('uint16', 65),
    randomData('bool', 17),
  ];
}

const bytesOf = (t: HostTensor) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);

/** How the blob's bytes value is written: TVM's three encodings of bytes. */
type BytesEncoding = 'ByteArrayPtr' | 'Bytes' | 'SmallBytes';

/** A bytes value carrying `blob`, in `encoding`. */
function bytesValue(blob: Buffer, encoding: BytesEncoding): Buffer[] {
  if (encoding === 'ByteArrayPtr') return [i32(TypeIndex.ByteArrayPtr), u64(blob.length), blob];
  const outer = encoding === 'Bytes' ? TypeIndex.Bytes : TypeIndex.SmallBytes;
  return [i32(outer), i32(TypeIndex.Bytes), u64(blob.length), blob];
}

/** A tvm_node.infer request in the buffered path's layout: CallFunc, handle, model name, blob. */
function requestPacket(model: string, blob: Buffer, encoding: BytesEncoding = 'ByteArrayPtr', handle = 0x1000n): Buffer {
  return encodePacket(RPCCode.CallFunc, [u64(handle), i32(2), ...encodeValues([{ kind: 'str', value: model }]).slice(1), ...bytesValue(blob, encoding)]);
}

/** Its reply: Return, the result's type index, the blob. */
function replyPacket(blob: Buffer, encoding: BytesEncoding = 'ByteArrayPtr'): Buffer {
  return encodePacket(RPCCode.Return, [i32(2), ...encodeValues([{ kind: 'int', value: BigInt(TypeIndex.Bytes) }]).slice(1), ...bytesValue(blob, encoding)]);
}

/** A TNI1 blob with a hand-written header (any fields, any entries) over `data`. */
function handBlob(header: unknown, data: Buffer): Buffer {
  const h = Buffer.from(JSON.stringify(header), 'utf8');
  return Buffer.concat([Buffer.from('TNI1'), Buffer.from(Uint32Array.of(h.length).buffer), h, data]);
}

// ---- reading ----

/** What a PacketReader with a TensorStreamer reported, in order. */
type Event = { kind: 'packet'; body: Buffer } | { kind: 'streamed'; packet: StreamedPacket } | { kind: 'tooLarge'; length: bigint };

/** Feeds `chunks` to a PacketReader with a TensorStreamer; its events, in order, and the budget it used. */
function feed(chunks: Buffer[], limit = 64 * MiB) {
  const events: Event[] = [];
  const budget = new ByteBudget(1 << 30);
  const reader = new PacketReader<StreamedPacket>(
    limit,
    {
      packet: (body) => events.push({ kind: 'packet', body }),
      streamed: (packet) => events.push({ kind: 'streamed', packet }),
      tooLarge: (err) => events.push({ kind: 'tooLarge', length: err.length }),
    },
    budget,
    new TensorStreamer(),
  );
  for (const c of chunks) reader.push(c);
  return { events, budget, reader };
}

/** Disposes the tensors of every streamed event. */
function disposeAll(events: Event[]): void {
  for (const e of events) if (e.kind === 'streamed') for (const t of e.packet.tensors) t.disposeSync();
}

/** Asserts a streamed packet carries `tensors`, bit-exact, after a head equal to `body`'s start. */
function assertStreamed(e: Event | undefined, body: Buffer, tensors: HostTensor[], what: string): void {
  assert.equal(e?.kind, 'streamed', `${what}: not streamed (${e?.kind})`);
  const { head, count, tensors: got } = (e as { packet: StreamedPacket }).packet;
  assert.equal(count, 2, what);
  assertSameBytes(head, body.subarray(0, head.length), `${what}: head`);
  assert.equal(got.length, tensors.length, `${what}: tensor count`);
  got.forEach((t, i) => {
    assert.equal(t.dtype, tensors[i].dtype, `${what}: tensor ${i} dtype`);
    assert.deepEqual(t.shape, [...tensors[i].shape], `${what}: tensor ${i} shape`);
    assert.equal(t.device.deviceType, 1, `${what}: tensor ${i} is not a CPU tensor`);
    withBytes(t, (b) => assertSameBytes(b, bytesOf(tensors[i]), `${what}: tensor ${i} (${tensors[i].dtype})`));
  });
}

/** Asserts a packet arrived whole, equal to `body`. */
function assertWhole(e: Event | undefined, body: Buffer, what: string): void {
  assert.equal(e?.kind, 'packet', `${what}: arrived as ${e?.kind}, not as a whole packet`);
  assertSameBytes((e as { body: Buffer }).body, body, what);
}

describe('tensor streaming (lib/rpc/tensor-stream.ts)', function () {
  this.timeout(60000);

  describe('tvm_node.infer packets into tensors', () => {
    const request = requestTensors();
    const reply = [randomData('float32', 20000), randomData('int8', 70001)];
    const small = encodePacket(RPCCode.GetGlobalFunc, encodeValues([{ kind: 'str', value: 'tvm_node.infer' }]));
    const req = requestPacket('echo', encodeBlob(request));
    const rep = replyPacket(encodeBlob(reply));
    const stream = Buffer.concat([small, req, rep, encodePacket(RPCCode.Shutdown), req]);

    it('the packets are large enough to be offered to the streamer', () => {
      assert.equal(STREAM_PREFIX_BYTES, 64 * KiB);
      assert.ok(req.length > 2 * STREAM_PREFIX_BYTES && rep.length > 2 * STREAM_PREFIX_BYTES);
      // the request's first tensor starts inside the 64 KiB prefix and ends after it
      assert.ok(request[0].data.byteLength > STREAM_PREFIX_BYTES);
    });

    for (const [name, cut] of chunkings()) {
      it(`${name}: requests and replies streamed bit-exact, the other packets whole, in order; budget back to 0`, () => {
        const chunks = cut(stream);
        const { events, budget, reader } = feed(chunks);
        try {
          assert.deepEqual(
            events.map((e) => e.kind),
            ['packet', 'streamed', 'streamed', 'packet', 'streamed'],
          );
          assertWhole(events[0], small.subarray(8), 'GetGlobalFunc');
          assertStreamed(events[1], req.subarray(8), request, 'request');
          assertStreamed(events[2], rep.subarray(8), reply, 'reply');
          assertWhole(events[3], i32(RPCCode.Shutdown), 'Shutdown');
          assertStreamed(events[4], req.subarray(8), request, 'request again');
          assert.equal(budget.held, 0);
          assert.equal(reader.midPacket, false);
          // the head decodes as the buffered path would: the handle and the values before the blob
          const d = new WireDecoder((events[1] as { packet: StreamedPacket }).packet.head);
          assert.equal(d.i32(), RPCCode.CallFunc);
          assert.equal(d.u64(), 0x1000n);
          assert.equal(d.i32(), 2);
          assert.deepEqual(d.value(), { kind: 'str', value: 'echo' });
          assert.equal(d.rest, 0);
        } finally {
          disposeAll(events);
        }
      });
    }

    it('every encoding of a bytes value (ByteArrayPtr, Bytes, SmallBytes) is streamed; entries in any order, at any offset', () => {
      // entries out of order, unaligned, with gaps: as a hand-made client may lay them out
      const a = randomData('float32', 20000);
      const b = randomData('uint8', 33333);
      const c = randomData('int64', 3);
      const data = Buffer.alloc(200000, 0xee);
      const at = { a: 100003, b: 7, c: 180011 };
      bytesOf(a).copy(data, at.a);
      bytesOf(b).copy(data, at.b);
      bytesOf(c).copy(data, at.c);
      const entry = (t: HostTensor, offset: number) => ({ shape: t.shape, dtype: t.dtype, offset, nbytes: t.data.byteLength });
      const blob = handBlob({ tensors: [entry(a, at.a), entry(b, at.b), entry(c, at.c)], note: 'extra fields are ignored' }, data);
      for (const encoding of ['ByteArrayPtr', 'Bytes', 'SmallBytes'] as const) {
        for (const packet of [requestPacket('m', blob, encoding), replyPacket(blob, encoding)]) {
          for (const [name, cut] of [chunkings()[0], chunkings()[2], chunkings()[5]]) {
            const { events, budget } = feed(cut(packet));
            try {
              assert.equal(events.length, 1);
              assertStreamed(events[0], packet.subarray(8), [a, b, c], `${encoding}, ${RPCCode[packet.readInt32LE(8)]}, ${name}`);
              assert.equal(budget.held, 0);
            } finally {
              disposeAll(events);
            }
          }
        }
      }
    });

    it('a packet over the limit is reported, never streamed; the next one is', () => {
      const next = [randomData('float32', 20000)];
      const after = replyPacket(encodeBlob(next));
      assert.ok(after.length < req.length - 9);
      const { events } = feed(
        split(Buffer.concat([req, after]), () => 4099),
        req.length - 9,
      );
      try {
        assert.deepEqual(
          events.map((e) => e.kind),
          ['tooLarge', 'streamed'],
        );
        assert.equal((events[0] as { length: bigint }).length, BigInt(req.length - 8));
        assertStreamed(events[1], after.subarray(8), next, 'the reply after the refused request');
      } finally {
        disposeAll(events);
      }
    });
  });

  describe('packets the streamer declines arrive whole', () => {
    const tensors = [randomData('float32', 40000), randomData('uint8', 1001)];
    const blob = encodeBlob(tensors);
    const overlapData = Buffer.alloc(256 * KiB);
    randomFillSync(overlapData);
    const many = Array.from({ length: 65 }, (_, i) => randomData('int8', 2000 + i));
    const hugeHeader = handBlob(
      {
        tensors: [{ shape: [40000], dtype: 'float32', offset: 0, nbytes: 160000 }],
        pad: 'x'.repeat(70 * KiB),
      },
      bytesOf(tensors[0]),
    );
    const bigHeader = handBlob(
      {
        tensors: [{ shape: [MiB / 2], dtype: 'float32', offset: 0, nbytes: 2 * MiB }],
        pad: 'y'.repeat(80 * KiB),
      },
      Buffer.alloc(2 * MiB, 0x42),
    );
    /**
     * Cases and the chunkings they are fed in. The streamer sees what has arrived once 64 KiB
     * are in: with larger chunks a header over 64 KiB may have arrived whole by then (and the
     * blob is streamed, see below), so those cases use chunks that stop near the 64 KiB mark.
     */
    const nearPrefix = () => [chunkings()[1], chunkings()[2], chunkings()[3], chunkings()[4]];
    const cases: Array<[string, Buffer, (body: Buffer) => void, ReturnType<typeof nearPrefix>?]> = [
      [
        'not CallFunc or Return (GetGlobalFunc carrying a blob)',
        encodePacket(RPCCode.GetGlobalFunc, encodeValues([{ kind: 'bytes', value: blob }])),
        (body) => assert.equal(decodeBlob((new WireDecoder(body.subarray(4)).values()[0] as { value: Buffer }).value).length, 2),
      ],
      ['an Exception carrying a blob', encodePacket(RPCCode.Exception, encodeValues([{ kind: 'bytes', value: blob }])), () => undefined],
      [
        'the blob not the last value',
        encodePacket(RPCCode.CallFunc, [
          u64(0x1000),
          ...encodeValues([
            { kind: 'str', value: 'm' },
            { kind: 'bytes', value: blob },
            { kind: 'int', value: 7n },
          ]),
        ]),
        () => undefined,
      ],
      [
        'a blob header larger than the 64 KiB prefix',
        requestPacket('m', hugeHeader),
        (body) => {
          // the buffered path reads it: it is a valid blob
          const [, value] = new WireDecoder(body.subarray(12)).values();
          const [t] = decodeBlob((value as { value: Buffer }).value);
          assertSameBytes(t.bytes, bytesOf(tensors[0]), 'the buffered decode of the large-header blob');
        },
        nearPrefix(),
      ],
      // not fed byte by byte: 2 MiB in 1-byte pushes only takes time
      ['a larger-than-prefix header over 2 MiB of data (kept in the large buffer)', requestPacket('m', bigHeader), () => undefined, nearPrefix().slice(1)],
      [
        'overlapping entries',
        requestPacket(
          'm',
          handBlob(
            {
              tensors: [
                { shape: [32 * KiB], dtype: 'float32', offset: 0, nbytes: 128 * KiB },
                { shape: [32 * KiB], dtype: 'float32', offset: 64 * KiB, nbytes: 128 * KiB },
              ],
            },
            overlapData,
          ),
        ),
        (body) => {
          const [, value] = new WireDecoder(body.subarray(12)).values();
          assert.throws(() => decodeBlob((value as { value: Buffer }).value), /bad tensor blob: tensors 0 and 1 overlap/);
        },
      ],
      [
        'an entry outside the blob',
        requestPacket('m', handBlob({ tensors: [{ shape: [64 * KiB], dtype: 'float32', offset: 0, nbytes: 256 * KiB }] }, overlapData.subarray(0, 100 * KiB))),
        () => undefined,
      ],
      [
        'more than 64 tensors (65)',
        requestPacket('m', encodeBlob(many)),
        (body) => {
          const [, value] = new WireDecoder(body.subarray(12)).values();
          const got = decodeBlob((value as { value: Buffer }).value);
          assert.equal(got.length, 65);
          got.forEach((t, i) => assertSameBytes(t.bytes, bytesOf(many[i]), `tensor ${i}`));
        },
      ],
      ['a blob that is not TNI1', requestPacket('m', Buffer.alloc(100 * KiB, 0x5a)), () => undefined],
      ['a tvm_node.infer request under 64 KiB (not offered)', requestPacket('m', encodeBlob([randomData('float32', 1000)])), () => undefined],
    ];
    for (const [what, packet, check, cuts] of cases) {
      it(`${what}: whole, byte for byte, at ${cuts ? 'splits that offer 64 KiB' : 'every split'}`, () => {
        for (const [name, cut] of cuts ?? [chunkings()[0], chunkings()[1], chunkings()[3], chunkings()[5], chunkings()[7]]) {
          // each case between two streamed requests: the reader goes on streaming after it
          const around = requestPacket('m', blob);
          const { events, budget } = feed(cut(Buffer.concat([around, packet, around])));
          try {
            assert.deepEqual(
              events.map((e) => e.kind),
              ['streamed', 'packet', 'streamed'],
              `${what}, ${name}`,
            );
            assertWhole(events[1], packet.subarray(8), `${what}, ${name}`);
            assertStreamed(events[2], around.subarray(8), tensors, `${what}, ${name}: the request after it`);
            assert.equal(budget.held, 0);
            check((events[1] as { body: Buffer }).body);
          } finally {
            disposeAll(events);
          }
        }
      });
    }

    it('a header over 64 KiB that arrived whole with the first bytes is streamed (the offer is what has arrived)', () => {
      const tensors = [randomData('float32', 40000)];
      const packet = requestPacket(
        'm',
        handBlob({ tensors: [{ shape: [40000], dtype: 'float32', offset: 0, nbytes: 160000 }], pad: 'z'.repeat(70 * KiB) }, bytesOf(tensors[0])),
      );
      const { events, budget } = feed([packet]);
      try {
        assertStreamed(events[0], packet.subarray(8), tensors, 'one chunk');
        assert.equal(budget.held, 0);
      } finally {
        disposeAll(events);
      }
    });
  });

  describe('writeTensorPacket through a socket pair', () => {
    let server: net.Server;
    let port: number;
    const accepted: net.Socket[] = [];
    before(async () => {
      server = net.createServer((s) => accepted.push(s.on('error', () => undefined)));
      await new Promise<void>((r) => server.listen(0, HOST, r));
      port = (server.address() as net.AddressInfo).port;
    });
    after(async () => {
      for (const s of accepted) s.destroy();
      await new Promise((r) => server.close(r));
    });

    /** A connected pair: the sender's socket and the receiver's. */
    async function pair(): Promise<{ sender: net.Socket; receiver: net.Socket }> {
      const n = accepted.length;
      const sender = net.connect(port, HOST);
      sender.on('error', () => undefined); // what the owner of a socket does; the write's promise reports the failure
      await new Promise((r) => sender.once('connect', r));
      await waitUntil(() => accepted.length > n, 5000, 'accept');
      return { sender, receiver: accepted[n] };
    }

    it('sends host arrays and CPU tensors in the buffered layout; the receiver streams them into tensors bit-exact', async () => {
      const { sender, receiver } = await pair();
      const raw: Buffer[] = [];
      const events: Event[] = [];
      const reader = new PacketReader<StreamedPacket>(
        1 << 30,
        {
          packet: (body) => events.push({ kind: 'packet', body }),
          streamed: (packet) => events.push({ kind: 'streamed', packet }),
          tooLarge: () => assert.fail(),
        },
        undefined,
        new TensorStreamer(),
      );
      receiver.on('data', (c: Buffer) => {
        raw.push(Buffer.from(c));
        reader.push(c);
      });
      const hosts = [randomData('float32', 3 * MiB), randomData('float16', 5), randomData('int64', 0), randomData('uint8', 12345)];
      // the float16 and uint8 inputs as CPU tensors: their memory is sent as it is
      const tensors = [1, 3].map((i) =>
        Tensor.fromSync(hosts[i].data as Uint16Array | Uint8Array, { shape: [...hosts[i].shape], dtype: hosts[i].dtype as DType }),
      );
      try {
        const name = Buffer.from('echo');
        const head = Buffer.concat([i32(RPCCode.CallFunc), u64(0x1001), i32(2), i32(TypeIndex.RawStr), u64(name.length)]);
        const outgoing = hosts.map((h, i) => {
          const t = i === 1 ? tensors[0] : i === 3 ? tensors[1] : undefined;
          return t ? { tensor: t, shape: h.shape, dtype: h.dtype as DType } : { data: h.data as Float32Array, shape: h.shape, dtype: h.dtype as DType };
        });
        await withTimeout(writeTensorPacket(sender, [head, name], outgoing, { stallMs: 10000 }), 20000, 'the request');
        // a reply too, after it on the same socket
        const returnHead = Buffer.concat([i32(RPCCode.Return), i32(2), i32(TypeIndex.Int), u64(TypeIndex.Bytes)]);
        await withTimeout(writeTensorPacket(sender, [returnHead], [outgoing[3], outgoing[0]], { stallMs: 10000 }), 20000, 'the reply');
        const request = requestPacket('echo', encodeBlob(hosts), 'ByteArrayPtr', 0x1001n);
        const reply = replyPacket(encodeBlob([hosts[3], hosts[0]]));
        await waitUntil(() => events.length === 2, 20000, 'both packets');
        assertSameBytes(Buffer.concat(raw), Buffer.concat([request, reply]), 'the bytes on the wire (the buffered layout)');
        assertStreamed(events[0], request.subarray(8), hosts, 'request');
        assertStreamed(events[1], reply.subarray(8), [hosts[3], hosts[0]], 'reply');
        // the tensors sent are untouched and still the sender's
        assert.equal(tensors[0].disposed, false);
        withBytes(tensors[1], (b) => assertSameBytes(b, bytesOf(hosts[3]), 'the sent tensor after the send'));
      } finally {
        disposeAll(events);
        for (const t of tensors) t.disposeSync();
        sender.destroy();
      }
    });

    /**
     * Sends 64 MiB to a receiver that reads nothing (the socket buffers take a few MiB), does
     * `meanwhile` to the pair, and resolves with what the write's promise did and whether the
     * sender's socket was destroyed by then.
     */
    async function stuckWrite(stallMs: number, meanwhile: (p: { sender: net.Socket; receiver: net.Socket }) => void) {
      const p = await pair();
      p.receiver.pause();
      const big = new Uint8Array(64 * MiB);
      const head = [i32(RPCCode.Return), i32(2), i32(TypeIndex.Int), u64(TypeIndex.Bytes)];
      const sent = writeTensorPacket(p.sender, head, [{ data: big, shape: [big.length], dtype: 'uint8' }], { stallMs });
      meanwhile(p);
      const outcome = await withTimeout(
        sent.then(
          () => 'resolved' as const,
          (e: Error) => e,
        ),
        10000,
        'the write to settle',
      );
      const destroyed = p.sender.destroyed;
      p.sender.destroy();
      return { outcome, destroyed };
    }

    it('rejects with RPCSessionClosed when the peer goes away mid-packet', async () => {
      let queued = 0;
      const { outcome } = await stuckWrite(10000, ({ sender, receiver }) =>
        setTimeout(() => {
          queued = sender.writableLength;
          receiver.destroy();
        }, 100),
      );
      assert.ok(queued > 0, 'nothing was still queued');
      // Node calls the write callback of a destroyed socket without an error: writeAll must not take that for success.
      assert.notEqual(outcome, 'resolved', `writeTensorPacket resolved though the peer reset the connection with ${queued} bytes unsent`);
      assert.equal((outcome as { kind?: string }).kind, 'RPCSessionClosed', String(outcome));
    });

    it('rejects with RPCSessionTimeoutError when the peer stops reading for stallMs', async () => {
      const t0 = Date.now();
      const { outcome, destroyed } = await stuckWrite(300, () => undefined);
      assert.equal(destroyed, true);
      assert.ok(Date.now() - t0 < 5000);
      assert.notEqual(outcome, 'resolved', 'writeTensorPacket resolved though it gave up on a peer that took no bytes for 0.3 s and destroyed the socket');
      assert.equal((outcome as { kind?: string }).kind, 'RPCSessionTimeoutError', String(outcome));
      assert.match((outcome as Error).message, /took no bytes for 0.3 s/);
    });

    it('a peer that reads slowly but steadily gets the whole packet, however long it takes past stallMs', async () => {
      const { sender, receiver } = await pair();
      const tensor = randomData('uint8', 8 * MiB);
      const head = [i32(RPCCode.Return), i32(2), i32(TypeIndex.Int), u64(TypeIndex.Bytes)];
      const want = replyPacket(encodeBlob([tensor]));
      // 10 ms between reads: the packet takes over a second (past stallMs), a 1 MiB slice ~0.16 s, and bytes move all along
      const chunks: Buffer[] = [];
      let got = 0;
      receiver.on('data', (c: Buffer) => {
        chunks.push(Buffer.from(c));
        got += c.length;
        receiver.pause();
        setTimeout(() => receiver.resume(), 10);
      });
      const t0 = Date.now();
      try {
        const outcome = await withTimeout(
          writeTensorPacket(sender, head, [{ data: tensor.data as Uint8Array, shape: [...tensor.shape], dtype: 'uint8' }], { stallMs: 800 }).then(
            () => 'resolved',
            (e: Error) => e,
          ),
          20000,
          'the slow write',
        );
        await waitUntil(() => got >= want.length || receiver.destroyed, 20000, 'the receiver to get the packet');
        const took = Date.now() - t0;
        assert.equal(
          got,
          want.length,
          `the receiver got ${got} of ${want.length} bytes in ${took} ms: the sender gave up on a peer that was reading (writeTensorPacket: ${outcome})`,
        );
        assert.equal(outcome, 'resolved');
        assertSameBytes(Buffer.concat(chunks), want, 'the slow packet');
      } finally {
        sender.destroy();
      }
    });
  });

  describe('an aborted stream', () => {
    /** A TensorStreamer that remembers the streams it opened. */
    class Watching extends TensorStreamer {
      readonly opened: BodyStream<StreamedPacket>[] = [];
      override open(prefix: Buffer, length: number) {
        const s = super.open(prefix, length);
        if (s) this.opened.push(s);
        return s;
      }
    }

    /** Runs `fn` with Tensor.prototype.disposeSync recording which tensors it disposes. */
    function recordingDisposals<T>(fn: (disposed: Array<Tensor & { was: [string, number[]] }>) => T): T {
      const original = Tensor.prototype.disposeSync;
      const disposed: Array<Tensor & { was: [string, number[]] }> = [];
      Tensor.prototype.disposeSync = function (this: Tensor) {
        if (!this.disposed) disposed.push(Object.assign(this, { was: [this.dtype, this.shape] as [string, number[]] }));
        return original.call(this);
      };
      try {
        return fn(disposed);
      } finally {
        Tensor.prototype.disposeSync = original;
      }
    }

    it('release() mid-packet disposes its tensors and their memory leaves the process (no GC); the budget gets every byte back', async () => {
      setTransferCache(0); // nothing kept for reuse: the pages must leave the process
      try {
        // a request whose blob header says 1000 int8 and 64 MiB of float32, cut after ~48 MiB
        const little = randomData('int8', 1000);
        const header = JSON.stringify({
          tensors: [
            { shape: [1000], dtype: 'int8', offset: 0, nbytes: 1000 },
            { shape: [16 * MiB], dtype: 'float32', offset: 1024, nbytes: 64 * MiB },
          ],
        });
        const h = Buffer.from(header);
        const data = Buffer.alloc(1024);
        bytesOf(little).copy(data);
        const blobStart = Buffer.concat([Buffer.from('TNI1'), Buffer.from(Uint32Array.of(h.length).buffer), h, data]);
        const blobBytes = blobStart.length + 64 * MiB;
        const name = Buffer.from('m');
        const body = [i32(RPCCode.CallFunc), u64(0x1000), i32(2), i32(TypeIndex.RawStr), u64(1), name, i32(TypeIndex.ByteArrayPtr), u64(blobBytes)];
        const bodyBytes = body.reduce((n, b) => n + b.length, 0) + blobBytes;
        const streamer = new Watching();
        const budget = new ByteBudget(1 << 30);
        const reader = new PacketReader<StreamedPacket>(
          1 << 30,
          { packet: () => assert.fail('whole'), streamed: () => assert.fail('finished'), tooLarge: () => assert.fail() },
          budget,
          streamer,
        );
        // The float32 tensor's own memory (its huge-page-advised mapping is exactly its size), measured
        // apart from what the allocator and the collector do to the rest of the process meanwhile.
        const mapping = 64 * MiB;
        const rss0 = mappingRss(mapping);
        reader.push(Buffer.concat([u64(bodyBytes), ...body, blobStart]));
        const piece = Buffer.alloc(MiB, 0x11);
        for (let i = 0; i < 48; i++) reader.push(piece);
        assert.equal(streamer.opened.length, 1, 'the request was not streamed');
        assert.ok(budget.held >= 48 * MiB, `the budget holds ${budget.held} bytes`);
        assert.equal(reader.midPacket, true);
        const held = mappingRss(mapping) - rss0;
        assert.ok(held > 40 * MiB, `rss rose by only ${(held / MiB).toFixed(0)} MiB with 48 MiB streamed`);
        const disposed = recordingDisposals((d) => {
          reader.release();
          return d;
        });
        assert.equal(disposed.length, 2, "release() did not dispose both of the stream's tensors");
        assert.ok(disposed.every((t) => t.disposed));
        assert.deepEqual(
          disposed.map((t) => t.was),
          [
            ['int8', [1000]],
            ['float32', [16 * MiB]],
          ],
        );
        assert.equal(budget.held, 0);
        // the mapping is unmapped on a thread of its own (native/host_buffer.cc): soon, with no garbage collection
        const end = Date.now() + 5000;
        while (held - (mappingRss(mapping) - rss0) <= 40 * MiB && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
        const left = mappingRss(mapping) - rss0;
        assert.ok(
          held - left > 40 * MiB,
          `rss fell by only ${((held - left) / MiB).toFixed(0)} MiB within 5 s of release() (held ${(held / MiB).toFixed(0)} MiB)`,
        );
      } finally {
        setTransferCache(256 * MiB);
      }
    });

    it('a piece over the budget: RPCServerBusy mid-stream; release() then disposes the tensors', () => {
      const tensors = [randomData('float32', 300000)]; // 1.2 MB
      const packet = requestPacket('m', encodeBlob(tensors));
      const streamer = new Watching();
      const budget = new ByteBudget(MiB);
      const reader = new PacketReader<StreamedPacket>(
        64 * MiB,
        { packet: () => assert.fail('whole'), streamed: () => assert.fail('finished'), tooLarge: () => assert.fail() },
        budget,
        streamer,
      );
      recordingDisposals((disposed) => {
        assert.throws(
          () => {
            for (const c of split(packet, () => 64 * KiB)) reader.push(c);
          },
          (e: unknown) => e instanceof WireError && e.kind === 'RPCServerBusy',
        );
        assert.equal(streamer.opened.length, 1);
        assert.equal(disposed.length, 0);
        reader.release();
        assert.equal(disposed.length, 1);
        assert.ok(disposed[0].disposed);
        assert.equal(budget.held, 0);
      });
    });

    it('a finished stream leaves its tensors to the receiver (not disposed)', () => {
      const tensors = [randomData('float64', 20000)];
      recordingDisposals((disposed) => {
        const { events } = feed([requestPacket('m', encodeBlob(tensors))]);
        try {
          assert.equal(disposed.length, 0);
          assertStreamed(events[0], requestPacket('m', encodeBlob(tensors)).subarray(8), tensors, 'finished');
        } finally {
          disposeAll(events);
        }
      });
    });
  });
});
