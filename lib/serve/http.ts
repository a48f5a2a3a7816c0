/**
 * KServe v2 over HTTP/REST (fastify: routing, body limits, timeouts and error handling that
 * Node's own http module leaves to each server), with Triton's binary-tensor extension: a
 * request or answer whose `Inference-Header-Content-Length` header says N starts with N bytes
 * of JSON, and the raw bytes of the tensors marked `binary_data_size` follow in order, with
 * no base64 and no per-element JSON.
 *
 * Endpoints: `GET /v2/health/live`, `/v2/health/ready`, `/v2`, `/v2/models/M[/versions/V]`,
 * `/v2/models/M[/versions/V]/ready`; `POST /v2/models/M[/versions/V]/infer`;
 * `POST /v2/repository/index`, `/v2/repository/models/M/load`, `.../unload`; `GET /metrics`.
 * Errors are `{"error": message}` with the status of their {@link ServeError}.
 */
import http from 'node:http';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from 'fastify';
import type { Logger } from 'pino';
import { toJsonData } from './datatype';
import { BadRequestError, PayloadTooLargeError, ServeError, toServeError } from './errors';
import type { InferenceService, InferRequest, InferResponse, RequestInput, ResponseOutput } from './service';

/** The header that gives the JSON part's length in a binary request or answer. */
export const HEADER_LENGTH = 'inference-header-content-length';

/** Options of {@link httpApp}. */
export interface HttpOptions {
  /** Largest request body, bytes. */
  maxBodyBytes: number;
  /**
   * Largest JSON part of a request, bytes: parsing JSON holds the event loop (~8 ms per MiB
   * here), so big tensors must come in binary (the binary extension), which costs no parse.
   */
  maxJsonBytes: number;
  /** A request whose headers and body have not all arrived after this many ms is dropped (slow clients). */
  readTimeoutMs: number;
  /** Idle keep-alive connections are closed after this many ms. */
  keepAliveTimeoutMs: number;
}

type Params = { name: string; version?: string };

/** The fastify app serving `service` (not listening yet). */
export function httpApp(service: InferenceService, o: HttpOptions, log: Logger): FastifyInstance {
  const app: FastifyInstance = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    // Requests are counted in the metrics; the log gets failures only.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: o.maxBodyBytes,
    // Receiving a request is bounded (slow, stalled or half-open senders: Node checks every
    // connection's progress at the interval below, 30 s by default, too coarse for short
    // limits); a socket quiet while its model runs is not (the service's own deadline answers
    // those), so no inactivity timeout.
    serverFactory: (handler) =>
      http.createServer(
        {
          requestTimeout: o.readTimeoutMs,
          headersTimeout: o.readTimeoutMs,
          keepAliveTimeout: o.keepAliveTimeoutMs,
          connectionsCheckingInterval: Math.max(100, Math.min(30_000, o.readTimeoutMs / 4)),
        },
        handler,
      ),
    connectionTimeout: 0,
    return503OnClosing: true,
  });
  // Bodies are JSON or JSON + binary: read every body as bytes and parse it here.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.setErrorHandler((err, _req, reply) => {
    const e = fastifyError(err);
    if (e.httpStatus === 500) log.error({ err: e.message }, 'request failed');
    void reply.code(e.httpStatus).send({ error: e.message });
  });
  app.setNotFoundHandler((req, reply) => void reply.code(404).send({ error: `no endpoint ${req.method} ${req.url.split('?')[0]}` }));
  app.addHook('onResponse', (req, reply, done) => {
    service.metrics.transferred('http', 'in', Buffer.isBuffer(req.body) ? req.body.length : 0);
    service.metrics.transferred('http', 'out', Number(reply.getHeader('content-length') ?? 0));
    done();
  });

  app.get('/v2/health/live', (_req, reply) => status(reply, service.live(), { live: service.live() }));
  app.get('/v2/health/ready', (_req, reply) => status(reply, service.ready(), { ready: service.ready() }));
  app.get('/v2', () => service.serverMetadata());
  for (const base of ['/v2/models/:name', '/v2/models/:name/versions/:version']) {
    app.get<{ Params: Params }>(base, (req) => service.modelMetadata(req.params.name, req.params.version));
    app.get<{ Params: Params }>(`${base}/ready`, (req, reply) => {
      const ready = service.modelReady(req.params.name, req.params.version);
      return status(reply, ready, { name: req.params.name, ready });
    });
    app.post<{ Params: Params }>(`${base}/infer`, (req, reply) => infer(service, req, reply, o.maxJsonBytes));
  }
  app.post('/v2/repository/index', (req) => service.index(jsonBody(req.body, {}).ready === true));
  app.post<{ Params: Params }>('/v2/repository/models/:name/load', async (req) => {
    await service.load(req.params.name);
    return {};
  });
  app.post<{ Params: Params }>('/v2/repository/models/:name/unload', (req) => {
    service.unload(req.params.name);
    return {};
  });
  app.get('/metrics', async (_req, reply) => reply.type(service.metrics.contentType).send(await service.metrics.text()));
  return app;
}

function status(reply: FastifyReply, ok: boolean, body: object): FastifyReply {
  return reply.code(ok ? 200 : 503).send(body);
}

/** fastify's own errors (body too large, bad content) as protocol errors. */
function fastifyError(err: unknown): ServeError {
  const code = (err as { code?: string }).code;
  if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new PayloadTooLargeError(`request body over the server's limit: ${(err as Error).message}`);
  const statusCode = (err as { statusCode?: number }).statusCode;
  if (!(err instanceof ServeError) && statusCode !== undefined && statusCode >= 400 && statusCode < 500) return new BadRequestError((err as Error).message);
  return toServeError(err);
}

