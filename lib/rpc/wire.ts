/**
 * TVM's binary RPC protocol after the handshake (src/runtime/rpc/rpc_endpoint.cc,
 * minrpc/rpc_reference.h, protocol version "0.8.0"), as far as tvm-node's server needs it:
 * splitting a stream into packets under a size limit, decoding the plain values of a
 * packed argument sequence, and encoding replies.
 *
 * Packet: uint64 LE body length | int32 RPCCode | body. A packed sequence: int32 count, then
 * per value an int32 type index (tvm-ffi's TVMFFITypeIndex) and its payload: int/bool/float
 * and handles as 8 bytes; raw strings and byte arrays as uint64 length + bytes; string and
 * bytes objects as a second uint32 type index, uint64 length + bytes.
 */
import { addon } from '../binding';
import { TvmError } from '../errors';
import type { Tensor } from '../tensor';
import type { BlobMeta } from './tni1';

/** RPC packet codes (RPCCode in rpc_reference.h). */
export enum RPCCode {
  None = 0,
  Shutdown = 1,
  InitServer = 2,
  CallFunc = 3,
  Return = 4,
  Exception = 5,
  CopyFromRemote = 6,
  CopyToRemote = 7,
  CopyAck = 8,
  GetGlobalFunc = 9,
  FreeHandle = 10,
  DevSetDevice = 11,
  DevGetAttr = 12,
  DevAllocData = 13,
  DevFreeData = 14,
  DevStreamSync = 15,
  CopyAmongRemote = 16,
  DevAllocDataWithScope = 17,
  DevCreateStream = 18,
  DevFreeStream = 19,
  DevSetStream = 20,
  DevGetCurrentStream = 21,
}

/** The protocol version client and server exchange in InitServer. */
export const RPC_PROTOCOL_VERSION = '0.8.0';

/** The tvm-ffi type indices that appear on the wire (c_api.h). */
export const TypeIndex = {
  None: 0,
  Int: 1,
  Bool: 2,
  Float: 3,
  OpaquePtr: 4,
  DataType: 5,
  Device: 6,
  DLTensorPtr: 7,
  RawStr: 8,
  ByteArrayPtr: 9,
  SmallStr: 11,
  SmallBytes: 12,
  StaticObjectBegin: 64,
  Str: 65,
  Bytes: 66,
} as const;

/**
 * A plain value of a packed sequence. Devices, tensors and remote objects are not; `tensors`
 * is a TNI1 bytes value streamed into (or out of) CPU tensors (lib/rpc/tensor-stream.ts).
 */
export type WireValue =
  | { kind: 'none' }
  | { kind: 'int' | 'bool' | 'handle'; value: bigint }
  | { kind: 'float'; value: number }
  | { kind: 'str'; value: string }
  | { kind: 'bytes'; value: Buffer }
  | { kind: 'tensors'; value: Tensor[]; meta?: BlobMeta };

/**
 * A request the server cannot or will not serve; `kind` is the error kind the client sees
 * (ValueError for malformed bytes, PermissionError for what a policy refuses).
 */
export class WireError extends TvmError {
  constructor(message: string, kind = 'ValueError', options?: ErrorOptions) {
    super(kind, message, '', options);
  }
}

/** A packet whose announced length is over the limit; `length` is what it announced. */
export class PacketTooLargeError extends WireError {
  constructor(
    readonly length: bigint,
    readonly limit: number,
  ) {
    super(`RPC message of ${length} bytes exceeds the server's limit of ${limit} bytes`, 'RPCMessageTooLarge');
  }
}

const LENGTH_BYTES = 8;

/** Where a {@link PacketSplitter} sends the pieces of the stream. */
export interface PacketSink {
  /** A packet starts; `length` is its body length as announced. */
  header(length: bigint): void;
  /** The next bytes of the current packet's body (a view into the chunk). */
  body(data: Buffer): void;
}

/**
 * Follows packet boundaries in a byte stream without keeping the bytes: it reports each
 * packet's announced length before any of its body, so a relay can refuse an oversized
 * packet before passing anything on, and a reader can skip one without buffering it.
 */
export class PacketSplitter {
  private readonly head = Buffer.alloc(LENGTH_BYTES);
  private headFill = 0;
  /** Body bytes still to come of the current packet. */
  private remaining = 0n;

  constructor(private readonly sink: PacketSink) {}

