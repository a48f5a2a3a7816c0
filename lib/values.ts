/**
 * Explicitly typed values for packed-function calls. A JS number is passed as an int when
 * it is an integer and as a float otherwise; these wrappers override that choice and carry
 * the TVM types that have no JS counterpart (shapes, dtypes).
 */
import { factories } from './binding';

/** A TVM shape tuple (`ffi.Shape`), e.g. an argument of `relax.run.shape_to_tensor`. */
export class Shape {
  /** @internal */
  readonly _tvmKind = 'shape';
  constructor(readonly dims: readonly number[]) {}
  toString(): string {
    return `(${this.dims.join(', ')})`;
  }
}

/** A float argument even when the value is integral (`float(1)` passes 1.0). */
export const float = (value: number) => ({ _tvmKind: 'float', value }) as const;
/** An int64 argument. */
export const int = (value: number | bigint) => ({ _tvmKind: 'int', value }) as const;
/** A DLDataType argument, e.g. `dataType('float16')`. */
export const dataType = (dtype: string) => ({ _tvmKind: 'dtype', dtype }) as const;

factories.shape = (dims) => new Shape(dims);
