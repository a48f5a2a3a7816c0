/**
 * Tensors at wire speed through TVM's RPC packets. `tvm_node.infer` carries its tensors in
 * one TNI1 bytes value (lib/rpc/tni1.ts), the last value of its packet: a request's
 * (CallFunc: handle, model name, blob) and a reply's (Return: type index, blob). Instead of
 * building that blob in memory and parsing it out of a buffered packet, both ends stream it:
 *
 * - sending ({@link writeTensorPacket}): the packet's head and the blob's header are a few
 *   hundred bytes; each tensor's bytes go from its own memory (a CPU tensor's, or the
 *   caller's TypedArray) to the socket, with no copy and no concatenation.
 * - receiving ({@link TensorStreamer}): once the first bytes of a large packet show a TNI1
 *   blob at its end, the tensors it describes are allocated (every entry checked first:
 *   inside the blob, no overlaps, so they never hold more than the packet brings) and each
 *   arriving chunk is copied once, straight into the tensor the model (or the caller) reads.
 *
 * The bytes on the wire are exactly those of the buffered path, so stock TVM clients (which
 * send and expect an ordinary bytes value) are served the same way, and a peer that is not
 * tvm-node sees nothing new.
 */
import type { Socket } from 'node:net';
import { addon } from '../binding';
import { DeviceType } from '../device';
import { checkDType, type DType, dtypeOfArray, type TypedArray } from '../dtype';
import { TvmRuntimeError } from '../errors';
import { requireNumber } from '../options';
import { Tensor } from '../tensor';
import { type BlobMeta, type CheckedEntry, checkEntries, layoutBlob, readHeader } from './tni1';
import { type BodyStream, type BodyStreamer, RPCCode, TypeIndex, WireDecoder, WireError } from './wire';

/** Packets at least this long are looked at for a blob once this many bytes are in (the blob's header must fit). */
export const STREAM_PREFIX_BYTES = 64 * 1024;

/**
 * Blobs with more tensors than this are buffered instead (a model with that many inputs is
 * rare): the server checks such a request's tensor count against the model before it makes
 * any tensor, where a streamed blob's tensors are made as soon as its header arrives.
 */
const MAX_STREAMED_TENSORS = 64;

/** A packet whose blob was streamed into tensors. */
export interface StreamedPacket {
  /** The packet body before the blob's bytes value: code, handle (CallFunc), the other values. */
  head: Buffer;
  /** How many values the packet's sequence holds, the blob included (it is the last). */
  count: number;
  /** The blob's tensors, in header order (CPU tensors, the receiver's to dispose). */
  tensors: Tensor[];
  /** The blob header's other fields. */
  meta: BlobMeta;
}

/** Where a packet's blob lies, found from its first bytes. */
interface BlobPlace {
  head: Buffer;
  count: number;
  /** Body offset of the blob's data area. */
  dataStart: number;
  entries: CheckedEntry[];
  meta: BlobMeta;
}

/**
 * Finds a TNI1 blob as the last value of a CallFunc or Return packet from the packet's first
 * bytes; undefined for any other packet, or when anything is off (the buffered path then
 * decodes it and reports what is wrong).
 */
function placeBlob(prefix: Buffer, bodyLength: number): BlobPlace | undefined {
  try {
    const d = new WireDecoder(prefix);
    const code = d.i32();
    if (code === RPCCode.CallFunc) d.u64();
    else if (code !== RPCCode.Return) return undefined;
    const count = d.i32();
    if (count < 1 || count > 16) return undefined;
    for (let i = 0; i < count - 1; i++) d.value();
    const headEnd = d.offset;
    const type = d.i32();
    if (type === TypeIndex.SmallBytes || type === TypeIndex.Bytes) {
      if (d.i32() !== TypeIndex.Bytes) return undefined;
    } else if (type !== TypeIndex.ByteArrayPtr) return undefined;
    const blobLength = d.u64();
    const blobStart = d.offset;
    if (BigInt(blobStart) + blobLength !== BigInt(bodyLength)) return undefined;
    const { entries, dataStart, meta } = readHeader(prefix.subarray(blobStart));
    if (entries.length > MAX_STREAMED_TENSORS) return undefined;
    const dataBytes = bodyLength - blobStart - dataStart;
    return { head: Buffer.from(prefix.subarray(0, headEnd)), count, dataStart: blobStart + dataStart, entries: checkEntries(entries, dataBytes), meta };
  } catch {
    return undefined;
  }
}

/**
 * Bounds the memory this process keeps of released transfer tensors for reuse
 * (native/host_buffer.cc; process-wide, default 256 MiB; 0 keeps none) and returns what it
 * holds. Tensors received through `tvm_node.infer` (a server's inputs, a client's outputs)
 * fill reused memory several times faster than fresh pages; what the cache keeps stays in
 * the process's RSS.
 */
