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
import { TvmValueError } from '../errors';
import { checkDType, type DType, HOST_ARRAY, type TypedArray } from '../dtype';
import { Tensor } from '../tensor';
import { outputsOf } from '../vm';
import type { ServedFunction } from './inference-session';
import type { ModelRepository } from './repository';
import { WireError, type WireValue } from './wire';

/** Name of the server function: `(model: str, request: bytes) -> bytes`. */
export const INFER_FUNCTION = 'tvm_node.infer';
/** Name of the server function that lists the repository (JSON text). */
export const MODELS_FUNCTION = 'tvm_node.models';
/** Name of the server function tvm-node's client calls to end its session. */
export const END_SESSION_FUNCTION = 'tvm_node.end_session';

const MAGIC = Buffer.from('TNI1', 'latin1');
const ALIGN = 64;

interface BlobEntry {
  shape: number[];
  dtype: string;
  offset: number;
  nbytes: number;
}

/** Host data of a tensor-like value. */
interface HostTensor {
  data: ArrayBufferView;
  shape: readonly number[];
  dtype: string;
}

/** Encodes tensors into one blob. */
export function encodeTensors(tensors: readonly HostTensor[]): Buffer {
  let offset = 0;
  const entries: BlobEntry[] = tensors.map((t) => {
    const e = { shape: [...t.shape], dtype: t.dtype, offset, nbytes: t.data.byteLength };
    offset += Math.ceil(t.data.byteLength / ALIGN) * ALIGN;
    return e;
  });
  const header = Buffer.from(JSON.stringify({ tensors: entries }), 'utf8');
  // One buffer, each tensor's bytes copied into it once.
  const blob = Buffer.alloc(8 + header.length + offset);
  MAGIC.copy(blob, 0);
  blob.writeUInt32LE(header.length, 4);
  header.copy(blob, 8);
  const data = 8 + header.length;
  tensors.forEach((t, i) => blob.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), data + entries[i].offset));
  return blob;
}

/** Decodes a blob into host arrays (views into `blob`, no copy). */
export function decodeTensors(blob: Buffer): Array<{ data: TypedArray; shape: number[]; dtype: DType }> {
  if (blob.length < 8 || !blob.subarray(0, 4).equals(MAGIC)) throw new TvmValueError('ValueError', 'not a tvm-node tensor blob (bad magic)');
  const headerLen = blob.readUInt32LE(4);
  if (8 + headerLen > blob.length) throw new TvmValueError('ValueError', 'truncated tensor blob header');
  let header: { tensors?: BlobEntry[] };
  try {
    header = JSON.parse(blob.subarray(8, 8 + headerLen).toString('utf8'));
  } catch {
    throw new TvmValueError('ValueError', 'malformed tensor blob header');
  }
  const data = blob.subarray(8 + headerLen);
  return (header.tensors ?? []).map((e) => {
    const dtype = checkDType(e.dtype);
    const Ctor = HOST_ARRAY[dtype];
    const count = e.shape.reduce((a, b) => a * b, 1);
    if (e.nbytes !== count * Ctor.BYTES_PER_ELEMENT || e.offset < 0 || e.offset + e.nbytes > data.length) {
      throw new TvmValueError('ValueError', `tensor blob entry out of range: ${JSON.stringify(e)}`);
    }
    // Copy out: the blob's offset inside its ArrayBuffer need not suit the element size.
    const bytes = Uint8Array.prototype.slice.call(data, e.offset, e.offset + e.nbytes);
    return { data: new Ctor(bytes.buffer, 0, count), shape: e.shape, dtype };
  });
}

/**
 * The server side of {@link INFER_FUNCTION} on the JS thread (a session process, where TVM's
 * loop calls it and waits anyway).
 */
export function serveInference(repo: ModelRepository): (model: string, request: Buffer) => Buffer {
  return (model, request) => {
    const { vm, info } = repo.get(model);
    const inputs = decodeRequest(request);
    try {
      return encodeOutputs(vm.invoke(info.function, ...inputs));
    } finally {
      for (const t of inputs) t.dispose();
    }
  };
}

/** The server side of {@link INFER_FUNCTION} off the JS thread: the load and the run use the thread pool. */
export async function inferAsync(repo: ModelRepository, model: string, request: Buffer): Promise<Buffer> {
  const { vm, info } = await repo.getAsync(model);
  const inputs = decodeRequest(request);
  try {
    return encodeOutputs(await vm.run(info.function, ...inputs));
  } finally {
    for (const t of inputs) t.dispose();
  }
}

/** The functions an inference-only server offers (lib/rpc/inference-session.ts), over `repo`. */
export function inferenceFunctions(repo: ModelRepository): Map<string, ServedFunction> {
  return new Map<string, ServedFunction>([
    [
      INFER_FUNCTION,
      async ([model, request]) => {
        if (model?.kind !== 'str' || request?.kind !== 'bytes') throw new WireError(`${INFER_FUNCTION} takes (model: str, request: bytes)`);
        return { kind: 'bytes', value: await inferAsync(repo, model.value, request.value) };
      },
    ],
    [MODELS_FUNCTION, (): WireValue => ({ kind: 'str', value: JSON.stringify(repo.list()) })],
    [
      END_SESSION_FUNCTION,
      (_args, session): WireValue => {
        session.end();
        return { kind: 'none' };
      },
    ],
  ]);
}

/** A request blob as host tensors (the caller disposes them). */
function decodeRequest(request: Buffer): Tensor[] {
  if (!Buffer.isBuffer(request)) throw new TvmValueError('ValueError', 'the request must be a tensor blob (bytes)');
  return decodeTensors(request).map((a) => Tensor.from(a.data, { shape: a.shape, dtype: a.dtype }));
}

/** A model's result (a tensor or a tuple of them) as a blob. */
function encodeOutputs(result: unknown): Buffer {
  const outputs = outputsOf<Tensor>(result);
  return encodeTensors(outputs.map((t) => ({ data: t.toArray(), shape: t.shape, dtype: t.dtype })));
}

/** What a client gives {@link RPCSession.infer}: tensors, or host data with a shape. */
export type InferInput = Tensor | { data: TypedArray; shape: readonly number[]; dtype?: DType };

/** Encodes client inputs (tensors are copied to the host first). */
export function encodeInputs(inputs: readonly InferInput[]): Buffer {
  return encodeTensors(
    inputs.map((i) =>
      i instanceof Tensor ? { data: i.toArray(), shape: i.shape, dtype: i.dtype } : { data: i.data, shape: i.shape, dtype: i.dtype ?? dtypeOf(i.data) },
    ),
  );
}

function dtypeOf(a: TypedArray): DType {
  const entry = Object.entries(HOST_ARRAY).find(([, C]) => a instanceof C);
  return (entry?.[0] ?? 'uint8') as DType;
}
