/**
 * Peers for the RPC tests: TVM's own Python RPC server and Python client from the pinned
 * wheel (tvm/.venv), run as child processes. Everything is bound to 127.0.0.1 and every
 * wait has a timeout.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import { Tensor } from '../../lib';
import { connect } from '../../lib/rpc/client';
import { encodePacket, encodeValues, RPC_PROTOCOL_VERSION, RPCCode, WireDecoder, type WireValue } from '../../lib/rpc/wire';
import { type ArraySpec, assertMatches, fixture, fixtureFile, npy, python, repoRoot } from '../fixtures';

export const HOST = '127.0.0.1';

/** A random base port in 20000-40000 (TVM's server searches [base, base + 50)). */
export function randomBasePort(): number {
  return 20000 + Math.floor(Math.random() * 19900);
}

/** Rejects with `what` if `p` does not settle within `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Kills a process group we started (detached children lead their own group). */
function killGroup(proc: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (proc.pid === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
  try {
    process.kill(-proc.pid, signal);
  } catch {
    try {
      proc.kill(signal);
    } catch {
      // already gone
    }
  }
}

function exited(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => proc.once('exit', () => resolve()));
}

/** TVM's Python RPC server (`python -m tvm.exec.rpc_server`). */
export interface PyServer {
  port: number;
  proc: ChildProcess;
  /** stderr so far (TVM logs there). */
  log(): string;
  stop(): Promise<void>;
}

/** Starts TVM's Python server on a random port and parses the port it actually bound. */
export async function startPythonServer(opts: { key?: string; timeoutMs?: number } = {}): Promise<PyServer> {
  const base = randomBasePort();
  const args = ['-m', 'tvm.exec.rpc_server', '--host', HOST, '--port', String(base), '--port-end', String(base + 50)];
  if (opts.key) args.push('--key', opts.key);
  const proc = spawn(python, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let log = '';
  const port = await withTimeout(
    new Promise<number>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        log += chunk.toString();
        const m = /bind to 127\.0\.0\.1:(\d+)/.exec(log);
        if (m) resolve(Number(m[1]));
      };
      proc.stderr!.on('data', onData);
      proc.stdout!.on('data', onData);
      proc.once('exit', (code) => reject(new Error(`TVM rpc_server exited (${code}) before binding:\n${log}`)));
      proc.once('error', reject);
    }),
    opts.timeoutMs ?? 30000,
    'TVM rpc_server to bind',
  )
    .then(async (p) => {
      // TVM logs "bind to" before it calls listen(): wait until it accepts connections.
      await withTimeout(waitListening(p), opts.timeoutMs ?? 30000, 'TVM rpc_server to listen');
      return p;
    })
    .catch((err) => {
      killGroup(proc);
      throw err;
    });
  return {
    port,
    proc,
    log: () => log,
    async stop() {
      killGroup(proc);
      await withTimeout(exited(proc), 10000, 'TVM rpc_server to exit').catch(() => undefined);
    },
  };
}

/**
 * Resolves once TVM's server accepts a connection on `port`. The probe sends 4 bytes that are
 * not the RPC magic, which TVM's listen loop drops without a word (a probe that sent nothing
 * would make it raise in recvall).
 */
async function waitListening(port: number): Promise<void> {
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, HOST, () => {
        s.end(i32(0));
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
}

/** The part of {@link PY_PRELUDE} that needs no TVM (for clients in another venv, e.g. tritonclient's). */
const PY_BASE = `
import json, sys, time, os, traceback
import numpy as np
A = json.loads(sys.argv[1])
def out(**kw):
    print("RESULT " + json.dumps(kw), flush=True)
def err_text(fn):
    try:
        fn()
    except BaseException as e:
        return type(e).__name__ + ": " + str(e)
    return None
`;

/** Common head of every Python client script: parameters as JSON in argv[1], `out(**kw)` prints one JSON line. */
export const PY_PRELUDE = `
import tvm
from tvm import rpc, relax
${PY_BASE}`;

export interface PyResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Every `out(...)` line, in order. */
  results: Record<string, unknown>[];
}

/** A running Python client. */
export interface PyClient {
  proc: ChildProcess;
  /** Resolves with the first `out(...)` result that has `key`. */
  waitFor(key: string, ms?: number): Promise<Record<string, unknown>>;
  /** Writes a line to its stdin (a go signal for a script blocked on `sys.stdin.readline()`). */
  send(line: string): void;
  /** Resolves when it exits (rejects after `ms`, killing it). */
  done(ms?: number): Promise<PyResult>;
  kill(signal?: NodeJS.Signals): void;
}