  push(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      if (this.remaining === 0n) {
        const n = Math.min(LENGTH_BYTES - this.headFill, chunk.length - pos);
        chunk.copy(this.head, this.headFill, pos, pos + n);
        this.headFill += n;
        pos += n;
        if (this.headFill < LENGTH_BYTES) return;
        this.headFill = 0;
        this.remaining = this.head.readBigUInt64LE(0);
        this.sink.header(this.remaining);
        continue;
      }
      const left = BigInt(chunk.length - pos);
      const n = Number(this.remaining < left ? this.remaining : left);
      this.remaining -= BigInt(n);
      this.sink.body(chunk.subarray(pos, pos + n));
      pos += n;
    }
  }

  /** Whether the stream stands between packets (nothing of a packet is pending). */
  get atBoundary(): boolean {
    return this.remaining === 0n && this.headFill === 0;
  }
}

/**
 * Bytes a server holds for requests that have not fully arrived, all sessions together: a
 * bound on what clients that send slowly, or never finish, can pin.
 */
export class ByteBudget {
  private used = 0;

  constructor(readonly limit: number) {}

  /** Takes `n` bytes of the budget; false (nothing taken) when they do not fit. */
  take(n: number): boolean {
    if (this.used + n > this.limit) return false;
    this.used += n;
    return true;
  }

  give(n: number): void {
    this.used -= n;
  }

  /** Bytes held now. */
  get held(): number {
    return this.used;
  }
}

/** Packets up to this size are gathered in pieces and joined once (small requests stay cheap). */
const SMALL_PACKET = 1 << 20;

/**
 * Takes over the body of a large packet whose first bytes it recognizes, instead of the
 * reader keeping the body whole (lib/rpc/tensor-stream.ts puts a TNI1 blob's tensors
 * straight into the tensors a model reads).
 */
export interface BodyStreamer<T> {
  /** Bodies at least this long are offered, once this many of their bytes have arrived. */
  readonly prefixBytes: number;
  /** A stream for the body that starts with `prefix` (`length` bytes in all), or undefined to keep it whole. */
  open(prefix: Buffer, length: number): BodyStream<T> | undefined;
}

/** The rest of a body, after the prefix its {@link BodyStreamer} was opened with. */
export interface BodyStream<T> {
  /** The next bytes (a view into the stream's chunk: copy what is kept). */
  push(data: Buffer): void;
  /** Every byte has arrived: what the body became. */
  finish(): T;
  /** The session ended before the body did: give its memory back now. */
  abort(): void;
}

/** What a {@link PacketReader} reports, in stream order. */
export interface PacketEvents<T> {
  /** A whole packet body. */
  packet(body: Buffer): void;
  /** A packet whose announced length is over the limit (its body is skipped). */
  tooLarge(err: PacketTooLargeError): void;
  /** A body a {@link BodyStreamer} took over, finished. */
  streamed?(value: T): void;
}

/**
 * Whole packets out of a byte stream, each at most `limit` bytes; the body of a larger one
 * is skipped as it streams by (never buffered) and reported with its announced length.
 *
 * Memory follows what arrives, not what a packet announces: a large body is kept in a buffer
 * that grows (at most doubling) as its bytes come, so a client must send N/2 bytes to make the
 * server hold N. That buffer is mmap'd memory (native/host_buffer.cc): growing copies nothing,
 * and when a session ends mid-packet ({@link PacketReader.release}) its pages go back to the
 * OS at once instead of at some later garbage collection. A {@link BodyStreamer} may take a
 * large body over once its first bytes are in. What is held counts against `budget`; a piece
 * that would exceed it is a {@link WireError} of kind `RPCServerBusy` thrown from
 * {@link PacketReader.push}.
 */
export class PacketReader<T = never> {
  private readonly splitter: PacketSplitter;
  private parts: Buffer[] = [];
  /** A large body's buffer while it arrives (native memory). */
  private large?: ArrayBuffer;
  /** The stream that took the current body over. */
  private stream?: BodyStream<T>;
  /** Whether the current body was offered to the streamer already. */
  private offered = false;
  private need = 0;
  private have = 0;
  private held = 0;
  private skipping = false;

  constructor(
    readonly limit: number,
    private readonly events: PacketEvents<T>,
    private readonly budget = new ByteBudget(Infinity),
    private readonly streamer?: BodyStreamer<T>,
  ) {
    this.splitter = new PacketSplitter({
      header: (length) => {
        this.skipping = length > BigInt(limit);
        if (this.skipping) return events.tooLarge(new PacketTooLargeError(length, limit));
        this.need = Number(length);
        this.offered = !streamer || this.need < streamer.prefixBytes;
        if (this.need === 0) events.packet(Buffer.alloc(0));
      },
      body: (data) => {
        if (this.skipping) return;
        this.keep(data);
        if (this.have === this.need) this.finishPacket();
      },
    });
  }

