/**
 * Wiring between the native layer and lib/'s classes, and facts about the linked runtime.
 */
import { addon, factories, type RuntimeLibrary } from './binding';
import { PackedFunc } from './function';
import { Module } from './module';
import { Tensor } from './tensor';

/** The optional TVM runtime libraries (CUDA sidecar, extras) and whether each loaded. */
export function runtimeLibraries(): RuntimeLibrary[] {
  return addon.runtimeLibraries();
}

/** Native handles returned by TVM become lib/ objects. */
factories.wrap = (h) => {
  if (h instanceof addon.NativeTensor) return new Tensor(h);
  if (h instanceof addon.NativeFunction) return new PackedFunc(h);
  if (h instanceof addon.NativeModule) return new Module(h);
  return h;
};
