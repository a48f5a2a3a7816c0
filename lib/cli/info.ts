/**
 * `tvm-node info`: what this installation runs on.
 */
import { cpu, cuda, metal, opencl, vulkan } from '../device';
import { VersionMismatchError } from '../errors';
import { runtimeLibraries, threadSettings } from '../runtime';
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
  // TVM's thread pools: what each variable is and who chose it (lib/threads.ts says why).
  const t = threadSettings();
  const by = (name: string) =>
    t.setByTvmNode.includes(name) ? 'tvm-node default' : process.env[name] === undefined ? "TVM's default" : 'from the environment';
  const numThreadsBy = t.setByTvmNode.includes('TVM_NUM_THREADS')
    ? `tvm-node default: ${t.cores} physical core${t.cores === 1 ? '' : 's'} available`
    : process.env.TVM_NUM_THREADS !== undefined || process.env.OMP_NUM_THREADS !== undefined
      ? 'from the environment'
      : "TVM's default";
  console.log(
    `threads    TVM_NUM_THREADS=${t.numThreads} (${numThreadsBy}), TVM_BIND_THREADS=${t.bindThreads ? 1 : 0} (${by('TVM_BIND_THREADS')}), TVM_THREAD_POOL_SPIN_COUNT=${t.spinCount} (${by('TVM_THREAD_POOL_SPIN_COUNT')})`,
  );
  console.log(
    `threads    runSync/callSync: ${t.numThreads} TVM worker${t.numThreads === 1 ? '' : 's'} per JS thread; run/call: ` +
      `${t.poolThreadWorkers} per libuv pool thread${t.poolThreadWorkers === 1 ? ' (kernels run inline)' : ''}, ${t.uvThreadpoolSize} threads (UV_THREADPOOL_SIZE)`,
  );
  for (const d of [cpu(), cuda(), vulkan(), opencl(), metal()]) {
    const state = d.exists ? `present${d.name ? ` (${d.name})` : ''}` : d.enabled ? 'runtime present, no device' : 'not in this runtime';
    console.log(`device     ${String(d).padEnd(10)} ${state}`);
  }
}