export function setTransferCache(bytes?: number): number {
  if (bytes !== undefined) requireNumber('setTransferCache: bytes', bytes, { min: 0, integer: true });
  return bytes === undefined ? addon.setHostTensorCache() : addon.setHostTensorCache(bytes);
}

/** A CPU tensor for bytes from a socket (native/host_buffer.cc: huge pages, freed with its last reference). */
function hostTensor(shape: number[], dtype: DType): Tensor {
  return new Tensor(addon.allocHostTensor(shape, dtype));
}

/** A tensor being filled from the stream: its bytes' place in the body and a view of its memory. */
interface Destination {
  start: number;
  end: number;
  buffer: ArrayBuffer;
  bytes: Uint8Array;
}

/** The body of one packet going into its tensors. */
class TensorStream implements BodyStream<StreamedPacket> {
  private readonly tensors: Tensor[] = [];
  private readonly into: Destination[] = [];
  /** Body offset of the next byte. */
  private at = 0;
  /** The first destination not yet filled. */
  private next = 0;

  constructor(
    private readonly place: BlobPlace,
    prefix: Buffer,
  ) {
    try {
      for (const e of place.entries) {
        const t = hostTensor(e.shape, e.dtype);
        this.tensors.push(t);
        const buffer = t.handle.hostView() as ArrayBuffer;
        const start = place.dataStart + e.offset;
        this.into.push({ start, end: start + e.nbytes, buffer, bytes: new Uint8Array(buffer) });
      }
    } catch (err) {
      this.abort();
      throw err;
    }
    this.into.sort((a, b) => a.start - b.start);
    this.push(prefix);
  }

  push(data: Buffer): void {
    const from = this.at;
    const to = from + data.length;
    while (this.next < this.into.length) {
      const d = this.into[this.next];
      if (d.start >= to) break;
      const lo = Math.max(d.start, from);
      const hi = Math.min(d.end, to);
      if (hi > lo) d.bytes.set(data.subarray(lo - from, hi - from), lo - d.start);
      if (d.end > to) break;
      this.next++;
    }
    this.at = to;
  }

  finish(): StreamedPacket {
    this.releaseViews();
    return { head: this.place.head, count: this.place.count, tensors: this.tensors, meta: this.place.meta };
  }

  abort(): void {
    this.releaseViews();
    for (const t of this.tensors) t.disposeSync();
  }

  /** The views' references go now: the tensors alone decide when the memory goes. */
  private releaseViews(): void {
    for (const d of this.into.splice(0)) if (d.buffer.byteLength > 0) addon.releaseHostView(d.buffer);
  }
}

/** Streams TNI1 blobs of large CallFunc and Return packets into CPU tensors. */
export class TensorStreamer implements BodyStreamer<StreamedPacket> {
  readonly prefixBytes = STREAM_PREFIX_BYTES;

  open(prefix: Buffer, length: number): BodyStream<StreamedPacket> | undefined {
    const place = placeBlob(prefix, length);
    return place && new TensorStream(place, prefix);
  }
}

/** Tensor bytes to send: a host TypedArray, or a CPU tensor (its memory is sent as it is). */
export interface OutgoingTensor {
  shape: readonly number[];
  dtype: DType;
  /** The bytes, when they are host data. */
  data?: TypedArray | Buffer;
  /** The tensor, when the bytes are a CPU tensor's. */
  tensor?: Tensor;
}

/**
 * What is sent for a tensor or host data: host data as it is (no copy: it must not change
 * until the send is done), a CPU tensor's own memory, a device tensor copied to the host first.
 */
export async function outgoingTensor(input: Tensor | { data: TypedArray | Buffer; shape: readonly number[]; dtype?: DType }): Promise<OutgoingTensor> {
  if (!(input instanceof Tensor)) return { data: input.data, shape: input.shape, dtype: input.dtype ?? dtypeOfArray(input.data) };
  if (input.device.deviceType === DeviceType.cpu) return { tensor: input, shape: input.shape, dtype: input.dtype };
  return { data: await input.toArray(), shape: input.shape, dtype: input.dtype };
}

/** Options of {@link writeTensorPacket}. */
export interface WriteOptions {
  /** A peer that takes none of the bytes for this long is given up on (the socket is destroyed). */
  stallMs: number;
  /** More fields for the blob's header. */
  meta?: BlobMeta;
}

const byteView = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/**
 * Writes one packet: `head` (the body up to the blob: code, handle, other values), then the
 * blob's bytes value. A large packet's tensors go from their own memory to the socket, and it
 * resolves once the socket has taken every byte (the memory may be reused or freed from then
 * on); a small one is copied into one buffer and written at once. Rejects when the socket
 * closes first or the peer stops reading for `stallMs`.
 */
