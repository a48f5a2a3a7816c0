/**
 * Errors of the KServe v2 front ends, each with the status both transports answer it with:
 * an HTTP status (the body is `{"error": message}`, as the protocol says) and a gRPC status
 * code. Errors from the model layer (a wrong input, a malformed manifest) are mapped by
 * {@link toServeError}.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import { TvmError, TvmValueError } from '../errors';

/** An error a client gets as a protocol error. */
export class ServeError extends TvmError {
  constructor(
    kind: string,
    message: string,
    /** HTTP status of the answer. */
    readonly httpStatus: number,
    /** gRPC status code of the answer. */
    readonly grpcCode: GrpcStatus,
    options?: ErrorOptions,
  ) {
    super(kind, message, '', options);
  }
}

/** A request the protocol or the model does not accept: HTTP 400, INVALID_ARGUMENT. */
export class BadRequestError extends ServeError {
  constructor(message: string, options?: ErrorOptions) {
    super('BadRequest', message, 400, GrpcStatus.INVALID_ARGUMENT, options);
  }
}

/** An unknown model or version: HTTP 404, NOT_FOUND. */
export class ModelNotFoundError extends ServeError {
  constructor(message: string) {
    super('ModelNotFound', message, 404, GrpcStatus.NOT_FOUND);
  }
}

/** A model that is not ready (unloaded, failed to load): HTTP 503, UNAVAILABLE. */
export class ModelNotReadyError extends ServeError {
  constructor(message: string) {
    super('ModelNotReady', message, 503, GrpcStatus.UNAVAILABLE);
  }
}

/** Too many requests in flight, or the server is draining: HTTP 503, UNAVAILABLE. */
export class ServerBusyError extends ServeError {
  constructor(message: string) {
    super('ServerBusy', message, 503, GrpcStatus.UNAVAILABLE);
  }
}

/** A request that took longer than the server allows: HTTP 504, DEADLINE_EXCEEDED. */
export class RequestTimeoutError extends ServeError {
  constructor(message: string) {
    super('RequestTimeout', message, 504, GrpcStatus.DEADLINE_EXCEEDED);
  }
}

/** A body over the server's limit: HTTP 413, RESOURCE_EXHAUSTED. */
export class PayloadTooLargeError extends ServeError {
  constructor(message: string) {
    super('PayloadTooLarge', message, 413, GrpcStatus.RESOURCE_EXHAUSTED);
  }
}

/**
 * Any error as the {@link ServeError} a client gets: a value error from the model layer
 * (inputs, manifests, names) is the client's (400); anything else is the server's (500,
 * INTERNAL), with its message.
 */
export function toServeError(err: unknown): ServeError {
  if (err instanceof ServeError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof TvmValueError) return new BadRequestError(message, { cause: err });
  return new ServeError('Internal', message, 500, GrpcStatus.INTERNAL, { cause: err });
}
