/**
 * One request at a time per RPC session: a TVM RPC session is a single request/response
 * stream, so calls, remote tensor copies and remote VM runs on it are queued in order.
 * Work on local devices is not affected.
 */
import type { Device } from '../device';

/** A FIFO of async jobs. */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  /** Runs `job` after every job queued before it has settled. */
  run<T>(job: () => Promise<T>): Promise<T> {
    const result = this.tail.then(job, job);
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
