/**
 * lib/rpc/wire.ts against real packets: the byte sequences below were captured from TVM
 * 0.27's stock Python client talking to TVM's stock Python server (one TCP chunk each, the
 * handshake left out), so the decoder and encoders are checked against TVM, not against
 * themselves.
 */
import assert from 'node:assert/strict';
import {
  ByteBudget,
  encodeCallReturn,
  encodeException,
  encodePacket,
  encodeSyscallReturn,
  encodeValues,
  PacketReader,
  PacketSplitter,
  PacketTooLargeError,
  RPC_PROTOCOL_VERSION,
  RPCCode,
  WireDecoder,
  WireError,
  type WireValue,
} from '../../lib/rpc/wire';
import { i32, prng, split, u64 } from './bytes';

const hex = (s: string) => Buffer.from(s, 'hex');

/** The handle TVM's server gave out for `tvm.rpc.server.workpath` in the capture. */
const HANDLE = 0x7f2db0002f40n;
const WORKPATH = '/tmp/tmp0r2wt6wh/abc';

/** Client to server, in the order the client sent them. */
const REQUESTS = {
  initServer: hex('1500000000000000020000000500000000000000302e382e3000000000'),
  getWorkpath: hex('2b00000000000000090000000100000008000000170000000000000074766d2e7270632e7365727665722e776f726b70617468'),
  callAbc: hex('1f0000000000000003000000402f00b02d7f000001000000080000000300000000000000616263'),
  getMissing: hex('1e000000000000000900000001000000080000000a000000000000006e6f2e737563682e666e'),
  freeHandle: hex('14000000000000000a0000000100000004000000402f00b02d7f0000'),
  shutdown: hex('040000000000000001000000'),
};

/** Server to client. */
const REPLIES = {
  none: hex('0c00000000000000040000000100000000000000'),
  handle: hex('1400000000000000040000000100000004000000402f00b02d7f0000'),
  str: hex('340000000000000004000000020000000100000041000000000000000800000014000000000000002f746d702f746d7030723277743677682f616263'),
  nullHandle: hex('14000000000000000400000001000000040000000000000000000000'),
};

const ALL_REQUESTS = Object.values(REQUESTS);
const STREAM = Buffer.concat(ALL_REQUESTS);
/** A packet's body: everything after its 8-byte length. */
const bodyOf = (packet: Buffer) => packet.subarray(8);

// Little-endian fields, to build packets the capture does not contain.
function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}
/** uint64 length + the UTF-8 bytes of `s`. */
const lenStr = (s: string) => Buffer.concat([u64(Buffer.byteLength(s)), Buffer.from(s)]);

/** A PacketReader that records what it reports, in order. */
function recordingReader(limit: number) {
  const bodies: Buffer[] = [];
  const tooLarge: PacketTooLargeError[] = [];
  const events: string[] = [];
  const reader = new PacketReader(limit, {
    packet: (body) => {
      bodies.push(body);
      events.push(`packet ${body.length}`);
    },
    tooLarge: (err) => {
      tooLarge.push(err);
      events.push(`too large ${err.length}`);
    },
  });
  return { reader, bodies, tooLarge, events };
}

/** Everything a PacketReader reports for `chunks`. */
function readAll(chunks: Buffer[], limit = 1 << 20) {
  const rec = recordingReader(limit);
  for (const c of chunks) rec.reader.push(c);
  return rec;
}

/**
 * Decodes a request the way a server reads it: code, then what that code carries
 * (InitServer: the client's version and a packed sequence; CallFunc: a handle and its
 * arguments; Shutdown: nothing; the rest: a packed sequence).
 */
function decodeRequest(body: Buffer): { code: RPCCode; version?: string; handle?: bigint; args?: WireValue[] } {
  const d = new WireDecoder(body);
  const code = d.i32() as RPCCode;
  const out: ReturnType<typeof decodeRequest> = { code };
  if (code === RPCCode.InitServer) out.version = d.lengthPrefixed().toString('utf8');
  if (code === RPCCode.CallFunc) out.handle = d.u64();
  if (code !== RPCCode.Shutdown) out.args = d.values();
  assert.equal(d.rest, 0, `bytes left after ${RPCCode[code]}`);
  return out;
}

/** The code and packed sequence of a reply. */
function decodeReply(packet: Buffer): { code: RPCCode; values: WireValue[] } {
  const d = new WireDecoder(bodyOf(packet));
  const res = { code: d.i32() as RPCCode, values: d.values() };
  assert.equal(d.rest, 0, 'bytes left after the reply');
  return res;
}

