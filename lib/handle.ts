/**
 * The part every lib/ object over a native handle shares: TVM sees the handle (the
 * native layer looks for `_tvmKind: 'handle'`), and disposal is idempotent, with `using`.
 * @internal
 */
export abstract class HandleOwner<H extends { readonly disposed: boolean; dispose(): void }> implements Disposable {
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

  [Symbol.dispose](): void {
    this.dispose();
  }
}
