/**
 * One round trip per inference: the client sends the model name and its inputs in one
 * request, the server runs the model and answers with the outputs. TVM's RPC protocol
 * passes only plain values, strings, bytes and handles (no arrays), so the tensors travel
 * as one bytes blob each way, in a format any client can build:
 *
 *   "TNI1" | uint32 LE header length | header JSON | data
 *   header: { "tensors": [{ "shape": [...], "dtype": "float32", "offset": n, "nbytes": n }] }
 *
 * offsets are relative to the start of the data area and 64-byte aligned. A Python client:
 * `r.get_function('tvm_node.infer')('mlp', pack([x]))` (see README for `pack`/`unpack`).
 */
import { bindInputs } from '../bind';
import { type DType, dtypeOfArray, HOST_ARRAY, type TypedArray } from '../dtype';
import { TvmValueError } from '../errors';
import { HandleOwner } from '../handle';
import { Tensor } from '../tensor';
import { outputsOf } from '../vm';
import type { ServedFunction } from './inference-session';
import type { LoadedModel, ModelRepository } from './repository';
import { type BlobTensor, decodeBlob, encodeBlob, writeBlob } from './tni1';
import { WireError, type WireValue } from './wire';

/** Name of the server function: `(model: str, request: bytes) -> bytes`. */
export const INFER_FUNCTION = 'tvm_node.infer';
/** Name of the server function that lists the repository (JSON text). */
export const MODELS_FUNCTION = 'tvm_node.models';
/** Name of the server function tvm-node's client calls to end its session. */
export const END_SESSION_FUNCTION = 'tvm_node.end_session';

/** Decodes a blob into host arrays: views of the blob where the alignment allows, copies otherwise. */
export function decodeTensors(blob: Buffer): Array<{ data: TypedArray; shape: number[]; dtype: DType }> {
  return decodeBlob(blob).map((t) => ({ data: hostArray(t), shape: t.shape, dtype: t.dtype }));
}

function hostArray({ bytes, dtype }: BlobTensor): TypedArray {
  const Ctor = HOST_ARRAY[dtype];
  const aligned = bytes.byteOffset % Ctor.BYTES_PER_ELEMENT === 0 ? bytes : Buffer.from(bytes);
  return new Ctor(aligned.buffer, aligned.byteOffset, aligned.byteLength / Ctor.BYTES_PER_ELEMENT);
}

/**
 * The server side of {@link INFER_FUNCTION} on the JS thread (a session process, where TVM's
 * loop calls it and waits anyway). The input tensors it builds and the outputs of the run are
 * released before it returns.
 */
export function serveInference(repo: ModelRepository): (model: string, request: Buffer) => Buffer {
  return (model, request) => {
    const loaded = repo.getSync(model);
    const inputs = bindRequest(loaded, request);
    try {
      return encodeOutputs(loaded.vm.runSync(loaded.info.function, ...inputs.tensors));
    } finally {
      inputs.release();
    }
  };
}

/**
 * The server side of {@link INFER_FUNCTION} off the JS thread: the load and the run use the
 * thread pool. The request is a blob, or the tensors a streamed blob became (the caller's:
 * they are only read); the outputs are the caller's to release once sent. Tensors made for
 * the inputs are released before it resolves.
 */
export async function inferAsync(repo: ModelRepository, model: string, request: Buffer | readonly Tensor[]): Promise<Tensor[]> {
  const loaded = await repo.get(model);
  const inputs = bindRequest(loaded, request);
  try {
    return outputsOf<Tensor>(await loaded.vm.run(loaded.info.function, ...inputs.tensors));
  } finally {
    inputs.release();
  }
}

/** The functions an inference-only server offers (lib/rpc/inference-session.ts), over `repo`. */
export function inferenceFunctions(repo: ModelRepository, extra: ReadonlyMap<string, ServedFunction> = new Map()): Map<string, ServedFunction> {
  return new Map<string, ServedFunction>([
    [
      INFER_FUNCTION,
      async ([model, request]) => {
        if (model?.kind !== 'str' || (request?.kind !== 'bytes' && request?.kind !== 'tensors'))
          throw new WireError(`${INFER_FUNCTION} takes (model: str, request: bytes)`);
        return { kind: 'tensors', value: await inferAsync(repo, model.value, request.value) };
      },
    ],
    [MODELS_FUNCTION, (): WireValue => ({ kind: 'str', value: modelsText(repo) })],
    [
      END_SESSION_FUNCTION,
      (_args, session): WireValue => {
        session.end();
        return { kind: 'none' };
      },
    ],
    ...extra,
  ]);
}

/** What {@link MODELS_FUNCTION} answers: the repository as clients may see it (no server paths). */
export function modelsText(repo: ModelRepository): string {
  return JSON.stringify(repo.publicList());
}

/**
 * A request (a blob, or the tensors a streamed blob became) as the model's input tensors,
 * in parameter order, and those made for it (the caller releases them). The tensor count is
 * checked against the model before any tensor is looked at; then each entry is checked
 * against the model's inputs (lib/bind.ts: dtype, rank, sizes, symbolic sizes, with a message
 * naming the input). A blob's entries are built with at most one copy of their bytes (none
 * when they happen to be 64-byte aligned); streamed tensors are passed as they are.
 */
function bindRequest({ info, arity, inputs }: LoadedModel, request: Buffer | readonly Tensor[]): { tensors: Tensor[]; release(): void } {
  const checkCount = (n: number) => {
    if (n !== arity) throw new TvmValueError('ValueError', `model '${info.name}' takes ${arity} input${arity === 1 ? '' : 's'}; the request has ${n}`);
  };
  if (Array.isArray(request)) {
    checkCount(request.length);
    return bindInputs(inputs, [...request], { model: `model '${info.name}'` });
  }
  if (!Buffer.isBuffer(request)) throw new TvmValueError('ValueError', 'the request must be a tensor blob (bytes)');
  const entries = decodeBlob(request, { checkCount }).map((t) => ({ data: t.bytes, shape: t.shape, dtype: t.dtype }));
  return bindInputs(inputs, entries, { model: `model '${info.name}'` });
}

/**
 * A model's result (a tensor or a tuple of them) as a blob, each output copied once, into
 * place; the outputs are released once copied (or when the copy fails).
 */
function encodeOutputs(result: unknown): Buffer {
  const outputs = outputsOf<Tensor>(result);
  try {
    return writeBlob(
      outputs,
      outputs.map((t) => t.byteLength),
      (i, view) => outputs[i].handle.copyToBytes(view),
    );
  } finally {
    for (const o of outputs) if (o instanceof HandleOwner) o.disposeSync();
  }
}

/** What a client gives {@link RPCSession.infer}: tensors, or host data with a shape. */
export type InferInput = Tensor | { data: TypedArray; shape: readonly number[]; dtype?: DType };

/** Encodes client inputs (tensors are copied to the host first). */
export function encodeInputs(inputs: readonly InferInput[]): Buffer {
  return encodeBlob(
    inputs.map((i) =>
      i instanceof Tensor
        ? { data: i.toArraySync(), shape: i.shape, dtype: i.dtype }
        : { data: i.data, shape: i.shape, dtype: i.dtype ?? dtypeOfArray(i.data) },
    ),
  );
}