export async function writeTensorPacket(socket: Socket, head: readonly Buffer[], tensors: readonly OutgoingTensor[], opts: WriteOptions): Promise<void> {
  const sizes = tensors.map((t) => (t.data ? t.data.byteLength : t.tensor!.byteLength));
  const { header, offsets, size } = layoutBlob(
    tensors.map((t) => ({ shape: t.shape, dtype: checkDType(t.dtype) })),
    sizes,
    opts.meta,
  );
  // Packet length, head, the bytes value's type and length: then the blob (`size` bytes, its header included).
  const blobStart = 8 + head.reduce((n, b) => n + b.length, 0) + 4 + 8;
  if (blobStart + size <= SMALL_WRITE) {
    // One buffer, one write, no wait for the kernel: it is a copy the socket owns.
    const packet = Buffer.alloc(blobStart + size);
    writePrefix(packet, head, header, size);
    const data = packet.subarray(blobStart);
    tensors.forEach((t, i) => {
      const into = data.subarray(offsets[i], offsets[i] + sizes[i]);
      if (t.data) into.set(byteView(t.data));
      else t.tensor!.handle.copyToBytes(into);
    });
    return writeSlice(socket, packet, false, opts.stallMs);
  }
  const views: ArrayBuffer[] = [];
  try {
    const bytes = tensors.map((t) => {
      if (t.data) return byteView(t.data);
      const buffer = t.tensor!.handle.hostView() as ArrayBuffer;
      views.push(buffer);
      return new Uint8Array(buffer);
    });
    const prefix = Buffer.alloc(blobStart + 8 + header.length);
    writePrefix(prefix, head, header, size);
    const parts: Uint8Array[] = [prefix];
    let at = 8 + header.length;
    bytes.forEach((b, i) => {
      if (offsets[i] > at) parts.push(Buffer.alloc(offsets[i] - at));
      parts.push(b);
      at = offsets[i] + b.byteLength;
    });
    if (size > at) parts.push(Buffer.alloc(size - at));
    await writeAll(socket, parts, opts.stallMs);
  } finally {
    for (const v of views) addon.releaseHostView(v);
  }
}

/** Packet length, head, the blob's bytes-value header, "TNI1", the JSON header's length and the JSON. */
function writePrefix(into: Buffer, head: readonly Buffer[], header: Buffer, blobSize: number): void {
  const headBytes = head.reduce((n, b) => n + b.length, 0);
  let p = into.writeBigUInt64LE(BigInt(headBytes + 12 + blobSize), 0);
  for (const b of head) p += b.copy(into, p);
  p = into.writeInt32LE(TypeIndex.ByteArrayPtr, p);
  p = into.writeBigUInt64LE(BigInt(blobSize), p);
  p += into.write('TNI1', p, 'latin1');
  p = into.writeUInt32LE(header.length, p);
  header.copy(into, p);
}

/** Packets up to this size are copied into one buffer and written at once. */
const SMALL_WRITE = 64 * 1024;

/**
 * Large parts are written in slices of this size, so the socket's progress can be watched: a
 * peer must take one slice per stall period (1 MiB per 30 s by default) to keep its session.
 */
const WRITE_SLICE = 1 << 20;

const closedError = (cause?: Error | null) =>
  new TvmRuntimeError('RPCSessionClosed', 'the connection closed before the tensors were sent', '', cause ? { cause } : undefined);

/**
 * Writes `parts` (the socket holds views, not copies) slice by slice, each once the socket
 * has taken the one before, and resolves once the kernel has every byte, so the memory may be
 * reused. Rejects when the socket closes first, or when the peer takes no slice for `stallMs`
 * (the socket is then destroyed): a slow reader that keeps reading is never cut off.
 */
export async function writeAll(socket: Socket, parts: readonly Uint8Array[], stallMs: number): Promise<void> {
  const slices = parts.flatMap((p) =>
    Array.from({ length: Math.ceil(p.byteLength / WRITE_SLICE) }, (_, k) => p.subarray(k * WRITE_SLICE, (k + 1) * WRITE_SLICE)),
  );
  for (let i = 0; i < slices.length; i++) await writeSlice(socket, slices[i], i === slices.length - 1, stallMs);
}

/** One slice: resolves when the socket can take more (`flush`: when the kernel has it all). */
function writeSlice(socket: Socket, slice: Uint8Array, flush: boolean, stallMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return reject(closedError());
    const timer = setTimeout(() => {
      settle(new WireError(`the peer took no bytes for ${stallMs / 1000} s`, 'RPCSessionTimeoutError'));
      socket.destroy();
    }, stallMs);
    let settled = false;
    const settle = (err?: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('drain', onDrain).off('close', onClose);
      // Node calls a destroyed socket's write callbacks without an error: that is no success.
      if (err instanceof WireError) reject(err);
      else if (err || socket.destroyed) reject(closedError(err));
      else resolve();
    };
    const onDrain = () => settle();
    const onClose = () => settle(closedError());
    socket.once('close', onClose);
    const room = socket.write(slice, flush ? (err) => settle(err) : undefined);
    if (flush) return;
    if (room) settle();
    else socket.once('drain', onDrain);
  });
}
