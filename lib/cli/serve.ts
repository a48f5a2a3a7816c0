/**
 * `tvm-node serve`: the model repository over KServe v2 HTTP and gRPC (and TVM RPC with
 * `--rpc`) in the foreground, logging JSON lines (pino) to stdout; SIGTERM/SIGINT drain:
 * readiness turns false, requests in flight are answered (up to the deadline), then it exits.
 */
import pino from 'pino';
import { InferenceServer, type InferenceServerOptions } from '../serve/server';
import { withHint } from './errors';

/** Options of {@link serve}. */
export interface ServeCommand extends InferenceServerOptions {
  /** Seconds requests in flight get to finish on shutdown. */
  shutdownDeadline: number;
  /** pino level: fatal, error, warn, info, debug, trace, silent. */
  logLevel: string;
}

export async function serve(o: ServeCommand): Promise<void> {
  const { shutdownDeadline, logLevel, ...options } = o;
  const logger = pino({ level: logLevel });
  const server = new InferenceServer({ ...options, logger });
  let ports: Awaited<ReturnType<InferenceServer['listen']>>;
  try {
    ports = await server.listen();
  } catch (err) {
    const msg = (err as Error).message ?? '';
    throw /EADDRINUSE|address already in use|No address added/i.test(msg)
      ? withHint(err, 'choose other ports (--http, --grpc, --rpc) or stop the process using them')
      : /models? folder|manifest/.test(msg)
        ? withHint(err, 'give --models an existing folder of .so models with valid manifests')
        : err;
  }
  const host = o.host ?? '127.0.0.1';
  const lines = [
    ports.http !== undefined && `  HTTP (KServe v2):  http://${host}:${ports.http}/v2   metrics: http://${host}:${ports.http}/metrics`,
    ports.grpc !== undefined && `  gRPC (KServe v2):  ${host}:${ports.grpc}   (inference.GRPCInferenceService)`,
    ports.rpc !== undefined && `  TVM RPC:           ${host}:${ports.rpc}   (inference-only: tvm_node.infer)`,
  ].filter(Boolean);
  process.stderr.write(`tvm-node serve: models from ${o.modelsDir}\n${lines.join('\n')}\n`);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      logger.info({ signal, deadlineS: shutdownDeadline }, 'draining');
      void server.close(shutdownDeadline * 1000).then(resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  logger.info('stopped');
}
