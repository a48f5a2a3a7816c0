/**
 * tvm-node: the Apache TVM runtime in Node.js.
 *
 * ```ts
 * import { VirtualMachine, Tensor, cpu } from 'tvm-node';
 * const vm = await VirtualMachine.load('model.so', { devices: [cpu()] });
 * const y = await vm.run('main', Tensor.from(x, { shape: [1, 16] }));
 * ```
 * @packageDocumentation
 */
export { cpu, cuda, device, Device, DeviceType, metal, opencl, vulkan, type DeviceKind } from './device';
export { type DType, type TypedArray, toFloat32, fromFloat32 } from './dtype';
export * from './errors';
export { getGlobalFunc, listGlobalFuncs, PackedFunc, registerFunc, requireGlobalFunc, type Registration } from './function';
export { loadModule, loadModuleAsync, Module } from './module';
export { encodeNpy, parseNpy, readNpy, tensorFromNpy, writeNpy, type NpyArray } from './npy';
export { Tensor, type TensorData, type TensorOptions } from './tensor';
export { dataType, float, int, Shape } from './values';
export {
  ABI_GENERATIONS,
  abiFingerprint,
  checkAbiGenerations,
  checkRuntimeVersions,
  loadedLibraries,
  versions,
  type AbiFingerprint,
  type LoadedLibrary,
  type Versions,
} from './versions';
export { outputsOf, VirtualMachine, type MemoryConfig, type VMFunctionInfo, type VMOptions } from './vm';
export { runtimeLibraries } from './runtime';
export { connect, RemoteFunction, RPCSession, type ConnectOptions } from './rpc/client';
export { RPCServer, type RPCServerOptions } from './rpc/server';
export { connectTracker, TrackerClient } from './rpc/tracker';
