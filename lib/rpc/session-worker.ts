/**
 * One RPC session in a process of its own, forked by {@link RPCServer}: code a client
 * uploads and runs can crash only this process, never the server or other sessions.
 * It receives the accepted socket (handshake done) and serves TVM's RPC protocol on it with
 * the runtime's `rpc.ServerLoop`, confining every client-supplied path to its work directory.
 */
import fs from 'node:fs';
import type { Socket } from 'node:net';
import path from 'node:path';
import { addon } from '../binding';
import { TvmNotImplementedError, TvmValueError } from '../errors';
import { registerFunc, requireGlobalFunc } from '../function';
import { loadModule } from '../module';
import { END_SESSION_FUNCTION, INFER_FUNCTION, MODELS_FUNCTION, serveInference } from './infer';
import { type CacheLimits, ModelRepository } from './repository';

/** The message the server sends with the socket. */
export interface SessionStart {
  workDir: string;
  /** A model repository to serve by name (`tvm_node.infer`, `tvm_node.models`). */
  modelsDir?: string;
  cache?: CacheLimits;
}

/**
 * Resolves a client-supplied file name inside `workDir`; `..`, absolute paths and anything
 * else that would leave it are refused (TVM's own server joins them blindly).
 */
export function confine(workDir: string, name: string): string {
  if (typeof name !== 'string' || name.length === 0 || name.includes('\0')) {
    throw new TvmValueError('ValueError', 'file name must be a non-empty string');
  }
  const full = path.resolve(workDir, name);
  if (path.isAbsolute(name) || (full !== workDir && !full.startsWith(workDir + path.sep))) {
    throw new TvmValueError('ValueError', `path '${name}' is outside the session's work directory`);
  }
  return full;
}

/** The server-side functions TVM's RPC protocol expects of the host, and tvm-node's own. */
/** The descriptor TVM's loop serves, once adopted. */
let loopFd = -1;

/**
 * Ends the session by ending its connection: TVM's loop returns and the process exits
 * normally. (process.exit() alone would wait for the pool thread blocked in the loop.)
 */
function endLoop(): void {
  if (loopFd >= 0) addon.shutdownSocket(loopFd);
}

function registerServerFunctions({ workDir, modelsDir, cache }: SessionStart): void {
  const opts = { override: true };
  if (modelsDir) {
    const repo = new ModelRepository(modelsDir, cache);
    registerFunc(INFER_FUNCTION, serveInference(repo), opts);
    registerFunc(MODELS_FUNCTION, () => JSON.stringify(repo.list()), opts);
  }
  // upload, download and remove are the runtime's own and resolve names through workpath.
  registerFunc('tvm.rpc.server.workpath', (name: string) => confine(workDir, name), opts);
  registerFunc('tvm.rpc.server.load_module', (name: string) => loadModule(confine(workDir, name)), opts);
  registerFunc('tvm.rpc.server.listdir', (dir: string) => fs.readdirSync(confine(workDir, dir || '.')).join(','), opts);
  // tvm-node's client ends its session explicitly: the runtime keeps a connection open while
  // any remote object (function, tensor, module) is still referenced on the client side.
  registerFunc(END_SESSION_FUNCTION, () => {
    // After this call's answer has gone out, end the loop (see endLoop).
    setTimeout(endLoop, 20);
  }, opts);
  registerFunc('tvm.rpc.server.download_linked_module', () => {
    throw new TvmNotImplementedError('NotImplementedError', 'linking on the server is not supported: upload a .so');
  }, opts);
}

async function serve(start: SessionStart, socket: Socket): Promise<number> {
  const fd = (socket as unknown as { _handle: { fd: number } })._handle.fd;
  const tvmFd = addon.adoptSocket(fd);
  loopFd = tvmFd;
  // The runtime owns its duplicate now; dropping Node's handle does not end the connection.
  socket.destroy();
  registerServerFunctions(start);
  // Ready: the server now answers the handshake, and the client starts talking to tvmFd.
  process.send!('ready');
  try {
    await requireGlobalFunc('rpc.ServerLoop').callAsync(tvmFd);
    return 0;
  } catch (err) {
    process.stderr.write(`tvm-node rpc session: ${(err as Error).message}\n`);
    return 1;
  }
}

// pauseOnCreate is not available for received sockets; nothing arrives before 'ready'
// because the client waits for the handshake answer.
// Without its server there is nobody to clean up after this session: end with it.
process.once('disconnect', () => (loopFd >= 0 ? endLoop() : process.exit(0)));
process.once('message', (start: SessionStart, socket: Socket) => {
  serve(start, socket).then((code) => process.exit(code));
});
