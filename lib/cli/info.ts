/**
 * `tvm-node info`: what this installation runs on.
 */
import { cpu, cuda, metal, opencl, vulkan } from '../device';
import { VersionMismatchError } from '../errors';
import { runtimeLibraries } from '../runtime';
import { checkRuntimeVersions, loadedLibraries, versions } from '../versions';

/**
 * `tvm-node info`: versions (the apache-tvm-ffi package really installed beside the version its
 * headers announce), the libraries loaded with their tvm-ffi ABI generation, whether they fit,
 * and the devices present.
 */
export function info(): void {
  const v = versions();
  console.log(`tvm-node   ${v.tvmNode}`);
  console.log(`node       ${v.node} (N-API ${v.napi})`);
  console.log(`tvm        ${v.tvm} from ${v.tvmSource}`);
  const pkg = v.tvmFfiPackage ? `apache-tvm-ffi ${v.tvmFfiPackage}, ` : '';
  console.log(`tvm-ffi    ${pkg}library reports ${v.tvmFfi}, tvm-node built against headers ${v.tvmFfiHeaders}`);
  for (const lib of loadedLibraries()) {
    const abi = lib.abi.namespace ? `${lib.abi.namespace} (${lib.abi.generation})` : 'ABI generation unknown';
    console.log(`loaded     ${lib.role.padEnd(20)} ${lib.path}  [${abi}]`);
  }
  let verdict = 'ok: the loaded libraries are built for the loaded tvm-ffi';
  try {
    checkRuntimeVersions();
  } catch (err) {
    if (!(err instanceof VersionMismatchError)) throw err;
    verdict = `MISMATCH: ${err.message}`;
  }
  console.log(`abi check  ${verdict}`);
  for (const lib of runtimeLibraries()) console.log(`library    ${lib.name}: ${lib.loaded ? 'loaded' : `not loaded (${lib.error})`}`);
  for (const d of [cpu(), cuda(), vulkan(), opencl(), metal()]) {
    const state = d.exists ? `present${d.name ? ` (${d.name})` : ''}` : d.enabled ? 'runtime present, no device' : 'not in this runtime';
    console.log(`device     ${String(d).padEnd(10)} ${state}`);
  }
}
