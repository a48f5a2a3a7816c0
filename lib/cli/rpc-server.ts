/**
 * `tvm-node rpc-server`: the concurrent TVM RPC server in the foreground, with graceful
 * shutdown on SIGINT/SIGTERM (stop accepting, let sessions finish up to a deadline, clean
 * work directories, withdraw from the tracker).
 */
import type { AddressInfo } from 'node:net';
import { TvmValueError } from '../errors';
import { ModelRepository } from '../rpc/repository';
import { RPCServer, type RPCServerOptions } from '../rpc/server';
import { withHint } from './errors';

/** Options of {@link rpcServer}. */
export interface RpcServerCommand extends RPCServerOptions {
  /** Seconds sessions get to finish on shutdown. */
  shutdownDeadline: number;
}

/** Parses `host:port`. */
export function parseHostPort(text: string): { host: string; port: number } {
  const m = /^(.+):(\d+)$/.exec(text);
  if (!m) throw new TvmValueError('ValueError', `expected HOST:PORT, got '${text}'`);
  return { host: m[1], port: Number(m[2]) };
}

/** The hint for a start-up failure: what the operator should change. */
function startHint(err: unknown, o: RpcServerCommand): string | undefined {
  const msg = (err as Error).message ?? '';
  if (/^cannot listen/.test(msg)) return `choose another --port (or --host), or stop the process using ${o.host ?? '127.0.0.1'}:${o.port ?? 9090}`;
  if (/tracker/.test(msg)) return 'check --tracker HOST:PORT and that the tracker runs (python -m tvm.exec.rpc_tracker)';
  if (/manifest|\.json/.test(msg)) return 'fix or remove that manifest (README: model repository); the server checks every manifest at start';
  if (/models? (dir|folder)|repository/.test(msg)) return 'give --models an existing folder of .so models';
  return undefined;
}

export async function rpcServer(o: RpcServerCommand): Promise<void> {
  const { shutdownDeadline: _deadline, ...serverOptions } = o;
  const server = new RPCServer(serverOptions);
  server
    .on('session', (id, addr, pid) => console.log(`session ${id} from ${addr ?? '?'}${pid ? ` (process ${pid})` : ''}`))
    .on('sessionEnd', (id, end) => console.log(`session ${id} ended (${end})`))
    .on('refused', (why) => console.log(`refused: ${why}`))
    .on('trackerError', (why) => console.error(`tracker: ${why}`));
  let addr: AddressInfo;
  try {
    addr = await server.listen();
  } catch (err) {
    const hint = startHint(err, o);
    throw hint ? withHint(err, hint) : err;
  }
  const key = server.options.key;
  const models = server.options.modelsDir ? new ModelRepository(server.options.modelsDir).list() : [];
  const mode = o.inferenceOnly ? 'inference-only: models only' : 'full TVM RPC: uploads and any function';
  console.log(`tvm-node rpc-server listening on ${addr.address}:${addr.port}${key ? ` (key '${key}')` : ''} [${mode}]`);
  if (o.tracker) console.log(`registered with tracker ${o.tracker.host}:${o.tracker.port} under key '${key}'`);
  console.log(`  TVM Python: tvm.rpc.connect('${addr.address}', ${addr.port}${key ? `, key='${key}'` : ''})`);
  console.log(`  tvm-node:   await connect('${addr.address}', ${addr.port}${key ? `, { key: '${key}' }` : ''})`);
  if (models.length > 0) {
    console.log(`model repository ${o.modelsDir}:`);
    for (const m of models) {
      if (m.error) {
        console.log(`  ${m.name}: ${m.error}`);
        continue;
      }
      const sig = m.inputs ? `(${m.inputs.map((i) => `${i.name ?? '?'}: ${i.dtype}[${i.shape.join(', ')}]`).join(', ')})` : '';
      console.log(`  ${m.name}${sig} on ${m.device}`);
    }
    const first = models[0];
    console.log(`  one round trip per inference:`);
    console.log(`    tvm-node:   const [y] = await session.infer('${first.name}', [{ data, shape }])`);
    console.log(`    TVM Python: r.get_function('tvm_node.infer')('${first.name}', pack([x]))  # pack/unpack: see README`);
  }
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      console.log(`${signal}: stopping (sessions get ${o.shutdownDeadline}s to finish)`);
      server.close(o.shutdownDeadline * 1000).then(resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
}
