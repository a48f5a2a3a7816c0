/**
 * Facts about the linked TVM runtime.
 */
import { addon, type RuntimeLibrary } from './binding';

/** The optional TVM runtime libraries (CUDA sidecar, extras) and whether each loaded. */
export function runtimeLibraries(): RuntimeLibrary[] {
  return addon.runtimeLibraries();
}
