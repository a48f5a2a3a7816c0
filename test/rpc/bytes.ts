/**
 * Byte-level helpers the RPC tests share: little-endian fields for hand-built packets, random
 * (replayable) splits of a stream, and exact comparisons of tensor bytes.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { addon } from '../../lib/binding';
import type { Tensor } from '../../lib/tensor';

export function i32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b;
}

export function u64(n: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** A small deterministic PRNG (mulberry32), so that a failing random split can be replayed. */
export function prng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `buf` cut into pieces of the sizes `size()` picks (at least 1 byte each). */
export function split(buf: Buffer, size: () => number): Buffer[] {
  const out: Buffer[] = [];
  for (let pos = 0; pos < buf.length; ) {
    const n = Math.max(1, size());
    out.push(buf.subarray(pos, pos + n));
    pos += n;
  }
  return out;
}

/** Calls `fn` with a tensor's bytes (a view of its memory, released right after: no copy, nothing left to the GC). */
export function withBytes<T>(t: Tensor, fn: (bytes: Buffer) => T): T {
  const view = t.handle.hostView() as ArrayBuffer;
  try {
    return fn(Buffer.from(view));
  } finally {
    if (view.byteLength > 0) addon.releaseHostView(view);
  }
}

/** Asserts two byte strings are equal, naming the first byte that differs. */
export function assertSameBytes(got: Buffer, want: Buffer, what: string): void {
  assert.equal(got.length, want.length, `${what}: ${got.length} bytes, want ${want.length}`);
  if (got.equals(want)) return;
  let i = 0;
  while (got[i] === want[i]) i++;
  assert.fail(`${what}: byte ${i} of ${want.length} is 0x${got[i].toString(16)}, want 0x${want[i].toString(16)}`);
}

/**
 * Resident bytes of this process's mappings of exactly `size` bytes (/proc/self/smaps): the
 * memory of one large transfer tensor (native/host_buffer.cc advises exactly its bytes for huge pages, a mapping of its own),
 * measured apart from whatever else the allocator returns or takes meanwhile.
 */
export function mappingRss(size: number): number {
  let total = 0;
  let matching = false;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const field = /^(\w+):\s+(\d+) kB$/.exec(line);
    if (!field) continue;
    if (field[1] === 'Size') matching = Number(field[2]) * 1024 === size;
    else if (field[1] === 'Rss' && matching) total += Number(field[2]) * 1024;
  }
  return total;
}
