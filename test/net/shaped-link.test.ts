/**
 * ShapedLink, the link-shaping TCP proxy: real loopback sockets between a client, the proxy
 * and a target server. Timing checks are lower bounds only (what the shaping guarantees);
 * the one "faster than" check compares with the lower bound of the profile that was replaced.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { TvmValueError } from '../../lib/errors';
import { type LinkProfile, parseDelay, parseRate, ShapedLink } from '../../lib/net/shaped-link';
import { assertFailure, runCli } from '../cli-run';
import { repoRoot } from '../fixtures';

const MiB = 2 ** 20;

/** Everything a test opened, closed after it whatever happened. */
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Seeded pseudo-random bytes (xorshift32): the same seed, the same bytes. */
function seededBytes(n: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]);
}

/** A target server on 127.0.0.1 whose connections `handler` serves; closed (connections destroyed) after the test. */
async function target(handler: (socket: net.Socket) => void): Promise<{ port: number; server: net.Server; sockets: Set<net.Socket> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    handler(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    if (server.listening) await new Promise((r) => server.close(r));
  });
  return { port: (server.address() as net.AddressInfo).port, server, sockets };
}

/** An echo server. */
const echo = () => target((s) => s.pipe(s));

async function openLink(
  port: number,
  opts: { profile?: LinkProfile; up?: LinkProfile; down?: LinkProfile; sharedBandwidth?: boolean } = {},
): Promise<ShapedLink> {
  const link = await ShapedLink.open({ target: { port }, ...opts });
  cleanups.push(() => link.close());
  return link;
}

/** A client connected to `port`, destroyed after the test; `allowHalfOpen`: it may go on sending after the server's end. */
async function client(port: number, opts: { allowHalfOpen?: boolean } = {}): Promise<net.Socket> {
  const socket = net.connect({ port, host: '127.0.0.1', noDelay: true, allowHalfOpen: opts.allowHalfOpen ?? false });
  cleanups.push(async () => {
    socket.destroy();
    if (!socket.closed) await once(socket, 'close');
  });
  socket.on('error', () => {});
  await once(socket, 'connect');
  return socket;
}

/** Everything a socket reads until its end. */
function readAll(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('close', () => reject(new Error(`closed before its end, after ${Buffer.concat(chunks).length} bytes`)));
  });
}

/** Writes `data` in pieces of random size (1 B to 200 KiB), honouring backpressure, then ends. */
async function writeInPieces(socket: net.Socket, data: Buffer, seed: number): Promise<void> {
  const sizes = seededBytes(4096, seed);
  let offset = 0;
  for (let i = 0; offset < data.length; i++) {
    const size = 1 + ((sizes[i % sizes.length] * 811 + i * 7919) % (200 * 1024));
    if (!socket.write(data.subarray(offset, offset + size))) await once(socket, 'drain');
    offset += size;
  }
  socket.end();
}

/** One byte there and back through an echo; the round trip in ms. */
async function ping(socket: net.Socket): Promise<number> {
  const t0 = performance.now();
  const reply = once(socket, 'data');
  socket.write('p');
  await withTimeout(reply, 10000, 'ping reply');
  return performance.now() - t0;
}

/** Resolves when the socket is gone; `error`: the error code it reported, if any. */
function closed(socket: net.Socket): Promise<{ error?: string }> {
  let error: string | undefined;
  socket.on('error', (err: NodeJS.ErrnoException) => {
    error ??= err.code ?? err.message;
  });
  if (socket.closed) return Promise.resolve({ error });
  return new Promise((resolve) => socket.once('close', () => resolve({ error })));
}

