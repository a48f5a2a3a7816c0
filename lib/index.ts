/**
 * tvm-node: the Apache TVM runtime in Node.js.
 *
 * ```ts
 * import { Model } from 'tvm-node';
 * const model = await Model.load('model.so');          // inputs and outputs by name, shapes, dtypes
 * const { logits } = await model.run({ input: data }); // checked, then run off the JS thread
 * await logits.dispose();                              // outputs are the caller's to dispose
 * await model.dispose();                               // the model owns its module and VM
 * ```
 *
 * Below the model API: {@link VirtualMachine} (functions, devices, memory), {@link Module},
 * {@link PackedFunc}, {@link Tensor}, and TVM RPC.
 * @packageDocumentation
 */
export { cpu, cuda, device, Device, DeviceType, metal, opencl, vulkan, type DeviceKind } from './device';
export { type DType, type TypedArray, toFloat32, fromFloat32 } from './dtype';
export * from './errors';
export { getGlobalFunc, listGlobalFuncs, PackedFunc, registerFunc, requireGlobalFunc, type Registration } from './function';
export { loadModule, loadModuleSync, Module, type LoadOptions } from './module';
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
export { Model, type ModelOptions, type ModelOutputs, type ModelRunOptions } from './model';
export {
  bindInputs,
  bindInputsAsync,
  checkInputs,
  InputError,
  orderInputs,
  type BindOptions,
  type BoundInputs,
  type CheckedInput,
  type CheckedInputs,
  type Dim,
  type HostInput,
  type InputProblem,
  type Inputs,
  type InputValue,
  type TensorInfo,
} from './bind';
export { checkManifest, ManifestError, manifestPathOf, parseManifest, readManifest, type Manifest, type ManifestFile, type TensorSpec } from './manifest';
export { runtimeLibraries } from './runtime';
export type { DLPackCapsule, RuntimeLibrary } from './binding';
export { connect, RemoteFunction, RPCSession, type ConnectOptions } from './rpc/client';
export { RPCServer, type RPCServerEvents, type RPCServerOptions, type SessionEnd } from './rpc/server';
export type { InferInput } from './rpc/infer';
export type { CacheLimits, LoadedModel, ModelInfo, ModelListing, ModelRepository, PublicModelInfo } from './rpc/repository';
export { connectTracker, TrackerClient } from './rpc/tracker';
