/**
 * The tvm-node client of the rpc group's concurrency cases: a process of its own (this
 * module, forked with {@link RPC_CLIENT_FLAG} by {@link NodeRpcClient}) that connects, runs
 * k inferences and closes, one job at a time; and what the rpc group shares with it
 * (closeSession, checkAgainst, the clock, the connect retries).
 */
import path from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { connect, type RPCSession, readNpy } from '../../lib';
import { compare } from '../bench-models';
import { JobProcess, serveJobs } from '../job-process';
import { sleep } from '../measure';
import { RPC_HOST } from '../peers';

/** argv flag that makes this file a client process of the concurrency cases. */
export const RPC_CLIENT_FLAG = '--rpc-client';

export const hrNow = () => process.hrtime.bigint();
export const nsSince = (t0: bigint) => Number(process.hrtime.bigint() - t0);

let gcFn: (() => void) | undefined;

/**
 * Closes a tvm-node RPC session so that it really ends. `session.call()` (and so `infer()`)
 * looks the remote function up anew on every call and never disposes that handle, and each
 * handle keeps the runtime's session alive: after `dispose()` the server's session lives on
 * until the garbage collector finalizes them. A forced collection (V8's gc, exposed at run
 * time) ends it now, so that sessions do not pile up on the server between rounds.
 */
export async function closeSession(session: RPCSession): Promise<void> {
  await session.dispose();
  if (!gcFn) {
    setFlagsFromString('--expose-gc');
    gcFn = runInNewContext('gc') as () => void;
  }
  gcFn();
  await new Promise((resolve) => setImmediate(resolve)); // finalizers deferred by N-API
  gcFn();
}

/** One client of a concurrency case: connect, k inferences of `model`, close. */
export interface ClientJob {
  port: number;
  model: string;
  input: string;
  expect: string;
  tolerance: { rtol: number; atol: number };
  k: number;
}

/** ns from the start of a client's job: connected, ready to infer, first result, session closed. */
export interface ClientTimes {
  connectNs: number;
  readyNs: number;
  firstNs: number;
  doneNs: number;
  /** Failed connects retried (see RPC_CONNECT_ATTEMPTS). */
  retries: number;
}

/**
 * A client of a concurrency case retries a failed connect (TVM's server, listen backlog 1,
 * resets some of many simultaneous connects) after RPC_RETRY_MS, up to this many attempts in
 * all, as a user would; bench/rpc_peer.py does the same.
 */
export const RPC_CONNECT_ATTEMPTS = 10;
export const RPC_RETRY_MS = 50;

/** Throws unless `actual` matches the reference in `expectFile` within `tol`. */
export function checkAgainst(actual: ArrayLike<number>, expectFile: string, tol: { rtol: number; atol: number }, who: string): number {
  const c = compare(actual, readNpy(expectFile).data as Float32Array, tol);
  if (!c.ok) throw new Error(`${who}: output differs from ${path.basename(expectFile)} (max |diff| ${c.maxAbsDiff})`);
  return c.maxAbsDiff;
}

/** A tvm-node client's job (in a client process): one round trip per inference. */
async function runClientJob(job: ClientJob): Promise<ClientTimes> {
  const x = readNpy(job.input);
  const input = [{ data: x.data, shape: x.shape }];
  const t0 = hrNow();
  let retries = 0;
  let session: RPCSession;
  for (;;) {
    try {
      session = await connect(RPC_HOST, job.port);
      break;
    } catch (err) {
      if (++retries >= RPC_CONNECT_ATTEMPTS) throw err;
      await sleep(RPC_RETRY_MS);
    }
  }
  const connectNs = nsSince(t0);
  let firstNs = 0;
  try {
    for (let i = 0; i < job.k; i++) {
      const outs = await session.infer(job.model, input);
      if (i === 0) {
        firstNs = nsSince(t0);
        checkAgainst(outs[0].toFloat32ArraySync(), job.expect, job.tolerance, 'tvm-node client');
      }
      outs.forEach((t) => t.disposeSync());
    }
  } finally {
    await closeSession(session);
  }
  return { connectNs, readyNs: connectNs, firstNs, doneNs: nsSince(t0), retries };
}

/** A tvm-node client in a process of its own (this file, forked), running one job at a time. */
export class NodeRpcClient {
  private readonly proc = new JobProcess<ClientJob, ClientTimes>(__filename, RPC_CLIENT_FLAG, 'tvm-node client process');

  ready(timeoutMs: number): Promise<void> {
    return this.proc.ready(timeoutMs);
  }

  run(job: ClientJob, timeoutMs: number): Promise<ClientTimes> {
    return this.proc.request(job, timeoutMs, 'client job');
  }

  close(): Promise<void> {
    return this.proc.close();
  }
}

if (require.main === module && process.argv.includes(RPC_CLIENT_FLAG)) {
  serveJobs(runClientJob);
}
