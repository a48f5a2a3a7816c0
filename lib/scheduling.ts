/**
 * Scheduling of work on devices (a core module: tensors and VMs use it for every device, RPC
 * sessions register their queues here).
 *
 * One request at a time per RPC session: a TVM RPC session is a single request/response
 * stream, so calls, remote tensor copies and remote VM runs on it are queued in order.
 * Work on local devices is not affected.
 *
 * TVM's RPC client is blocking: a request in flight holds a libuv pool thread until its
 * reply comes. So that waiting on peers can never take every pool thread (and starve model
 * runs and copies in this process, or deadlock a process that also serves inference-only
 * sessions, whose model runs need the pool), at most pool size - 1 requests of all sessions
 * together are in flight; raise UV_THREADPOOL_SIZE for more.
 */
import type { Device } from './device';

/** A counting semaphore: at most `limit` jobs at once, the rest wait in FIFO order. */
class Slots {
  private used = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  async use<T>(job: () => Promise<T>): Promise<T> {
    if (this.used >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.used++;
    try {
      return await job();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.used--;
    }
  }
}

/** libuv's pool size (UV_THREADPOOL_SIZE, default 4), less one kept for everything else. */
const requestSlots = new Slots(Math.max(1, (Number(process.env.UV_THREADPOOL_SIZE) || 4) - 1));

/** Runs `job` (RPC requests that hold a pool thread while they wait) in a request slot. */
export function withRequestSlot<T>(job: () => Promise<T>): Promise<T> {
  return requestSlots.use(job);
}

/**
 * A FIFO of async jobs: by default each an RPC request (or a few in a row) holding one
 * request slot; with `holdsPoolThread` false, jobs that wait on sockets from the JS thread
 * (the inference channel) and need no slot.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly holdsPoolThread = true) {}

  /** Runs `job` after every job queued before it has settled. */
  run<T>(job: () => Promise<T>): Promise<T> {
    const slotted = this.holdsPoolThread ? () => withRequestSlot(job) : job;
    const result = this.tail.then(slotted, slotted);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

const sessions = new Map<number, SerialQueue>();

/** @internal Called by RPCSession on connect/close. */
export function registerSessionQueue(index: number, queue: SerialQueue | undefined): void {
  if (queue) sessions.set(index, queue);
  else sessions.delete(index);
}

/** Runs `job` in the queue of the RPC session that owns `device`, or at once for a local device. */
export function onDevice<T>(device: Device, job: () => Promise<T>): Promise<T> {
  const queue = device.isRemote ? sessions.get(device.sessionIndex) : undefined;
  return queue ? queue.run(job) : job();
}