const live = new Set<ChildProcess>();

/** Kills every Python client still running (call in after()). */
export function killAllClients(): void {
  for (const p of live) killGroup(p);
  live.clear();
}

/** Which Python runs a client: the toolchain's (with TVM imported), or another interpreter without TVM. */
export interface PythonChoice {
  /** The interpreter; default the toolchain's (tvm/.venv). */
  python?: string;
}

/** Starts `PY_PRELUDE + code` with `params` as its argv[1] (with `choice.python`: the prelude without TVM). */
export function spawnPython(code: string, params: unknown = {}, env: NodeJS.ProcessEnv = {}, choice: PythonChoice = {}): PyClient {
  const file = `/tmp/tvm-node-rpc-test-${process.pid}-${Math.random().toString(36).slice(2)}.py`;
  fs.writeFileSync(file, (choice.python ? PY_BASE : PY_PRELUDE) + code);
  const proc = spawn(choice.python ?? python, [file, JSON.stringify(params)], {
    cwd: repoRoot,
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
    env: { ...process.env, ...env },
  });
  live.add(proc);
  let stdout = '';
  let stderr = '';
  const results: Record<string, unknown>[] = [];
  const waiters: Array<() => void> = [];
  proc.stdout!.on('data', (c: Buffer) => {
    stdout += c.toString();
    results.length = 0;
    // complete lines only
    for (const line of stdout.split('\n').slice(0, -1)) if (line.startsWith('RESULT ')) results.push(JSON.parse(line.slice(7)));
    for (const w of waiters.splice(0)) w();
  });
  proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  proc.stdin!.on('error', () => undefined);
  const finished = new Promise<PyResult>((resolve) => {
    proc.once('exit', (code, signal) => {
      live.delete(proc);
      fs.rmSync(file, { force: true });
      // let the pipes drain
      setImmediate(() => {
        for (const w of waiters.splice(0)) w();
        resolve({ code, signal, stdout, stderr, results });
      });
    });
  });
  const describe = () => `python client\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr.slice(-4000)}`;
  return {
    proc,
    waitFor(key, ms = 60000) {
      const p = new Promise<Record<string, unknown>>((resolve, reject) => {
        const check = () => {
          const r = results.find((x) => key in x);
          if (r) return resolve(r);
          if (proc.exitCode !== null || proc.signalCode !== null) return reject(new Error(`exited before '${key}': ${describe()}`));
          waiters.push(check);
        };
        check();
      });
      return withTimeout(p, ms, `python '${key}'`).catch((e) => {
        throw new Error(`${(e as Error).message}\n${describe()}`);
      });
    },
    send(line) {
      proc.stdin!.write(line + '\n');
    },
    done(ms = 90000) {
      return withTimeout(finished, ms, 'python client to exit').catch((e) => {
        killGroup(proc);
        throw new Error(`${(e as Error).message}\n${describe()}`);
      });
    },
    kill(signal = 'SIGKILL') {
      killGroup(proc, signal);
    },
  };
}

/** Runs a Python client to completion; asserts exit 0 and returns its merged results. */
export async function runPython(code: string, params: unknown = {}, ms = 90000, choice: PythonChoice = {}): Promise<Record<string, any>> {
  const r = await spawnPython(code, params, {}, choice).done(ms);
  assert.equal(r.code, 0, `python client failed (code ${r.code}, signal ${r.signal})\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr.slice(-4000)}`);
  return Object.assign({}, ...r.results);
}

/** Asserts plain numbers (e.g. from a Python client's JSON) equal a fixture reference. */
export function assertNumbersMatch(values: number[], spec: ArraySpec, tol: { rtol: number; atol: number }): void {
  const ref = npy(spec);
  assertMatches(Tensor.fromSync(Float32Array.from(values), { shape: ref.shape, dtype: 'float32' }), spec, tol);
}

/** Resolves a port nobody listens on (bound, then closed). */
export async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, HOST, () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/**
 * Opens a raw TCP connection, writes `bytes` (optionally ends it), and resolves when the
 * server closes the connection, with whatever it sent back.
 */
export function rawExchange(port: number, bytes: Buffer, opts: { end?: boolean; ms?: number } = {}): Promise<{ reply: Buffer; closedBy: 'server' }> {
  return withTimeout(
    new Promise((resolve) => {
      const chunks: Buffer[] = [];
      const s = net.connect(port, HOST, () => {
        if (bytes.length) s.write(bytes);
        if (opts.end) s.end();
      });
      s.on('data', (c) => chunks.push(c));
      s.on('error', () => undefined);
      s.on('close', () => resolve({ reply: Buffer.concat(chunks), closedBy: 'server' }));
    }),
    opts.ms ?? 10000,
    'server to close a bad connection',
  );
}