async function waitFor(cond: () => boolean, what: string, ms = 10000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * A target that counts the bytes each connection sends; `received(n)` resolves with the time
 * (performance.now()) at which the count reached n.
 */
async function countingSink() {
  let total = 0;
  const waiters: { n: number; resolve: (t: number) => void }[] = [];
  const t = await target((s) => {
    s.on('data', (c: Buffer) => {
      total += c.length;
      const now = performance.now();
      for (const w of waiters.splice(0)) {
        if (total >= w.n) w.resolve(now);
        else waiters.push(w);
      }
    });
    s.on('end', () => s.end());
  });
  return {
    ...t,
    get total() {
      return total;
    },
    received: (n: number) =>
      withTimeout(new Promise<number>((resolve) => (total >= n ? resolve(performance.now()) : waiters.push({ n, resolve }))), 30000, `${n} bytes at the sink`),
  };
}

describe('ShapedLink', () => {
  describe('parseRate / parseDelay', () => {
    it('reads rates in bits and bytes per second', () => {
      const cases: [string, number][] = [
        ['1gbit', 1e9],
        ['100mbit', 1e8],
        ['20mbit', 2e7],
        ['512kbit', 512e3],
        ['100 Mbit/s', 1e8],
        ['20Mb/s', 2e7],
        ['1.5Gbit', 1.5e9],
        ['800bit', 800],
        ['10MB/s', 8e7],
        ['10MiB/s', 80 * MiB],
        ['2kibit', 2048],
        ['unlimited', Number.POSITIVE_INFINITY],
      ];
      for (const [text, bits] of cases) assert.equal(parseRate(text), bits, text);
    });

    it('refuses rates without a unit, ambiguous, zero or malformed', () => {
      for (const [text, why] of [
        ['100', /give a unit/],
        ['100mbps', /ambiguous/],
        ['0mbit', /more than 0/],
        ['-5mbit', /expected a rate/],
        ['10xbit', /unknown unit/],
        ['fast', /expected a rate/],
        ['', /expected a rate/],
      ] as const) {
        assert.throws(
          () => parseRate(text),
          (err: Error) => err instanceof TvmValueError && why.test(err.message),
          text,
        );
      }
    });

    it('reads delays in ms (the default unit), s and us, and refuses the rest', () => {
      for (const [text, ms] of [
        ['10ms', 10],
        ['1s', 1000],
        ['40', 40],
        ['0', 0],
        ['1.5s', 1500],
        ['250us', 0.25],
      ] as const) {
        assert.equal(parseDelay(text), ms, text);
      }
      for (const text of ['-1ms', '10m', 'soon', '', '2h', '3601s']) assert.throws(() => parseDelay(text), TvmValueError, text);
    });
  });

  describe('options', () => {
    it('listens on loopback only', async () => {
      for (const host of ['0.0.0.0', '::', '192.168.1.10', 'example.com']) {
        await assert.rejects(
          ShapedLink.open({ target: { port: 9 }, listen: { host } }),
          (err: Error) => err instanceof TvmValueError && /loopback only/.test(err.message),
        );
      }
      const link = await openLink(9);
      assert.equal(link.host, '127.0.0.1');
      assert.ok(link.port > 0);
      const local = await ShapedLink.open({ target: { port: 9 }, listen: { host: 'localhost' } });
      assert.match(local.host, /^(127\.0\.0\.1|::1)$/);
      await local.close();
    });

    it('refuses bad ports and profiles, and a misspelt profile key', async () => {
      const bad: [object, RegExp][] = [
        [{ target: { port: 0 } }, /target\.port/],
        [{ target: { port: 70000 } }, /target\.port/],
        [{ target: { port: 9 }, listen: { port: -1 } }, /listen\.port/],
        [{ target: { port: 9 }, profile: { bandwidth: 0 } }, /bandwidth/],
        [{ target: { port: 9 }, up: { latencyMs: -1 } }, /latencyMs/],
        [{ target: { port: 9 }, profile: { latency: 30 } }, /unknown .* key 'latency'/],
      ];
      for (const [opts, why] of bad) {
        await assert.rejects(ShapedLink.open(opts as never), (err: Error) => err instanceof TvmValueError && why.test(err.message), JSON.stringify(opts));
      }
    });

    it('reports its profile and changes it per direction or for both', async () => {
      const link = await openLink(9, { profile: { bandwidth: 1e8, latencyMs: 5 }, down: { bandwidth: 2e8 } });
      assert.deepEqual(link.profile, { up: { bandwidth: 1e8, latencyMs: 5 }, down: { bandwidth: 2e8, latencyMs: 0 } });
      link.setProfile({ down: { latencyMs: 7 } });
      assert.deepEqual(link.profile, { up: { bandwidth: 1e8, latencyMs: 5 }, down: { bandwidth: Number.POSITIVE_INFINITY, latencyMs: 7 } });
      link.setProfile({ bandwidth: 3e6 });
      assert.deepEqual(link.profile, { up: { bandwidth: 3e6, latencyMs: 0 }, down: { bandwidth: 3e6, latencyMs: 0 } });
      assert.throws(() => link.setProfile({ up: {}, bandwidth: 1 } as never), /either/);
      assert.throws(() => link.setProfile({ bandwidth: -1 }), TvmValueError);
    });
  });

  describe('forwarding', () => {
    for (const [name, profile] of [
      ['unlimited', {}],
      ['400 Mbit/s + 2 ms', { bandwidth: parseRate('400mbit'), latencyMs: 2 }],
    ] as const) {
      it(`delivers 8 MiB each way intact and in order (${name})`, async () => {
        const upData = seededBytes(8 * MiB, 1);
        const downData = seededBytes(8 * MiB, 2);
        let atServer: Promise<Buffer> | undefined;
        const t = await target((s) => {
          atServer = readAll(s);
          void writeInPieces(s, downData, 3);
        });
        const link = await openLink(t.port, { profile });
        // The server may end its side first: the client goes on sending.
        const c = await client(link.port, { allowHalfOpen: true });
        const t0 = performance.now();
        const [atClient] = await withTimeout(Promise.all([readAll(c), writeInPieces(c, upData, 4)]), 60000, 'the exchange');
        const elapsed = performance.now() - t0;
        assert.ok(atServer);
        const up = await withTimeout(atServer, 30000, 'the upload');
        assert.equal(up.length, upData.length);
        assert.equal(sha(up), sha(upData), 'client -> server bytes');
        assert.equal(atClient.length, downData.length);
        assert.equal(sha(atClient), sha(downData), 'server -> client bytes');
        assert.equal(link.stats.bytesUp, 8 * MiB);
        assert.equal(link.stats.bytesDown, 8 * MiB);
        assert.equal(link.stats.connections, 1);
        if ('bandwidth' in profile) assert.ok(elapsed >= ((8 * MiB * 8) / profile.bandwidth) * 1000 * 0.98, `${elapsed.toFixed(0)} ms`);
      });
    }

    it('adds the latency each way: a round trip through a 30 ms link takes >= 60 ms', async () => {
      const t = await echo();
      const link = await openLink(t.port, { profile: { latencyMs: 30 } });
      const c = await client(link.port);
      for (let i = 0; i < 3; i++) {
        const rtt = await ping(c);
        assert.ok(rtt >= 60, `round trip ${rtt.toFixed(2)} ms`);
      }
    });

    it('limits the throughput: 2 MiB each way at 16 Mbit/s take >= 1.05 s', async () => {
      const bytes = 2 * MiB;
      const floorMs = ((bytes * 8) / 16e6) * 1000;
      const sink = await countingSink();
      // The target also sends 2 MiB down as soon as a client connects.
      sink.server.on('connection', (s: net.Socket) => s.write(seededBytes(bytes, 5)));
      const link = await openLink(sink.port, { profile: { bandwidth: parseRate('16mbit') } });
      const c = await client(link.port);
      let down = 0;
      const downDone = new Promise<number>((resolve) =>
        c.on('data', (chunk: Buffer) => {
          down += chunk.length;
          if (down === bytes) resolve(performance.now());
        }),
      );
      const t0 = performance.now();
      c.write(seededBytes(bytes, 6));
      const [upAt, downAt] = await Promise.all([sink.received(bytes), withTimeout(downDone, 30000, 'the download')]);
      assert.ok(upAt - t0 >= floorMs * 0.98, `up: ${(upAt - t0).toFixed(0)} ms for ${floorMs.toFixed(0)} ms of data`);
      assert.ok(downAt - t0 >= floorMs * 0.98, `down: ${(downAt - t0).toFixed(0)} ms`);
    });

    it('shares the bandwidth among connections with sharedBandwidth', async () => {
      const sink = await countingSink();
      const link = await openLink(sink.port, { profile: { bandwidth: parseRate('16mbit') }, sharedBandwidth: true });
      const [a, b] = [await client(link.port), await client(link.port)];
      const t0 = performance.now();
      a.write(seededBytes(512 * 1024, 7));
      b.write(seededBytes(512 * 1024, 8));
      const done = await sink.received(MiB);
      const floorMs = ((MiB * 8) / 16e6) * 1000;
      assert.ok(done - t0 >= floorMs * 0.98, `${(done - t0).toFixed(0)} ms for ${floorMs.toFixed(0)} ms of data on one link`);
    });

    it('applies setProfile to new data: fast, then slow, then fast again', async () => {
      const sink = await countingSink();
      const link = await openLink(sink.port);
      const c = await client(link.port);
      c.write(seededBytes(MiB, 9));
      await sink.received(MiB);

      const slow = parseRate('4mbit');
      link.setProfile({ bandwidth: slow });
      let t0 = performance.now();
      c.write(seededBytes(256 * 1024, 10));
      const slowMs = (await sink.received(MiB + 256 * 1024)) - t0;
      assert.ok(slowMs >= ((256 * 1024 * 8) / slow) * 1000 * 0.98, `256 KiB at 4 Mbit/s in ${slowMs.toFixed(0)} ms`);

      link.setProfile({});
      t0 = performance.now();
      c.write(seededBytes(MiB, 11));
      const fastMs = (await sink.received(2 * MiB + 256 * 1024)) - t0;
      // Not a timing bound of the machine: the slow profile could not have sent 1 MiB sooner.
      assert.ok(fastMs < ((MiB * 8) / slow) * 1000, `1 MiB after going back to unlimited took ${fastMs.toFixed(0)} ms`);
    });

    it('forwards a half-close after the data before it, and the reply after it', async () => {
      const t = await target(async (s) => {
        const request = await readAll(s);
        s.end(`got:${request}`);
      });
      const link = await openLink(t.port, { profile: { latencyMs: 20 } });
      const c = await client(link.port);
      const reply = readAll(c);
      const gone = closed(c);
      c.end('hello');
      assert.equal((await withTimeout(reply, 10000, 'the reply')).toString(), 'got:hello');
      assert.deepEqual(await gone, { error: undefined });
      await waitFor(() => link.stats.open === 0, 'the connection to be done');
    });
  });

  describe('failures', () => {
    it('cutConnections drops both ends, and new connections still work', async () => {
      const t = await echo();
      const link = await openLink(t.port, { profile: { latencyMs: 5 } });
      const c = await client(link.port);
      await ping(c);
      assert.equal(t.sockets.size, 1);
      const [serverSide] = t.sockets;
      const clientGone = closed(c);
      const serverGone = closed(serverSide);
      c.write('lost in flight');
      link.cutConnections();
      const [atClient, atServer] = await withTimeout(Promise.all([clientGone, serverGone]), 10000, 'both ends to close');
      assert.equal(atClient.error, 'ECONNRESET');
      assert.equal(atServer.error, 'ECONNRESET');
      await waitFor(() => link.stats.open === 0, 'no open connection');
      const again = await client(link.port);
      assert.ok((await ping(again)) >= 10);
      assert.equal(link.stats.connections, 2);
    });

    it('setDown(true) cuts open connections and refuses new ones; setDown(false) brings it back', async () => {
      const t = await echo();
      const link = await openLink(t.port);
      const open = await client(link.port);
      await ping(open);
      const openGone = closed(open);
      link.setDown(true);
      await withTimeout(openGone, 10000, 'the open connection to be cut');
      const refused = net.connect({ port: link.port, host: '127.0.0.1' });
      const refusedGone = closed(refused);
      let got = 0;
      refused.on('data', (chunk: Buffer) => (got += chunk.length));
      refused.write('anyone?');
      await withTimeout(refusedGone, 10000, 'the refused connection to close');
      assert.equal(got, 0);
      await waitFor(() => t.sockets.size === 0, 'no connection at the target');
      assert.equal(link.stats.connections, 1);
      link.setDown(false);
      const back = await client(link.port);
      await ping(back);
    });

    it('closes the client when the target closes mid-transfer', async () => {
      let received = 0;
      const t = await target((s) =>
        s.on('data', (chunk: Buffer) => {
          received += chunk.length;
          if (received >= 64 * 1024) s.destroy();
        }),
      );
      const link = await openLink(t.port, { profile: { bandwidth: parseRate('64mbit'), latencyMs: 2 } });
      const c = await client(link.port);
      const gone = closed(c);
      c.write(seededBytes(4 * MiB, 12));
      await withTimeout(gone, 10000, 'the client to be closed');
      await waitFor(() => link.stats.open === 0, 'no open connection');
    });

    it('closes the client when the target cannot be reached', async () => {
      const t = await echo();
      await new Promise((r) => t.server.close(r));
      const link = await openLink(t.port);
      const c = net.connect({ port: link.port, host: '127.0.0.1' });
      const gone = closed(c);
      c.write('hello?');
      await withTimeout(gone, 10000, 'the client to be closed');
      await waitFor(() => link.stats.open === 0, 'no open connection');
    });

    it('close() closes an idle connection cleanly', async () => {
      const t = await echo();
      const link = await ShapedLink.open({ target: { port: t.port }, profile: { latencyMs: 5 } });
      const c = await client(link.port);
      await ping(c);
      const gone = closed(c);
      await withTimeout(link.close(), 10000, 'close()');
      assert.deepEqual(await withTimeout(gone, 10000, 'the client to be closed'), { error: undefined });
    });

    it('close() resets connections with data still queued, and leaves nothing behind', async () => {
      const t = await echo();
      const link = await ShapedLink.open({ target: { port: t.port }, profile: { bandwidth: parseRate('1mbit'), latencyMs: 50 } });
      const c = await client(link.port);
      const gone = closed(c);
      c.write(seededBytes(MiB, 13));
      await waitFor(() => t.sockets.size === 1, 'the connection at the target');
      await withTimeout(link.close(), 10000, 'close()');
      assert.equal((await withTimeout(gone, 10000, 'the client to be closed')).error, 'ECONNRESET');
      assert.equal(link.stats.open, 0);
      await link.close(); // again: a no-op
      const refused = net.connect({ port: link.port, host: '127.0.0.1' });
      const error = await closed(refused);
      assert.equal(error.error, 'ECONNREFUSED');
    });
  });

  describe('tvm-node shape-link', () => {
    it('forwards through the shaped link until SIGINT, then prints the counters', async () => {
      const t = await echo();
      const child = spawn(
        process.execPath,
        ['--require', 'tsx/cjs', path.join(repoRoot, 'lib', 'cli.ts'), 'shape-link', '--to', `127.0.0.1:${t.port}`, '--rate', '100mbit', '--delay', '5ms'],
        {
          cwd: repoRoot,
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      const exited = once(child, 'close');
      cleanups.push(async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await exited;
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      await withTimeout(
        new Promise<void>((resolve, reject) => {
          child.stdout.on('data', () => stdout.includes('\n') && resolve());
          child.once('close', () => reject(new Error(`exited: ${stderr}`)));
        }),
        30000,
        'the listening line',
      );
      const m = /^tvm-node shape-link listening on 127\.0\.0\.1:(\d+) -> 127\.0\.0\.1:(\d+) \(up 100 Mbit\/s \+ 5 ms, down 100 Mbit\/s \+ 5 ms\)\n/.exec(
        stdout,
      );
      assert.ok(m, stdout);
      const c = await client(Number(m[1]));
      assert.ok((await ping(c)) >= 10);
      c.destroy();
      child.kill('SIGINT');
      const [code] = await withTimeout(exited, 15000, 'the CLI to exit');
      assert.equal(code, 0, stderr);
      assert.match(stdout, /\nSIGINT: stopped; forwarded 1 bytes up, 1 bytes down over 1 connection\(s\)\n$/);
    });

    it('refuses a bad rate or a non-loopback --listen as usage errors', () => {
      assertFailure(
        runCli(['shape-link', '--to', '127.0.0.1:9', '--rate', '100mbps'], { timeoutMs: 30000 }),
        2,
        /usage/,
        /--rate '100mbps': 'bps' is ambiguous/,
      );
      assertFailure(runCli(['shape-link', '--to', '127.0.0.1:9', '--listen', '0.0.0.0:0'], { timeoutMs: 30000 }), 2, /usage/, /loopback only/);
    });
  });
});
