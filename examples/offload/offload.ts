/**
 * Edge offloading end to end, on one machine: a MobileNetV2 (the benchmark's, 1x3x224x224)
 * split by `tvm-node split` at a mid-network tensor; an edge server (`tvm-node rpc-server
 * --inference-only --models SPLIT/server`) pinned to one core; a "device" process pinned to
 * the other core with one TVM thread (examples/offload/device.ts); and between them a link
 * shaped by {@link ShapedLink} (bandwidth + added latency, loopback only).
 *
 * For each link profile it runs the same frames five ways and prints frames per second and
 * p50/p99 latency:
 *   local      every stage on the device
 *   remote     every stage on the server (the input crosses the link)
 *   split      the front on the device, the rest on the server, one frame at a time
 *   pipelined  the same split with 3 frames in flight (the device computes frame n+1's front
 *              while the server runs frame n's rest)
 *   auto       the offload policy picks per frame (lib/offload/policy.ts), 3 in flight
 *
 * Run from a checkout (after `npm run setup`):
 *   npx tsx examples/offload/offload.ts [--frames 30] [--rounds 1] [--quick]
 * The split is made on first use and cached in .cache/split/. `--quick` uses the small
 * MobileNetV2 (64x64) for a fast look. bench/groups/offload.ts runs the same measurement for
 * `npm run bench`.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { ServerProcess } from '../../bench/groups/transfer-procs';
import { splitFixture } from '../../bench/split-fixtures';
import { ShapedLink } from '../../lib/net/shaped-link';
import type { DeviceRequest, Mode, ModeResult } from './device';
import { MODES } from './device';

export type { Mode, ModeResult } from './device';

/** A link profile: bandwidth each way and added one-way latency. */
export interface LinkSpec {
  name: string;
  /** Bits per second. */
  bandwidth: number;
  latencyMs: number;
}

/** The issue's three profiles: a fast LAN, a good Wi-Fi, a mobile uplink. */
export const LINKS: readonly LinkSpec[] = [
  { name: '1 Gbit/s + 1 ms', bandwidth: 1e9, latencyMs: 1 },
  { name: '100 Mbit/s + 10 ms', bandwidth: 100e6, latencyMs: 10 },
  { name: '20 Mbit/s + 40 ms', bandwidth: 20e6, latencyMs: 40 },
];

/** What {@link measureOffload} does. */
export interface OffloadScenario {
  /** The split folder. */
  split: string;
  links?: readonly LinkSpec[];
  modes?: readonly Mode[];
  /** Frames per mode per round. */
  frames?: number;
  /** Rounds per link: each round runs every mode once, in rotating order. */
  rounds?: number;
  /** Called after each mode's run. */
  onResult?: (link: LinkSpec, result: ModeResult, round: number) => void;
}

/** Every mode's results for one link, round by round. */
export interface LinkResults {
  link: LinkSpec;
  rounds: ModeResult[][];
}

const HOST = '127.0.0.1';
const REPO = path.resolve(__dirname, '..', '..');

/** `cmd` pinned to `cpu` with taskset, when this machine has taskset and that core. */
function pinned(cpu: number): string[] {
  return os.availableParallelism() > cpu ? ['taskset', '-c', String(cpu)] : [];
}

/** The edge server: tvm-node's CLI serving the split's repository, on one core and one TVM thread. */
function startServer(split: string): Promise<ServerProcess> {
  return ServerProcess.start(path.join(split, 'server'), 60_000, { prefix: pinned(1), env: { TVM_NUM_THREADS: '1' } });
}

/** The device process: one core, one TVM thread, answering {@link DeviceRequest}s. */
class DeviceProcess {
  private readonly proc: ChildProcess;
  private readonly ready: Promise<void>;
  private waiting?: { resolve: (r: ModeResult) => void; reject: (e: Error) => void };