/** int32 little-endian words, for handshakes. */
export function i32(...values: number[]): Buffer {
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeInt32LE(v, i * 4));
  return b;
}

/** A valid client handshake: magic, key length, `client:<key>`. */
export function clientHello(key = '', magic = 0xff271): Buffer {
  const k = Buffer.from(`client:${key}`);
  return Buffer.concat([i32(magic, k.length), k]);
}

/** The next `event` from `emitter` (its arguments) that passes `filter`, within `ms`. */
export function nextEvent(emitter: EventEmitter, event: string, ms = 15000, filter: (...args: unknown[]) => boolean = () => true): Promise<unknown[]> {
  let handler: (...args: unknown[]) => void;
  return withTimeout(
    new Promise<unknown[]>((resolve) => {
      handler = (...args) => {
        if (filter(...args)) resolve(args);
      };
      emitter.on(event, handler);
    }),
    ms,
    `'${event}' event`,
  ).finally(() => emitter.off(event, handler));
}

export async function waitUntil(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(50);
  }
}

// ---- raw TVM RPC packets (lib/rpc/wire.ts builds them), for what stock clients never send ----

function u64(n: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n), 0);
  return b;
}

/** InitServer as the stock client sends it (or with another version / a session constructor). */
export function initServer(version = RPC_PROTOCOL_VERSION, ctorArgs: WireValue[] = []): Buffer {
  const v = Buffer.from(version, 'utf8');
  return encodePacket(RPCCode.InitServer, [u64(v.length), v, ...encodeValues(ctorArgs)]);
}

export function getGlobalFunc(name: string): Buffer {
  return encodePacket(RPCCode.GetGlobalFunc, encodeValues([{ kind: 'str', value: name }]));
}

export function callFunc(handle: bigint, args: WireValue[]): Buffer {
  return encodePacket(RPCCode.CallFunc, [u64(handle), ...encodeValues(args)]);
}

/** A reply packet: its code and its plain values. */
export interface Packet {
  code: number;
  values: WireValue[];
}

/**
 * A hand-driven TVM RPC client on a raw socket, after a valid handshake: send any bytes,
 * read whole reply packets. For what stock clients never do: stop reading, send garbage,
 * announce absurd sizes, vanish mid-packet.
 */
export class RawPeer {
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  readonly closed: Promise<void>;

