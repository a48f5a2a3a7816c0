/**
 * The part every lib/ object over a native handle shares: TVM sees the handle (the
 * native layer looks for `_tvmKind: 'handle'`), and disposal is idempotent, with `using`
 * and `await using`.
 * @internal
 */
export abstract class HandleOwner<H extends { readonly disposed: boolean; dispose(): void; disposeAsync(): Promise<void> }>
  implements Disposable, AsyncDisposable
{
  /** @internal */
  readonly _tvmKind = 'handle';

  /** @internal */
  constructor(readonly handle: H) {}

  /** Whether this reference was released ({@link HandleOwner.dispose} or {@link HandleOwner.disposeSync}). */
  get disposed(): boolean {
    return this.handle.disposed;
  }

  /**
   * Releases this reference on the thread pool (idempotent); the object's memory goes when
   * nothing else holds it. Releasing an object of an RPC peer is a request over the network,
   * which this keeps off the event loop. `await using` calls it.
   */
  dispose(): Promise<void> {
    return this.handle.disposeAsync();
  }

  /**
   * {@link HandleOwner.dispose} on the JS thread (idempotent): the reference is released when
   * this returns. `using` calls it. For objects of an RPC peer it blocks on a round trip.
   */
  disposeSync(): void {
    this.handle.dispose();
  }

  [Symbol.dispose](): void {
    this.disposeSync();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}
