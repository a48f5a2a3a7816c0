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

export {
  type BindOptions,
  type BoundInputs,
  bindInputs,
  bindInputsAsync,
  type CheckedInput,
  type CheckedInputs,
  checkInputs,
  type Dim,
  type HostInput,
  InputError,
  type InputProblem,
  type Inputs,
  type InputValue,
  orderInputs,
  type TensorInfo,
} from './bind';
export type { DLPackCapsule, RuntimeLibrary } from './binding';
export { cpu, cuda, Device, type DeviceKind, DeviceType, device, metal, opencl, vulkan } from './device';
export { type DType, fromFloat32, type TypedArray, toFloat32 } from './dtype';
export * from './errors';
export { getGlobalFunc, listGlobalFuncs, PackedFunc, type Registration, registerFunc, requireGlobalFunc } from './function';
export { checkManifest, type Manifest, ManifestError, type ManifestFile, manifestPathOf, parseManifest, readManifest, type TensorSpec } from './manifest';
export { Model, type ModelOptions, type ModelOutputs, type ModelRunOptions } from './model';
export { type LoadOptions, loadModule, loadModuleSync, Module } from './module';
export { formatRate, type LinkProfile, parseDelay, parseRate, ShapedLink, type ShapedLinkOptions, type ShapedLinkStats } from './net/shaped-link';
export { encodeNpy, type NpyArray, parseNpy, readNpy, tensorFromNpy, writeNpy } from './npy';
export {
  type CutSpec,
  type Encoding,
  type Placement,
  type Plan,
  SplitGraph,
  type SplitManifest,
  SplitManifestError,
  type StageSpec,
  type StaticTensor,
} from './offload/graph';
export { type Decision, type Estimates, type Objective, OffloadPolicy, type PolicyOptions, type RemoteSample } from './offload/policy';
export {
  type FrameInput,
  type FrameOptions,
  type FrameResult,
  type OffloadStats,
  type PlanChoice,
  type ServerTarget,
  SplitModel,
  type SplitModelEvents,
  type SplitModelOptions,
  type StageTiming,
} from './offload/split-model';
export { type ConnectOptions, connect, RemoteFunction, RPCSession } from './rpc/client';
export type { InferInput } from './rpc/infer';
export type { CacheLimits, LoadedModel, ModelInfo, ModelListing, ModelRepository, PublicModelInfo } from './rpc/repository';
export { RPCServer, type RPCServerEvents, type RPCServerOptions, type SessionEnd } from './rpc/server';
export { setTransferCache } from './rpc/tensor-stream';
export { connectTracker, TrackerClient } from './rpc/tracker';
export { runtimeLibraries, threadSettings } from './runtime';
export { Tensor, type TensorData, type TensorOptions } from './tensor';
export type { ThreadSettings } from './threads';
export { dataType, float, int, Shape } from './values';
export {
  ABI_GENERATIONS,
  type AbiFingerprint,
  abiFingerprint,
  checkAbiGenerations,
  checkRuntimeVersions,
  type LoadedLibrary,
  loadedLibraries,
  type Versions,
  versions,
} from './versions';
export { type MemoryConfig, outputsOf, VirtualMachine, type VMFunctionInfo, type VMOptions } from './vm';