  /** Keeps a piece of the current body (copied: the stream reuses the chunk's memory). */
  private keep(data: Buffer): void {
    if (this.stream) {
      this.hold(data.length);
      this.stream.push(data);
    } else if (!this.offered || this.need <= SMALL_PACKET) {
      this.hold(data.length);
      this.parts.push(Buffer.from(data));
    } else {
      this.keepLarge(data);
    }
    this.have += data.length;
    if (!this.offered && this.have >= this.streamer!.prefixBytes) this.offer();
  }

  /** Offers the body's first bytes to the streamer; a body it declines is kept whole, as usual. */
  private offer(): void {
    this.offered = true;
    const prefix = Buffer.concat(this.parts);
    this.parts = [prefix];
    this.stream = this.streamer!.open(prefix, this.need);
    if (this.stream) this.parts = [];
    else if (this.need > SMALL_PACKET) {
      // Into the large buffer, which accounts for its own capacity.
      this.parts = [];
      this.budget.give(prefix.length);
      this.held -= prefix.length;
      this.have = 0;
      this.keepLarge(prefix);
      this.have = prefix.length;
    }
  }

  /** Keeps a piece in the large buffer, which grows (at most doubling) as bytes arrive. */
  private keepLarge(data: Buffer): void {
    const end = this.have + data.length;
    const capacity = this.large?.byteLength ?? 0;
    if (end > capacity) {
      const size = Math.min(this.need, Math.max(end, 2 * capacity, SMALL_PACKET));
      this.hold(size - capacity);
      this.large = this.large ? addon.resizeHostBuffer(this.large, size) : addon.allocHostBuffer(size);
    }
    data.copy(new Uint8Array(this.large!), this.have);
  }

  private hold(n: number): void {
    if (!this.budget.take(n)) {
      throw new WireError(`the server already holds ${this.budget.held} bytes of incomplete requests (its limit is ${this.budget.limit})`, 'RPCServerBusy');
    }
    this.held += n;
  }

  /** Reports the finished body: the large buffer is the caller's now (the GC frees it), pieces are joined. */
  private finishPacket(): void {
    const stream = this.stream;
    const body = stream ? undefined : this.large ? Buffer.from(this.large, 0, this.need) : this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts);
    this.large = undefined;
    this.stream = undefined;
    this.release();
    if (stream) this.events.streamed!(stream.finish());
    else this.events.packet(body!);
  }

  push(chunk: Buffer): void {
    this.splitter.push(chunk);
  }

  /** Whether part of a packet has arrived and the rest has not. */
  get midPacket(): boolean {
    return !this.splitter.atBoundary;
  }

  /** Drops the incomplete packet's bytes, returning its memory now, and gives them back to the budget. */
  release(): void {
    if (this.large) addon.freeHostBuffer(this.large);
    this.stream?.abort();
    this.stream = undefined;
    this.large = undefined;
    this.budget.give(this.held);
    this.held = 0;
    this.have = 0;
    this.parts = [];
  }
}

/** Reads a packet body: fixed-size fields and packed sequences of plain values. */
export class WireDecoder {
  private pos = 0;

  constructor(private readonly buf: Buffer) {}

  private take(n: number): number {
    if (this.pos + n > this.buf.length) throw new WireError(`truncated packet: wanted ${n} bytes at offset ${this.pos} of ${this.buf.length}`);
    const at = this.pos;
    this.pos += n;
    return at;
  }

  i32(): number {
    return this.buf.readInt32LE(this.take(4));
  }

  u64(): bigint {
    return this.buf.readBigUInt64LE(this.take(8));
  }

  /** uint64 length + bytes (a view into the packet). */
  lengthPrefixed(): Buffer {
    const n = this.u64();
    if (n > BigInt(this.buf.length - this.pos)) throw new WireError(`truncated packet: a field claims ${n} bytes`);
    const at = this.take(Number(n));
    return this.buf.subarray(at, at + Number(n));
  }

  /** A packed sequence of plain values; anything else is a {@link WireError} naming it. */
  values(): WireValue[] {
    const count = this.i32();
    if (count < 0 || count > this.buf.length) throw new WireError(`bad argument count ${count}`);
    return Array.from({ length: count }, () => this.value());
  }

  /** One value of a packed sequence. */
  value(): WireValue {
    const type = this.i32();
    switch (type) {
      case TypeIndex.None:
        return { kind: 'none' };
      case TypeIndex.Int:
        return { kind: 'int', value: this.buf.readBigInt64LE(this.take(8)) };
      case TypeIndex.Bool:
        return { kind: 'bool', value: this.buf.readBigInt64LE(this.take(8)) };
      case TypeIndex.Float:
        return { kind: 'float', value: this.buf.readDoubleLE(this.take(8)) };
      case TypeIndex.OpaquePtr:
        return { kind: 'handle', value: this.u64() };
      case TypeIndex.RawStr:
        return { kind: 'str', value: this.lengthPrefixed().toString('utf8') };
      case TypeIndex.ByteArrayPtr:
        return { kind: 'bytes', value: this.lengthPrefixed() };
      case TypeIndex.SmallStr:
      case TypeIndex.SmallBytes:
      case TypeIndex.Str:
      case TypeIndex.Bytes:
        return this.object();
      default:
        throw new WireError(`argument type ${typeName(type)} is not accepted here`);
    }
  }

