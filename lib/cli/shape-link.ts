/**
 * `tvm-node shape-link`: a link-shaping TCP proxy in the foreground ({@link ShapedLink}), to
 * put an emulated device <-> edge-server link (bandwidth, added latency) between a client and
 * a server on this machine. Runs until SIGINT/SIGTERM, then prints the byte counters.
 */
import { formatRate, type LinkProfile, parseDelay, parseRate, ShapedLink } from '../net/shaped-link';
import { UsageError, withHint } from './errors';
import { parseHostPort } from './rpc-server';

/** Options of {@link shapeLink}, parsed. */
export interface ShapeLinkCommand {
  /** The server to forward to. */
  to: { host: string; port: number };
  /** Where to listen (loopback). */
  listen: { host: string; port: number };
  up: LinkProfile;
  down: LinkProfile;
}

/** Parses `HOST:PORT` (`[::1]:9090` too), the port from `minPort`; `portOnly`: a bare `PORT` means 127.0.0.1:PORT. */
export function parseEndpoint(text: string, minPort: number, portOnly = false): { host: string; port: number } {
  let hostPort: { host: string; port: number };
  if (portOnly && /^\d+$/.test(text)) hostPort = { host: '127.0.0.1', port: Number(text) };
  else {
    try {
      hostPort = parseHostPort(text);
    } catch (err) {
      throw new UsageError((err as Error).message, undefined, { cause: err });
    }
  }
  const host = hostPort.host.replace(/^\[(.*)\]$/, '$1');
  if (hostPort.port < minPort || hostPort.port > 65535) throw new UsageError(`port ${hostPort.port} is not from ${minPort} to 65535`);
  return { host, port: hostPort.port };
}

/** {@link parseRate} for an option: a bad value is a usage error. */
export function parseRateOption(text: string): number {
  return usage(() => parseRate(text));
}

/** {@link parseDelay} for an option: a bad value is a usage error. */
export function parseDelayOption(text: string): number {
  return usage(() => parseDelay(text));
}

function usage<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/^bad (rate|delay) '[^']*': /, ''), undefined, { cause: err });
  }
}

/** A profile for people: `100 Mbit/s + 10 ms`. */
export function describeProfile(p: Required<LinkProfile>): string {
  return `${formatRate(p.bandwidth)} + ${p.latencyMs} ms`;
}

/** Runs the proxy until SIGINT/SIGTERM: one line on start (where, to where, the profile), the counters on exit. */
export async function shapeLink(o: ShapeLinkCommand): Promise<void> {
  let link: ShapedLink;
  try {
    link = await ShapedLink.open({ target: o.to, listen: o.listen, up: o.up, down: o.down });
  } catch (err) {
    if (/loopback only/.test((err as Error).message)) throw new UsageError(`--listen: ${(err as Error).message}`, 'listen on 127.0.0.1, ::1 or localhost');
    throw withHint(err, `choose another --listen port, or stop the process using ${o.listen.host}:${o.listen.port}`);
  }
  const { up, down } = link.profile;
  const host = link.host.includes(':') ? `[${link.host}]` : link.host;
  const target = o.to.host.includes(':') ? `[${o.to.host}]` : o.to.host;
  console.log(`tvm-node shape-link listening on ${host}:${link.port} -> ${target}:${o.to.port} (up ${describeProfile(up)}, down ${describeProfile(down)})`);
  const signal = await new Promise<string>((resolve) => {
    const onInt = () => stop('SIGINT');
    const onTerm = () => stop('SIGTERM');
    const stop = (name: string) => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      resolve(name);
    };
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
  });
  await link.close();
  const s = link.stats;
  console.log(`${signal}: stopped; forwarded ${s.bytesUp} bytes up, ${s.bytesDown} bytes down over ${s.connections} connection(s)`);
}
