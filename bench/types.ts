/**
 * The shape of what the benchmark suite reports (BenchReport: cases, machine, versions,
 * settings, what was skipped) and how it is run (BenchOptions). Types only, plus the list of
 * groups; bench/run.ts re-exports all of it.
 */
import type { ThreadSettings as TvmThreadSettings } from '../lib';

export type Group = 'call' | 'copy' | 'wrap' | 'model' | 'cnn' | 'threads' | 'rpc' | 'transfer' | 'offload' | 'http';
export const GROUPS: readonly Group[] = ['call', 'copy', 'wrap', 'model', 'cnn', 'threads', 'rpc', 'transfer', 'offload', 'http'];

/** Order statistics over the rounds. */
export interface Stats {
  median: number;
  p25: number;
  p75: number;
  min: number;
  max: number;
  rounds: number;
}

export interface Side {
  /** What was timed, e.g. `PackedFunc.call` or `Python tvm 0.27.0.post1`. */
  name: string;
  /** Operations per round. */
  opsPerRound: number;
  /** In the case's unit. */
  stats: Stats;
}

export interface BenchCase {
  group: Group;
  name: string;
  /** Bytes moved or wrapped per operation, for copy/wrap cases. */
  bytes?: number;
  /** Unit of `subject.stats` and `peer.stats`. */
  unit: 'ns/call' | 'GB/s' | 'ns/wrap' | 'us/run' | 'MB/s' | 'infer/s' | 'ms/session' | 'MiB' | 'us';
  higherIsBetter: boolean;
  /** tvm-node. */
  subject: Side;
  peer: Side;
  /** Per round, peer time / subject time: > 1 means tvm-node is faster. */
  ratio: Stats;
  /** What the ratio should be, when there is a goal. */
  goal?: string;
  note?: string;
}

export interface Machine {
  cpuModel: string;
  cores: number;
  availableParallelism: number;
  memoryGiB: number;
  platform: string;
  arch: string;
  release: string;
  node: string;
  uvThreadpoolSize: string | null;
  /** TVM_NUM_THREADS as found in the environment when the run started (see settings.threads). */
  tvmNumThreads: string | null;
  /** os.loadavg() (1, 5, 15 min) at the start and at the end of the run: other load skews figures. */
  loadAverage: { start: number[]; end: number[] };
}

/** Thread counts the compute runtimes were given (the same for both, to compare fairly). */
export interface ThreadSettings {
  /** TVM_NUM_THREADS set for this process (each calling thread's TVM pool) and the Python peer. */
  tvmNumThreads: number;
  /** What TVM reports (runtime.NumThreads) on Node's main thread and in the Python peer. */
  tvmReported: { node: number; python: number };
  /** onnxruntime-node session options of the cnn group. */
  ortIntraOpNumThreads: number;
  ortInterOpNumThreads: number;
  /** TVM's thread settings in this process (tvm-node's defaults unless set; the Python peer inherits them). */
  tvmNode: TvmThreadSettings;
}

/** How the threads group was run. */
export interface ThreadsGroupSettings {
  /** Runs per phase of a round (runSync at rest, mixed burst, runSync after it, 1 and 4 in flight, runSync beside a busy thread). */
  runsPerPhase: number;
  /** Idle gap before each phase, ms. */
  settleMs: number;
  /** The settings of its two child processes. */
  tvmNode: TvmThreadSettings;
  tvm: TvmThreadSettings;
}

/** A CNN of the cnn group, as built by scripts/compile_bench_models.py. */
export interface CnnModelInfo {
  name: string;
  notes: string;
  input: { name: string; shape: number[]; dtype: string };
  output: { name: string; shape: number[]; dtype: string };
  macs: number;
  params: number;
  opset: number;
  /** from_onnx + tvm.compile + export, when the model was (last) built. */
  compileS: number;
  /** Wall time of the build script in this run (small on a cache hit). */
  buildScriptS: number;
  cached: boolean;
  target: string;
  schedule: string;
  reference: string;
  tolerance: { rtol: number; atol: number };
  /** max |output - reference| of each runtime, checked before timing (tvmPython: the group's first model only). */
  maxAbsDiff: { tvmPython: number | null; tvmNode: number; onnxruntimeNode: number | null };
  toolchain: { onnx: string; onnxruntime: string; tvm: string };
  dir: string;
  /** Each compile of the model measured (portable always; native and tuned for the models that have them). */
  variants?: CnnVariantInfo[];
  /** onnxruntime-node's median, ms per run (runSync-like: one run at a time). */
  onnxruntimeNodeMs?: number | null;
  /** TVM's per-kernel profile of the fastest compile measured (bench/peer.py `profile`). */
  profile?: CnnProfile;
}

