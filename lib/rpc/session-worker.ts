/**
 * One RPC session in a process of its own, forked by {@link RPCServer}: code a client
 * uploads and runs can crash only this process, never the server or other sessions.
 * It receives the accepted socket (handshake done) and serves TVM's RPC protocol with the
 * runtime's `rpc.ServerLoop`, confining every client-supplied path to its work directory.
 *
 * The loop does not read the client's socket itself: it serves one end of a socket pair, and
 * this process relays between the client and the other end. The relay sees each packet's
 * length before passing any of it on, so an oversized packet is refused with an error the
 * client reads (and skipped) instead of being allocated by the loop; and a client that
 * stops reading its replies loses its session after the stall timeout.
 */
import fs from 'node:fs';
import { Socket } from 'node:net';
import { addon } from '../binding';
import { TvmNotImplementedError, TvmValueError } from '../errors';
import { registerFunc, requireGlobalFunc } from '../function';
import { loadModuleSync } from '../module';
import { OPEN_CHANNEL_FUNCTION, SESSION_ACTIVE } from './channel';
import { confine } from './confine';
import { END_SESSION_FUNCTION, INFER_FUNCTION, MODELS_FUNCTION, modelsText, serveInference } from './infer';
import { closeWithError, writeOrWait } from './protocol';
import { type CacheLimits, ModelRepository } from './repository';
import { Watchdog } from './timers';
import { encodeException, PacketSplitter, PacketTooLargeError } from './wire';

/** The message the server sends with the socket. */
export interface SessionStart {
  workDir: string;
  /** A model repository to serve by name (`tvm_node.infer`, `tvm_node.models`). */
  modelsDir?: string;
  cache?: CacheLimits;
  /** Largest packet the client may send. */
  maxMessageBytes: number;
  /** Most bytes the client may upload in this session, all files together. */
  maxUploadBytes: number;
  /** A reply the client leaves unread this long ends the session. */
  stallTimeoutMs: number;
  /** A session with no request for this long ends; the client's next call raises why. */
  idleTimeoutMs: number;
  /** A request whose bytes stop arriving for this long ends the session. */
  readTimeoutMs: number;
  /** What `tvm_node.open_channel` answers: the token of this session's inference channel (lib/rpc/channel.ts). */
  channelToken: string;
}

/** TVM's loop's end of the socket pair, once it serves. */
let loopFd = -1;

/** Ends the session: TVM's loop sees the end of its stream and returns. */
function endLoop(): void {
  if (loopFd >= 0) addon.shutdownSocket(loopFd);
}

/** The server-side functions TVM's RPC protocol expects of the host, and tvm-node's own. */
function registerServerFunctions({ workDir, modelsDir, cache, maxUploadBytes, channelToken }: SessionStart): void {
  const opts = { override: true };
  if (modelsDir) {
    const repo = new ModelRepository(modelsDir, cache);
    registerFunc(INFER_FUNCTION, serveInference(repo), opts);
    registerFunc(MODELS_FUNCTION, () => modelsText(repo), opts);
    // The server serves the channel itself, in its own process.
    registerFunc(OPEN_CHANNEL_FUNCTION, () => channelToken, opts);
  }
  // download and remove are the runtime's own and resolve names through workpath.
  registerFunc('tvm.rpc.server.workpath', (name: string) => confine(workDir, name), opts);
  registerFunc('tvm.rpc.server.upload', uploader(workDir, maxUploadBytes), opts);
  registerFunc('tvm.rpc.server.load_module', (name: string) => loadModuleSync(confine(workDir, name)), opts);
  registerFunc('tvm.rpc.server.listdir', (dir: string) => fs.readdirSync(confine(workDir, dir || '.')).join(','), opts);
  // tvm-node's client ends its session explicitly: the runtime keeps a connection open while
  // any remote object (function, tensor, module) is still referenced on the client side.
  registerFunc(
    END_SESSION_FUNCTION,
    () => {
      // After this call's answer has gone out, end the loop.
      setTimeout(endLoop, 20);
    },
    opts,
  );
  registerFunc(
    'tvm.rpc.server.download_linked_module',
    () => {
      throw new TvmNotImplementedError('NotImplementedError', 'linking on the server is not supported: upload a .so');
    },
    opts,
  );
}

/** `tvm.rpc.server.upload(name, data)`, within the session's upload budget. */
function uploader(workDir: string, maxUploadBytes: number): (name: string, data: Uint8Array) => void {
  const sizes = new Map<string, number>();
  return (name, data) => {
    const file = confine(workDir, name);
    const others = [...sizes].reduce((n, [f, size]) => (f === file ? n : n + size), 0);
    if (others + data.byteLength > maxUploadBytes) {
      throw new TvmValueError(
        'ValueError',
        `upload of '${name}' (${data.byteLength} bytes) would take this session's uploads to ${others + data.byteLength} bytes, over the server's limit of ${maxUploadBytes} bytes`,
      );
    }
    // A new file renamed over the old: a module loaded from the old one keeps its own code
    // (writing in place would change the pages it runs from).
    const tmp = `${file}.upload-${process.pid}`;
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
    sizes.set(file, data.byteLength);
  };
}

