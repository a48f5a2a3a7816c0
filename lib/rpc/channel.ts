/**
 * The inference channel: tvm-node's client side of the inference subset of TVM's RPC
 * protocol (handshake, InitServer, GetGlobalFunc, CallFunc of `tvm_node.infer`, Shutdown),
 * spoken in TypeScript over a socket of its own so that tensors stream (lib/rpc/tensor-stream.ts)
 * instead of passing through TVM's C++ client, which moves bytes at ~60 MB/s.
 *
 * An {@link RPCSession} opens one for `infer()` when its server offers it: it asks the server
 * (over the session) for a one-time channel token, then connects again presenting
 * `tvm-node-channel:<token>` as its key. The server ties the channel to that session: it
 * counts against no session limit, needs no tracker match key, and ends with the session.
 * The bytes on the channel are TVM's protocol, so the server serves it with the same code as
 * a stock TVM client's inference-only session.
 */
import net from 'node:net';
import { makeTvmError, TvmRuntimeError } from '../errors';
import { SerialQueue } from '../scheduling';
import { Tensor } from '../tensor';
import { INFER_FUNCTION, type ServerTiming } from './infer';
import { RPC_CODE_SUCCESS, RPC_MAGIC } from './protocol';
import { type OutgoingTensor, type StreamedPacket, TensorStreamer, writeTensorPacket } from './tensor-stream';
import { type BlobMeta, decodeBlob, readHeader } from './tni1';
import { encodePacket, encodeValues, PacketReader, RPC_PROTOCOL_VERSION, RPCCode, WireDecoder, type WireValue } from './wire';

/** Function a tvm-node server offers a session to get a channel token: `() -> str`. */
export const OPEN_CHANNEL_FUNCTION = 'tvm_node.open_channel';
/** What the server tells a full-mode session process when the session's channel served a request (its idle time restarts). */
export const SESSION_ACTIVE = 'tvm-node:session-active';
/** What a channel's handshake key starts with; the token follows. */
export const CHANNEL_KEY_PREFIX = 'tvm-node-channel:';

/** A peer that takes none of a request's bytes for this long has the channel closed. */
const STALL_MS = 30_000;
/** How long the connect and the handshake may take. */
const OPEN_TIMEOUT_MS = 10_000;

/** A reply: a packet body, or a packet whose tensors were streamed. */
type Reply = Buffer | StreamedPacket;

/** A connection that speaks the inference subset of TVM's RPC protocol. */
export class InferenceChannel {
  // Its requests are written from the JS thread: no pool thread, so no request slot.
  private readonly queue = new SerialQueue(false);
  private readonly waiting: Array<{ resolve: (r: Reply) => void; reject: (e: Error) => void }> = [];
  /** Why the channel cannot be used any more, once it cannot. */
  private failure?: Error;
  private inferHandle?: bigint;

  private constructor(private readonly socket: net.Socket) {
    const reader = new PacketReader<StreamedPacket>(
      Number.MAX_SAFE_INTEGER,
      { packet: (body) => this.answer(body), tooLarge: () => undefined, streamed: (packet) => this.answer(packet) },
      undefined,
      new TensorStreamer(),
    );
    socket.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (err) {
        this.fail(err as Error);
      }
    });
    socket.on('error', (err) => this.fail(new TvmRuntimeError('RPCSessionClosed', `the inference channel failed: ${err.message}`, '', { cause: err })));
    socket.on('close', () => {
      reader.release();
      this.fail(new TvmRuntimeError('RPCSessionClosed', 'the server closed the inference channel'));
    });
    socket.resume();
  }

  /** Connects, shakes hands with `key` and starts the session (InitServer). */
  static async open(host: string, port: number, key: string): Promise<InferenceChannel> {
    const socket = await handshake(host, port, key);
    const channel = new InferenceChannel(socket);
    try {
      const version = Buffer.from(RPC_PROTOCOL_VERSION, 'utf8');
      const length = Buffer.alloc(8);
      length.writeBigUInt64LE(BigInt(version.length));
      // Both at once: the server answers in order, so opening costs one round trip after the handshake.
      const [, reply] = await Promise.all([
        channel.request(encodePacket(RPCCode.InitServer, [length, version, ...encodeValues([])])),
        channel.request(encodePacket(RPCCode.GetGlobalFunc, encodeValues([{ kind: 'str', value: INFER_FUNCTION }]))),
      ]);
      const [handle] = new WireDecoder((reply as Buffer).subarray(4)).values();
      if (handle?.kind !== 'handle' || handle.value === 0n)
        throw new TvmRuntimeError('RuntimeError', `the server does not serve ${INFER_FUNCTION} on this channel`);
      channel.inferHandle = handle.value;
      return channel;
    } catch (err) {
      channel.close();
      throw err;
    }
  }

  /** Whether requests can still be sent. */
  get usable(): boolean {
    return this.failure === undefined;
  }

  /**
   * Runs `model` on the server: each input's bytes go from its memory to the socket, and the
   * outputs arrive straight into the CPU tensors returned (the caller's to dispose).
   */
  async infer(model: string, inputs: readonly OutgoingTensor[]): Promise<InferReply> {
    // Requests are written one after another, but the next may go out before the last is
    // answered (the server serves them in order): on a link with latency, frames in flight
    // overlap their round trips instead of paying one each.
    let reply!: Promise<Reply>;
    await this.queue.run(async () => {
      const name = Buffer.from(model, 'utf8');
      const head = Buffer.alloc(4 + 8 + 4 + 4 + 8);
      head.writeInt32LE(RPCCode.CallFunc, 0);
      head.writeBigUInt64LE(this.inferHandle!, 4);
      head.writeInt32LE(2, 12);
      head.writeInt32LE(8 /* RawStr */, 16);
      head.writeBigUInt64LE(BigInt(name.length), 20);
      reply = this.nextReply();
      // The server may answer before the request is all sent (a packet over its limit is
      // refused at its header and skipped): the answer waits until the write is done.
      reply.catch(() => undefined);
      await writeTensorPacket(this.socket, [head, name], inputs, { stallMs: STALL_MS }).catch((err: Error) => this.fail(err));
    });
    const answer = await reply;
    if (!Buffer.isBuffer(answer)) return { outputs: answer.tensors, server: serverTiming(answer.meta) };
    // A small reply arrived whole: one copy per output.
    const [, blob] = new WireDecoder(answer.subarray(4)).values();
    if (blob?.kind !== 'bytes') throw new TvmRuntimeError('RuntimeError', `${INFER_FUNCTION} answered ${blob?.kind ?? 'nothing'}, not bytes`);
    return replyOf(blob.value);
  }

  /** Ends the session (a Shutdown packet, then the socket closes). Idempotent. */
  close(): void {
    if (!this.socket.destroyed && this.failure === undefined) this.socket.end(encodePacket(RPCCode.Shutdown));
    this.fail(new TvmRuntimeError('RPCSessionClosed', 'the inference channel was closed'));
    this.socket.destroySoon();
  }

  /** Sends a whole packet; resolves with its answer (requests may be pipelined: answers come in order). */
  private request(packet: Buffer): Promise<Reply> {
    const reply = this.nextReply();
    this.socket.write(packet);
    return reply;
  }

  private nextReply(): Promise<Reply> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  /** A packet from the server: the answer to the oldest request, or a farewell error. */
  private answer(reply: Reply): void {
    const code = (Buffer.isBuffer(reply) ? reply : reply.head).readInt32LE(0);
    if (code === RPCCode.Exception) {
      const [message] = new WireDecoder((reply as Buffer).subarray(4)).values();
      const err = remoteError(message);
      const waiter = this.waiting.shift();
      if (waiter) waiter.reject(err);
      else this.fail(err);
      return;
    }
    const waiter = this.waiting.shift();
    if (waiter) waiter.resolve(reply);
    else if (!Buffer.isBuffer(reply)) for (const t of reply.tensors) t.disposeSync();
  }

  /** The channel is unusable from now on: requests waiting fail with `err`, and so do later ones. */
  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiting.splice(0)) w.reject(this.failure);
    this.socket.destroy();
  }
}

