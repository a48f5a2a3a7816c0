/**
 * The TVM RPC handshake (python/tvm/rpc/base.py, src/runtime/rpc): the client sends int32
 * RPC_MAGIC, int32 key length and the key `client:<key> [-timeout=S]`; the server answers
 * an int32 code (success = magic, mismatch = magic + 2) and, on success, its own key
 * `server:<key>`. After that the binary RPC protocol of TVM's runtime takes over.
 */
import type { Socket } from 'node:net';
import { TvmError } from '../errors';
import { encodeException } from './wire';

export const RPC_MAGIC = 0xff271;
export const RPC_CODE_SUCCESS = RPC_MAGIC;
export const RPC_CODE_DUPLICATE = RPC_MAGIC + 1;
export const RPC_CODE_MISMATCH = RPC_MAGIC + 2;
export const RPC_TRACKER_MAGIC = 0x2f271;

/** Keys are short; anything longer is garbage or an attack. */
export const MAX_KEY_BYTES = 4096;

/** What a client asked for in its handshake. */
export interface ClientHello {
  /** The key after `client:`. */
  key: string;
  /** `-timeout=S` if given, in seconds. */
  timeout?: number;
}

/** Why a handshake was refused (the server logs it and closes the socket); kind `HandshakeError`. */
export class HandshakeError extends TvmError {
  constructor(message: string, options?: ErrorOptions) {
    super('HandshakeError', message, '', options);
  }
}

/** Parses `client:<key> [-timeout=S]`. */
export function parseClientKey(text: string): ClientHello {
  const [head, ...opts] = text.split(/\s+/).filter(Boolean);
  if (!head?.startsWith('client:')) throw new HandshakeError(`not a client key: ${JSON.stringify(text.slice(0, 64))}`);
  const hello: ClientHello = { key: head.slice('client:'.length) };
  for (const o of opts) {
    const m = /^-timeout=([0-9.]+)$/.exec(o);
    if (m) hello.timeout = Number(m[1]);
  }
  return hello;
}

/**
 * Reads the client's handshake from a socket, without consuming anything after it: the
 * socket is paused once the key is read, so the RPC stream stays in the kernel for whoever
 * serves the session. Rejects on wrong magic, oversized key, early close or timeout.
 */
export function readHandshake(socket: Socket, timeoutMs: number): Promise<ClientHello> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const done = (err?: Error, hello?: ClientHello) => {
      clearTimeout(timer);
      socket.off('data', onData).off('close', onClose).off('error', onClose);
      stopReading(socket);
      if (err) reject(err);
      else resolve(hello!);
    };
    const timer = setTimeout(() => done(new HandshakeError(`no handshake within ${timeoutMs} ms`)), timeoutMs);
    const onClose = () => done(new HandshakeError('closed during the handshake'));
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length >= 4 && buf.readInt32LE(0) !== RPC_MAGIC) return done(new HandshakeError('wrong magic: not a TVM RPC client'));
      if (buf.length < 8) return;
      const len = buf.readInt32LE(4);
      if (len < 0 || len > MAX_KEY_BYTES) return done(new HandshakeError(`key length ${len} out of range`));
      if (buf.length < 8 + len) return;
      if (buf.length > 8 + len) return done(new HandshakeError('data before the handshake was answered'));
      try {
        done(undefined, parseClientKey(buf.subarray(8, 8 + len).toString('utf8')));
      } catch (err) {
        done(err as Error);
      }
    };
    socket.on('data', onData).on('close', onClose).on('error', onClose);
  });
}

/**
 * Stops Node from reading the socket at all. `pause()` alone only stops 'data' events: the
 * stream would still pull bytes into its buffer, stealing them from whoever serves the
 * session on the same descriptor.
 */
export function stopReading(socket: Socket): void {
  socket.pause();
  (socket as unknown as { _handle?: { readStop?: () => void } })._handle?.readStop?.();
}

/** Undoes {@link stopReading}: the socket is read, and its data emitted, again. */
export function startReading(socket: Socket): void {
  (socket as unknown as { _handle?: { readStart?: () => void } })._handle?.readStart?.();
  socket.resume();
}

/** The server's answer: success with its key, or a mismatch code alone. */
export function handshakeReply(code: number, serverKey?: string): Buffer {
  const head = Buffer.alloc(4);
  head.writeInt32LE(code, 0);
  if (code !== RPC_CODE_SUCCESS) return head;
  const key = Buffer.from(`server:${serverKey ?? ''}`, 'utf8');
  const len = Buffer.alloc(4);
  len.writeInt32LE(key.length, 0);
  return Buffer.concat([head, len, key]);
}

/**
 * Writes `data`; if the socket's buffer is full, returns a promise for its draining (or
 * closing), and calls `onStall` if that takes longer than `stallMs` (a peer that stopped
 * reading).
 * Undefined when nothing needs waiting for.
 */
export function writeOrWait(socket: Socket, data: Buffer, stallMs: number, onStall: () => void): Promise<void> | undefined {
  if (socket.write(data)) return undefined;
  return new Promise((resolve) => {
    const timer = setTimeout(onStall, stallMs);
    // A socket closed meanwhile (by the stall, or the peer) never drains: settle then too.
    const settle = () => {
      clearTimeout(timer);
      socket.off('drain', settle).off('close', settle);
      resolve();
    };
    socket.once('drain', settle).once('close', settle);
  });
}

/**
 * Sends TVM's exception frame (the client raises it, on its next request if it is idle) and
 * closes the connection. Closing at once, with the client's request unread, would reset the
 * connection and lose the frame: half-close, drain what the client sends, then let go after
 * `lingerMs`. Resolves once the frame is written.
 */
export async function closeWithError(socket: Socket, message: string, lingerMs = 2000): Promise<void> {
  if (socket.destroyed) return;
  await new Promise<void>((resolve) => socket.write(encodeException(message), () => resolve()));
  socket.on('data', () => undefined).resume();
  socket.end();
  setTimeout(() => socket.destroy(), lingerMs).unref();
}
