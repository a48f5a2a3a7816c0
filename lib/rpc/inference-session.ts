/**
 * Inference-only sessions: the part of TVM's RPC protocol a client needs to look up and
 * call the model-repository functions, implemented here in TypeScript and served inside the
 * server process. Nothing a client sends reaches TVM's server loop, so no upload, no
 * arbitrary global function, no device memory or pointer is reachable: a request names one
 * of a fixed set of functions and passes plain values (numbers, strings, bytes), and
 * everything else is refused with an error the client raises, after which the session goes
 * on. Sessions share one model cache and cost no process start.
 */
import type { Socket } from 'node:net';
import { HandleOwner } from '../handle';
import type { Tensor } from '../tensor';
import { closeWithError, startReading, writeOrWait } from './protocol';
import { type OutgoingTensor, outgoingTensor, type StreamedPacket, TensorStreamer, writeTensorPacket } from './tensor-stream';
import { Watchdog } from './timers';
import type { BlobMeta } from './tni1';
import {
  type ByteBudget,
  encodeCallReturn,
  encodeException,
  encodeSyscallReturn,
  PacketReader,
  type PacketTooLargeError,
  RPC_PROTOCOL_VERSION,
  RPCCode,
  TypeIndex,
  WireDecoder,
  WireError,
  type WireValue,
} from './wire';

/** What a served function can do to its session. */
export interface SessionControl {
  /** Ends the session once this call's reply has gone out. */
  end(): void;
}

/**
 * A function an inference-only server offers: plain values in, one plain value out. A
 * `tensors` argument is the session's (released after the call); a `tensors` result is
 * streamed to the client and then released.
 */
export type ServedFunction = (args: WireValue[], session: SessionControl) => Promise<WireValue> | WireValue;

/** Options of {@link serveInferenceSession}. */
export interface InferenceSessionOptions {
  /** The functions clients may look up and call, by name. */
  functions: ReadonlyMap<string, ServedFunction>;
  /** Largest packet accepted; larger ones are refused and skipped. */
  maxMessageBytes: number;
  /** A reply the client does not read within this long ends the session. */
  stallTimeoutMs: number;
  /** A session with no request for this long ends; the client's next call raises the reason. */
  idleTimeoutMs: number;
  /** A request whose bytes stop arriving for this long ends the session. */
  readTimeoutMs: number;
  /** Bytes of incomplete requests all sessions may hold together. */
  pending: ByteBudget;
  /** Called after each request is served (an inference channel keeps its session alive so). */
  onRequest?: () => void;
}

/** A session being served. */
export interface InferenceSession {
  /** Settles when the connection is gone. */
  done: Promise<void>;
  /**
   * Ends the session with an error the client raises: at once when it is between requests,
   * otherwise in place of the reply it waits for.
   */
  close(message: string): void;
  /** The session is in use elsewhere (its inference channel): its idle time starts again. */
  touch(): void;
}

/**
 * Serves TVM's RPC protocol on `socket` (handshake done) until the client shuts down or
 * goes away. One request at a time, as TVM's protocol is: the socket is not read while a
 * request runs or its reply waits for the client to take it, so a client that sends without
 * reading holds at most one packet of server memory. A watchdog ends sessions that sit idle
 * between requests, or stop sending in the middle of one.
 */