/** The server's exception text (`Kind: message`) as the error class of its kind. */
function remoteError(message: WireValue | undefined): Error {
  const text = message?.kind === 'str' ? message.value : 'the server raised an error without a message';
  const kind = /^([A-Za-z_][\w.]*): /.exec(text)?.[1] ?? 'RPCError';
  return makeTvmError(kind, text);
}

/** A socket with TVM's handshake done (client magic and key, the server's answer read). */
function handshake(host: string, port: number, key: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, noDelay: true });
    const timer = setTimeout(
      () => fail(new TvmRuntimeError('RPCSessionClosed', `no handshake from ${host}:${port} within ${OPEN_TIMEOUT_MS} ms`)),
      OPEN_TIMEOUT_MS,
    );
    let got = Buffer.alloc(0);
    const fail = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.on('error', (err) =>
      fail(new TvmRuntimeError('RPCSessionClosed', `cannot open an inference channel to ${host}:${port}: ${err.message}`, '', { cause: err })),
    );
    socket.on('close', () => fail(new TvmRuntimeError('RPCSessionClosed', `${host}:${port} closed the inference channel during the handshake`)));
    const onData = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length < 4) return;
      if (got.readInt32LE(0) !== RPC_CODE_SUCCESS)
        return fail(new TvmRuntimeError('RPCSessionClosed', `${host}:${port} refused the inference channel (code ${got.readInt32LE(0)})`));
      if (got.length < 8 || got.length < 8 + got.readInt32LE(4)) return;
      clearTimeout(timer);
      socket.off('data', onData).removeAllListeners('error').removeAllListeners('close');
      socket.pause();
      const rest = got.subarray(8 + got.readInt32LE(4));
      if (rest.length > 0) socket.unshift(rest);
      resolve(socket);
    };
    socket.on('data', onData);
    const keyBytes = Buffer.from(`client:${key}`, 'utf8');
    const hello = Buffer.alloc(8);
    hello.writeInt32LE(RPC_MAGIC, 0);
    hello.writeInt32LE(keyBytes.length, 4);
    socket.write(Buffer.concat([hello, keyBytes]));
  });
}

/** What one inference answered: the outputs (the caller's to dispose) and, from tvm-node servers, how long the server took. */
export interface InferReply {
  outputs: Tensor[];
  /** The server's own account of the request (tvm-node servers); undefined from others. */
  server?: ServerTiming;
}

/** The server's timing from a reply header's fields, when they are what tvm-node servers send. */
function serverTiming(meta: BlobMeta): ServerTiming | undefined {
  const t = meta.server as Partial<ServerTiming> | undefined;
  return typeof t?.totalUs === 'number' && typeof t.runUs === 'number' ? { totalUs: t.totalUs, runUs: t.runUs } : undefined;
}

/** A reply blob that arrived whole, as local tensors (one copy per output) and the server's timing. */
export function replyOf(blob: Buffer): InferReply {
  const outputs = decodeBlob(blob).map((t) => Tensor.fromSync(t.bytes, { shape: t.shape, dtype: t.dtype }));
  return { outputs, server: serverTiming(readHeader(blob).meta) };
}
