/**
 * Facts about the linked TVM runtime.
 */
import { addon, type RuntimeLibrary } from './binding';
import { readThreadSettings, type ThreadSettings } from './threads';

/** The optional TVM runtime libraries (CUDA sidecar, extras) and whether each loaded. */
export function runtimeLibraries(): RuntimeLibrary[] {
  return addon.runtimeLibraries();
}

/**
 * The TVM thread-pool settings in effect: workers per pool on a JS thread (`runSync`) and per
 * libuv pool thread (`run`), pinning, spinning, and which of them tvm-node chose (it sets
 * TVM_NUM_THREADS, TVM_BIND_THREADS=0 and TVM_THREAD_POOL_SPIN_COUNT=0 when they are unset;
 * see README, "Rules worth knowing").
 */
export function threadSettings(): ThreadSettings {
  return readThreadSettings(addon);
}