/** One compile of a cnn model and its figures. */
export interface CnnVariantInfo {
  /** portable (`llvm`, untuned), native (preset `host`, untuned) or tuned (MetaSchedule database). */
  variant: 'portable' | 'native' | 'tuned';
  /** The target as TVM canonicalizes it, in short (`llvm x86_64-linux-gnu znver4`). */
  target: string;
  library: string;
  schedule: string;
  compileS: number;
  maxAbsDiff: number;
  /** tvm-node runSync median, ms per run; null when not measured. */
  medianMs: number | null;
  /** onnxruntime-node time / this variant's time, median of the per-round ratios (> 1: tvm-node faster). */
  ratioVsOnnxruntime: number | null;
  /** The tuned variant: this compile's tuning record (manifest `tuning`) and how the committed database was made. */
  tuning?: {
    tasks: number;
    tasksFromDatabase: number;
    trials: number;
    seconds: number;
    costModel: string | null;
    database: string;
    /** bench/tuning/<target>/tuning.json's entry for this model: trials and seconds it took to make the records. */
    provenance: { trials: number; seconds: number; cost_model: string | null; command?: string; [k: string]: unknown } | null;
  };
}

/** Per-function times of one VM run (kernels and VM builtins), top first. */
export interface CnnProfile {
  variant: CnnVariantInfo['variant'];
  runs: number;
  /** Sum over all functions called, ms per run (instrumented: a little above an uninstrumented run). */
  totalMs: number;
  kernels: Array<{ name: string; calls: number; ms: number; pct: number; args: number[][] }>;
}

/** How the rpc group was run. */
export interface RpcSettings {
  /** Upload sizes, bytes. */
  uploadSizes: number[];
  /** Fixtures of the latency cases. */
  latencyModels: string[];
  /** The model every concurrent client runs. */
  concurrencyModel: string;
  /** Concurrent clients per case. */
  clients: number[];
  /** Inferences each client runs in its session. */
  infersPerClient: number;
  /** Rounds of each concurrency case (each round: every client connects, runs, closes). */
  concurrencyRounds: number;
  /** Idle time after each timed connect (untimed), so a server's teardown is not charged to the next connect. */
  connectSettleMs: number;
  /** Bound on one round of a concurrency case (all its clients), s. */
  roundTimeoutS: number;
  /** A concurrent client's connect attempts (a failed one is retried after retryMs). */
  connectAttempts: number;
  retryMs: number;
  /** What serves tvm-node's side. */
  tvmNodeServer: string;
  /** What serves the Python side. */
  pythonServer: string;
}

/** How the transfer group was run (sizes in bytes, per direction). */
export interface TransferSettings {
  /** Tensor sizes of the session.infer (inference channel) and raw socket cases. */
  sizes: number[];
  /** Sizes also run through TVM's C++ transport (`f.call` of tvm_node.infer). */
  cppSizes: number[];
  /** Sizes also run by the stock Python client (tvm_node.infer with pack/unpack). */
  pythonSizes: number[];
  /** Rounds of the cases at or above {@link bigBytes}, of the head-of-line and of the memory cases. */
  bigRounds: number;
  /** Sizes from this one up get {@link bigRounds} rounds (one op each). */
  bigBytes: number;
  /** Size of session A's addone request in the head-of-line cases. */
  headOfLineBytes: number;
  /** Size of the addone request whose server memory is measured. */
  memoryBytes: number;
  /** Elements of each output checked against Math.fround(x[i] + 1), every inference. */
  checkedElements: number;
  /** What serves tvm-node's side. */
  server: string;
  /** The raw socket baseline. */
  rawSocket: string;
}

/** How the offload group was run. */
export interface OffloadSettings {
  /** The split model (bench/split-fixtures.ts). */
  model: 'mobilenet_v2' | 'mobilenet_v2_tiny';
  /** Frames per mode per round. */
  frames: number;
  rounds: number;
  /** The link profiles, in order. */
  links: string[];
  /** Processes, pinning and threads. */
  setup: string;
}

