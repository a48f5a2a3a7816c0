/**
 * `tvm-node info`: what this installation runs on.
 */
import { cpu, cuda, metal, opencl, vulkan } from '../device';
import { runtimeLibraries } from '../runtime';
import { versions } from '../versions';

/** `tvm-node info`: versions, where TVM was found, and the devices present. */
export function info(): void {
  const v = versions();
  console.log(`tvm-node   ${v.tvmNode}`);
  console.log(`node       ${v.node} (N-API ${v.napi})`);
  console.log(`tvm        ${v.tvm} from ${v.tvmSource}`);
  console.log(`tvm-ffi    ${v.tvmFfi} (built against ${v.tvmFfiHeaders})`);
  for (const lib of runtimeLibraries()) console.log(`library    ${lib.name}: ${lib.loaded ? 'loaded' : `not loaded (${lib.error})`}`);
  for (const d of [cpu(), cuda(), vulkan(), opencl(), metal()]) {
    const state = d.exists ? `present${d.name ? ` (${d.name})` : ''}` : d.enabled ? 'runtime present, no device' : 'not in this runtime';
    console.log(`device     ${String(d).padEnd(10)} ${state}`);
  }
}
