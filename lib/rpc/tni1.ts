/**
 * The tensor blob of `tvm_node.infer` ("TNI1"). TVM's RPC protocol passes only plain values,
 * strings, bytes and handles (no arrays), so a request's tensors travel as one bytes value,
 * in a format any client can build (scripts/tni1.py is the Python side):
 *
 *   "TNI1" | uint32 LE header length | header JSON | data
 *   header: { "tensors": [{ "shape": [...], "dtype": "float32", "offset": n, "nbytes": n }] }
 *
 * Offsets are relative to the start of the data area and 64-byte aligned. A blob comes from
 * clients nobody vouches for, so decoding checks every field before anything is built from
 * it: entries must lie inside the data and must not overlap, so the tensors a blob describes
 * never hold more bytes than the blob itself (no amplification).
 */

import { bytesPerElement, checkDType, type DType } from '../dtype';
import { TvmValueError } from '../errors';

const MAGIC = Buffer.from('TNI1', 'latin1');
const ALIGN = 64;
/** More dimensions than any model has; a bound so a shape cannot be a huge array. */
const MAX_RANK = 32;

/** A tensor's host bytes and what they hold. */
export interface HostTensor {
  data: ArrayBufferView;
  shape: readonly number[];
  dtype: string;
}

/** One tensor of a decoded blob: a view of its bytes inside the blob (no copy). */
export interface BlobTensor {
  shape: number[];
  dtype: DType;
  bytes: Buffer;
}

interface BlobEntry {
  shape: number[];
  dtype: string;
  offset: number;
  nbytes: number;
}

/** A header entry that passed every check: where a tensor's bytes lie in the data area. */
export type CheckedEntry = BlobEntry & { dtype: DType };

/** A blob that is not what the format says; `kind` ValueError, message starting "bad tensor blob". */
function bad(why: string): TvmValueError {
  return new TvmValueError('ValueError', `bad tensor blob: ${why}`);
}

/**
 * The size of the blob {@link writeBlob} makes and where each tensor's bytes go, so a caller
 * can copy tensors straight into it.
 */
export function layoutBlob(
  tensors: readonly Omit<HostTensor, 'data'>[],
  byteLengths: readonly number[],
  meta?: BlobMeta,
): { header: Buffer; offsets: number[]; size: number } {
  let offset = 0;
  const entries: BlobEntry[] = tensors.map((t, i) => {
    const e = { shape: [...t.shape], dtype: t.dtype, offset, nbytes: byteLengths[i] };
    offset += Math.ceil(byteLengths[i] / ALIGN) * ALIGN;
    return e;
  });
  const header = Buffer.from(JSON.stringify({ ...meta, tensors: entries }), 'utf8');
  const base = 8 + header.length;
  return { header, offsets: entries.map((e) => base + e.offset), size: base + offset };
}

/**
 * A blob of `tensors` whose data is filled by `fill(i, view)` (a view of exactly tensor i's
 * bytes inside the blob): each tensor is copied once, straight into place.
 */
export function writeBlob(tensors: readonly Omit<HostTensor, 'data'>[], byteLengths: readonly number[], fill: (i: number, view: Uint8Array) => void): Buffer {
  const { header, offsets, size } = layoutBlob(tensors, byteLengths);
  const blob = Buffer.alloc(size);
  MAGIC.copy(blob, 0);
  blob.writeUInt32LE(header.length, 4);
  header.copy(blob, 8);
  offsets.forEach((at, i) => fill(i, blob.subarray(at, at + byteLengths[i])));
  return blob;
}