/** How the http group was run, and what it measured per protocol. */
export interface HttpSettings {
  /** What serves every protocol. */
  server: string;
  /** What each protocol's client does (all in one load-generator process). */
  clients: Record<HttpProtocol, string>;
  /** Requests in flight (closed loop: each worker sends its next request when its last is answered). */
  concurrency: number[];
  /** Target duration of one contender's round, ms (requests per round calibrated once per contender). */
  roundMs: number;
  /** Fewest requests per worker in a round. */
  minRequestsPerWorker: number;
  /** Sessions the server's TVM RPC front end takes at once; workers beyond it share sessions. */
  rpcMaxSessions: number;
  /** The models and inputs sent, with the bytes one request and its answer take. */
  targets: Array<{
    key: string;
    model: string;
    shape: number[];
    /** Request and answer bodies of the HTTP protocols, bytes. */
    requestBytes: { json: number; binary: number };
    responseBytes: { json: number; binary: number };
    tensorBytes: { input: number; output: number };
  }>;
  /** Each protocol's answer checked in full before timing, against the fixture's reference. */
  verified: Array<{ key: string; reference: string; protocol: HttpProtocol; elements: number; maxAbsDiff: number }>;
  /** How the event-loop delay was measured. */
  eventLoop: string;
  /** Per target, concurrency and protocol: medians over the rounds (event-loop max: the largest round's). */
  results: HttpLevel[];
}

export type HttpProtocol = 'json' | 'binary' | 'grpc' | 'rpc';

/** One protocol at one concurrency on one target (medians over the rounds). */
export interface HttpLevel {
  target: string;
  protocol: HttpProtocol;
  concurrency: number;
  requestsPerRound: number;
  p50Us: number;
  p99Us: number;
  requestsPerS: number;
  /** The server process's event-loop delay (monitorEventLoopDelay) while serving, ms. */
  serverEldP99Ms: number;
  serverEldMaxMs: number;
  /** CPU time / wall time of the server process (all its threads) and of the load generator, %. */
  serverCpuPct: number;
  clientCpuPct: number;
  /** The load generator's own event-loop delay p99, ms (high: the client, not the server, was the bottleneck). */
  clientEldP99Ms: number;
}

/** Something the run did not measure, and why. */
export interface SkippedEntry {
  group: Group;
  name: string;
  skipped: string;
}

export interface BenchReport {
  startedAt: string;
  durationS: number;
  quick: boolean;
  settings: {
    rounds: number;
    roundMs: number;
    copySizes: number[];
    groups: Group[];
    threads: ThreadSettings;
    /** Ops per round of a contender that keeps k runs in flight: at least this many times k. */
    minRunsPerLane: number;
    /** Idle gap before each contender's round in the cnn group, ms. */
    cnnSettleMs: number;
    /** The rpc group's own settings. */
    rpc: RpcSettings;
    /** The threads group's own settings, when it ran. */
    threadsGroup?: ThreadsGroupSettings;
    /** The transfer group's own settings, when it ran. */
    transferGroup?: TransferSettings;
    /** The offload group's own settings, when it ran. */
    offloadGroup?: OffloadSettings;
    /** The http group's settings and per-protocol figures, when it ran. */
    httpGroup?: HttpSettings;
  };
  machine: Machine;
  versions: {
    tvmNode: string;
    tvm: string;
    tvmFfi: string;
    python: Record<string, string>;
    /** null when it could not be loaded (see skipped). */
    onnxruntimeNode: string | null;
  };
  /** The CNN(s) of the cnn group. */
  models: CnnModelInfo[];
  cases: BenchCase[];
  skipped: SkippedEntry[];
}

export interface BenchOptions {
  /** Tiny sizes and few, short rounds: checks the suite works, says nothing about speed. */
  quick?: boolean;
  /** Rounds per case (default 15, quick 3). */
  rounds?: number;
  /** Target duration of one contender's round in ms (default 100, quick 2). */
  roundMs?: number;
  /**
   * Threads for TVM (TVM_NUM_THREADS) and onnxruntime (intraOpNumThreads). Default:
   * TVM_NUM_THREADS if set, else os.availableParallelism().
   */
  threads?: number;
  /** Groups to run (default all). */
  groups?: Group[];
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}
