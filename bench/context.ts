/**
 * What every group is given: the run's {@link Ctx} (settings, the Python peer, where cases and
 * skipped entries go), and the byte sizes the groups share.
 */
import type * as Ort from 'onnxruntime-node';
import type { BuiltModels } from './bench-models';
import type { PythonPeer } from './peers';
import type { BenchCase, CnnModelInfo, HttpSettings, OffloadSettings, RpcSettings, SkippedEntry, ThreadsGroupSettings, TransferSettings } from './types';

export interface Ctx {
  quick: boolean;
  rounds: number;
  roundMs: number;
  copySizes: number[];
  threads: number;
  peer: PythonPeer;
  pyName: string;
  log: (line: string) => void;
  cases: BenchCase[];
  skipped: SkippedEntry[];
  models: CnnModelInfo[];
  /** Built before anything is timed (cnn group only). */
  cnn?: BuiltModels;
  ort?: { module: typeof Ort; version: string } | null;
  rpc: RpcSettings;
  /** Set by the threads group. */
  threadsGroup?: ThreadsGroupSettings;
  /** Set by the transfer group. */
  transferGroup?: TransferSettings;
  /** Set by the offload group. */
  offloadGroup?: OffloadSettings;
  /** Set by the http group. */
  httpGroup?: HttpSettings;
}

export const KiB = 1024;
export const MiB = 1024 * KiB;

export function formatBytes(n: number): string {
  if (n >= MiB && n % MiB === 0) return `${n / MiB} MiB`;
  if (n >= KiB && n % KiB === 0) return `${n / KiB} KiB`;
  return `${n} B`;
}