  private constructor(readonly sock: net.Socket) {
    sock.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      for (const w of this.waiters.splice(0)) w();
    });
    this.closed = new Promise((resolve) => sock.once('close', () => resolve()));
    void this.closed.then(() => {
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Connects and sends `client:<key>`: the server's answer code, its key on success, and the peer. */
  static async handshake(port: number, key: string): Promise<{ code: number; serverKey?: string; peer: RawPeer }> {
    const sock = net.connect(port, HOST);
    sock.on('error', () => undefined);
    const peer = new RawPeer(sock);
    await withTimeout(new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject)), 10000, 'raw connect');
    sock.write(clientHello(key));
    const code = (await peer.take(4, 10000)).readInt32LE(0);
    if (code !== 0xff271) return { code, peer };
    const n = (await peer.take(4, 10000)).readInt32LE(0);
    return { code, serverKey: (await peer.take(n, 10000)).toString(), peer };
  }

  /**
   * Connects and completes the handshake, asserting the server's reply: success with
   * `server:<serverKey>` (an inference channel's key is not echoed: pass the server's own).
   */
  static async open(port: number, key = '', serverKey = key): Promise<RawPeer> {
    const { code, serverKey: got, peer } = await RawPeer.handshake(port, key);
    assert.equal(code, 0xff271, `handshake with key '${key}': reply code`);
    assert.equal(got, `server:${serverKey}`);
    return peer;
  }

  send(bytes: Buffer): void {
    this.sock.write(bytes);
  }

  /** Writes `bytes`, waiting for the socket to drain when its buffer is full. */
  async sendAll(bytes: Buffer): Promise<void> {
    if (!this.sock.write(bytes)) await withTimeout(new Promise((r) => this.sock.once('drain', r)), 20000, 'the server to take the bytes');
  }

  /** Calls a served function by name with plain values; its reply packet. */
  async call(name: string, args: WireValue[] = []): Promise<Packet> {
    this.send(callFunc(await this.handle(name), args));
    return this.packet();
  }

  private async take(n: number, ms: number): Promise<Buffer> {
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (this.buf.length >= n) return resolve();
          if (this.sock.destroyed) return reject(new Error(`connection closed with ${this.buf.length} of ${n} bytes`));
          this.waiters.push(check);
        };
        check();
      }),
      ms,
      `${n} bytes from the server`,
    );
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** The next whole packet from the server: its code and its packed values. */
  async packet(ms = 20000): Promise<Packet> {
    const len = Number((await this.take(8, ms)).readBigUInt64LE(0));
    const d = new WireDecoder(Buffer.from(await this.take(len, ms)));
    const code = d.i32();
    return { code, values: d.values() };
  }

  /** The next packet, which must be an exception; its message. */
  async exception(ms = 20000): Promise<string> {
    const p = await this.packet(ms);
    assert.equal(
      p.code,
      RPCCode.Exception,
      `expected an exception packet, got code ${p.code}: ${JSON.stringify(p.values, (_, v) => (typeof v === 'bigint' ? String(v) : v))}`,
    );
    assert.equal(p.values[0].kind, 'str');
    return (p.values[0] as { value: string }).value;
  }

  /** InitServer (the stock client's: version, no constructor); asserts the reply. */
  async init(): Promise<void> {
    this.send(initServer());
    const p = await this.packet();
    assert.equal(p.code, RPCCode.Return);
    assert.deepEqual(p.values, [{ kind: 'none' }]);
  }

  /** GetGlobalFunc(name): the function's handle. */
  async handle(name: string): Promise<bigint> {
    this.send(getGlobalFunc(name));
    const p = await this.packet();
    assert.equal(p.code, RPCCode.Return, `GetGlobalFunc ${name}`);
    assert.equal(p.values[0].kind, 'handle');
    return (p.values[0] as { value: bigint }).value;
  }

  /** Calls tvm_node.models; the names of the models in its reply. */
  async modelNames(handle: bigint): Promise<string[]> {
    this.send(callFunc(handle, []));
    const p = await this.packet();
    assert.equal(p.code, RPCCode.Return);
    assert.equal(p.values[1].kind, 'str');
    return (JSON.parse((p.values[1] as { value: string }).value) as Array<{ name: string }>).map((m) => m.name);
  }

  destroy(): void {
    this.sock.destroy();
  }
}

/** A raw session on `server`, with the promise of its 'sessionEnd' event. */
export async function watchedRawSession(server: EventEmitter, port: number, endMs = 30000): Promise<{ peer: RawPeer; ended: Promise<unknown[]> }> {
  let sid: unknown;
  const started = nextEvent(server, 'session').then((args) => (sid = args[0]));
  const peer = await RawPeer.open(port);
  await started;
  return { peer, ended: nextEvent(server, 'sessionEnd', endMs, (id) => id === sid) };
}

/** Python: connect (params host, port, timeout), and the TNI1 pack/unpack (scripts/tni1.py). */
export const PY_INFER = `
sys.path.insert(0, os.path.join(os.getcwd(), 'scripts'))
from tni1 import pack, unpack
def infer(r, model, x):
    (y,) = unpack(r.get_function("tvm_node.infer")(model, pack([x])))
    return y.ravel().tolist()
r = rpc.connect(A['host'], A['port'], session_timeout=A.get('timeout', 0))
`;

/** Python parameters: the server and the fixture inputs. */
export function pyParams(port: number, extra: Record<string, unknown> = {}) {
  return { host: HOST, port, mlp_x: fixtureFile(fixture('mlp').cases[0].inputs[0]), conv_x: fixtureFile(fixture('conv').cases[0].inputs[0]), ...extra };
}

/** Asserts a Python client's mlp output equals the reference. */
export function assertMlp(values: unknown, who: string): void {
  const fx = fixture('mlp');
  assert.ok(Array.isArray(values), `${who}: no mlp output (${JSON.stringify(values)?.slice(0, 300)})`);
  assertNumbersMatch(values as number[], fx.cases[0].outputs[0], fx.tolerance);
}

/** A checked Node session: infer mlp on the server equals the reference; then close. */
export async function goodNodeClient(port: number): Promise<void> {
  const fx = fixture('mlp');
  const s = await withTimeout(connect(HOST, port), 30000, 'good client connect');
  try {
    const x = npy(fx.cases[0].inputs[0]);
    const [y] = await withTimeout(s.infer('mlp', [{ data: x.data as Float32Array, shape: x.shape }]), 30000, 'good client infer');
    assertMatches(y, fx.cases[0].outputs[0], fx.tolerance);
  } finally {
    await s.dispose();
  }
}
