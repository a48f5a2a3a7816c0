/**
 * Root hook (registered in .mocharc.json): when every test has run, nothing a test started may
 * still be alive. mocha runs without `exit: true`, so a server, socket, child process, worker or
 * ref'd timer left behind would keep the process from exiting: a hang that hides which test
 * leaked. Instead, the last `after all` hook fails and names what is left:
 *
 *   - handles (`process._getActiveHandles()`: servers, sockets, child processes, workers,
 *     watchers), except the process's own stdio;
 *   - ref'd timers, with the stack that created them (setTimeout/setInterval are wrapped here to
 *     record it; timers that are unref'd, cleared or fired do not count).
 *
 * Handles that are closing get a grace period to go. And if the process is still alive a while
 * after the run ended (something holds the event loop that neither list shows, e.g. a native
 * handle), an unref'd safety timer prints what Node still reports and exits with status 1.
 */
import timers from 'node:timers';

/** How long closing handles and timers that are about to fire get to go away. */
const SETTLE_MS = 3000;
/** How long after the run the process may take to exit before the safety timer ends it. */
const EXIT_GRACE_MS = 15000;

type Timer = ReturnType<typeof setTimeout> & { _destroyed?: boolean };

/** The original setTimeout, for this hook's own waits (not tracked, so not reported). */
const rawSetTimeout = setTimeout;
const liveTimers = new Map<Timer, Error>();
let created = 0;

function prune(): void {
  for (const t of liveTimers.keys()) if (t._destroyed || !t.hasRef()) liveTimers.delete(t);
}

/** Wraps a timer factory so that each timer remembers where it was made. */
function track<F extends (...args: never[]) => Timer>(original: F, what: string): F {
  const wrapped = function (this: unknown, ...args: Parameters<F>): Timer {
    const t = original.apply(this, args);
    liveTimers.set(t, new Error(`${what}(${typeof args[1] === 'number' ? `…, ${args[1]}` : ''}) created`));
    if (++created % 1000 === 0) prune();
    return t;
  } as unknown as F;
  // Keep util.promisify.custom and friends working.
  Object.defineProperties(wrapped, Object.getOwnPropertyDescriptors(original));
  return wrapped;
}

const trackedTimeout = track(setTimeout as unknown as (...args: never[]) => Timer, 'setTimeout');
const trackedInterval = track(setInterval as unknown as (...args: never[]) => Timer, 'setInterval');
globalThis.setTimeout = trackedTimeout as unknown as typeof setTimeout;
globalThis.setInterval = trackedInterval as unknown as typeof setInterval;
timers.setTimeout = trackedTimeout as unknown as typeof timers.setTimeout;
timers.setInterval = trackedInterval as unknown as typeof timers.setInterval;

type Handle = { constructor: { name: string }; [key: string]: unknown };

function isStdio(h: Handle): boolean {
  const fd = (h._handle as { fd?: number } | undefined)?.fd ?? (h.fd as number | undefined);
  return h === (process.stdout as unknown) || h === (process.stderr as unknown) || fd === 0 || fd === 1 || fd === 2;
}

function activeHandles(): Handle[] {
  return (process as unknown as { _getActiveHandles(): Handle[] })._getActiveHandles().filter((h) => !isStdio(h));
}

/** The first test after which each handle was seen alive: names the test that leaked it. */
const firstSeen = new WeakMap<object, string>();

function describeSocket(h: Handle): string {
  const s = h as unknown as import('node:net').Socket;
  const state = s.destroyed ? 'destroyed' : s.readyState;
  return `${s.remoteAddress}:${s.remotePort} (local port ${s.localPort}; ${state}, read ${s.bytesRead} B, written ${s.bytesWritten} B${s.writableEnded ? ', ended' : ''})`;
}

function describeHandle(h: Handle): string {
  const name = h.constructor?.name ?? typeof h;
  const any = h as Record<string, unknown> & {
    address?: () => unknown;
    remoteAddress?: string;
    remotePort?: number;
    localPort?: number;
    pid?: number;
    spawnargs?: string[];
    threadId?: number;
    listening?: boolean;
  };
  try {
    if (typeof any.pid === 'number' && Array.isArray(any.spawnargs)) return `${name} pid ${any.pid}: ${any.spawnargs.join(' ').slice(0, 200)}`;
    if (typeof any.listening === 'boolean' && typeof any.address === 'function') return `${name} listening on ${JSON.stringify(any.address())}`;
    if (any.remoteAddress !== undefined) return `${name} ${describeSocket(h)}`;
    if (typeof any.threadId === 'number') return `${name} thread ${any.threadId}`;
    if (typeof any._handle === 'object' && any._handle !== null) {
      const fd = (any._handle as { fd?: number }).fd;
      return `${name} (${(any._handle as object).constructor.name}${typeof fd === 'number' && fd >= 0 ? ` fd ${fd}` : ''})`;
    }
  } catch {
    // describe what we can
  }
  return name;
}

/** What would keep the process alive now, stdio aside; empty when nothing would. */
export function liveResources(): string[] {
  prune();
  const out = activeHandles().map((h) => {
    const since = firstSeen.get(h);
    return `handle: ${describeHandle(h)}${since ? `, alive since the test "${since}"` : ''}`;
  });
  for (const err of liveTimers.values()) {
    const site = (err.stack ?? '')
      .split('\n')
      .slice(1)
      .find((l) => !l.includes('test/leaks.ts') && !l.includes('node:internal'));
    out.push(`timer: ${err.message} ${site?.trim() ?? '(unknown site)'}`);
  }
  return out;
}

export const mochaHooks = {
  afterEach(this: Mocha.Context): void {
    const title = this.currentTest?.fullTitle() ?? '?';
    for (const h of activeHandles()) if (!firstSeen.has(h)) firstSeen.set(h, title);
  },

  async afterAll(this: Mocha.Context): Promise<void> {
    this.timeout(SETTLE_MS * 4); // it waits at most SETTLE_MS itself
    const deadline = Date.now() + SETTLE_MS;
    let left = liveResources();
    while (left.length > 0 && Date.now() < deadline) {
      await new Promise((r) => rawSetTimeout(r, 50));
      left = liveResources();
    }
    rawSetTimeout(() => {
      process.stderr.write(
        `\nleak check: the process is still alive ${EXIT_GRACE_MS / 1000} s after the tests ended; active: ` +
          `${JSON.stringify(process.getActiveResourcesInfo())}\n${liveResources().join('\n')}\n`,
      );
      process.exit(1);
    }, EXIT_GRACE_MS).unref();
    if (left.length > 0) {
      throw new Error(`${left.length} resource(s) outlived the tests (leaked; they would keep mocha from exiting):\n  ${left.join('\n  ')}`);
    }
  },
};