/** A request body that must be a JSON object (an empty body is `empty`). */
function jsonBody(body: unknown, empty?: Record<string, unknown>): Record<string, unknown> {
  const bytes = Buffer.isBuffer(body) ? body : Buffer.alloc(0);
  if (bytes.length === 0 && empty) return empty;
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new BadRequestError(`the request body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new BadRequestError('the request body must be a JSON object');
  return parsed as Record<string, unknown>;
}

type JsonTensor = { name?: unknown; datatype?: unknown; shape?: unknown; data?: unknown; parameters?: Record<string, unknown> };

async function infer(service: InferenceService, req: FastifyRequest<{ Params: Params }>, reply: FastifyReply, maxJsonBytes: number): Promise<FastifyReply> {
  const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  const { header, binary } = splitBody(body, req.headers[HEADER_LENGTH]);
  if (header.length > maxJsonBytes) {
    throw new PayloadTooLargeError(
      `the request's JSON is ${header.length} bytes, over the server's limit of ${maxJsonBytes} for JSON: send large tensors as binary data (Triton's binary tensor extension)`,
    );
  }
  const request = jsonBody(header);
  const parsed = parseInferRequest(req.params, request, binary);
  const response = await service.infer('http', parsed.request);
  return sendInferResponse(reply, response, parsed.binaryOutputs, parsed.binaryDefault);
}

/** The JSON part and the binary part of a body, per the header-length header. */
function splitBody(body: Buffer, lengthHeader: string | string[] | undefined): { header: Buffer; binary: Buffer } {
  if (lengthHeader === undefined) return { header: body, binary: Buffer.alloc(0) };
  const text = Array.isArray(lengthHeader) ? lengthHeader[0] : lengthHeader;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > body.length) {
    throw new BadRequestError(`${HEADER_LENGTH} is ${JSON.stringify(text)}, but the body has ${body.length} bytes`);
  }
  return { header: body.subarray(0, n), binary: body.subarray(n) };
}

/** Parses the JSON of an infer request, taking each binary input's bytes from `binary` in order. */
function parseInferRequest(
  params: Params,
  json: Record<string, unknown>,
  binary: Buffer,
): { request: InferRequest; binaryOutputs: Set<string>; binaryDefault: boolean } {
  if (!Array.isArray(json.inputs)) throw new BadRequestError('the request needs "inputs", an array');
  let offset = 0;
  const inputs: RequestInput[] = (json.inputs as JsonTensor[]).map((t, k) => {
    if (typeof t !== 'object' || t === null) throw new BadRequestError(`inputs[${k}] is not an object`);
    const name = typeof t.name === 'string' ? t.name : `inputs[${k}]`;
    const size = t.parameters?.binary_data_size;
    if (size === undefined) {
      if (t.data === undefined) throw new BadRequestError(`input '${name}' has neither "data" nor binary data`);
      return { name, datatype: t.datatype, shape: t.shape, json: t.data };
    }
    if (!Number.isSafeInteger(size) || (size as number) < 0) throw new BadRequestError(`input '${name}': binary_data_size must be a non-negative integer`);
    if (offset + (size as number) > binary.length) {
      throw new BadRequestError(`input '${name}': binary data truncated (${binary.length - offset} bytes left, binary_data_size says ${size})`);
    }
    const raw = binary.subarray(offset, offset + (size as number));
    offset += size as number;
    return { name, datatype: t.datatype, shape: t.shape, raw };
  });
  if (offset !== binary.length) throw new BadRequestError(`${binary.length - offset} bytes of binary data after the last binary input`);
  const binaryDefault = (json.parameters as Record<string, unknown> | undefined)?.binary_data_output === true;
  const binaryOutputs = new Set<string>();
  let outputs: string[] | undefined;
  if (json.outputs !== undefined) {
    if (!Array.isArray(json.outputs)) throw new BadRequestError('"outputs" must be an array');
    outputs = (json.outputs as JsonTensor[]).map((o, k) => {
      if (typeof o?.name !== 'string') throw new BadRequestError(`outputs[${k}] needs a "name"`);
      const b = o.parameters?.binary_data;
      if (b === true || (b === undefined && binaryDefault)) binaryOutputs.add(o.name);
      return o.name;
    });
  }
  const id = typeof json.id === 'string' ? json.id : undefined;
  return {
    request: { model: params.name, version: params.version, id, inputs, outputs },
    binaryOutputs,
    binaryDefault: binaryDefault && outputs === undefined,
  };
}

/** Sends the answer: all JSON, or JSON then the raw bytes of the outputs asked for in binary. */
function sendInferResponse(reply: FastifyReply, r: InferResponse, binaryOutputs: Set<string>, allBinary: boolean): FastifyReply {
  const chunks: Buffer[] = [];
  const outputs = r.outputs.map((o: ResponseOutput) => {
    const base = { name: o.name, datatype: o.datatype, shape: o.shape };
    if (!allBinary && !binaryOutputs.has(o.name)) return { ...base, data: toJsonData(o.data, o.dtype) };
    chunks.push(Buffer.from(o.data.buffer, o.data.byteOffset, o.data.byteLength));
    return { ...base, parameters: { binary_data_size: o.data.byteLength } };
  });
  const header = Buffer.from(JSON.stringify({ model_name: r.model, model_version: r.version, ...(r.id !== undefined && { id: r.id }), outputs }));
  if (chunks.length === 0) return reply.type('application/json').send(header);
  return reply
    .header(HEADER_LENGTH, String(header.length))
    .type('application/octet-stream')
    .send(Buffer.concat([header, ...chunks]));
}