  /** String and bytes objects carry their type index a second time. */
  private object(): WireValue {
    const type = this.buf.readUInt32LE(this.take(4));
    if (type === TypeIndex.Str) return { kind: 'str', value: this.lengthPrefixed().toString('utf8') };
    if (type === TypeIndex.Bytes) return { kind: 'bytes', value: this.lengthPrefixed() };
    throw new WireError(`argument type ${typeName(type)} is not accepted here`);
  }

  /** Bytes read so far. */
  get offset(): number {
    return this.pos;
  }

  /** Bytes left unread. */
  get rest(): number {
    return this.buf.length - this.pos;
  }
}

function typeName(type: number): string {
  const known = Object.entries(TypeIndex).find(([, v]) => v === type);
  return known ? `${known[0]} (${type})` : String(type);
}

/** Encodes one plain value (strings as raw strings, bytes as byte arrays, as TVM replies). */
function encodeValue(v: WireValue): Buffer[] {
  const head = (type: number, size: number) => {
    const b = Buffer.alloc(4 + size);
    b.writeInt32LE(type, 0);
    return b;
  };
  switch (v.kind) {
    case 'none':
      return [head(TypeIndex.None, 0)];
    case 'int':
    case 'bool':
    case 'handle': {
      const b = head(v.kind === 'int' ? TypeIndex.Int : v.kind === 'bool' ? TypeIndex.Bool : TypeIndex.OpaquePtr, 8);
      b.writeBigUInt64LE(BigInt.asUintN(64, v.value), 4);
      return [b];
    }
    case 'float': {
      const b = head(TypeIndex.Float, 8);
      b.writeDoubleLE(v.value, 4);
      return [b];
    }
    case 'str':
    case 'bytes': {
      const data = v.kind === 'str' ? Buffer.from(v.value, 'utf8') : v.value;
      const b = head(v.kind === 'str' ? TypeIndex.RawStr : TypeIndex.ByteArrayPtr, 8);
      b.writeBigUInt64LE(BigInt(data.length), 4);
      return [b, data];
    }
    case 'tensors':
      throw new WireError('tensors are sent by writeTensorPacket (lib/rpc/tensor-stream.ts), as the last value of a packet');
  }
}

/** A whole packet: length, code, then `parts`. */
export function encodePacket(code: RPCCode, parts: Buffer[] = []): Buffer {
  const body = 4 + parts.reduce((n, p) => n + p.length, 0);
  const head = Buffer.alloc(12);
  head.writeBigUInt64LE(BigInt(body), 0);
  head.writeInt32LE(code, 8);
  return Buffer.concat([head, ...parts]);
}

/** A packed sequence of plain values. */
export function encodeValues(values: readonly WireValue[]): Buffer[] {
  const count = Buffer.alloc(4);
  count.writeInt32LE(values.length, 0);
  return [count, ...values.flatMap(encodeValue)];
}

/** The reply to a syscall (GetGlobalFunc, FreeHandle, ...): one value. */
export function encodeSyscallReturn(value: WireValue): Buffer {
  return encodePacket(RPCCode.Return, encodeValues([value]));
}

/**
 * The reply to CallFunc: TVM's servers send the result's type index first, then the value
 * (strings as raw strings, bytes as byte arrays), and the client rebuilds the object.
 */
export function encodeCallReturn(value: WireValue): Buffer {
  const typeOf = {
    none: TypeIndex.None,
    int: TypeIndex.Int,
    bool: TypeIndex.Bool,
    float: TypeIndex.Float,
    handle: TypeIndex.OpaquePtr,
    str: TypeIndex.Str,
    bytes: TypeIndex.Bytes,
    tensors: TypeIndex.Bytes,
  }[value.kind];
  return encodePacket(RPCCode.Return, encodeValues([{ kind: 'int', value: BigInt(typeOf) }, value]));
}

/**
 * An exception reply: TVM's client raises it (as RPCError, or RPCSessionTimeoutError when
 * the message starts with that name) and the session goes on.
 */
export function encodeException(message: string): Buffer {
  return encodePacket(RPCCode.Exception, encodeValues([{ kind: 'str', value: message }]));
}