/** Asserts decoding `body` as a packed sequence throws a WireError whose message matches. */
function assertWireError(body: Buffer, message: RegExp): void {
  assert.throws(
    () => new WireDecoder(body).values(),
    (e: unknown) => e instanceof WireError && e.kind === 'ValueError' && message.test(e.message),
  );
}

describe('rpc wire format', () => {
  describe('PacketReader', () => {
    const wantBodies = ALL_REQUESTS.map(bodyOf);

    it('splits the captured stream fed in one chunk', () => {
      const { bodies, tooLarge } = readAll([STREAM]);
      assert.deepEqual(bodies, wantBodies);
      assert.equal(tooLarge.length, 0);
    });

    it('splits the captured stream fed byte by byte', () => {
      assert.deepEqual(readAll(split(STREAM, () => 1)).bodies, wantBodies);
    });

    it('splits the captured stream fed in random-size chunks', () => {
      for (let seed = 1; seed <= 50; seed++) {
        const rand = prng(seed);
        const chunks = split(STREAM, () => 1 + Math.floor(rand() * 40));
        assert.deepEqual(readAll(chunks).bodies, wantBodies, `seed ${seed}`);
      }
    });

    it('copies bodies, since a stream reuses its chunk memory', () => {
      const chunk = Buffer.from(REQUESTS.getWorkpath);
      const { bodies } = readAll([chunk]);
      chunk.fill(0);
      assert.deepEqual(bodies, [bodyOf(REQUESTS.getWorkpath)]);
    });

    it('delivers a packet of exactly the limit and an empty one', () => {
      const atLimit = bodyOf(REQUESTS.callAbc);
      const { bodies, tooLarge } = readAll([u64(0), REQUESTS.callAbc], atLimit.length);
      assert.deepEqual(bodies, [Buffer.alloc(0), atLimit]);
      assert.equal(tooLarge.length, 0);
    });

    describe('memory held for a packet in progress', () => {
      /** A 4 MiB packet's header and its body bytes 0..n. */
      const BODY = 4 << 20;
      const body = Buffer.alloc(BODY, 0x3c);
      body.writeInt32LE(RPCCode.CallFunc, 0);
      const head = u64(BODY);

      it('follows what arrived (at most double), in one growing buffer; the budget gets it all back', () => {
        const budget = new ByteBudget(64 << 20);
        const got: Buffer[] = [];
        const reader = new PacketReader(8 << 20, { packet: (b) => got.push(b), tooLarge: () => assert.fail('too large') }, budget);
        reader.push(head);
        reader.push(body.subarray(0, 1 << 20));
        assert.equal(budget.held, 1 << 20, 'a quarter arrived: only that is held');
        assert.equal(reader.midPacket, true);
        reader.push(body.subarray(1 << 20, 2 << 20));
        assert.equal(budget.held, 2 << 20, 'half arrived: the buffer doubled');
        reader.push(body.subarray(2 << 20));
        assert.equal(budget.held, 0);
        assert.equal(reader.midPacket, false);
        assert.equal(got.length, 1);
        assert.ok(got[0].equals(body));
      });

      it('a piece over the server-wide budget throws RPCServerBusy and takes nothing', () => {
        const budget = new ByteBudget(2 << 20);
        assert.ok(budget.take(512 << 10), 'another session holds a quarter of the budget');
        const reader = new PacketReader(8 << 20, { packet: () => undefined, tooLarge: () => undefined }, budget);
        reader.push(head);
        reader.push(body.subarray(0, 256 << 10));
        assert.throws(
          () => reader.push(body.subarray(256 << 10, 2 << 20)),
          (e: unknown) =>
            e instanceof WireError &&
            e.kind === 'RPCServerBusy' &&
            /already holds 1572864 bytes of incomplete requests \(its limit is 2097152\)/.test(e.message),
        );
        assert.equal(budget.held, (512 << 10) + (1 << 20), 'the first 1 MiB buffer stays held, the refused growth took nothing');
        reader.release();
        assert.equal(budget.held, 512 << 10, 'release() gives back what the reader held');
      });
    });

    describe('over the limit', () => {
      const LIMIT = 64;
      /** A 1000-byte body (a CallFunc full of junk) between two captured packets. */
      const big = encodePacket(RPCCode.CallFunc, [Buffer.alloc(996, 0xab)]);
      const stream = Buffer.concat([REQUESTS.getWorkpath, big, REQUESTS.freeHandle]);

      /** Asserts the reader reported `big` (length and limit) and delivered its neighbours intact. */
      function assertSkipped(chunks: Buffer[]): void {
        const { bodies, tooLarge, events } = readAll(chunks, LIMIT);
        assert.deepEqual(events, [`packet ${0x2b}`, 'too large 1000', `packet ${0x14}`]);
        assert.ok(tooLarge[0] instanceof PacketTooLargeError);
        assert.equal(tooLarge[0].length, 1000n);
        assert.equal(tooLarge[0].limit, LIMIT);
        assert.equal(tooLarge[0].kind, 'RPCMessageTooLarge');
        assert.match(tooLarge[0].message, /1000 bytes exceeds the server's limit of 64 bytes/);
        assert.deepEqual(bodies, [bodyOf(REQUESTS.getWorkpath), bodyOf(REQUESTS.freeHandle)]);
      }

      it('reports an oversized packet and delivers the next one, fed in one chunk', () => {
        assertSkipped([stream]);
      });

      it('does the same when the big body arrives in pieces', () => {
        // pieces that cut the big body, and its end into the next packet's header
        assertSkipped(split(stream, () => 7));
        assertSkipped(split(stream, () => 333));
        for (let seed = 1; seed <= 20; seed++) {
          const rand = prng(seed);
          assertSkipped(split(stream, () => 1 + Math.floor(rand() * 300)));
        }
      });

      it('reports a claimed length of 2^62 at once and never buffers what follows', () => {
        const { reader, tooLarge, events } = recordingReader(LIMIT);
        reader.push(Buffer.concat([u64(2n ** 62n), i32(RPCCode.CallFunc)]));
        assert.deepEqual(events, [`too large ${2n ** 62n}`]);
        assert.equal(tooLarge[0].length, 2n ** 62n);
        assert.equal(tooLarge[0].limit, LIMIT);

        // 256 MiB of "body" from one reused 8 MiB chunk: buffering it would show in arrayBuffers
        const chunk = Buffer.alloc(8 << 20, 1);
        const before = process.memoryUsage().arrayBuffers;
        for (let i = 0; i < 32; i++) reader.push(chunk);
        const grown = process.memoryUsage().arrayBuffers - before;
        assert.ok(grown < 16 << 20, `arrayBuffers grew by ${grown} bytes while skipping`);
        assert.equal(events.length, 1);
      });
    });
  });

  describe('PacketSplitter', () => {
    it('stands at a boundary only between packets', () => {
      const ends = new Set<number>([0]);
      let end = 0;
      for (const p of ALL_REQUESTS) {
        end += p.length;
        ends.add(end);
      }

      const headers: bigint[] = [];
      const body: Buffer[] = [];
      const splitter = new PacketSplitter({ header: (n) => headers.push(n), body: (d) => body.push(Buffer.from(d)) });
      assert.equal(splitter.atBoundary, true);
      for (let pos = 1; pos <= STREAM.length; pos++) {
        splitter.push(STREAM.subarray(pos - 1, pos));
        assert.equal(splitter.atBoundary, ends.has(pos), `after ${pos} bytes`);
      }
      assert.deepEqual(
        headers,
        ALL_REQUESTS.map((p) => BigInt(p.length - 8)),
      );
      assert.deepEqual(Buffer.concat(body), Buffer.concat(ALL_REQUESTS.map(bodyOf)));
    });
  });

  describe('WireDecoder', () => {
    it('decodes the captured requests', () => {
      const str = (value: string): WireValue => ({ kind: 'str', value });
      assert.deepEqual(
        ALL_REQUESTS.map((p) => decodeRequest(bodyOf(p))),
        [
          { code: RPCCode.InitServer, version: '0.8.0', args: [] },
          { code: RPCCode.GetGlobalFunc, args: [str('tvm.rpc.server.workpath')] },
          { code: RPCCode.CallFunc, handle: HANDLE, args: [str('abc')] },
          { code: RPCCode.GetGlobalFunc, args: [str('no.such.fn')] },
          { code: RPCCode.FreeHandle, args: [{ kind: 'handle', value: HANDLE }] },
          { code: RPCCode.Shutdown },
        ],
      );
      assert.equal(RPC_PROTOCOL_VERSION, '0.8.0');
    });

    it('decodes the captured replies', () => {
      assert.deepEqual(decodeReply(REPLIES.none), { code: RPCCode.Return, values: [{ kind: 'none' }] });
      assert.deepEqual(decodeReply(REPLIES.handle), { code: RPCCode.Return, values: [{ kind: 'handle', value: HANDLE }] });
      assert.deepEqual(decodeReply(REPLIES.nullHandle), { code: RPCCode.Return, values: [{ kind: 'handle', value: 0n }] });
      assert.deepEqual(decodeReply(REPLIES.str), {
        code: RPCCode.Return,
        values: [
          { kind: 'int', value: 65n },
          { kind: 'str', value: WORKPATH },
        ],
      });
    });

    it('round-trips every plain value kind', () => {
      const values: WireValue[] = [
        { kind: 'none' },
        { kind: 'int', value: -5n },
        { kind: 'int', value: 2n ** 63n - 1n },
        { kind: 'bool', value: 1n },
        { kind: 'float', value: 2.5 },
        { kind: 'handle', value: 0xffff_ffff_ffff_fff0n },
        { kind: 'str', value: 'héllo' },
        { kind: 'bytes', value: Buffer.from([0, 1, 255]) },
      ];
      assert.deepEqual(new WireDecoder(Buffer.concat(encodeValues(values))).values(), values);
    });

    describe('string and bytes objects', () => {
      // outer type index (Str, Bytes, SmallStr, SmallBytes), then TVM's ReadFFIAny layout
      for (const outer of [65, 66, 11, 12]) {
        it(`decodes type index ${outer} carrying a Str or a Bytes`, () => {
          const seq = Buffer.concat([i32(2), i32(outer), u32(65), lenStr('naïve'), i32(outer), u32(66), lenStr('\x00\x7f')]);
          assert.deepEqual(new WireDecoder(seq).values(), [
            { kind: 'str', value: 'naïve' },
            { kind: 'bytes', value: Buffer.from([0, 0x7f]) },
          ]);
        });
      }

      it('refuses an object that is neither', () => {
        assertWireError(Buffer.concat([i32(1), i32(65), u32(68), u64(0)]), /argument type 68 is not accepted here/);
      });
    });

    describe('malformed packets', () => {
      it('refuses a length field claiming more bytes than present', () => {
        // the captured GetGlobalFunc with its name cut short: 23 bytes claimed, 18 there
        const cut = bodyOf(REQUESTS.getWorkpath).subarray(4, -5);
        assertWireError(cut, /truncated packet: a field claims 23 bytes/);
        assertWireError(Buffer.concat([i32(1), i32(8), u64(2n ** 63n)]), /truncated packet: a field claims 9223372036854775808 bytes/);
      });

      it('refuses a fixed-size value cut short', () => {
        // the captured FreeHandle without the last 4 bytes of its handle
        const cut = bodyOf(REQUESTS.freeHandle).subarray(4, -4);
        assertWireError(cut, /truncated packet: wanted 8 bytes at offset 8 of 12/);
      });

      it('refuses a count larger than the packet, or negative', () => {
        assertWireError(Buffer.concat([i32(1000), i32(0)]), /bad argument count 1000/);
        assertWireError(i32(-1), /bad argument count -1/);
        // a count that fits the packet's size but not its contents
        assertWireError(Buffer.concat([i32(3), i32(0), i32(0)]), /truncated packet: wanted 4 bytes at offset 12 of 12/);
      });

      it('refuses non-plain argument types, naming them', () => {
        // tvm-ffi's indices: 68 is Function, 70 Tensor (wire.ts names only the ones it knows)
        const refused: [number, RegExp][] = [
          [7, /argument type DLTensorPtr \(7\) is not accepted here/],
          [6, /argument type Device \(6\) is not accepted here/],
          [68, /argument type 68 is not accepted here/],
          [70, /argument type 70 is not accepted here/],
        ];
        for (const [type, message] of refused) assertWireError(Buffer.concat([i32(1), i32(type), u64(0)]), message);
      });
    });
  });

  describe('encoders', () => {
    it('encodes the None reply byte for byte as TVM does', () => {
      assert.deepEqual(encodeSyscallReturn({ kind: 'none' }), REPLIES.none);
    });

    it('encodes a handle reply byte for byte as TVM does', () => {
      assert.deepEqual(encodeSyscallReturn({ kind: 'handle', value: HANDLE }), REPLIES.handle);
      assert.deepEqual(encodeSyscallReturn({ kind: 'handle', value: 0n }), REPLIES.nullHandle);
    });

    it('encodes a CallFunc str result byte for byte as TVM does', () => {
      assert.deepEqual(encodeCallReturn({ kind: 'str', value: WORKPATH }), REPLIES.str);
    });

    it('encodes an exception in the layout of ReturnException, lengths in bytes', () => {
      const message = 'ValueError: no model ‘é’';
      const bytes = Buffer.byteLength(message);
      assert.notEqual(bytes, message.length);
      const packet = encodeException(message);
      // uint64 length | int32 code 5 | int32 count 1 | int32 RawStr 8 | uint64 len | bytes
      assert.deepEqual(packet, Buffer.concat([u64(4 + 4 + 4 + 8 + bytes), i32(5), i32(1), i32(8), lenStr(message)]));
      assert.deepEqual(decodeReply(packet), { code: RPCCode.Exception, values: [{ kind: 'str', value: message }] });
    });
  });
});
