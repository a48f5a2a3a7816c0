/**
 * Timers for session limits, which users give in seconds and may make long: Node's
 * `setTimeout` fires at once for anything over 2^31 - 1 ms (~24.8 days), so longer waits
 * are taken in steps.
 */

/** The longest delay `setTimeout` honours. */
const MAX_DELAY_MS = 2 ** 31 - 1;

/** A cancellable timer. */
export interface Timer {
  cancel(): void;
}

/** Calls `fn` after `ms` milliseconds (any finite length); `unref`: it does not keep Node alive. */
export function longTimeout(fn: () => void, ms: number, opts: { unref?: boolean } = {}): Timer {
  let handle: NodeJS.Timeout;
  const due = Date.now() + ms;
  const arm = (left: number) => {
    handle = setTimeout(() => (left > MAX_DELAY_MS ? arm(due - Date.now()) : fn()), Math.min(Math.max(left, 0), MAX_DELAY_MS));
    if (opts.unref) handle.unref();
  };
  arm(ms);
  return { cancel: () => clearTimeout(handle) };
}

/**
 * A timer that is re-armed often (each packet): `arm(ms, fn)` replaces what was armed,
 * `disarm()` stops it.
 */
export class Watchdog {
  private timer?: Timer;

  arm(ms: number, fn: () => void): void {
    this.timer?.cancel();
    this.timer = longTimeout(fn, ms);
  }

  disarm(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }
}