/**
 * Relays client -> loop packet by packet (refusing oversized ones) and loop -> client as it
 * comes, each direction waiting for the other side to take what it was given. A watchdog
 * ends the session when the client sends no request for `idleTimeoutMs` while nothing is
 * being served, or stops in the middle of a request for `readTimeoutMs`.
 */
function relay(client: Socket, loop: Socket, { maxMessageBytes, stallTimeoutMs, idleTimeoutMs, readTimeoutMs }: SessionStart): void {
  const stalled = () => {
    process.stderr.write(`tvm-node rpc session: the client left a reply unread for ${stallTimeoutMs} ms; ending the session\n`);
    client.destroy();
    endLoop();
  };
  const watchdog = new Watchdog();
  const timedOut = (message: string) => () => void closeWithError(client, `RPCSessionTimeoutError: ${message}`).then(endLoop);
  // Replies leave in pieces as the loop writes them: Nagle's algorithm would hold the last one back.
  client.setNoDelay(true);
  let refusing = false;
  /** A request went to the loop and nothing has come back yet: the session is at work, not idle. */
  let serving = false;
  const splitter = new PacketSplitter({
    header: (length) => {
      refusing = length > BigInt(maxMessageBytes);
      if (refusing) {
        // TVM's loop never sees this packet: answer for it, and skip its body as it comes.
        const err = new PacketTooLargeError(length, maxMessageBytes);
        client.write(encodeException(`${err.kind}: ${err.message}`));
        return;
      }
      const head = Buffer.alloc(8);
      head.writeBigUInt64LE(length, 0);
      loop.write(head);
    },
    body: (data) => {
      if (!refusing) loop.write(data);
    },
  });
  const watch = () => {
    if (!splitter.atBoundary)
      watchdog.arm(readTimeoutMs, timedOut(`the rest of the request did not arrive within ${readTimeoutMs / 1000} s; the server ended the session`));
    else if (serving) watchdog.disarm();
    else watchdog.arm(idleTimeoutMs, timedOut(`the session sent no request for ${idleTimeoutMs / 1000} s; the server ended it (connect again)`));
  };
  client.on('data', (chunk: Buffer) => {
    splitter.push(chunk);
    if (splitter.atBoundary && !refusing) serving = true;
    watch();
    if (loop.writableNeedDrain) {
      client.pause();
      loop.once('drain', () => client.resume());
    }
  });
  loop.on('data', (chunk: Buffer) => {
    serving = false;
    watch();
    const wait = writeOrWait(client, chunk, stallTimeoutMs, stalled);
    if (wait) {
      loop.pause();
      void wait.then(() => loop.resume());
    }
  });
  // The client went away: end the loop's stream too, so the loop returns.
  client.on('close', () => {
    watchdog.disarm();
    loop.destroy();
  });
  // The loop returned (shutdown or end_session): pass on what it wrote, then close.
  loop.on('end', () => {
    watchdog.disarm();
    client.end();
  });
  client.on('error', () => undefined);
  loop.on('error', () => undefined);
  // The server says the session's inference channel served a request: the session is in use.
  process.on('message', (m: unknown) => {
    if (m === SESSION_ACTIVE && !client.destroyed) watch();
  });
  watch();
}

async function serve(start: SessionStart, client: Socket): Promise<number> {
  const [nodeEnd, tvmEnd] = addon.socketPair();
  loopFd = tvmEnd;
  const loop = new Socket({ fd: nodeEnd, readable: true, writable: true });
  registerServerFunctions(start);
  relay(client, loop, start);
  // Ready: the server now answers the handshake, and the client starts talking.
  process.send!('ready');
  let code = 0;
  try {
    using serverLoop = requireGlobalFunc('rpc.ServerLoop');
    // This process serves one client, whose kernels all run on the loop's pool thread: that
    // thread gets a full TVM pool (TVM_NUM_THREADS), not a share of the cores (lib/threads.ts).
    addon.threadSettings(0);
    await serverLoop.call(tvmEnd);
  } catch (err) {
    // A client that vanishes mid-request ends the loop this way; nothing else to do.
    if (!client.destroyed) process.stderr.write(`tvm-node rpc session: ${(err as Error).message}\n`);
    code = client.destroyed ? 0 : 1;
  }
  // Let the last replies reach the client (bounded: a client that does not read is cut off).
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 2000);
    client.end(() => {
      clearTimeout(timer);
      resolve();
    });
  });
  return code;
}

// pauseOnCreate is not available for received sockets; nothing arrives before 'ready'
// because the client waits for the handshake answer.
// Without its server there is nobody to clean up after this session: end with it.
process.once('disconnect', () => (loopFd >= 0 ? endLoop() : process.exit(0)));
process.once('message', (start: SessionStart, socket: Socket) => {
  serve(start, socket).then((code) => process.exit(code));
});
