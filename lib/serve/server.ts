/**
 * `tvm-node serve`: one process, one model repository and cache, served over KServe v2
 * HTTP/REST (lib/serve/http.ts), KServe v2 gRPC (lib/serve/grpc.ts) and, optionally, TVM RPC
 * (inference-only, lib/rpc/server.ts), with Prometheus metrics and a structured log (pino:
 * JSON lines, cheap enough to leave on in production). Every front end is inference-only
 * (no code runs that a client sends), so any address may be bound; the default is loopback.
 */
import os from 'node:os';
import type * as grpc from '@grpc/grpc-js';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import { checkNumber, checkOptions, checkString, requireString } from '../options';
import { type CacheLimits, checkCacheLimits, ModelRepository } from '../rpc/repository';
import { RPCServer } from '../rpc/server';
import { bindGrpc, grpcServer } from './grpc';
import { httpApp } from './http';
import { ServeMetrics } from './metrics';
import { InferenceService } from './service';

/** Options of {@link InferenceServer}. */
export interface InferenceServerOptions {
  /** The model repository folder (lib/rpc/repository.ts). */
  modelsDir: string;
  /** Address every front end binds. Default 127.0.0.1. */
  host?: string;
  /** HTTP/REST port (0: any free one), or false for none. Default 8000 (Triton's). */
  http?: number | false;
  /** gRPC port, or false for none. Default 8001 (Triton's). */
  grpc?: number | false;
  /** TVM RPC port (inference-only), or false for none. Default false. */
  rpc?: number | false;
  /** Limits of the model cache. Default: 8 models, 2 GiB, one VM per core per model. */
  cache?: CacheLimits;
  /** Inference requests served at once, all protocols; more are answered busy. Default 64. */
  maxInFlight?: number;
  /** A request not answered within this many ms is answered with a timeout. Default 30000. */
  requestTimeoutMs?: number;
  /** An HTTP request whose headers and body have not all arrived in this many ms is dropped (slow senders). Default 30000. */
  readTimeoutMs?: number;
  /** Largest request body or message, bytes. Default 64 MiB. */
  maxBodyBytes?: number;
  /** Largest JSON part of an HTTP request, bytes (parsing it holds the event loop; binary tensors cost no parse). Default 8 MiB. */
  maxJsonBytes?: number;
  /** Idle connections are closed after this many ms (HTTP keep-alive, gRPC). Default 5000 (HTTP) / 120000 (gRPC). */
  idleTimeoutMs?: number;
  /** Load every model at start-up, so readiness is known before the first request. Default true. */
  preload?: boolean;
  /** Where to log (pino). Default: nothing. */
  logger?: Logger;
}

const OPTIONS = [
  'modelsDir',
  'host',
  'http',
  'grpc',
  'rpc',
  'cache',
  'maxInFlight',
  'requestTimeoutMs',
  'readTimeoutMs',
  'maxBodyBytes',
  'maxJsonBytes',
  'idleTimeoutMs',
  'preload',
  'logger',
] as const satisfies readonly (keyof InferenceServerOptions)[];

/** The ports bound ({@link InferenceServer.listen}); absent for a front end that is off. */
export interface ServePorts {
  http?: number;
  grpc?: number;
  rpc?: number;
}

const port = (name: string, v: unknown, dflt: number | false): number | false =>
  v === false ? false : checkNumber(`InferenceServer: ${name}`, v, { min: 0, max: 65535, integer: true }, dflt as number);

export class InferenceServer implements AsyncDisposable {
  readonly repository: ModelRepository;
  readonly service: InferenceService;
  readonly metrics = new ServeMetrics();
  readonly log: Logger;
  private readonly host: string;
  private readonly ports: { http: number | false; grpc: number | false; rpc: number | false };
  private readonly preload: boolean;
  private http?: FastifyInstance;
  private grpc?: grpc.Server;
  private rpc?: RPCServer;
  private closing?: Promise<void>;

