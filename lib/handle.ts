/**
 * The part every lib/ object over a native handle shares: TVM sees the handle (the
 * native layer looks for `_tvmKind: 'handle'`), and disposal is idempotent, with `using`.
 * @internal
 */
export abstract class HandleOwner<H extends { readonly disposed: boolean; dispose(): void; disposeAsync(): Promise<void> }> implements Disposable {
  /** @internal */
  readonly _tvmKind = 'handle';

  /** @internal */
  constructor(readonly handle: H) {}

  /** Whether `dispose()` was called. */
  get disposed(): boolean {
    return this.handle.disposed;
  }

  /** Releases this reference (idempotent); the object's memory goes when nothing else holds it. */
  dispose(): void {
    this.handle.dispose();
  }

  /**
   * {@link HandleOwner.dispose} on the thread pool: releasing an object of an RPC peer is a
   * request over the network, which this keeps off the event loop.
   */
  disposeAsync(): Promise<void> {
    return this.handle.disposeAsync();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