  constructor() {
    const script = path.join(__dirname, 'device.ts');
    const pin = pinned(0);
    const env = { ...process.env, TVM_NUM_THREADS: '1', UV_THREADPOOL_SIZE: '4' };
    this.proc = pin.length
      ? spawn(pin[0], [...pin.slice(1), process.execPath, '--require', 'tsx/cjs', script], { cwd: REPO, env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
      : fork(script, [], { cwd: REPO, env, execArgv: ['--require', 'tsx/cjs'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.ready = new Promise((resolve, reject) => {
      this.proc.on('message', (m: 'ready' | { ok: ModeResult } | { error: string }) => {
        if (m === 'ready') return resolve();
        const w = this.waiting;
        this.waiting = undefined;
        if ('ok' in m) w?.resolve(m.ok);
        else w?.reject(new Error(`device: ${m.error}`));
      });
      this.proc.once('exit', (code) => {
        const err = new Error(`the device process exited (${code})`);
        reject(err);
        this.waiting?.reject(err);
      });
    });
  }

  async run(req: DeviceRequest): Promise<ModeResult> {
    await this.ready;
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.proc.send(req);
    });
  }

  close(): void {
    if (this.proc.connected) this.proc.disconnect();
  }
}

/** Runs every mode on every link profile; resolves with the results, round by round. */
export async function measureOffload(s: OffloadScenario): Promise<LinkResults[]> {
  const modes = s.modes ?? MODES;
  const rounds = s.rounds ?? 1;
  const server = await startServer(s.split);
  const device = new DeviceProcess();
  const all: LinkResults[] = [];
  try {
    for (const link of s.links ?? LINKS) {
      await using shaped = await ShapedLink.open({
        target: { host: HOST, port: server.port },
        profile: { bandwidth: link.bandwidth, latencyMs: link.latencyMs },
      });
      const address = `${HOST}:${shaped.port}`;
      const results: ModeResult[][] = [];
      const loaded = new Set<string>();
      for (let r = 0; r < rounds; r++) {
        const round: ModeResult[] = [];
        // Rotating order: drift on the machine hits every mode alike.
        for (let i = 0; i < modes.length; i++) {
          const mode = modes[(i + r) % modes.length];
          // A new link: new models on the device (and a new policy for auto).
          const role = mode === 'auto' ? 'auto' : 'fixed';
          const result = await device.run({ split: s.split, server: address, mode, frames: s.frames ?? 30, fresh: !loaded.has(role) });
          loaded.add(role);
          round.push(result);
          s.onResult?.(link, result, r);
        }
        results.push(round);
      }
      all.push({ link, rounds: results });
    }
  } finally {
    device.close();
    await server.stop();
  }
  return all;
}

/** Frames per second of a result. */
export const fps = (r: ModeResult) => (r.frames * 1000) / r.wallMs;

/** The q-quantile of a list. */
export function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
}

function line(r: ModeResult): string {
  const plans = Object.entries(r.plans)
    .map(([p, n]) => `${p}×${n}`)
    .join(' ');
  return `  ${r.mode.padEnd(9)} ${fps(r).toFixed(1).padStart(6)} FPS   p50 ${quantile(r.latencyMs, 0.5).toFixed(1).padStart(6)} ms   p99 ${quantile(r.latencyMs, 0.99).toFixed(1).padStart(6)} ms   sent ${(r.bytesSent / r.frames / 1024).toFixed(0).padStart(4)} KiB/frame   max|err| ${r.maxError.toExponential(1)}   ${plans}${r.fallbacks ? `  fallbacks ${r.fallbacks}` : ''}`;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const value = (flag: string, dflt: number) => {
    const i = args.indexOf(flag);
    return i >= 0 ? Number(args[i + 1]) : dflt;
  };
  const quick = args.includes('--quick');
  const split = await splitFixture(quick ? 'mobilenet_v2_tiny' : 'mobilenet_v2');
  console.log(`split model: ${split}`);
  let last = '';
  await measureOffload({
    split,
    frames: value('--frames', quick ? 60 : 30),
    rounds: value('--rounds', 1),
    onResult: (link, r) => {
      if (link.name !== last) console.log(`\nlink ${link.name}`);
      last = link.name;
      console.log(line(r));
    },
  });
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