  constructor(opts: InferenceServerOptions) {
    const o = checkOptions('InferenceServer', opts, OPTIONS);
    const at = (k: string) => `InferenceServer: ${k}`;
    const modelsDir = requireString(at('modelsDir'), o.modelsDir);
    this.host = checkString(at('host'), o.host, { nonEmpty: true }, '127.0.0.1');
    this.ports = { http: port('http', o.http, 8000), grpc: port('grpc', o.grpc, 8001), rpc: port('rpc', o.rpc ?? false, false) };
    this.preload = o.preload ?? true;
    this.log = o.logger ?? pino({ level: 'silent' });
    const cache = checkCacheLimits('InferenceServer', { concurrency: os.availableParallelism(), ...o.cache }, 'cache');
    this.repository = new ModelRepository(modelsDir, cache);
    const maxBodyBytes = checkNumber(at('maxBodyBytes'), o.maxBodyBytes, { min: 1024, integer: true }, 64 * 2 ** 20);
    const requestTimeoutMs = checkNumber(at('requestTimeoutMs'), o.requestTimeoutMs, { min: 1 }, 30_000);
    const idle = checkNumber(at('idleTimeoutMs'), o.idleTimeoutMs, { min: 1 }, 0);
    const readTimeoutMs = checkNumber(at('readTimeoutMs'), o.readTimeoutMs, { min: 1 }, 30_000);
    const maxJsonBytes = checkNumber(at('maxJsonBytes'), o.maxJsonBytes, { min: 1024, integer: true }, 8 * 2 ** 20);
    this.service = new InferenceService(
      this.repository,
      { maxInFlight: checkNumber(at('maxInFlight'), o.maxInFlight, { min: 1, integer: true }, 64), requestTimeoutMs },
      this.metrics,
      this.log,
    );
    if (this.ports.http !== false) this.http = httpApp(this.service, { maxBodyBytes, maxJsonBytes, readTimeoutMs, keepAliveTimeoutMs: idle || 5000 }, this.log);
    if (this.ports.grpc !== false) this.grpc = grpcServer(this.service, { maxMessageBytes: maxBodyBytes, idleTimeoutMs: idle || 120_000 }, this.log);
    if (this.ports.rpc !== false) {
      const maxInFlight = this.service.limits.maxInFlight;
      // As many sessions as requests may be in flight (TVM RPC runs one request per session at a time).
      this.rpc = new RPCServer({
        host: this.host,
        port: this.ports.rpc,
        inferenceOnly: true,
        repository: this.repository,
        maxMessageBytes: maxBodyBytes,
        maxSessions: maxInFlight,
        maxSessionsPerAddress: maxInFlight,
      });
      // Labels name single models that ran: unknown names and chains (lib/rpc/infer.ts) would let clients grow the metrics without bound.
      this.rpc.on('inference', (model, timing, error) =>
        this.metrics.request({
          model: error ? '' : model.includes('|') ? '(chain)' : model,
          protocol: 'rpc',
          queueS: timing ? (timing.totalUs - timing.runUs) / 1e6 : 0,
          computeS: (timing?.runUs ?? 0) / 1e6,
          totalS: (timing?.totalUs ?? 0) / 1e6,
          failure: error ? error.name : undefined,
        }),
      );
    }
  }

  /**
   * Checks the repository, loads its models (unless `preload` is off), and starts every front
   * end; resolves with the ports bound. A failure stops what had started and rejects.
   */
  async listen(): Promise<ServePorts> {
    this.repository.check();
    if (this.preload) await this.service.preload();
    const ports: ServePorts = {};
    try {
      if (this.http && this.ports.http !== false) {
        await this.http.listen({ host: this.host, port: this.ports.http });
        ports.http = (this.http.server.address() as { port: number }).port;
      }
      if (this.grpc && this.ports.grpc !== false) ports.grpc = await bindGrpc(this.grpc, this.host, this.ports.grpc);
      if (this.rpc) ports.rpc = (await this.rpc.listen()).port;
    } catch (err) {
      await this.close(0);
      throw err;
    }
    this.log.info({ host: this.host, ...ports, models: this.service.index() }, 'tvm-node serve listening');
    return ports;
  }

  /**
   * Graceful stop: readiness turns false and new inference requests are refused, requests in
   * flight get up to `deadlineMs` to be answered, then every front end closes and the models
   * are released. Idempotent.
   */
  close(deadlineMs = 10_000): Promise<void> {
    this.closing ??= (async () => {
      await this.service.drain(deadlineMs);
      const grpcServer = this.grpc;
      await Promise.all([
        this.http?.close(),
        grpcServer && new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve())),
        this.rpc?.close(deadlineMs),
      ]);
      await this.repository.dispose();
    })();
    return this.closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