/** Encodes host tensors into one blob. */
export function encodeBlob(tensors: readonly HostTensor[]): Buffer {
  return writeBlob(
    tensors,
    tensors.map((t) => t.data.byteLength),
    (i, view) => view.set(new Uint8Array(tensors[i].data.buffer, tensors[i].data.byteOffset, tensors[i].data.byteLength)),
  );
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Where a blob's header ends and what it says, from the blob's first bytes. */
export interface BlobHeader {
  /** The header entries, not yet checked. */
  entries: unknown[];
  /** Bytes before the data area (magic, length, JSON). */
  dataStart: number;
  /** The header's other fields (e.g. a server's `server` timing), unchecked. */
  meta: BlobMeta;
}

/**
 * Header fields besides `tensors`: readers ignore those they do not know, so a server can
 * say more (tvm-node's says how long it took: `"server": {"totalUs", "runUs"}`).
 */
export type BlobMeta = Record<string, unknown>;

/**
 * Parses the magic and the header's JSON from the first bytes of a blob (they must hold the
 * whole header); `checkCount` sees the tensor count before any entry is looked at.
 */
export function readHeader(blob: Buffer, checkCount: (n: number) => void = () => undefined): BlobHeader {
  if (!Buffer.isBuffer(blob)) throw bad('expected bytes');
  if (blob.length < 8 || !blob.subarray(0, 4).equals(MAGIC)) throw bad('it does not start with "TNI1"');
  const headerLen = blob.readUInt32LE(4);
  if (8 + headerLen > blob.length) throw bad(`the header claims ${headerLen} bytes but ${blob.length - 8} follow`);
  let header: unknown;
  try {
    header = JSON.parse(blob.subarray(8, 8 + headerLen).toString('utf8'));
  } catch (err) {
    throw bad(`the header is not JSON (${(err as Error).message})`);
  }
  const tensors = (header as { tensors?: unknown } | null)?.tensors;
  if (typeof header !== 'object' || header === null || !Array.isArray(tensors)) throw bad('the header must be an object with a "tensors" array');
  checkCount(tensors.length);
  const { tensors: _, ...meta } = header as Record<string, unknown>;
  return { entries: tensors, dataStart: 8 + headerLen, meta };
}

/** One header entry, checked field by field against the data area's size. */
function readEntry(raw: unknown, i: number, dataBytes: number): CheckedEntry {
  const e = raw as Partial<BlobEntry> | null;
  const where = `tensor ${i}`;
  if (typeof e !== 'object' || e === null || Array.isArray(e)) throw bad(`${where} is not an object`);
  if (!Array.isArray(e.shape) || e.shape.length > MAX_RANK || !e.shape.every(isCount)) {
    throw bad(`${where}: "shape" must be an array of at most ${MAX_RANK} whole numbers >= 0`);
  }
  if (typeof e.dtype !== 'string') throw bad(`${where}: "dtype" must be a string`);
  let dtype: DType;
  try {
    dtype = checkDType(e.dtype);
  } catch (err) {
    throw bad(`${where}: ${(err as Error).message}`);
  }
  if (!isCount(e.offset) || !isCount(e.nbytes)) throw bad(`${where}: "offset" and "nbytes" must be whole numbers >= 0`);
  // Computed in steps so a huge shape cannot overflow into a small, matching number.
  let want = bytesPerElement(dtype);
  for (const d of e.shape) want = d === 0 ? 0 : want * d > Number.MAX_SAFE_INTEGER ? Infinity : want * d;
  if (e.nbytes !== want) throw bad(`${where}: ${e.nbytes} bytes do not hold shape [${e.shape.join(', ')}] of ${dtype}`);
  if (e.offset + e.nbytes > dataBytes) throw bad(`${where}: bytes ${e.offset}..${e.offset + e.nbytes} lie outside the ${dataBytes} data bytes`);
  return { shape: e.shape, dtype, offset: e.offset, nbytes: e.nbytes };
}

/** Options of {@link decodeBlob}. */
export interface DecodeOptions {
  /** Called with the number of tensors before any of them is decoded; throws to refuse. */
  checkCount?: (count: number) => void;
}

/**
 * Checks every entry of a header against a data area of `dataBytes`: fields, sizes, bounds,
 * and that no two entries overlap (so the tensors never hold more bytes than the blob).
 */
export function checkEntries(entries: readonly unknown[], dataBytes: number): CheckedEntry[] {
  const checked = entries.map((raw, i) => readEntry(raw, i, dataBytes));
  const byOffset = checked.map((e, i) => ({ ...e, i })).sort((a, b) => a.offset - b.offset);
  for (let k = 1; k < byOffset.length; k++) {
    const [prev, next] = [byOffset[k - 1], byOffset[k]];
    if (prev.offset + prev.nbytes > next.offset) throw bad(`tensors ${prev.i} and ${next.i} overlap`);
  }
  return checked;
}

/**
 * Decodes a blob into views of its tensors' bytes (no copy). Every entry is checked before
 * any view is made; a malformed blob is a {@link TvmValueError} saying what is wrong.
 */
export function decodeBlob(blob: Buffer, opts: DecodeOptions = {}): BlobTensor[] {
  const { entries, dataStart } = readHeader(blob, opts.checkCount);
  const data = blob.subarray(dataStart);
  return checkEntries(entries, data.length).map((e) => ({ shape: e.shape, dtype: e.dtype, bytes: data.subarray(e.offset, e.offset + e.nbytes) }));
}