export function serveInferenceSession(socket: Socket, opts: InferenceSessionOptions): InferenceSession {
  const names = [...opts.functions.keys()];
  const control = {
    ending: false,
    end: () => {
      control.ending = true;
    },
  };
  const watchdog = new Watchdog();
  let initialized = false;
  const queue: Array<Buffer | PacketTooLargeError | StreamedPacket> = [];
  let busy = false;
  /** An error to answer the current request with, and end (set by close()). */
  let closing: string | undefined;
  let resolveDone!: () => void;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));

  const finish = () => {
    watchdog.disarm();
    reader.release();
    socket.destroy();
    resolveDone();
  };
  /** Set once the session is being ended: nothing more is read or served. */
  let over = false;
  const endWith = (message: string) => {
    over = true;
    watchdog.disarm();
    reader.release();
    void closeWithError(socket, message);
  };

  /** Handles are the function's place in the table: stable, never a pointer. */
  const lookUp = (name: string): WireValue => {
    const i = names.indexOf(name);
    if (i < 0) throw new WireError(`inference-only server: '${name}' is not served (it serves ${names.join(', ')})`, 'PermissionError');
    return { kind: 'handle', value: BigInt(HANDLE_BASE + i) };
  };

  const call = async (d: WireDecoder, streamed?: Tensor[]): Promise<WireValue> => {
    const handle = d.u64();
    const name = names[Number(handle) - HANDLE_BASE];
    if (handle < HANDLE_BASE || name === undefined)
      throw new WireError(`inference-only server: no function with handle 0x${handle.toString(16)}`, 'PermissionError');
    const args = streamed ? [...valuesBefore(d), { kind: 'tensors' as const, value: streamed }] : d.values();
    return opts.functions.get(name)!(args, control);
  };

  /** A reply: a whole packet, or tensors to stream after a head. */
  type Reply = Buffer | { tensors: Tensor[]; meta?: BlobMeta };

  /** One request; errors become exception replies and the session goes on. */
  const serve = async (request: Buffer | StreamedPacket): Promise<Reply | 'shutdown'> => {
    const streamed = Buffer.isBuffer(request) ? undefined : request;
    const d = new WireDecoder(streamed ? streamed.head : (request as Buffer));
    try {
      const code = d.i32() as RPCCode;
      if (streamed && code !== RPCCode.CallFunc) throw new WireError(`inference-only server: a ${RPCCode[code]} packet is not a request`);
      if (code === RPCCode.Shutdown) return 'shutdown';
      if (code === RPCCode.InitServer) {
        const version = d.lengthPrefixed().toString('utf8');
        if (version !== RPC_PROTOCOL_VERSION) throw new WireError(`client protocol ${version} does not match the server's ${RPC_PROTOCOL_VERSION}`);
        if (d.values().length > 0) throw new WireError('inference-only server: custom session constructors are not served', 'PermissionError');
        initialized = true;
        return encodeSyscallReturn({ kind: 'none' });
      }
      if (!initialized) throw new WireError('the session was not initialized (InitServer first)');
      switch (code) {
        case RPCCode.GetGlobalFunc: {
          const [name] = d.values();
          if (name?.kind !== 'str') throw new WireError('GetGlobalFunc wants a name');
          return encodeSyscallReturn(lookUp(name.value));
        }
        case RPCCode.FreeHandle:
          return encodeSyscallReturn({ kind: 'none' });
        case RPCCode.CallFunc: {
          const result = await call(d, streamed?.tensors);
          return result.kind === 'tensors' ? { tensors: result.value, meta: result.meta } : encodeCallReturn(result);
        }
        default:
          throw new WireError(`inference-only server: ${RPCCode[code] ?? `code ${code}`} is not served (only ${names.join(', ')})`, 'PermissionError');
      }
    } catch (err) {
      return encodeException(errorText(err));
    } finally {
      for (const t of streamed?.tensors ?? []) t.disposeSync();
    }
  };

  /** Streams a result's tensors (copied to the host first when they live on a device), then releases them. */
  const replyTensors = async (tensors: Tensor[], meta?: BlobMeta): Promise<void> => {
    try {
      let outgoing: OutgoingTensor[];
      try {
        outgoing = await Promise.all(tensors.map(outgoingTensor));
      } catch (err) {
        return await reply(encodeException(errorText(err)));
      }
      await writeTensorPacket(socket, [CALL_RETURN_HEAD], outgoing, { stallMs: opts.stallTimeoutMs, meta }).catch(() => finish());
    } finally {
      for (const t of tensors) if (t instanceof HandleOwner) t.disposeSync();
    }
  };

  /** Writes a reply; a client that leaves it unread past the stall timeout loses its session. */
  const reply = (packet: Buffer) => writeOrWait(socket, packet, opts.stallTimeoutMs, finish);

  /** When the last bytes arrived: the read limit counts from there. */
  let lastData = 0;
  /** Which limit the watchdog runs now. */
  let watching: 'idle' | 'read' | undefined;
  const readTimedOut = () => {
    // Re-armed here, not on every chunk: a large request arrives in thousands of them.
    const quiet = performance.now() - lastData;
    if (quiet < opts.readTimeoutMs) return watchdog.arm(opts.readTimeoutMs - quiet, readTimedOut);
    endWith(`RPCSessionTimeoutError: the rest of the request did not arrive within ${opts.readTimeoutMs / 1000} s; the server ended the session`);
  };

  /** Between requests the idle limit runs; in the middle of one, the read limit. */
  const watch = () => {
    watching = busy || socket.destroyed ? undefined : reader.midPacket ? 'read' : 'idle';
    if (watching === undefined) return watchdog.disarm();
    if (watching === 'read') return watchdog.arm(opts.readTimeoutMs, readTimedOut);
    watchdog.arm(opts.idleTimeoutMs, () =>
      endWith(`RPCSessionTimeoutError: the session sent no request for ${opts.idleTimeoutMs / 1000} s; the server ended it (connect again)`),
    );
  };

  const pump = async () => {
    if (busy) return;
    busy = true;
    watch();
    socket.pause();
    while (queue.length > 0 && !socket.destroyed && !over && closing === undefined) {
      const next = queue.shift()!;
      const out = next instanceof Error ? encodeException(errorText(next)) : await serve(next);
      if (out === 'shutdown') return finish();
      if (closing !== undefined) {
        if (!Buffer.isBuffer(out)) for (const t of out.tensors) t.disposeSync();
        break;
      }
      await (Buffer.isBuffer(out) ? reply(out) : replyTensors(out.tensors, out.meta));
      opts.onRequest?.();
      if (control.ending) return socket.end(() => finish());
    }
    busy = false;
    if (over) return;
    if (closing !== undefined) return endWith(closing);
    socket.resume();
    watch();
  };

  const reader = new PacketReader<StreamedPacket>(
    opts.maxMessageBytes,
    { packet: (body) => queue.push(body), tooLarge: (err) => queue.push(err), streamed: (packet) => queue.push(packet) },
    opts.pending,
    new TensorStreamer(),
  );
  socket.setNoDelay(true);
  socket.on('data', (chunk: Buffer) => {
    if (over) return;
    lastData = performance.now();
    try {
      reader.push(chunk);
    } catch (err) {
      return endWith(errorText(err));
    }
    if (queue.length > 0) void pump();
    else if (!busy && watching !== (reader.midPacket ? 'read' : 'idle')) watch();
  });
  socket.on('error', () => undefined);
  socket.on('close', finish);
  startReading(socket);
  watch();

  return {
    done,
    close: (message) => {
      closing = message;
      if (!busy && !over) endWith(message);
    },
    touch: () => {
      if (watching === 'idle') watch();
    },
  };
}

/** The head of a CallFunc reply whose value is bytes: Return, two values, the first the result's type index. */
const CALL_RETURN_HEAD = (() => {
  const b = Buffer.alloc(4 + 4 + 4 + 8);
  b.writeInt32LE(RPCCode.Return, 0);
  b.writeInt32LE(2, 4);
  b.writeInt32LE(TypeIndex.Int, 8);
  b.writeBigInt64LE(BigInt(TypeIndex.Bytes), 12);
  return b;
})();

/** The values of a streamed packet's head: its count includes the streamed blob, which is not in the head. */
function valuesBefore(d: WireDecoder): WireValue[] {
  const count = d.i32();
  return Array.from({ length: count - 1 }, () => d.value());
}

/** Function handles start here, far from 0 (TVM's "no such function"). */
const HANDLE_BASE = 0x1000;

/** An error as TVM's server words it: `Kind: message`. */
function errorText(err: unknown): string {
  const e = err as { kind?: string; name?: string; message?: string };
  const kind = e.kind ?? e.name ?? 'Error';
  return `${kind}: ${e.message ?? String(err)}`;
}
